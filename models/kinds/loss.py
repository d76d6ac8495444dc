"""softmax_xent: per-sample softmax cross-entropy of (N, classes) logits against integer labels.

FLOPs: forward = 5 * N * classes (max, subtract, exp, sum, log-gather); backward = 2 * N * classes.
Worked number: batch 128, 200 classes -> 128 KFLOP forward. It reduces over its classes, so it splits
on the batch only; a training step averages its per-sample losses.
"""

from __future__ import annotations

import jax
import optax

from models.kinds.base import KindSpec, elements
from models.labels import Label, Role, Space
from models.op_value import Op, OpKind


class SoftmaxXent(KindSpec):
    kind = OpKind.SOFTMAX_XENT
    reads_labels = True

    def forward_flops(self, op: Op) -> int:
        return 5 * elements(op.input_shapes[0])

    def backward_flops(self, op: Op) -> int:
        return 2 * elements(op.input_shapes[0])

    def space(self, op: Op) -> Space:
        """logits[sample classes] -> loss[sample]."""
        samples, classes = op.input_shapes[0]
        labels = (Label("sample", samples, Role.SAMPLE), Label("classes", classes, Role.CHANNEL))
        return Space(labels, ("sample",), (("sample", "classes"),))

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return optax.losses.softmax_cross_entropy_with_integer_labels(inputs[0], labels)
