"""dropout: each element kept with probability 1 - rate and scaled by 1 / (1 - rate), else 0 (training).

FLOPs: forward = 2 * elements (the comparison of a random draw, the scaling), backward = elements (the
mask times the gradient). Worked number: GPT-2's residual dropout, 8 sequences of 1024 tokens, width 768
-> 12.6 MFLOP forward. Every label splits.

Its mask comes from a fixed key folded with a hash of the op's name (CRC-32): `apply` takes no key yet, so
every step draws the same mask; the runtime's issue passes per-step keys. A task of a split draws its own
mask on its shard, not a slice of the whole op's.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from models.kinds.base import KindSpec, elements
from models.op import Op, OpKind

SEED = 0


@dataclass(frozen=True)
class DropoutAttrs:
    rate: float


class Dropout(KindSpec):
    kind = OpKind.DROPOUT
    attrs_type = DropoutAttrs

    def forward_flops(self, op: Op) -> int:
        return 2 * elements(op.output_shape)

    def backward_flops(self, op: Op) -> int:
        return elements(op.output_shape)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        x, rate = inputs[0], op.attrs.rate
        if rate == 0:
            return x
        key = jax.random.fold_in(jax.random.key(SEED), zlib.crc32(op.name.encode()))
        keep = jax.random.bernoulli(key, 1 - rate, x.shape)
        return jnp.where(keep, x / (1 - rate), 0)
