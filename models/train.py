"""A training step on plain JAX shardings: one jitted SPMD program, or stages joined by device_put.

    step = TrainStep(graph, Shardings(activations, params), sgd_momentum(learning_rate=0.01))
    state = step.init(init_params(graph, seed=0))
    loss, state = step(state, *step.place_batch(images, labels))

`Shardings` names, for every op, the NamedSharding of its output and of each of its parameters (soap's
lowering builds them from a Strategy; any caller may build them by hand). Consecutive ops (program order)
whose outputs live on the same device set form one stage. One stage (the usual case: every op on all
devices) is ONE jitted program: value_and_grad of the mean softmax cross-entropy with every op's output
pinned by `with_sharding_constraint`, then the optax update. Several stages run as a jitted forward per
stage (jax.vjp, returning its residuals) and a jitted backward-and-update per stage, in program order;
activations and cotangents move between stages with `models.transfer.transfer` (jax.device_put within
a process, a small ppermute program between processes).

The optimizer state is kept per op (op name -> that op's optax state) because stages update their own
ops' parameters; for element-wise optimizers such as SGD with momentum this equals one global update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from models.errors import PlacementError, ShapeError
from models.graph import OpGraph
from models.network import OpRunner, Params, loss_op
from models.op import Op
from models.transfer import transfer


@dataclass(frozen=True)
class Shardings:
    """Where a training step keeps each op's output and parameters: op name -> NamedSharding(s)."""

    activations: Mapping[str, NamedSharding]
    params: Mapping[str, Mapping[str, NamedSharding]]


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class TrainState:
    """Parameters and optimizer state (a pytree, so that jax.block_until_ready waits for all of it)."""

    params: Params
    opt_state: dict[str, optax.OptState]


def sgd_momentum(learning_rate: float = 0.01, momentum: float = 0.9) -> optax.GradientTransformation:
    return optax.sgd(learning_rate, momentum=momentum)


def _device_ids(sharding: NamedSharding) -> tuple[int, ...]:
    """The sharding's devices in mesh order: one jitted program needs one order for all its shardings."""
    return tuple(int(d.id) for d in sharding.mesh.devices.flat)


def _require_one_device_order(first: Op, op: Op, shardings: Shardings) -> None:
    want = _device_ids(shardings.activations[first.name])
    for what, sharding in [("output", shardings.activations[op.name]), *shardings.params.get(op.name, {}).items()]:
        if _device_ids(sharding) != want:
            raise PlacementError(
                f"op {op.name!r} ({what}) orders its devices {_device_ids(sharding)} but op {first.name!r} of the "
                f"same stage orders them {want}; one stage is one jitted program: list the devices in one order"
            )


def split_stages(graph: OpGraph, shardings: Shardings) -> tuple[tuple[Op, ...], ...]:
    """The ops grouped into stages: runs of consecutive ops whose outputs live on the same device set."""
    stages: list[list[Op]] = []
    for op in graph.ops:
        if stages and shardings.activations[op.name].device_set == shardings.activations[stages[-1][0].name].device_set:
            stages[-1].append(op)
        else:
            stages.append([op])
        _require_one_device_order(stages[-1][0], op, shardings)
    return tuple(tuple(stage) for stage in stages)


def _axis_size(entry: str | tuple[str, ...], mesh: Mesh) -> int:
    names = (entry,) if isinstance(entry, str) else entry
    return math.prod(mesh.shape[name] for name in names)


def input_sharding(op: Op, output: NamedSharding, input_index: int = 0) -> NamedSharding:
    """Where `op`'s tasks read input `input_index`: every op's input is pinned there, and stage inputs
    placed there.

    Split as the op's kind says (KindSpec.input_split: like the output on the dims the two share, whole
    on the others, whole in height and width for a conv split on its output channels), and whole where
    the input size does not divide; XLA moves the halos.
    """
    spec = tuple(output.spec) + (None,) * (len(op.output_shape) - len(output.spec))
    shared = op.spec.input_split(op, spec)[input_index]
    entries = tuple(e if e is None or size % _axis_size(e, output.mesh) == 0 else None
                    for e, size in zip(shared, op.input_shapes[input_index]))
    return NamedSharding(output.mesh, PartitionSpec(*entries))


def require_chain(graph: OpGraph) -> None:
    """The training step passes each op's output to the next op in program order: it runs chains only
    (AlexNet, VGG); branching graphs are simulated and searched, not yet run."""
    previous = ()
    for op in graph.ops:
        if graph.producers(op.name) != previous:
            raise ShapeError(f"op {op.name!r} of {graph.model} reads {list(graph.producers(op.name))} but the "
                             f"training runtime runs chains only (each op reads the op before it); {graph.model} can "
                             f"be searched and simulated (search.optimize --no-run) but not yet run")
        previous = (op.name,)


def _strides(mesh: Mesh) -> set[int]:
    sizes = mesh.devices.shape
    return {math.prod(sizes[j:]) for j in range(len(sizes) + 1)}


def _stage_mesh(stage_shardings: list[NamedSharding]) -> Mesh:
    """A mesh over the stage's devices whose axes refine every mesh of the stage (shared mixed radix).

    A stage's forward returns its vjp residuals with shardings that XLA chooses; JAX names them on the
    mesh of the program's first argument, which must be able to express them all. This mesh can: each of
    its axes is one step of the stage meshes' common chain of strides (on 4 devices: two axes of 2).
    """
    strides = sorted(set().union(*(_strides(s.mesh) for s in stage_shardings)))
    for small, large in zip(strides, strides[1:]):
        if large % small:
            grids = sorted({s.mesh.devices.shape for s in stage_shardings})
            raise PlacementError(
                f"a stage mixes the device grids {grids}, which share no common refinement (strides {small} and "
                f"{large}); give its ops grids that nest (e.g. powers of two) or put them in separate stages"
            )
    sizes = tuple(large // small for small, large in zip(strides, strides[1:]))[::-1] or (1,)
    names = tuple(f"stage{i}" for i in range(len(sizes)))
    devices = stage_shardings[0].mesh.devices.reshape(sizes)
    return Mesh(devices, names, axis_types=(AxisType.Auto,) * len(sizes))


def _refine(sharding: NamedSharding, stage_mesh: Mesh) -> NamedSharding:
    """The same placement as `sharding`, named on the stage mesh (each axis -> the stage axes it spans)."""
    sizes, stage_sizes = sharding.mesh.devices.shape, stage_mesh.devices.shape
    spans = {}
    for j, name in enumerate(sharding.mesh.axis_names):
        low = math.prod(sizes[j + 1:])
        spans[name] = tuple(stage_name for i, stage_name in enumerate(stage_mesh.axis_names)
                            if low <= math.prod(stage_sizes[i + 1:]) < low * sizes[j])

    def entry(e):
        names = sum((spans[name] for name in ((e,) if isinstance(e, str) else e)), ()) if e is not None else ()
        return names or None

    refined = NamedSharding(stage_mesh, PartitionSpec(*(entry(e) for e in sharding.spec)))
    assert refined.is_equivalent_to(sharding, len(sharding.spec)), (sharding, refined)
    return refined


def place(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array placed with `sharding`; in a cluster each process fills only its own shards."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index], dtype=value.dtype)


def _update(optimizer: optax.GradientTransformation, grads: Params, params: Params, opt_state: dict):
    new_params, new_state = {}, {}
    for name in params:
        with jax.named_scope(f"update.{name}"):
            updates, new_state[name] = optimizer.update(grads[name], opt_state[name], params[name])
            new_params[name] = optax.apply_updates(params[name], updates)
    return new_params, new_state


class TrainStep:
    """One synchronous SGD step of `graph` with every tensor placed as `shardings` says.

    Calling it returns the step's loss (mean over the batch) and the new state; `stages` lists the ops of
    each stage. The arguments are not consumed: a state may be stepped from twice.
    """

    def __init__(self, graph: OpGraph, shardings: Shardings, optimizer: optax.GradientTransformation):
        self.graph = graph
        self.shardings = shardings
        self.optimizer = optimizer
        require_chain(graph)
        self.stages = split_stages(graph, shardings)
        self._runner = OpRunner.for_graph(graph)
        self._opt_shardings = {name: self._opt_state_shardings(name) for name in shardings.params}
        if len(self.stages) == 1:
            self._program = self._single_program()
        else:
            self._stage_meshes = [_stage_mesh(self._shardings_of(stage)) for stage in self.stages]
            self._forwards = [self._stage_forward(i) for i in range(len(self.stages))]
            self._backwards = [self._stage_backward(i) for i in range(len(self.stages))]

    def _shardings_of(self, stage: tuple[Op, ...]) -> list[NamedSharding]:
        return [s for op in stage for s in (self.shardings.activations[op.name],
                                            *self.shardings.params.get(op.name, {}).values())]

    def _opt_state_shardings(self, name: str):
        params = self.shardings.params[name]
        op = self.graph.op(name)
        abstract = jax.eval_shape(self.optimizer.init, {k: jax.ShapeDtypeStruct(shape, op.dtype)
                                                        for k, shape in op.param_shapes})
        replicated = NamedSharding(next(iter(params.values())).mesh, PartitionSpec())
        return optax.tree_map_params(self.optimizer, lambda _, sharding: sharding, abstract, params,
                                     transform_non_params=lambda _: replicated)

    def _input_sharding(self, number: int) -> NamedSharding:
        first = self.stages[number][0]
        sharding = input_sharding(first, self.shardings.activations[first.name])
        # The first argument of a stage's forward names its residuals' shardings (see _stage_mesh).
        return _refine(sharding, self._stage_meshes[number]) if len(self.stages) > 1 else sharding

    def init(self, params: Mapping[str, Mapping[str, np.ndarray]]) -> TrainState:
        """Place host parameters with their shardings and start a zero optimizer state beside them."""
        placed = {name: {k: place(np.asarray(v), self.shardings.params[name][k]) for k, v in entry.items()}
                  for name, entry in params.items()}
        # One small program per op: the ops of a strategy may live on different devices.
        opt_state = {name: jax.jit(self.optimizer.init, out_shardings=self._opt_shardings[name])(entry)
                     for name, entry in placed.items()}
        return TrainState(placed, opt_state)

    def local_batch_rows(self) -> np.ndarray:
        """The batch rows (sorted indices) whose images this process places: in a cluster, the other rows of
        the host batch are never read, so a data loader may leave them empty."""
        sharding = self._input_sharding(0)
        shape = self.graph.ops[0].input_shapes[0]
        rows = set()
        for index in sharding.addressable_devices_indices_map(shape).values():
            rows.update(range(shape[0])[index[0]])
        return np.array(sorted(rows), dtype=np.int64)

    def place_batch(self, images: np.ndarray, labels: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """Images where the first op reads them, labels where the loss is split."""
        labels_sharding = self.shardings.activations[loss_op(self.graph).name]
        return place(images, self._input_sharding(0)), place(labels, labels_sharding)

    def __call__(self, state: TrainState, images: jax.Array, labels: jax.Array) -> tuple[jax.Array, TrainState]:
        if len(self.stages) == 1:
            loss, params, opt_state = self._program(state.params, state.opt_state, images, labels)
            return loss, TrainState(params, opt_state)
        return self._staged_step(state, images, labels)

    def lower(self, state: TrainState, images: jax.Array, labels: jax.Array) -> jax.stages.Lowered:
        """The jitted program of a single-stage step, lowered (its text shows every sharding annotation)."""
        if len(self.stages) > 1:
            raise PlacementError(f"this step runs {len(self.stages)} stages as separate programs; only a "
                                 f"single-stage step is one program to lower")
        return self._program.lower(state.params, state.opt_state, images, labels)

    def _run_ops(self, ops: tuple[Op, ...], params: Params, x: jax.Array, labels: jax.Array | None) -> jax.Array:
        for op in ops:
            output = self.shardings.activations[op.name]
            with jax.named_scope(f"op.{op.name}"):  # names the op in the compiled program (profiles)
                x = jax.lax.with_sharding_constraint(x, input_sharding(op, output))
                x = jax.lax.with_sharding_constraint(self._runner.apply(op, params, (x,), labels), output)
        return jnp.mean(x) if ops[-1] is loss_op(self.graph) else x

    def _loss_sharding(self) -> NamedSharding:
        return NamedSharding(self.shardings.activations[loss_op(self.graph).name].mesh, PartitionSpec())

    def _single_program(self) -> Callable:
        def step(params, opt_state, images, labels):
            loss, grads = jax.value_and_grad(lambda p: self._run_ops(self.graph.ops, p, images, labels))(params)
            params, opt_state = _update(self.optimizer, grads, params, opt_state)
            return loss, params, opt_state

        return jax.jit(step, out_shardings=(self._loss_sharding(), dict(self.shardings.params), self._opt_shardings))

    def _stage_params(self, number: int, tree: Mapping[str, Any]) -> dict[str, Any]:
        return {op.name: tree[op.name] for op in self.stages[number] if op.name in self.shardings.params}

    def _stage_forward(self, number: int) -> Callable:
        ops = self.stages[number]

        # x comes first: its stage-mesh sharding names the residuals' shardings (see _stage_mesh).
        def forward(x, params, labels):
            if number == 0:  # the data needs no cotangent
                y, vjp = jax.vjp(lambda p: self._run_ops(ops, p, x, labels), params)
            else:
                y, vjp = jax.vjp(lambda p, x_: self._run_ops(ops, p, x_, labels), params, x)
            return y, _without_inputs(vjp, (params, x))

        return jax.jit(forward)

    def _stage_backward(self, number: int) -> Callable:
        param_shardings = self._stage_params(number, self.shardings.params)
        opt_shardings = self._stage_params(number, self._opt_shardings)

        def backward(vjp, cotangent, x, params, opt_state):
            grads, *input_cotangent = _with_inputs(vjp, (params, x))(cotangent)
            params, opt_state = _update(self.optimizer, grads, params, opt_state)
            return params, opt_state, *input_cotangent

        extra = () if number == 0 else (self._input_sharding(number),)
        return jax.jit(backward, out_shardings=(param_shardings, opt_shardings, *extra))

    def _staged_step(self, state: TrainState, images: jax.Array, labels: jax.Array):
        x, inputs, vjps = images, [], []
        for number, forward in enumerate(self._forwards):
            if number:
                x = transfer(x, self._input_sharding(number))
            inputs.append(x)
            last = number == len(self.stages) - 1  # the loss, which reads the labels, is the last op
            x, vjp = forward(x, self._stage_params(number, state.params), labels if last else None)
            vjps.append(vjp)
        loss, cotangent = x, jnp.ones_like(x)
        params, opt_state = dict(state.params), dict(state.opt_state)
        for number in reversed(range(len(self.stages))):
            outputs = self._backwards[number](vjps[number], cotangent, inputs[number],
                                              self._stage_params(number, state.params),
                                              self._stage_params(number, state.opt_state))
            params.update(outputs[0])
            opt_state.update(outputs[1])
            if number:
                previous = self.stages[number - 1][-1]
                cotangent = transfer(outputs[2], self.shardings.activations[previous.name])
        return loss, TrainState(params, opt_state)


@jax.tree_util.register_static
@dataclass(frozen=True)
class _Input:
    """In a stage forward's residuals, the place of leaf `index` of the forward's inputs (no array)."""

    index: int


def _without_inputs(vjp, inputs):
    """The vjp's residuals with every leaf that IS one of `inputs`' leaves (a kernel, the stage input)
    replaced by its place: a jitted program copies each array it returns, and returning a residual that
    is an input copied fc6's 151 MB kernel in every step (+41 ms on one core)."""
    leaves = jax.tree.leaves(inputs)
    return jax.tree.map(lambda r: next((_Input(i) for i, leaf in enumerate(leaves) if leaf is r), r), vjp)


def _with_inputs(vjp, inputs):
    """The vjp with the inputs put back in their places (see _without_inputs)."""
    leaves = jax.tree.leaves(inputs)
    return jax.tree.map(lambda r: leaves[r.index] if isinstance(r, _Input) else r, vjp,
                        is_leaf=lambda r: isinstance(r, _Input))
