"""embedding: token ids to vectors, y[sample sequence hidden] = table[ids[sample sequence], hidden], as
flax's nnx.Embed computes it (its parameter is named "embedding").

FLOPs: forward 0 (a gather of b * s * d elements); backward = b * s * d (the scatter-add of the output
gradient into the table's rows; no gradient flows to the ids). Worked number: GPT-2's wte, 8 sequences of
1024 tokens, width 768 -> backward 8 * 1024 * 768 = 6.3 MFLOP, forward 0.

A config splits the samples, the sequence, hidden (the table's columns) and the vocabulary (its rows; a
contracting label: y sums one-hot(ids) . table over the vocabulary). A vocabulary split is Megatron's
vocab-parallel embedding: each task looks up only the ids in its rows and writes 0 for the others
(`task_apply`), so its output is a partial sum that the tasks' all-reduce completes. Its local op says
so (`EmbeddingAttrs.vocab`, the whole vocabulary the ids range over): calibration times the masked lookup
a task runs, not a plain one of a smaller table (the cost key differs; XLA's SPMD partitioner compiles a
row-sharded `jnp.take` likewise into compares, a clamped gather and a select).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from models.kinds.base import KindSpec, elements
from models.labels import Label, Role, Space, label_ranges
from models.op_value import KindAttrs, Op, OpKind


@dataclass(frozen=True)
class EmbeddingAttrs(KindAttrs):
    """A vocabulary shard's local op: the ids range over `vocab` rows, of which the table holds the first
    (a task's ids are shifted by its first row, `Embedding.task_apply`); the others look up 0."""

    vocab: int


class Embedding(KindSpec):
    kind = OpKind.EMBEDDING
    attrs_type = EmbeddingAttrs

    def backward_flops(self, op: Op) -> int:
        return elements(op.output_shape)

    def input_dtypes(self, op: Op) -> tuple[str, ...]:
        return ("int32",)

    def space(self, op: Op) -> Space:
        """ids[sample sequence], table[vocab hidden] -> y[sample sequence hidden]; vocab contracting."""
        batch, sequence, hidden = op.output_shape
        labels = (Label("sample", batch, Role.SAMPLE), Label("sequence", sequence, Role.SEQUENCE),
                  Label("hidden", hidden, Role.HIDDEN), Label("vocab", op.param_shapes[0][1][0], Role.VOCAB))
        return Space(labels, ("sample", "sequence", "hidden"), (("sample", "sequence"),),
                     (("embedding", ("vocab", "hidden")),), config_labels=("sample", "sequence", "hidden", "vocab"))

    def layer(self, op: Op, rngs):
        vocab, hidden = op.param_shapes[0][1]
        return nnx.Embed(vocab, hidden, dtype=op.dtype, param_dtype=op.dtype, rngs=rngs)

    def local_op(self, op: Op, degrees: tuple[int, ...]) -> Op:
        """The shard's op; of a vocabulary split, marked as the masked lookup over the whole vocabulary."""
        local = super().local_op(op, degrees)
        vocab = op.space.size("vocab")
        if local.param_shapes[0][1][0] == vocab:
            return local
        return dataclasses.replace(local, attrs=EmbeddingAttrs(vocab))

    def ids_bound(self, op: Op) -> int:
        """The whole vocabulary, also on a vocabulary shard."""
        return op.attrs.vocab if op.attrs is not None else op.param_shapes[0][1][0]

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        table = params["embedding"]
        if op.attrs is None:
            return jnp.take(table, inputs[0], axis=0)
        held = (inputs[0] >= 0) & (inputs[0] < table.shape[0])  # a shard: ids shifted to its first row
        return jnp.where(held[..., None], jnp.take(table, jnp.where(held, inputs[0], 0), axis=0), 0)

    def task_apply(self, op: Op, degrees, index, params, inputs, labels) -> jax.Array:
        """The task holding table rows [first, first + rows) looks up ids - first where it holds the row, 0
        elsewhere (its local op's masked lookup)."""
        first = label_ranges(op.space, degrees, index)["vocab"][0]
        return self.apply(self.local_op(op, degrees), params, (inputs[0] - first,), labels)
