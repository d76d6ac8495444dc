"""The random keys of a training step: one key per (seed, step), folded with each random op's name.

    key = step_key(seed=0, step=3)          # inside a jitted step, `step` may be a traced int32
    mask_key = op_key(key, "h0.attn_drop")  # what dropout op h0.attn_drop draws its mask from

Every strategy draws the same bits as one device: an op draws over its whole logical shape inside the
step's SPMD program, and JAX's partitionable threefry (`jax_threefry_partitionable`, on by default)
makes each shard's bits those of the same positions of the whole draw, whatever the sharding
(tests/soap/test_step_transformers.py checks it rather than assuming it). Without a key, a random op draws
step 0 of seed 0: the model's reference loss and the first step of a run with seed 0 see the same masks.
"""

from __future__ import annotations

import zlib

import jax


def step_key(seed: int, step) -> jax.Array:
    """The key of training step `step` (0 first) of a run seeded `seed`."""
    return jax.random.fold_in(jax.random.key(seed), step)


def op_key(key: jax.Array | None, op_name: str) -> jax.Array:
    """The key op `op_name` draws from in the step of `key` (None: step 0 of seed 0); CRC-32 of the name,
    so that an op's bits do not depend on the other ops of the graph."""
    return jax.random.fold_in(step_key(0, 0) if key is None else key, zlib.crc32(op_name.encode()))
