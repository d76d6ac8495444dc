"""global_avg_pool: (N, H, W, C) -> (N, C), the mean over height and width.

FLOPs: forward = N * H * W * C (one add per input element); backward = forward. Worked number:
ResNet-50's final pool at 224x224, batch 64 -> 64 * 7 * 7 * 2048 = 6.4 MFLOP. A task reads all of H and
W of its samples and channels, so it splits on the batch and the channels.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from models.kinds.base import KindSpec, elements
from models.op import Box, Op, OpKind, shard_shape


class GlobalAvgPool(KindSpec):
    kind = OpKind.GLOBAL_AVG_POOL

    def forward_flops(self, op: Op) -> int:
        return elements(op.input_shapes[0])

    def input_boxes(self, op: Op, out_box: Box) -> tuple[Box, ...]:
        _, height, width, _ = op.input_shapes[0]
        return ((out_box[0], (0, height), (0, width), out_box[1]),)

    def input_split(self, op: Op, output_split: tuple) -> tuple[tuple, ...]:
        return ((output_split[0], None, None, output_split[1]),)

    def local_op(self, op: Op, degrees: tuple[int, ...]) -> Op:
        n, height, width, channels = op.input_shapes[0]
        out = shard_shape(op.output_shape, degrees)
        return dataclasses.replace(op, name="", input_shapes=((out[0], height, width, out[1]),), output_shape=out)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return jnp.mean(inputs[0], axis=(1, 2))
