"""embedding: token ids to vectors, y[sample sequence hidden] = table[ids[sample sequence], hidden], as
flax's nnx.Embed computes it (its parameter is named "embedding").

FLOPs: forward 0 (a gather of b * s * d elements); backward = b * s * d (the scatter-add of the output
gradient into the table's rows; no gradient flows to the ids). Worked number: GPT-2's wte, 8 sequences of
1024 tokens, width 768 -> backward 8 * 1024 * 768 = 6.3 MFLOP, forward 0.

A config splits the samples, the sequence, hidden (the table's columns) and the vocabulary (its rows; a
contracting label: y sums one-hot(ids) . table over the vocabulary). A vocabulary split is Megatron's
vocab-parallel embedding: each task looks up only the ids in its rows and writes 0 for the others
(`task_apply`), so its output is a partial sum that the tasks' all-reduce completes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models.kinds.base import KindSpec, elements
from models.labels import Label, Role, Space, label_ranges
from models.op import Op, OpKind


class Embedding(KindSpec):
    kind = OpKind.EMBEDDING

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

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return jnp.take(params["embedding"], inputs[0], axis=0)

    def task_apply(self, op: Op, degrees, index, params, inputs, labels) -> jax.Array:
        """The task holding table rows [first, first + rows) looks up ids - first where it holds the row, 0
        elsewhere (a masked lookup)."""
        first = label_ranges(op.space, degrees, index)["vocab"][0]
        table = params["embedding"]
        local = inputs[0] - first
        held = (local >= 0) & (local < table.shape[0])
        return jnp.where(held[..., None], jnp.take(table, jnp.where(held, local, 0), axis=0), 0)
