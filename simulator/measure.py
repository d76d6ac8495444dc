"""Measurements on this process's JAX devices, for calibration: one op with its optimizer update, the links.

    python -m simulator.calibrate --model alexnet --gpus 2      # runs these inside pinned workers

An op is timed as its local op (what one task computes, models.op.local_op), each component as its own
jitted program, repeated until its estimate is stable (soap.timing.time_until_stable), so that no
component is the difference of two noisy timings (which came out 0 for half the updates of ResNet-18):
- forward: the op's output from its parameters and inputs, with the residuals its backward will read
  (jax.vjp's pullback, less the arrays that are the op's own inputs or parameters), as a training step's
  forward computes and keeps them: GELU (tanh) on 16x128x1024 takes 1.4 ms for its output alone and
  13.8 ms with its residuals (one core), and the whole step runs the latter;
- backward: the pullback alone, compiled on its own and fed the residuals a forward saved
  (jax.vjp's pullback is a pytree holding them) and a cotangent: the gradients of the parameters and,
  unless the op reads the data batch (op.input_grad False), of the input, all returned, as a step uses them;
- update: the optimizer's step on the op's parameter shapes against fixed random gradients, each call's
  new parameters and state fed to the next as a training loop does; per optimizer (SGD with momentum, the
  runs'; AdamW).
An op's share of a training step is forward + backward + update. Measured on one pinned core
(2026-12-07), AlexNet's conv2 at tiny-imagenet batch 128 (one device: the whole op, 5x5x64x192), first
quartiles of 15 calls, three runs: forward 31.6 / 32.2 / 32.4 ms, backward 64.3 / 71.9 / 68.9 ms, update
(SGD) 0.34 / 0.42 / 0.33 ms, sum 96.2 / 104.5 / 101.7 ms, against 106.8 / 107.3 / 105.0 ms for forward,
VJP and update fused in one program: 3-10% under, when the forward was timed without the residuals its
backward reads. Over a whole single-device step of AlexNet the components' sum came within -0.2% and +2.6%
of the measured step (soap.timing.TimingPolicy); of a 4-layer GPT (width 256, 16 x 128 tokens) it was 20%
under with the forward timed without its residuals (GELU, layer norm and the loss write several).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from models.network import apply_op, layer_params, op_layer, own_param_shapes
from models.op import Op
from simulator.calibration_plan import INPUT_GRADIENT, OUTPUT
from simulator.cost import MEASUREMENTS, ProfileEntry
from soap.optimizer import Optimizer
from soap.step import residuals_without_inputs
from soap.timing import Estimate, TimingPolicy, time_steps, time_until_stable

Program = tuple[Callable, tuple]  # a jitted function and its arguments
KiB, MiB = 2**10, 2**20


@dataclass(frozen=True)
class OpPrograms:
    """The programs calibration times for a local op, jitted: `forward(params, inputs)` -> output;
    `forward_vjp(params, inputs)` -> (output, pullback), the pullback holding the residuals;
    `forward_residuals(params, inputs)` -> the same less the arrays that are its arguments (what a step's
    forward computes and keeps: soap.step.residuals_without_inputs);
    `forward_transposed(params, inputs)` -> forward_residuals' arrays and the output once more, as a
    [features, tokens] matrix; `backward(pullback, cotangent)` -> the gradients (parameters', then the
    input's unless op.input_grad is False); `backward_transposed(pullback, cotangent)` -> those and the
    input gradient once more, transposed (what a step computes where calibration_plan.transposed_copies
    says)."""

    forward: Callable
    forward_vjp: Callable
    forward_residuals: Callable
    forward_transposed: Callable
    backward: Callable
    backward_transposed: Callable
    params: dict
    inputs: tuple
    cotangent: jax.Array


def local_op_programs(op: Op) -> OpPrograms:
    """`op`'s programs with its arguments: the parameters it reads (those it owns from its layer's
    initializers, a tied weight random: the attend head's token table), random inputs of the kind's input
    dtypes (token ids uniform over the whole vocabulary: on a vocabulary shard those of the other shards
    miss its rows, as in a step), random class ids shaped like a loss's output (per sample or per token)
    and a random cotangent."""
    layer = op_layer(op, nnx.Rngs(0))
    rng = np.random.default_rng(0)
    params = {**(layer_params(layer) if layer is not None else {}),
              **{name: jnp.asarray(rng.standard_normal(dict(op.param_shapes)[name]), op.dtype) for name, _ in op.tied}}
    inputs = tuple(_random_input(op, shape, dtype, rng)
                   for shape, dtype in zip(op.input_shapes, op.spec.input_dtypes(op)))
    labels = jnp.asarray(rng.integers(0, op.input_shapes[0][-1], op.output_shape), jnp.int32) \
        if op.spec.reads_labels else None  # class ids: the logits' last dim

    def forward(params, inputs):
        return apply_op(op, params or None, inputs, labels)

    def forward_vjp(params, inputs):
        if not op.input_grad:  # the data batch: a training step differentiates the weights only
            return jax.vjp(lambda params: forward(params, inputs), params)
        return jax.vjp(forward, params, inputs)

    # The output's gradient is an argument of random values: a constant one (jnp.ones_like) lets XLA fold
    # much of the backward away (a batch norm's backward timed 0.1-3 ms alone).
    cotangent = jnp.asarray(rng.standard_normal(op.output_shape), dtype=op.dtype)
    def forward_residuals(params, inputs):
        output, pullback = forward_vjp(params, inputs)
        return output, residuals_without_inputs(pullback, (params, inputs))

    def forward_transposed(params, inputs):
        output, residuals = forward_residuals(params, inputs)
        return output, residuals, _transposed(output)

    def backward_transposed(pullback, cotangent):
        gradients = pullback(cotangent)  # (params', inputs'): the first input's gradient is transposed
        return gradients, _transposed(gradients[-1][0])

    return OpPrograms(jax.jit(forward), jax.jit(forward_vjp), jax.jit(forward_residuals),
                      jax.jit(forward_transposed), jax.jit(lambda pullback, ct: pullback(ct)),
                      jax.jit(backward_transposed), params, inputs, cotangent)


def _transposed(array: jax.Array) -> jax.Array:
    """`array` as a [last dim, the others] matrix: a token tensor laid out as a kernel gradient reads it."""
    return array.reshape(-1, array.shape[-1]).T


def _random_input(op: Op, shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> jax.Array:
    """Standard normal values, or token ids uniform in [0, the kind's ids_bound)."""
    if dtype == "int32":
        return jnp.asarray(rng.integers(0, op.spec.ids_bound(op), shape), jnp.int32)
    return jnp.asarray(rng.standard_normal(shape), dtype)


def update_program(params: dict, optimizer: str) -> Program:
    """`optimizer`'s update of `params` (arrays of an op's parameter shapes), jitted, with its arguments
    (params, optimizer state, random gradients); it returns the new parameters and state."""
    transform = Optimizer(optimizer).transformation()
    rng = np.random.default_rng(1)
    grads = {name: jnp.asarray(rng.standard_normal(value.shape), value.dtype) for name, value in params.items()}

    def update(params, opt_state, grads):
        updates, opt_state = transform.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return jax.jit(update), (params, transform.init(params), grads)


def time_local_op(op: Op, optimizers: tuple[str, ...] = ("sgd",), policy: TimingPolicy = TimingPolicy(),
                  clock: Callable[[], float] = time.perf_counter, transposed: tuple[str, ...] = ()) -> ProfileEntry:
    """Forward, backward and each optimizer's update of `op` (a local op) on this process's first device;
    and the forward or backward writing the transposed copies `transposed` names
    (calibration_plan.transposed_copies)."""
    programs = local_op_programs(op)
    # The forward's outputs are kept, as a step keeps its activations: each call writes fresh memory
    # (soap.timing.time_steps). Gradients are not: a step consumes them (the update, the previous op's
    # backward) and frees them.
    forward = time_until_stable(lambda: programs.forward_residuals(programs.params, programs.inputs), policy,
                                keep_outputs=True, clock=clock)
    forward_transposed = time_until_stable(lambda: programs.forward_transposed(programs.params, programs.inputs),
                                           policy, keep_outputs=True, clock=clock) if OUTPUT in transposed else None
    _, pullback = programs.forward_vjp(programs.params, programs.inputs)
    backward = time_until_stable(lambda: programs.backward(pullback, programs.cotangent), policy, clock=clock)
    backward_transposed = time_until_stable(lambda: programs.backward_transposed(pullback, programs.cotangent), policy,
                                            clock=clock) if INPUT_GRADIENT in transposed else None
    # A tied weight's update is its owner's (one tensor, updated once): only the op's own parameters here.
    own = {name: programs.params[name] for name in own_param_shapes(op)}
    updates = tuple((name, time_update(own, name, policy, clock)) for name in optimizers if own)
    return ProfileEntry(forward, backward, updates, forward_transposed=forward_transposed,
                        backward_transposed=backward_transposed)


def time_update(params: dict, optimizer: str, policy: TimingPolicy = TimingPolicy(),
                clock: Callable[[], float] = time.perf_counter) -> Estimate:
    """`optimizer`'s update of `params`, each call's new parameters and state fed to the next."""
    update, (params, opt_state, grads) = update_program(params, optimizer)
    state = [params, opt_state]

    def step() -> tuple:
        state[:] = update(*state, grads)
        return state

    return time_until_stable(step, policy, clock=clock)


def measure_entry(op: Op, optimizers: tuple[str, ...], transposed: tuple[str, ...] = (),
                  time_op: Callable[..., ProfileEntry] = time_local_op, measurements: int = MEASUREMENTS) -> ProfileEntry:
    """`op`'s entry (`time_op(op, optimizers, transposed=...)`), measured again while it fails its checks
    (ProfileEntry.problems), at most `measurements` times in all; the last one is kept, flagged with what
    it still fails."""
    for _ in range(measurements):
        entry = time_op(op, optimizers, transposed=transposed)
        problems = entry.problems(bool(op.param_bytes), optimizers)
        if not problems:
            return entry
    return replace(entry, flags=problems)


_INNER_DIM_ROWS = 128  # a batch of activations split on its features
# The median, at a fixed count: every worker of a cluster joins each call of a collective, so none may stop on
# its own clock (min_repeats = max_repeats) nor take more calls per sample than the others (a sample is one
# call). The median, not the ops' first quartile: a collective in a step lasts until its slowest worker
# arrives, and priced by the first quartile AlexNet's strategies came out under their measured steps by a
# mean 9.3% (data parallel -3.5%, OWT -7.0%, searched -15.0%; benchmarks.accuracy --gpus 2 --steps 5
# --rounds 2 from an empty cache, 2026-12-07); with the median 6.6% (data parallel +1.9%, OWT +1.1%).
COLLECTIVE_POLICY = TimingPolicy(quantile=0.5, min_repeats=11, max_repeats=11, min_sample_ms=1e-6)


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


def time_reshard_ms(num_bytes: int, num_devices: int | None = None, inner_dim: bool = False) -> float:
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
    return time_until_stable(lambda: gather(x), COLLECTIVE_POLICY).ms


def time_allreduce_ms(num_bytes: int, num_devices: int | None = None) -> float:
    """All-reduce (psum) of `num_bytes` held by every device."""
    mesh = _ring_mesh(num_devices)
    reduce = jax.jit(jax.shard_map(lambda a: jax.lax.psum(a, "ring"), mesh=mesh,
                                   in_specs=PartitionSpec("ring"), out_specs=PartitionSpec("ring")))
    x = _per_device_array(mesh, num_bytes)
    return time_until_stable(lambda: reduce(x), COLLECTIVE_POLICY).ms


def time_combined_allreduce_ms(num_bytes: int, num_devices: int | None = None, pairs: int = 4) -> float:
    """One pair of a combined all-reduce: an array of `num_bytes` followed by a 1 KB one (a weight's
    gradient and its bias's), `pairs` such pairs all-reduced by one collective, the time per pair. XLA
    combines a step's gradient all-reduces into one collective, which XLA:CPU over gloo runs operand by
    operand; an operand that follows a large one pays the link's floor again. Measured 2026-12-07 on 2
    pinned workers: 8 x (256 KB, 1 KB) in one all-reduce 58.1 ms, 8 x 256 KB 32.0 ms, 16 x 1 KB 5.4 ms
    (a 1 KB operand costs 0.34 ms after another small one, 3.3 ms after a 256 KB one); a 4-layer GPT's 68
    gradient arrays (17 MB) took 216 ms in one all-reduce, one 17 MB array 25 ms."""
    mesh = _ring_mesh(num_devices)
    spec = PartitionSpec("ring")
    arrays = [_per_device_array(mesh, size) for _ in range(pairs) for size in (num_bytes, KiB)]
    reduce = jax.jit(jax.shard_map(lambda *a: tuple(jax.lax.psum(x, "ring") for x in a), mesh=mesh,
                                   in_specs=(spec,) * len(arrays), out_specs=(spec,) * len(arrays)))
    return time_until_stable(lambda: reduce(*arrays), COLLECTIVE_POLICY).ms / pairs


_PARTIAL_SUM_FEATURES = 256  # the contraction's output features (a row-split dense of a width-256 GPT)


def time_partial_sum_allreduce_ms(num_bytes: int, num_devices: int | None = None, links: int = 4) -> float:
    """The all-reduce of a partial sum in a step: `links` denses in a chain, each output ([rows, 256] float32,
    `num_bytes` on each device) all-reduced before the next dense reads it, as a row-split dense's output
    (Megatron's attention and MLP projections) or a column-split dense's input gradient is; the chain less
    the same chain of denses alone, per link. XLA:CPU over gloo runs such an all-reduce slower than the
    same collective alone: 2 pinned workers, 2026-12-07, 2 MB 5.9 ms in the chain against 3.9 ms alone,
    8 MB 12.1 against 10.8 (a 4-layer GPT's megatron step: its 2 MB partial sums 5.2-7.4 ms each). The
    point is at least the all-reduce alone (time_allreduce_ms): a difference of two timings can come out
    under it, or under 0, by noise (on a loaded machine 4 MB came out 3.0 ms, the all-reduce alone 5.7)."""
    mesh = _ring_mesh(num_devices)
    spec = PartitionSpec("ring")
    rows = max(num_bytes // (4 * _PARTIAL_SUM_FEATURES), 1)
    x = jax.make_array_from_callback((rows * mesh.size, _PARTIAL_SUM_FEATURES), NamedSharding(mesh, spec),
                                     lambda index: np.full((rows, _PARTIAL_SUM_FEATURES), 0.01, np.float32))
    w = jax.device_put(np.eye(_PARTIAL_SUM_FEATURES, dtype=np.float32), NamedSharding(mesh, PartitionSpec()))

    def chain(summed: bool):
        def denses(x, w):
            for _ in range(links):
                x = x @ w
                if summed:
                    x = jax.lax.psum(x, "ring")
            return x
        return jax.jit(jax.shard_map(denses, mesh=mesh, in_specs=(spec, PartitionSpec()), out_specs=spec))

    summed, denses_alone = chain(True), chain(False)
    difference_ms = (time_until_stable(lambda: summed(x, w), COLLECTIVE_POLICY).ms
                     - time_until_stable(lambda: denses_alone(x, w), COLLECTIVE_POLICY).ms) / links
    return max(difference_ms, time_allreduce_ms(num_bytes, num_devices))


def time_reduce_scatter_ms(num_bytes: int, num_devices: int | None = None) -> float:
    """Reduce-scatter (psum_scatter) of `num_bytes` held by every device: each ends with its 1/N of the sum,
    sending (N-1)/N * num_bytes in a ring (Korthikanti's sequence parallelism sums a row-split dense so)."""
    mesh = _ring_mesh(num_devices)
    scatter = jax.jit(jax.shard_map(lambda a: jax.lax.psum_scatter(a, "ring", tiled=True), mesh=mesh,
                                    in_specs=PartitionSpec("ring"), out_specs=PartitionSpec("ring")))
    x = _per_device_array(mesh, max(num_bytes // (4 * mesh.size), 1) * 4 * mesh.size)  # N equal parts
    return time_until_stable(lambda: scatter(x), COLLECTIVE_POLICY).ms


def emits_reduce_scatter(num_devices: int | None = None) -> bool:
    """Whether XLA compiles a partial sum that each device then slices into a reduce-scatter (else an
    all-reduce of the whole and a dynamic-slice): a dense whose contracting dim is split over the devices,
    its output constrained to a sequence split, as sequence parallelism (megatron_sp) places a row-split
    dense. Measured 2026-12-07, XLA:CPU (JAX 0.10.2), 2 devices: all-reduce f32[4,8,16] then dynamic-slice
    f32[4,4,16], where jax.lax.psum_scatter compiles to a reduce-scatter."""
    mesh = _ring_mesh(num_devices)
    size = mesh.size

    def row_split_dense(x, w):
        y = jnp.einsum("bsh,ho->bso", x, w)
        return jax.lax.with_sharding_constraint(y, NamedSharding(mesh, PartitionSpec(None, "ring", None)))

    x = jax.ShapeDtypeStruct((4, 4 * size, 8 * size), jnp.float32,
                             sharding=NamedSharding(mesh, PartitionSpec(None, None, "ring")))
    w = jax.ShapeDtypeStruct((8 * size, 16), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("ring", None)))
    return "reduce-scatter(" in jax.jit(row_split_dense).lower(x, w).compile().as_text()


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
