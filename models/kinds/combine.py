"""add (n inputs of one shape, optional fused ReLU), multiply (two inputs of one shape) and concat (along
the channels, the last dim).

FLOPs: add forward = (n - 1) * elements, backward = forward (the gradient passes to every input, through
the ReLU's mask); concat 0 (a copy). Worked number: ResNet-50's first residual add at 224x224, batch 64
-> 64 * 56 * 56 * 256 = 51 MFLOP.

Every dim of either may be split. A task of add reads its own box of every input. A task of concat
reads, from each input, the part of its channel range that input holds (an empty range where none);
its local op, what calibration times, reads 1/d of every input's channels under a channel split of d.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp

from models.kinds.base import KindSpec, ReluAttrs, elements, relu_if, tensor_labels
from models.labels import Part, Space
from models.op_value import Op, OpKind


class Add(KindSpec):
    kind = OpKind.ADD
    attrs_type = ReluAttrs

    def forward_flops(self, op: Op) -> int:
        return (len(op.input_shapes) - 1) * elements(op.output_shape)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return relu_if(op, total)


class Concat(KindSpec):
    kind = OpKind.CONCAT

    def space(self, op: Op) -> Space:
        """x_j[... part_j(channel)] -> y[... channel], input j the channels [offset_j, offset_j + C_j)."""
        labels = tensor_labels(op.output_shape)
        names = tuple(label.name for label in labels)
        offsets = itertools.accumulate((shape[-1] for shape in op.input_shapes), initial=0)
        return Space(labels, names, tuple(names[:-1] + (Part("channel", offset, shape[-1]),)
                                          for offset, shape in zip(offsets, op.input_shapes)))

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return jnp.concatenate(inputs, axis=-1)


class Multiply(KindSpec):
    """x * y element-wise (a gated MLP's gate times its up-projection). FLOPs: forward = elements,
    backward = 2 * elements (each input's gradient is the other times the output's). Every label splits."""

    kind = OpKind.MULTIPLY

    def forward_flops(self, op: Op) -> int:
        return elements(op.output_shape)

    def backward_flops(self, op: Op) -> int:
        return 2 * elements(op.output_shape)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return inputs[0] * inputs[1]
