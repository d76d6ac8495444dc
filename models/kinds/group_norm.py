"""group_norm: normalize each sample's channel groups over height, width and the group's channels, as flax's
nnx.GroupNorm computes it (no running statistics: training and evaluation alike).

    y = (x - mean) * rsqrt(var + eps) * scale + bias    (mean, var = E[x^2] - E[x]^2 per sample and group)

Parameters: scale and bias per channel. FLOPs: forward = 7 * elements (as layer norm: the two sums 3,
normalize 2, scale and shift 2); backward = 2 * forward. Worked number: a ResNet-50 stage-1 group norm of
32 groups at 56x56x256, batch 64 -> 7 * 64 * 56 * 56 * 256 = 360 MFLOP.

Labels: x[sample height width (channel group_channel)] -> y[sample height width (channel group_channel)],
scale and bias [(channel group_channel)], where `channel` counts the groups (as a grouped conv's does,
models/kinds/conv.py) and `group_channel` the channels of one. A config splits the samples, and the
channels in whole groups: each task then holds its groups' whole statistics. Height and width are config
labels that do not split (a spatial split would leave each task part of its groups' statistics).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from models.kinds.base import KindSpec, elements
from models.labels import Label, Merged, Role, Space
from models.op_value import KindAttrs, Op, OpKind

CHANNELS = Merged(("channel", "group_channel"))


@dataclass(frozen=True)
class GroupNormAttrs(KindAttrs):
    groups: int
    eps: float = 1e-6  # flax's default


class GroupNorm(KindSpec):
    kind = OpKind.GROUP_NORM
    attrs_type = GroupNormAttrs

    def forward_flops(self, op: Op) -> int:
        return 7 * elements(op.output_shape)

    def backward_flops(self, op: Op) -> int:
        return 2 * self.forward_flops(op)

    def space(self, op: Op) -> Space:
        n, height, width, channels = op.output_shape
        groups = op.attrs.groups
        labels = (Label("sample", n, Role.SAMPLE), Label("height", height, Role.HEIGHT),
                  Label("width", width, Role.WIDTH), Label("channel", groups, Role.CHANNEL),
                  Label("group_channel", channels // groups, Role.CHANNEL))
        names = ("sample", "height", "width", CHANNELS)
        return Space(labels, names, (names,), tuple((name, (CHANNELS,)) for name, _ in op.param_shapes),
                     config_labels=("sample", "height", "width", "channel"),
                     splittable=frozenset({"sample", "channel"}))

    def local_op(self, op: Op, degrees: tuple[int, ...]) -> Op:
        """A channel split leaves each task groups / degree groups."""
        local = super().local_op(op, degrees)
        groups = op.attrs.groups // op.space.degree_map(degrees)["channel"]
        return dataclasses.replace(local, attrs=dataclasses.replace(op.attrs, groups=groups))

    def layer(self, op: Op, rngs):
        return nnx.GroupNorm(op.output_shape[-1], num_groups=op.attrs.groups, epsilon=op.attrs.eps, dtype=op.dtype,
                             param_dtype=op.dtype, rngs=rngs)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        x, groups = inputs[0], op.attrs.groups
        grouped = x.reshape(x.shape[:-1] + (groups, x.shape[-1] // groups))
        axes = (1, 2, 4)
        mean = jnp.mean(grouped, axis=axes, keepdims=True)
        var = jnp.maximum(jnp.mean(grouped * grouped, axis=axes, keepdims=True) - mean * mean, 0.0)
        y = ((grouped - mean) * lax.rsqrt(var + op.attrs.eps)).reshape(x.shape)
        return y * params["scale"] + params["bias"]
