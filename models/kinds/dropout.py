"""dropout: each element kept with probability 1 - rate and scaled by 1 / (1 - rate), else 0 (training).

FLOPs: forward = 2 * elements (the comparison of a random draw, the scaling), backward = elements (the
mask times the gradient). Worked number: GPT-2's residual dropout, 8 sequences of 1024 tokens, width 768
-> 12.6 MFLOP forward. Every label splits.

Its mask comes from the step's key folded with the op's name (models.keys.op_key): a new mask every step,
the same bits on every strategy (the op draws over its whole shape in the step's SPMD program, and
partitionable threefry gives each shard the bits of its positions). Without a key (`apply`: calibration,
the reference loss) it draws step 0 of seed 0. Calibration times a task drawing its own shard's mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from models.keys import op_key
from models.kinds.base import KindSpec, elements
from models.op_value import KindAttrs, Op, OpKind


@dataclass(frozen=True)
class DropoutAttrs(KindAttrs):
    rate: float


class Dropout(KindSpec):
    kind = OpKind.DROPOUT
    attrs_type = DropoutAttrs

    def forward_flops(self, op: Op) -> int:
        return 2 * elements(op.output_shape)

    def backward_flops(self, op: Op) -> int:
        return elements(op.output_shape)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return self.apply_keyed(op, params, inputs, labels, None)

    def apply_keyed(self, op: Op, params, inputs: tuple[jax.Array, ...], labels, key) -> jax.Array:
        x, rate = inputs[0], op.attrs.rate
        if rate == 0:
            return x
        keep = jax.random.bernoulli(op_key(key, op.name), 1 - rate, x.shape)
        return jnp.where(keep, x / (1 - rate), 0)
