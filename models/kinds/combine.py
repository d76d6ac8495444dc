"""add (n inputs of one shape, optional fused ReLU) and concat (along the channels, the last dim).

FLOPs: add forward = (n - 1) * elements, backward = forward (the gradient passes to every input, through
the ReLU's mask); concat 0 (a copy). Worked number: ResNet-50's first residual add at 224x224, batch 64
-> 64 * 56 * 56 * 256 = 51 MFLOP.

Every dim of either may be split. A task of add reads its own box of every input. A task of concat
reads, from each input, the part of its channel range that input holds (an empty range where none);
its local op, what calibration times, reads 1/d of every input's channels under a channel split of d.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from models.kinds.base import KindSpec, elements, relu_if
from models.op import Box, Op, OpKind, shard_shape


class Add(KindSpec):
    kind = OpKind.ADD

    def forward_flops(self, op: Op) -> int:
        return (len(op.input_shapes) - 1) * elements(op.output_shape)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return relu_if(op, total)


class Concat(KindSpec):
    kind = OpKind.CONCAT

    def input_boxes(self, op: Op, out_box: Box) -> tuple[Box, ...]:
        start, stop = out_box[-1]
        boxes, offset = [], 0
        for shape in op.input_shapes:
            low, high = max(start, offset) - offset, min(stop, offset + shape[-1]) - offset
            boxes.append(tuple(out_box[:-1]) + (((low, high) if low < high else (0, 0)),))
            offset += shape[-1]
        return tuple(boxes)

    def input_split(self, op: Op, output_split: tuple) -> tuple[tuple, ...]:
        return tuple(tuple(output_split[:-1]) + (None,) for _ in op.input_shapes)

    def local_op(self, op: Op, degrees: tuple[int, ...]) -> Op:
        inputs = tuple(shard_shape(shape[:-1], degrees[:-1]) + (max(shape[-1] // degrees[-1], 1),)
                       for shape in op.input_shapes)
        return dataclasses.replace(op, name="", input_shapes=inputs, output_shape=shard_shape(op.output_shape, degrees))

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return jnp.concatenate(inputs, axis=-1)
