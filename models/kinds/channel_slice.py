"""channel_slice: the channels [offset, offset + C_out) of a tensor (one output of jnp.split on the last axis,
or x[..., a:b]).

FLOPs 0 (a copy). Labels: x[... offset(channel)] -> y[... channel]: the output's channel label reads the
input's channels shifted by the offset (models.labels.Offset, the inverse of a concat's Part). Every label
splits; a task split on the channels reads its own channel range of the input, and its local op is that
range whole (offset 0: a copy).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax

from models.kinds.base import KindSpec, tensor_labels
from models.labels import Offset, Space
from models.op_value import KindAttrs, Op, OpKind


@dataclass(frozen=True)
class ChannelSliceAttrs(KindAttrs):
    offset: int


class ChannelSlice(KindSpec):
    kind = OpKind.CHANNEL_SLICE
    attrs_type = ChannelSliceAttrs

    def space(self, op: Op) -> Space:
        labels = tensor_labels(op.output_shape)
        names = tuple(label.name for label in labels)
        return Space(labels, names, (names[:-1] + (Offset(names[-1], op.attrs.offset, op.input_shapes[0][-1]),),))

    def local_op(self, op: Op, degrees: tuple[int, ...]) -> Op:
        local = super().local_op(op, degrees)
        return dataclasses.replace(local, attrs=ChannelSliceAttrs(offset=0))

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        offset = op.attrs.offset
        return inputs[0][..., offset:offset + op.output_shape[-1]]
