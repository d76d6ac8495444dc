"""pool2d (max) and avg_pool2d: windowed pools over height and width, per channel, SAME or VALID.

FLOPs: forward = N * Ho * Wo * C * Kh * Kw (one compare or add per window element); backward = forward.
Worked number: AlexNet pool1 at 64x64, batch 128 -> 128 * 7 * 7 * 64 * 3 * 3 = 3.6 MFLOP.
The average pool counts the padding in its windows (flax's count_include_pad=True).

The max pool has its own backward (`max_pool`): XLA:CPU expands select-and-scatter into four int32 iota
tensors, an argmax reduce-window and a scatter (AlexNet's pool1 on half a Tiny ImageNet batch, one core:
11.7 ms that way, 5.5 ms this way; 300 against 88 ms at Dogs vs Cats' 55x55).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from models.kinds.base import KindSpec, elements, tensor_labels
from models.kinds.window import spatial_windows
from models.labels import Space
from models.op_value import FlatFields, KindAttrs, Op, OpKind, Padding


@dataclass(frozen=True)
class PoolAttrs(KindAttrs):
    """A pool's window (pool2d, avg_pool2d); `halo`: a task's local op that is a height or width shard of
    it, read with its halo (never a graph's op)."""

    kernel_hw: tuple[int, int]
    stride_hw: tuple[int, int]
    padding: Padding
    halo: bool = False

    def flat(self) -> FlatFields:
        return FlatFields(self.kernel_hw, self.stride_hw, self.padding, halo=self.halo)

    @classmethod
    def from_flat(cls, flat: FlatFields) -> PoolAttrs:
        return cls(flat.kernel_hw, flat.stride_hw, flat.padding, flat.halo)


class _Pool(KindSpec):
    attrs_type = PoolAttrs

    def forward_flops(self, op: Op) -> int:
        kh, kw = op.attrs.kernel_hw
        return elements(op.output_shape) * kh * kw

    def space(self, op: Op) -> Space:
        """x[sample window(height) window(width) channel] -> y[sample height width channel]."""
        labels = tensor_labels(op.output_shape)
        height, width = spatial_windows(op)
        return Space(labels, tuple(label.name for label in labels), (("sample", height, width, "channel"),))


class MaxPool2D(_Pool):
    kind = OpKind.POOL2D

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        attrs = op.attrs
        return max_pool(inputs[0], attrs.kernel_hw, attrs.stride_hw, attrs.padding.value)


class AvgPool2D(_Pool):
    kind = OpKind.AVG_POOL2D

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        attrs = op.attrs
        return nnx.avg_pool(inputs[0], window_shape=attrs.kernel_hw, strides=attrs.stride_hw,
                            padding=attrs.padding.value, count_include_pad=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int], padding: str) -> jax.Array:
    """nnx.max_pool of NHWC `x`, with a backward that gives each window's gradient to the window's first
    maximum in row-major order (as XLA's select-and-scatter does, bit for bit where the sums are exact)
    by a mask per window offset."""
    return nnx.max_pool(x, window_shape=window, strides=strides, padding=padding)


def _max_pool_forward(x, window, strides, padding):
    y = max_pool(x, window, strides, padding)
    return y, (x, y)


def _max_pool_backward(window, strides, padding, residuals, dy):
    x, y = residuals
    (kh, kw), (sh, sw) = window, strides
    pads = lax.padtype_to_pads(x.shape[1:3], window, strides, padding)
    padded = lax.pad(x, jnp.array(-jnp.inf, x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
    n, height, width, channels = padded.shape
    _, out_h, out_w, _ = y.shape
    span_h, span_w = (out_h - 1) * sh + 1, (out_w - 1) * sw + 1
    dx = jnp.zeros_like(padded)
    taken = jnp.zeros(y.shape, bool)
    for i in range(kh):
        for j in range(kw):
            seen = lax.slice(padded, (0, i, j, 0), (n, i + span_h, j + span_w, channels), (1, sh, sw, 1))
            first = (seen == y) & ~taken
            taken = taken | first
            dx = dx + lax.pad(jnp.where(first, dy, 0).astype(dx.dtype), jnp.array(0, dx.dtype),
                              [(0, 0, 0), (i, height - i - span_h, sh - 1), (j, width - j - span_w, sw - 1), (0, 0, 0)])
    (top, _), (left, _) = pads
    return (dx[:, top:top + x.shape[1], left:left + x.shape[2], :],)


max_pool.defvjp(_max_pool_forward, _max_pool_backward)
