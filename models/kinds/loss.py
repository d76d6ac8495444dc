"""softmax_xent: per-sample softmax cross-entropy of (N, classes) logits against integer labels.

FLOPs: forward = 5 * N * classes (max, subtract, exp, sum, log-gather); backward = 2 * N * classes.
Worked number: batch 128, 200 classes -> 128 KFLOP forward. It reduces over its classes, so it splits
on the batch only; a training step averages its per-sample losses.
"""

from __future__ import annotations

import dataclasses

import jax
import optax

from models.kinds.base import KindSpec, batch_only, elements
from models.op import Box, Dim, Op, OpKind


class SoftmaxXent(KindSpec):
    kind = OpKind.SOFTMAX_XENT
    reads_labels = True

    def parallel_dims(self, op: Op) -> frozenset[Dim]:
        return frozenset({Dim.SAMPLE})

    def forward_flops(self, op: Op) -> int:
        return 5 * elements(op.input_shapes[0])

    def backward_flops(self, op: Op) -> int:
        return 2 * elements(op.input_shapes[0])

    def input_boxes(self, op: Op, out_box: Box) -> tuple[Box, ...]:
        return ((out_box[0], (0, op.input_shapes[0][1])),)

    def input_split(self, op: Op, output_split: tuple) -> tuple[tuple, ...]:
        return batch_only(op, output_split)

    def local_op(self, op: Op, degrees: tuple[int, ...]) -> Op:
        n = op.output_shape[0] // degrees[0]
        return dataclasses.replace(op, name="", input_shapes=((n, op.input_shapes[0][1]),), output_shape=(n,))

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return optax.losses.softmax_cross_entropy_with_integer_labels(inputs[0], labels)
