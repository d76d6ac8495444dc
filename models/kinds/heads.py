"""split_heads and merge_heads: the reshapes between a [b s d] projection and attention's [b s h k] heads.

    split_heads: x[b s (h k)] -> y[b s h k]        merge_heads: x[b s h k] -> y[b s (h k)]

FLOPs 0 (a reshape). The (h k) dim is `Merged` (models.labels): heads outer, head_dim inner, so a heads
split is a contiguous range of the features and needs no data movement; head_dim is never split (its
shard would not be a box of the merged dim). Samples and the sequence split as everywhere.
"""

from __future__ import annotations

import jax

from models.labels import Label, Merged, Role, Space
from models.kinds.base import KindSpec
from models.op_value import Op, OpKind

SPLITTABLE = ("sample", "sequence", "heads")


def _head_labels(shape) -> tuple[Label, ...]:
    batch, sequence, heads, head_dim = shape
    return (Label("sample", batch, Role.SAMPLE), Label("sequence", sequence, Role.SEQUENCE),
            Label("heads", heads, Role.HEADS), Label("head_dim", head_dim, Role.HIDDEN))


MERGED = ("sample", "sequence", Merged(("heads", "head_dim")))


class SplitHeads(KindSpec):
    kind = OpKind.SPLIT_HEADS

    def space(self, op: Op) -> Space:
        return Space(_head_labels(op.output_shape), ("sample", "sequence", "heads", "head_dim"), (MERGED,),
                     splittable=frozenset(SPLITTABLE))

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        x = inputs[0]
        return x.reshape(x.shape[:2] + op.output_shape[2:])


class MergeHeads(KindSpec):
    kind = OpKind.MERGE_HEADS

    def space(self, op: Op) -> Space:
        return Space(_head_labels(op.input_shapes[0]), MERGED, (("sample", "sequence", "heads", "head_dim"),),
                     config_labels=SPLITTABLE)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        x = inputs[0]
        return x.reshape(x.shape[:2] + (-1,))
