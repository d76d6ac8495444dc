"""flatten: (N, H, W, C) -> (N, H*W*C), a reshape (0 FLOPs).

Its features interleave H, W and C of its input, so a feature split would need a non-box slice: it
splits on the batch only, and each task reads all of H, W and C of its samples.
"""

from __future__ import annotations

import dataclasses

import jax

from models.kinds.base import KindSpec, batch_only
from models.op import Box, Dim, Op, OpKind


class Flatten(KindSpec):
    kind = OpKind.FLATTEN

    def parallel_dims(self, op: Op) -> frozenset[Dim]:
        return frozenset({Dim.SAMPLE})

    def input_boxes(self, op: Op, out_box: Box) -> tuple[Box, ...]:
        _, height, width, channels = op.input_shapes[0]
        return ((out_box[0], (0, height), (0, width), (0, channels)),)

    def input_split(self, op: Op, output_split: tuple) -> tuple[tuple, ...]:
        return batch_only(op, output_split)

    def local_op(self, op: Op, degrees: tuple[int, ...]) -> Op:
        n = op.output_shape[0] // degrees[0]
        return dataclasses.replace(op, name="", input_shapes=((n,) + op.input_shapes[0][1:],),
                                   output_shape=(n, op.output_shape[1]))

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return inputs[0].reshape(inputs[0].shape[0], -1)
