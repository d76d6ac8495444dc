"""layer_norm (and RMS norm): normalize each token over its hidden features, as flax's nnx.LayerNorm and
nnx.RMSNorm compute them.

    layer norm: y = (x - mean) * rsqrt(var + eps) * scale + bias     (mean, var = E[x^2] - E[x]^2 over hidden)
    RMS norm:   y = x * rsqrt(E[x^2] + eps) * scale

Parameters: scale and bias per hidden feature (RMS: scale only). FLOPs: layer norm forward = 7 * elements
(the two sums 3, normalize 2, scale and shift 2), RMS forward = 4 * elements (square and sum 2, normalize
1, scale 1); backward = 2 * forward. Worked number: GPT-2's ln_1, 8 sequences of 1024 tokens, width 768
-> 7 * 8 * 1024 * 768 = 44.0 MFLOP.

Every label may be split. A split of the samples or the sequence is independent per token (Korthikanti's
sequence parallelism); a split of hidden leaves each task part of every token's statistics: the tasks of
one token slice all-reduce their two sums per token (sum x and sum x^2; RMS the same two floats are
priced) before normalizing, and again in the backward (`stats_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from models.kinds.base import KindSpec, elements, tensor_labels, token_replicas
from models.labels import Space, local_shape, splits_statistics
from models.op_value import KindAttrs, Op, OpKind


@dataclass(frozen=True)
class LayerNormAttrs(KindAttrs):
    eps: float = 1e-5  # GPT-2's and BERT's (flax's default is 1e-6)
    rms: bool = False  # RMSNorm: no centring, no bias


class LayerNorm(KindSpec):
    kind = OpKind.LAYER_NORM
    attrs_type = LayerNormAttrs

    def forward_flops(self, op: Op) -> int:
        return (4 if op.attrs.rms else 7) * elements(op.output_shape)

    def backward_flops(self, op: Op) -> int:
        return 2 * self.forward_flops(op)

    def space(self, op: Op) -> Space:
        """x[... hidden] -> y[... hidden]; scale, bias [hidden]; statistics over hidden."""
        labels = tensor_labels(op.output_shape)
        names = tuple(label.name for label in labels)
        features = names[-1]
        return token_replicas(Space(labels, names, (names,),
                                    tuple((name, (features,)) for name, _ in op.param_shapes),
                                    statistics=frozenset({features})))

    def stats_bytes(self, op: Op, degrees: tuple[int, ...]) -> int:
        """Two floats per token of the task's shard when the split divides hidden, else 0."""
        space = op.space
        if not splits_statistics(space, degrees):
            return 0
        return 2 * elements(local_shape(space, degrees, space.output)[:-1]) * op.dtype_bytes

    def layer(self, op: Op, rngs):
        features, eps = op.output_shape[-1], op.attrs.eps
        if op.attrs.rms:
            return nnx.RMSNorm(features, epsilon=eps, dtype=op.dtype, param_dtype=op.dtype, rngs=rngs)
        return nnx.LayerNorm(features, epsilon=eps, dtype=op.dtype, param_dtype=op.dtype, rngs=rngs)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        x = inputs[0]
        square = jnp.mean(x * x, axis=-1, keepdims=True)
        if op.attrs.rms:
            return x * lax.rsqrt(square + op.attrs.eps) * params["scale"]
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.maximum(square - mean * mean, 0.0)
        return (x - mean) * lax.rsqrt(var + op.attrs.eps) * params["scale"] + params["bias"]
