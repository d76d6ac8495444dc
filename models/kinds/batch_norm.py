"""batch_norm in training mode: statistics over every dim but the channels, whatever the split.

    y = (x - mean) / sqrt(var + 1e-5) * scale + bias     (mean, var over N, H, W; var = E[x^2] - E[x]^2)

as flax's nnx.BatchNorm computes it (use_fast_variance). Parameters: scale and bias per channel; state:
the running mean and variance per channel (non-trainable), updated by every training step with momentum
0.99 as flax updates them. FLOPs: forward = 7 * elements (the two sums
3, normalize 2, scale and shift 2); backward = 2 * forward. Worked number: ResNet-50's bn1 at 224x224,
batch 64 -> 7 * 64 * 112 * 112 * 64 = 360 MFLOP.

A split of the batch, height or width leaves each task a part of the statistics: the tasks of one
channel slice all-reduce their per-channel sums (2 * channels floats) before normalizing, and again in
the backward (the sums of the gradient and of the gradient times the normalized input): `stats_bytes`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from models.kinds.base import KindSpec, ReluAttrs, channel_arrays, elements, tensor_labels
from models.labels import Space, splits_statistics
from models.op_value import Op, OpKind

EPSILON = 1e-5
MOMENTUM = 0.99  # flax's default


class BatchNorm(KindSpec):
    kind = OpKind.BATCH_NORM
    attrs_type = ReluAttrs

    def forward_flops(self, op: Op) -> int:
        return 7 * elements(op.output_shape)

    def backward_flops(self, op: Op) -> int:
        return 2 * self.forward_flops(op)

    def space(self, op: Op) -> Space:
        """x[sample height width channel] -> y[...]; scale, bias, mean, var [channel]; statistics over every
        label but the channel."""
        labels = tensor_labels(op.output_shape)
        names = tuple(label.name for label in labels)
        return Space(labels, names, (names,), channel_arrays(op.param_shapes), channel_arrays(op.state_shapes),
                     statistics=frozenset(names) - {"channel"})

    def stats_bytes(self, op: Op, degrees: tuple[int, ...]) -> int:
        if not splits_statistics(op.space, degrees):
            return 0
        return 2 * (op.output_shape[-1] // degrees[-1]) * op.dtype_bytes

    def layer(self, op: Op, rngs):
        return nnx.BatchNorm(op.output_shape[-1], epsilon=EPSILON, dtype=op.dtype, param_dtype=op.dtype, rngs=rngs)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return batch_norm(inputs[0], params["scale"], params["bias"], op.attrs.relu)[0]

    def apply_with_state(self, op: Op, params, state, inputs: tuple[jax.Array, ...], labels, key=None):
        """As nnx.BatchNorm in training mode: running = MOMENTUM * running + (1 - MOMENTUM) * batch."""
        y, mean, var = batch_norm(inputs[0], params["scale"], params["bias"], op.attrs.relu)
        new_state = {"mean": MOMENTUM * state["mean"] + (1 - MOMENTUM) * mean,
                     "var": MOMENTUM * state["var"] + (1 - MOMENTUM) * var}
        return y, new_state

    def init_state(self, op: Op) -> dict[str, np.ndarray]:
        channels = op.output_shape[-1]
        return {"mean": np.zeros((channels,), op.dtype), "var": np.ones((channels,), op.dtype)}


def _statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    return mean, jnp.maximum(jnp.mean(x * x, axis=axes) - mean * mean, 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, relu: bool):
    """(output, batch mean, batch variance) of training-mode batch norm, ReLU fused where `relu`.

    Its backward is the closed form (the gradients of mean and variance folded in):
        dy' = dy * (y > 0) with ReLU;  dbias = sum(dy');  dscale = sum(dy' * xhat)
        dx = scale * rstd * (dy' - dbias / n - xhat * dscale / n)
    Left to autodiff, XLA:CPU runs the backward of a batch norm with ReLU 4-12x slower than its forward
    and backward without ReLU (one core, 2026-11-30: 25 ms against 2.1 ms at 128x16x16x64)."""
    mean, var = _statistics(x)
    y = (x - mean) * lax.rsqrt(var + EPSILON) * scale + bias
    return (jax.nn.relu(y) if relu else y), mean, var


def _batch_norm_forward(x, scale, bias, relu):
    mean, var = _statistics(x)
    rstd = lax.rsqrt(var + EPSILON)
    xhat = (x - mean) * rstd
    y = xhat * scale + bias
    if relu:
        y = jax.nn.relu(y)
    return (y, mean, var), (xhat, rstd, scale, y)


def _batch_norm_backward(relu, residuals, cotangents):
    xhat, rstd, scale, y = residuals
    dy = cotangents[0]  # the statistics feed only the running averages: no gradient flows back through them
    if relu:
        dy = jnp.where(y > 0, dy, 0)
    axes = tuple(range(xhat.ndim - 1))
    count = xhat.size // xhat.shape[-1]
    dbias = jnp.sum(dy, axis=axes)
    dscale = jnp.sum(dy * xhat, axis=axes)
    dx = (scale * rstd) * (dy - dbias / count - xhat * (dscale / count))
    return dx, dscale, dbias


batch_norm.defvjp(_batch_norm_forward, _batch_norm_backward)
