"""global_avg_pool and global_max_pool: (N, H, W, C) -> (N, C), the mean or the maximum over height and width.

FLOPs: forward = N * H * W * C (one add or compare per input element); backward = forward. Worked number:
ResNet-50's final pool at 224x224, batch 64 -> 64 * 7 * 7 * 2048 = 6.4 MFLOP. A task reads all of H and
W of its samples and channels, so it splits on the batch and the channels. The maximum's gradient is
jnp.max's (shared among equal maxima), as a module computing jnp.max(x, axis=(1, 2)) has it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from models.kinds.base import KindSpec, elements, tensor_labels
from models.labels import Label, Role, Space
from models.op_value import Op, OpKind


class GlobalAvgPool(KindSpec):
    kind = OpKind.GLOBAL_AVG_POOL

    def forward_flops(self, op: Op) -> int:
        return elements(op.input_shapes[0])

    def space(self, op: Op) -> Space:
        """x[sample in_height in_width channel] -> y[sample channel]."""
        _, height, width, _ = op.input_shapes[0]
        labels = tensor_labels(op.output_shape) + (Label("in_height", height, Role.HEIGHT),
                                                   Label("in_width", width, Role.WIDTH))
        return Space(labels, ("sample", "channel"), (("sample", "in_height", "in_width", "channel"),))

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return jnp.mean(inputs[0], axis=(1, 2))


class GlobalMaxPool(GlobalAvgPool):
    kind = OpKind.GLOBAL_MAX_POOL

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return jnp.max(inputs[0], axis=(1, 2))
