"""Measurements on this process's JAX devices, for calibration: one op with its optimizer update, the links.

    python -m simulator.calibrate --model alexnet --gpus 2      # runs these inside pinned workers

Every timing compiles and warms up first, then takes the median of several runs, each waited for with
`block_until_ready` (soap.timing.time_steps). An op is timed as its local op (what one task computes,
models.op.local_op): forward alone, and forward plus VJP returning the forward's output beside the
gradients; backward = the difference, as a training step computes the backward after a forward whose
output it keeps (the next op reads it). An op's optimizer update (soap.step's SGD with momentum, each
call's new parameters and momentum fed to the next as a training loop does) is timed at its own parameter
shapes, two ways, and the smaller counts: alone, and as forward, VJP and update in one program minus
forward and VJP. On one core the rate ranges 5x between a 4 MiB and a 64 MiB kernel (the caches), so one
rate for all sizes was 2-4x off for some ops; alone, a 64 MiB update ran at 1.2 ms/MiB, after its
gradient in one program at 0.63-0.72, as inside a step (benchmarks.op_breakdown: fc7's 40.6 ms); as a
difference, a small update is lost in its op's noise (conv2's: 5.6 ms, against 0.4 alone and in a step).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from models.network import apply_op, layer_params, op_layer
from models.op import Op
from soap.timing import time_steps
from simulator.cost import OpCost
from soap.step import sgd_momentum

Program = tuple[Callable, tuple]  # a jitted function and its arguments
MiB = 2**20


def local_op_programs(op: Op) -> tuple[Program, Program, Program | None]:
    """The programs calibration times for `op` (a local op), jitted, each with its arguments: its
    forward; its forward plus VJP, which returns the forward's output beside the gradients; and, for an op
    with parameters (else None), forward, VJP and the optimizer update, which returns the output, the new
    parameters and the new optimizer state (the second and third arguments of the next call); it returns
    the input's gradient too, which a step computes (XLA would drop an unused one)."""
    layer = op_layer(op, nnx.Rngs(0))
    params = layer_params(layer) if layer is not None else {}
    rng = np.random.default_rng(0)
    inputs = tuple(jnp.asarray(rng.standard_normal(shape), dtype=op.dtype) for shape in op.input_shapes)
    labels = jnp.zeros((op.input_shapes[0][0],), jnp.int32) if op.spec.reads_labels else None

    def forward(params, inputs):
        return apply_op(op, params or None, inputs, labels)

    # The output's gradient is an argument of random values: a constant one (jnp.ones_like) lets XLA fold
    # much of the backward away (a batch norm's backward timed 0.1-3 ms alone).
    cotangent = jnp.asarray(rng.standard_normal(op.output_shape), dtype=op.dtype)

    # The output is returned, as a step keeps it for the next op: returning only the gradients let XLA
    # drop every part of the forward the backward does not read, for a conv without ReLU all of it (its
    # gradients need only its input, kernel and output gradient), so backward = total - forward came out
    # short by the forward (one core, 2026-11-30: ResNet-18's res2a_branch2b forward 26 ms, forward plus
    # VJP 69 ms without the forward conv, 93 ms with it; its ops summed 23-26% under its step, -3% to +9% now).
    def forward_backward(params, inputs, cotangent):
        if not op.input_grad:  # the data batch: a training step differentiates the weights only
            output, pullback = jax.vjp(lambda params: forward(params, inputs), params)
        else:
            output, pullback = jax.vjp(forward, params, inputs)
        return output, pullback(cotangent)

    optimizer = sgd_momentum()

    def forward_backward_update(inputs, params, opt_state, cotangent):
        output, (grads, *input_grads) = forward_backward(params, inputs, cotangent)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (output, input_grads), optax.apply_updates(params, updates), opt_state

    update = ((jax.jit(forward_backward_update), (inputs, params, optimizer.init(params), cotangent))
              if params else None)
    return (jax.jit(forward), (params, inputs)), (jax.jit(forward_backward), (params, inputs, cotangent)), update


def time_local_op(op: Op, warmup: int = 2, repeats: int = 7) -> OpCost:
    """Forward, backward and update milliseconds of `op` (a local op) on this process's first device."""
    (forward, forward_args), (forward_backward, args), update = local_op_programs(op)
    # Outputs kept, as a step keeps its activations: each call writes fresh memory (soap.timing.time_steps).
    # Gradients are not kept: a step consumes them (the update, the previous op's backward) and frees them.
    forward_ms = time_steps(lambda: forward(*forward_args), warmup, repeats, keep_outputs=True).median_ms

    def backward() -> jax.Array:
        output, gradients = forward_backward(*args)
        jax.block_until_ready(gradients)
        return output

    total_ms = time_steps(backward, warmup, repeats, keep_outputs=True).median_ms
    update_ms = 0.0
    if update is not None:
        program, (inputs, *state, cotangent) = update

        def train() -> jax.Array:  # the new parameters and momentum replace the old, as in a training loop
            (output, input_grads), *state[:] = program(inputs, *state, cotangent)
            jax.block_until_ready((input_grads, state))
            return output

        after_gradient_ms = max(time_steps(train, warmup, repeats, keep_outputs=True).median_ms - total_ms, 0.0)
        update_ms = min(after_gradient_ms, time_update_alone_ms(state[0], warmup, repeats))
    return OpCost(forward_ms, max(total_ms - forward_ms, 0.0), update_ms)


def time_update_alone_ms(params: dict, warmup: int = 2, repeats: int = 7) -> float:
    """The optimizer update of `params` (arrays of an op's parameter shapes) against random gradients,
    fed back from call to call."""
    optimizer = sgd_momentum()
    rng = np.random.default_rng(1)
    grads = {name: jnp.asarray(rng.standard_normal(value.shape), value.dtype) for name, value in params.items()}

    @jax.jit
    def update(params, opt_state):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    state = [params, optimizer.init(params)]

    def train() -> tuple:
        state[:] = update(*state)
        return state[0]

    return time_steps(train, warmup, repeats).median_ms


_INNER_DIM_ROWS = 128  # a batch of activations split on its features


def _ring_mesh(num_devices: int | None) -> jax.sharding.Mesh:
    """The first `num_devices` devices (all of them if None: a cluster has one per worker) in a ring."""
    devices = jax.devices()[:num_devices]
    return jax.sharding.Mesh(np.array(devices), ("ring",), axis_types=(AxisType.Auto,))


def _per_device_array(mesh, num_bytes: int) -> jax.Array:
    """A global array whose shard on each device holds `num_bytes` bytes of float32."""
    per_device = max(num_bytes // 4, 1)
    sharding = NamedSharding(mesh, PartitionSpec("ring"))
    shape = (per_device * mesh.size,)
    return jax.make_array_from_callback(shape, sharding, lambda index: np.ones((per_device,), np.float32))


def _per_device_columns(mesh, num_bytes: int) -> jax.Array:
    """A (128, columns) float32 array split on its columns, `num_bytes` on each device."""
    columns = max(num_bytes // (4 * _INNER_DIM_ROWS), 1)
    sharding = NamedSharding(mesh, PartitionSpec(None, "ring"))
    return jax.make_array_from_callback((_INNER_DIM_ROWS, columns * mesh.size), sharding,
                                        lambda index: np.ones((_INNER_DIM_ROWS, columns), np.float32))


def time_reshard_ms(num_bytes: int, num_devices: int | None = None, inner_dim: bool = False, warmup: int = 2,
                    repeats: int = 7) -> float:
    """An array split over the devices, `num_bytes` on each, made whole on every device by XLA's resharding
    (an all-gather): how a training step's program moves the input slices a task reads from other devices.
    Each device receives (N-1) * num_bytes. Split on the leading dim (a batch split) by default; with
    `inner_dim`, a (128, columns) array split on its columns, as a channel or feature split is: XLA
    transposes around the collective (measured 2026-11-25 on 2 workers, 16 MB each: 64 ms against 27).
    (On gloo resharding is 2-2.5x slower than a ppermute of the same bytes, measured 2026-11-24: 16 MB in
    32.9 ms against 13.5.)"""
    mesh = _ring_mesh(num_devices)
    gather = jax.jit(lambda a: a, out_shardings=NamedSharding(mesh, PartitionSpec()))
    x = _per_device_columns(mesh, num_bytes) if inner_dim else _per_device_array(mesh, num_bytes)
    return time_steps(lambda: gather(x), warmup, repeats).median_ms


def time_allreduce_ms(num_bytes: int, num_devices: int | None = None, warmup: int = 2, repeats: int = 7) -> float:
    """All-reduce (psum) of `num_bytes` held by every device."""
    mesh = _ring_mesh(num_devices)
    reduce = jax.jit(jax.shard_map(lambda a: jax.lax.psum(a, "ring"), mesh=mesh,
                                   in_specs=PartitionSpec("ring"), out_specs=PartitionSpec("ring")))
    x = _per_device_array(mesh, num_bytes)
    return time_steps(lambda: reduce(x), warmup, repeats).median_ms


def time_overlap(num_devices: int | None = None, matmul_size: int = 1024, allreduce_bytes: int = 32 * MiB,
                 repeats: int = 5) -> dict[str, float]:
    """Whether communication overlaps compute: a matmul chain and an independent all-reduce, alone and
    in one program (shared/REFERENCE.md: on XLA:CPU with gloo, 48.6 ms + 53.4 ms took 99.7 ms together)."""
    mesh = _ring_mesh(num_devices)
    spec = PartitionSpec("ring")
    a = _per_device_array(mesh, matmul_size * matmul_size * 4)
    x = _per_device_array(mesh, allreduce_bytes)

    def compute(a):
        m = a.reshape(matmul_size, matmul_size)
        for _ in range(4):
            m = jnp.tanh(m @ m)
        return m.reshape(-1)

    def both(a, x):
        return compute(a), jax.lax.psum(x, "ring")

    only_compute = jax.jit(jax.shard_map(compute, mesh=mesh, in_specs=spec, out_specs=spec))
    only_comm = jax.jit(jax.shard_map(lambda x: jax.lax.psum(x, "ring"), mesh=mesh, in_specs=spec, out_specs=spec))
    together = jax.jit(jax.shard_map(both, mesh=mesh, in_specs=(spec, spec), out_specs=(spec, spec)))
    # The fastest of three interleaved rounds each: one slow round (another process busy) once made a
    # slow compute look overlapped with the all-reduce.
    rounds = [(time_steps(lambda: only_compute(a), 2, repeats).median_ms,
               time_steps(lambda: only_comm(x), 2, repeats).median_ms,
               time_steps(lambda: together(a, x), 2, repeats).median_ms) for _ in range(3)]
    compute_ms, allreduce_ms, together_ms = (min(column) for column in zip(*rounds))
    return {"compute_ms": compute_ms, "allreduce_ms": allreduce_ms, "together_ms": together_ms}
