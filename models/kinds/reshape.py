"""flatten: (N, H, W, C) -> (N, H*W*C), a reshape (0 FLOPs).

Its features interleave H, W and C of its input, so a feature split would need a non-box slice: it
splits on the batch only, and each task reads all of H, W and C of its samples.
"""

from __future__ import annotations

import jax

from models.kinds.base import KindSpec, tensor_labels
from models.labels import Label, Role, Space
from models.op_value import Op, OpKind


class Flatten(KindSpec):
    kind = OpKind.FLATTEN

    def space(self, op: Op) -> Space:
        """x[sample in_height in_width in_channel] -> y[sample channel], channel = the three merged."""
        samples, height, width, channels = op.input_shapes[0]
        labels = tensor_labels(op.output_shape) + (
            Label("in_height", height, Role.HEIGHT), Label("in_width", width, Role.WIDTH),
            Label("in_channel", channels, Role.CHANNEL))
        return Space(labels, ("sample", "channel"), (("sample", "in_height", "in_width", "in_channel"),),
                     splittable=frozenset({"sample"}))

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return inputs[0].reshape(inputs[0].shape[0], -1)
