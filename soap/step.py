"""A training step of any operator graph on plain JAX shardings: one jitted SPMD program, or stages.

    step = TrainStep(graph, Shardings(activations, params, state), sgd_momentum(learning_rate=0.01))
    train_state = step.init(init_params(graph, seed=0))
    loss, train_state = step(train_state, *step.place_batch(images, labels))

`Shardings` names, for every op, the NamedSharding of its output and of each of its parameters and state
arrays (soap's lowering builds them from a Strategy; any caller may build them by hand). Each op reads
each input where `input_sharding` says and writes its output where its sharding says, both pinned by
`with_sharding_constraint`; ops run in program order, each on the outputs of the ops it reads.

One stage (soap.stages: every op on one device set, the usual case) is ONE jitted program:
value_and_grad of the mean softmax cross-entropy, then the optax update. Several stages run as a jitted
forward per stage (jax.vjp, returning its residuals) in program order, then a jitted backward-and-update
per stage in reverse; every tensor that crosses a stage boundary moves with `soap.transfer.transfer`
(jax.device_put within a process, a small ppermute program between processes), and the gradient of a
tensor read in several stages is the sum of what each sends back, added on the producer's devices.

Random ops (dropout) draw from the step's key, models.keys.step_key(seed, step), with `step` counted in
the TrainState: every strategy draws the bits one device draws (models.keys). A tied weight (Op.tied:
GPT-2's head reads the token table) is one array, its owner's: a reader reads it where its own config
places it (`tied_sharding`), its gradient flows back to the owner through that constraint and is added to
the owner's before the one update; across stages the reader's stage borrows it (moved in like a stage
input) and sends its gradient back to the owner's stage, which runs its backward later.

Batch norm normalizes with the statistics of the whole batch whatever the split (XLA all-reduces the
partial sums of a split batch), so every strategy computes what one device computes; its running
averages (the model state, per op) are updated in the same step, as flax's nnx.BatchNorm updates them.
The optimizer state is kept per op (op name -> that op's optax state) because stages update their own
ops' parameters; for element-wise optimizers such as SGD with momentum this equals one global update.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from models.labels import input_axes, param_axes
from models.errors import PlacementError
from models.graph import OpGraph
from models.keys import step_key
from models.network import Params, init_state, loss_op, op_params, own_param_shapes, require_loss_last
from models.op import Op
from soap.stages import DATA, LOSS, Stage, refine, sources, split_stages, stage_mesh
from soap.transfer import transfer

State = dict[str, dict[str, jax.Array]]  # op name -> its non-trainable state (batch norm: mean, var)


@dataclass(frozen=True)
class Shardings:
    """Where a training step keeps each op's output, parameters and state: op name -> NamedSharding(s)."""

    activations: Mapping[str, NamedSharding]
    params: Mapping[str, Mapping[str, NamedSharding]]
    state: Mapping[str, Mapping[str, NamedSharding]] = field(default_factory=dict)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class TrainState:
    """Parameters, optimizer state and model state (a pytree: jax.block_until_ready waits for all of it)."""

    params: Params
    opt_state: dict[str, optax.OptState]
    model_state: State
    step: int = field(default=0, metadata=dict(static=True))  # steps taken: the next step's random key


def sgd_momentum(learning_rate: float = 0.01, momentum: float = 0.9) -> optax.GradientTransformation:
    return optax.sgd(learning_rate, momentum=momentum)


def _device_ids(sharding: NamedSharding) -> tuple[int, ...]:
    """The sharding's devices in mesh order: one jitted program needs one order for all its shardings."""
    return tuple(int(d.id) for d in sharding.mesh.devices.flat)


def step_stages(graph: OpGraph, shardings: Shardings) -> tuple[Stage, ...]:
    """The stages of a step with these shardings (soap.stages.split_stages)."""
    device_sets = {name: sharding.device_set for name, sharding in shardings.activations.items()}
    orders = {op.name: (("output", _device_ids(shardings.activations[op.name])),
                        *((key, _device_ids(s)) for key, s in shardings.params.get(op.name, {}).items()))
              for op in graph.ops}
    return split_stages(graph, device_sets, orders)


def input_sharding(op: Op, output: NamedSharding, input_index: int = 0) -> NamedSharding:
    """Where `op`'s tasks read input `input_index`: every op's input is pinned there, and stage inputs
    placed there. `output` is the op's output sharding on its mesh (soap.lowering.op_mesh: one axis per
    config label).

    Split on the labels it shares with the split (models.labels.input_axes: whole on the others, whole in
    height and width for a conv split on its output channels), and whole where the input size does not
    divide; XLA moves the halos.
    """
    degrees = tuple(output.mesh.shape[name] for name in op.space.config_labels)
    axes = input_axes(op.space, degrees)[input_index]
    entries = tuple(name if name is not None and size % output.mesh.shape[name] == 0 else None
                    for name, size in zip(axes, op.input_shapes[input_index]))
    return NamedSharding(output.mesh, PartitionSpec(*entries))


def tied_sharding(op: Op, output: NamedSharding, name: str) -> NamedSharding:
    """Where `op` reads its tied parameter `name` (another op's weight): split as its own config splits
    it (models.labels.param_axes), on its output's mesh."""
    degrees = tuple(output.mesh.shape[label] for label in op.space.config_labels)
    return NamedSharding(output.mesh, PartitionSpec(*param_axes(op.space, dict(op.space.params)[name], degrees)))


def pinned_apply(op: Op, output: NamedSharding, params, state, inputs: tuple[jax.Array, ...],
                 labels: jax.Array | None = None, key: jax.Array | None = None) -> tuple[jax.Array, Any]:
    """`op` on `inputs` as a strategy places it: each input pinned where `input_sharding` says, each tied
    weight where `tied_sharding` says, the output pinned to `output`; (output, new op state or None).
    `params` holds the op's own parameters and its tied ones (models.network.op_params); `key` is the
    step's random key. The step and soap.plan's forward both run this."""
    with jax.named_scope(f"op.{op.name}"):  # names the op in the compiled program (profiles)
        inputs = tuple(jax.lax.with_sharding_constraint(x, input_sharding(op, output, j)) for j, x in enumerate(inputs))
        if op.tied:
            params = {**params, **{name: jax.lax.with_sharding_constraint(params[name], tied_sharding(op, output, name))
                                   for name, _ in op.tied}}
        y, op_state = op.spec.apply_with_state(op, params, state, inputs, labels, key)
        return jax.lax.with_sharding_constraint(y, output), op_state


def _check_tree(what: str, tree: Mapping[str, Mapping[str, np.ndarray]], expected: dict, model: str,
                builder: str) -> None:
    """PlacementError (one line) unless `tree` has exactly the ops, array names and shapes `expected` says."""
    given = {name: {k: tuple(np.shape(v)) for k, v in entry.items()} for name, entry in tree.items()}
    if given != expected:
        wrong = sorted(set(expected) ^ set(given)) or [n for n in expected if expected[n] != given[n]]
        raise PlacementError(f"init: {what} that do not fit {model}'s ops (first difference: op {wrong[0]!r}); pass "
                             f"the {what} that {builder} builds for this graph")


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


@functools.lru_cache(maxsize=1024)
def _adder(sharding: NamedSharding):
    return jax.jit(lambda a, b: a + b, out_shardings=sharding)


class TrainStep:
    """One synchronous SGD step of `graph` with every tensor placed as `shardings` says.

    Calling it returns the step's loss (mean over the batch) and the new state; `stages` lists the step's
    stages (soap.stages.Stage). The arguments are not consumed: a state may be stepped from twice.
    `seed` seeds the random ops' keys (models.keys.step_key(seed, state.step)).
    """

    def __init__(self, graph: OpGraph, shardings: Shardings, optimizer: optax.GradientTransformation, seed: int = 0):
        require_loss_last(graph)
        self.graph = graph
        self.shardings = shardings
        self.optimizer = optimizer
        self.seed = seed
        self.stages = step_stages(graph, shardings)
        self._sources = {op.name: sources(graph, op) for op in graph.ops}
        self._loss = loss_op(graph)
        self._opt_shardings = {name: self._opt_state_shardings(name) for name in shardings.params}
        staged = len(self.stages) > 1
        self._meshes = [stage_mesh(self._shardings_of(stage)) for stage in self.stages] if staged else None
        self._input_shardings = [{name: self._placement(number, name) for name in stage.inputs}
                                 for number, stage in enumerate(self.stages)]
        self._readers: dict[str, list[int]] = {}  # tensor -> the stages that read it, in order
        for number, stage in enumerate(self.stages):
            for name in stage.inputs:
                self._readers.setdefault(name, []).append(number)
        self._borrowed = [self._borrowed_weights(number) for number in range(len(self.stages))] if staged else None
        if not staged:
            self._program = self._single_program()
        else:
            self._forwards = [self._stage_forward(s) for s in range(len(self.stages))]
            self._backwards = [self._stage_backward(s) for s in range(len(self.stages))]

    # --- placement ---------------------------------------------------------------------------------

    def _shardings_of(self, stage: Stage) -> list[NamedSharding]:
        return [s for op in stage.ops for s in (self.shardings.activations[op.name],
                                                *self.shardings.params.get(op.name, {}).values(),
                                                *self.shardings.state.get(op.name, {}).values())]

    def _opt_state_shardings(self, name: str):
        params = self.shardings.params[name]
        op = self.graph.op(name)
        abstract = jax.eval_shape(self.optimizer.init, {k: jax.ShapeDtypeStruct(shape, op.dtype)
                                                        for k, shape in own_param_shapes(op).items()})
        replicated = NamedSharding(next(iter(params.values())).mesh, PartitionSpec())
        return optax.tree_map_params(self.optimizer, lambda _, sharding: sharding, abstract, params,
                                     transform_non_params=lambda _: replicated)

    def _first_reader(self, stage: Stage, name: str) -> tuple[Op, int]:
        """The first op of `stage` that reads tensor `name`, and which of its inputs that is."""
        return next((op, j) for op in stage.ops for j, source in enumerate(self._sources[op.name]) if source == name)

    def stage_input_sharding(self, number: int, name: str) -> NamedSharding:
        """Where tensor `name` is placed for stage `number`: where its first reader there reads it."""
        return self._input_shardings[number][name]

    def _borrowed_weights(self, number: int) -> dict[tuple[str, str], NamedSharding]:
        """The tied weights stage `number` reads whose owner is in an earlier stage: (owner, parameter) ->
        where the stage holds it (its first reader's `tied_sharding`, on the stage mesh)."""
        stage, borrowed = self.stages[number], {}
        for op in stage.ops:
            for name, owner in op.tied:
                owner_stage = next(k for k, other in enumerate(self.stages) if owner in other.names)
                if owner_stage == number or (owner, name) in borrowed:
                    continue
                if owner_stage > number:
                    raise PlacementError(f"op {op.name!r} reads {owner!r}'s {name!r} in stage {number}, before the "
                                         f"owner's stage {owner_stage}; place {owner!r} on {op.name!r}'s devices or earlier")
                sharding = tied_sharding(op, self.shardings.activations[op.name], name)
                borrowed[owner, name] = refine(sharding, self._meshes[number])
        return borrowed

    def _placement(self, number: int, name: str) -> NamedSharding:
        op, j = self._first_reader(self.stages[number], name)
        sharding = input_sharding(op, self.shardings.activations[op.name], j)
        # The first argument of a stage's forward names its residuals' shardings (see soap.stages.stage_mesh).
        return refine(sharding, self._meshes[number]) if self._meshes is not None else sharding

    def init(self, params: Mapping[str, Mapping[str, np.ndarray]],
             model_state: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> TrainState:
        """Place host parameters and model state (default: the graph's initial state) with their
        shardings, and start a zero optimizer state beside them."""
        _check_tree("parameters", params, {op.name: own_param_shapes(op) for op in self.graph.ops if own_param_shapes(op)},
                    self.graph.model, "init_params")
        placed = {name: {k: place(np.asarray(v), self.shardings.params[name][k]) for k, v in entry.items()}
                  for name, entry in params.items()}
        state = init_state(self.graph) if model_state is None else model_state
        _check_tree("model state", state, {op.name: dict(op.state_shapes) for op in self.graph.ops if op.state_shapes},
                    self.graph.model, "init_state")
        placed_state = {name: {k: place(np.asarray(v), self.shardings.state[name][k]) for k, v in entry.items()}
                        for name, entry in state.items()}
        # One small program per op: the ops of a strategy may live on different devices.
        opt_state = {name: jax.jit(self.optimizer.init, out_shardings=self._opt_shardings[name])(entry)
                     for name, entry in placed.items()}
        return TrainState(placed, opt_state, placed_state)

    def _data_sharding(self) -> NamedSharding:
        return self.stage_input_sharding(0, DATA)

    def local_batch_rows(self) -> np.ndarray:
        """The batch rows (sorted indices) whose images this process places: in a cluster, the other rows of
        the host batch are never read, so a data loader may leave them empty."""
        sharding = self._data_sharding()
        shape = self.graph.ops[0].input_shapes[0]
        rows = set()
        for index in sharding.addressable_devices_indices_map(shape).values():
            rows.update(range(shape[0])[index[0]])
        return np.array(sorted(rows), dtype=np.int64)

    def place_batch(self, images: np.ndarray, labels: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """Images where the first op reads them, labels where the loss is split."""
        return place(images, self._data_sharding()), place(labels, self.shardings.activations[self._loss.name])

    # --- running -------------------------------------------------------------------------------------

    def _step_number(self, state: TrainState, mesh: Mesh) -> jax.Array:
        """The state's step count, placed on every device of `mesh` (each program derives its key from it)."""
        return place(np.int32(state.step), NamedSharding(mesh, PartitionSpec()))

    def __call__(self, state: TrainState, images: jax.Array, labels: jax.Array) -> tuple[jax.Array, TrainState]:
        if len(self.stages) == 1:
            loss, params, opt_state, model_state = self._program(
                state.params, state.opt_state, state.model_state, images, labels,
                self._step_number(state, self._loss_sharding().mesh))
            return loss, TrainState(params, opt_state, model_state, state.step + 1)
        return self._staged_step(state, images, labels)

    def program_times(self, state: TrainState, images: jax.Array, labels: jax.Array
                      ) -> tuple[jax.Array, TrainState, list[tuple[str, float]]]:
        """One step that waits for each program before the next and records its wall milliseconds:
        (label, ms) per program ("stage 2 forward", "to stage 2: res2a", "stage 2 backward", "grad of res2a
        from stage 3", or "step" for a single program). On a cluster each process sees its own devices'
        share. The programs no longer overlap, so the sum is not the step time; it shows where time goes."""
        if len(self.stages) == 1:
            start = time.perf_counter()
            loss, state = jax.block_until_ready(self(state, images, labels))
            return loss, state, [("step", (time.perf_counter() - start) * 1e3)]
        record: list[tuple[str, float]] = []
        loss, state = self._staged_step(state, images, labels, record)
        return loss, state, record

    def lower(self, state: TrainState, images: jax.Array, labels: jax.Array) -> jax.stages.Lowered:
        """The jitted program of a single-stage step, lowered (its text shows every sharding annotation)."""
        if len(self.stages) > 1:
            raise PlacementError(f"this step runs {len(self.stages)} stages as separate programs; only a "
                                 f"single-stage step is one program to lower")
        return self._program.lower(state.params, state.opt_state, state.model_state, images, labels,
                                   self._step_number(state, self._loss_sharding().mesh))

    def _run_ops(self, ops: tuple[Op, ...], params: Params, state: State, values: dict[str, jax.Array],
                 labels: jax.Array | None, key: jax.Array) -> State:
        """Run `ops` in order, each on the `values` it reads, adding its output to `values`; the new state.
        `params` holds every weight the ops read (their own, and the owners' of their tied weights)."""
        new_state = {}
        for op in ops:
            inputs = tuple(values[name] for name in self._sources[op.name])
            values[op.name], op_state = pinned_apply(op, self.shardings.activations[op.name], op_params(op, params),
                                                     state.get(op.name), inputs, labels, key)
            if op_state is not None:
                new_state[op.name] = op_state
        return new_state

    def _loss_sharding(self) -> NamedSharding:
        return NamedSharding(self.shardings.activations[self._loss.name].mesh, PartitionSpec())

    def _single_program(self) -> Callable:
        def step(params, opt_state, model_state, images, labels, step_number):
            def loss_fn(p):
                values = {DATA: images}
                new_state = self._run_ops(self.graph.ops, p, model_state, values, labels,
                                          step_key(self.seed, step_number))
                return jnp.mean(values[self._loss.name]), new_state

            (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            params, opt_state = _update(self.optimizer, grads, params, opt_state)
            return loss, params, opt_state, {**model_state, **new_state}

        return jax.jit(step, out_shardings=(self._loss_sharding(), dict(self.shardings.params), self._opt_shardings,
                                            dict(self.shardings.state)))

    def _of_stage(self, number: int, tree: Mapping[str, Any]) -> dict[str, Any]:
        return {op.name: tree[op.name] for op in self.stages[number].ops if op.name in tree}

    def _stage_forward(self, number: int) -> Callable:
        stage = self.stages[number]

        # The inputs come first: their stage-mesh shardings name the residuals' (see stage_mesh). `params`
        # holds the stage's own weights and the weights it borrows (tied, owned by an earlier stage).
        def forward(inputs, params, model_state, labels, step_number):
            data = inputs.get(DATA)
            moving = {name: x for name, x in inputs.items() if name != DATA}  # the data needs no cotangent

            def run(p, xs):
                values = dict(xs, **({DATA: data} if data is not None else {}))
                new_state = self._run_ops(stage.ops, p, model_state, values, labels, step_key(self.seed, step_number))
                outputs = {name: values[name] for name in stage.outputs}
                if stage.has_loss:
                    outputs[LOSS] = jnp.mean(values[self._loss.name])
                return outputs, new_state

            outputs, vjp, new_state = jax.vjp(run, params, moving, has_aux=True)
            return outputs, new_state, residuals_without_inputs(vjp, (params, moving, data))

        return jax.jit(forward)

    def _stage_backward(self, number: int) -> Callable:
        stage = self.stages[number]
        param_shardings = self._of_stage(number, self.shardings.params)
        opt_shardings = self._of_stage(number, self._opt_shardings)
        input_shardings = {name: self.stage_input_sharding(number, name) for name in stage.inputs if name != DATA}
        borrowed = self._borrowed[number]
        borrowed_shardings = {owner: {} for owner, _ in borrowed}
        for (owner, name), sharding in borrowed.items():
            borrowed_shardings[owner][name] = sharding

        def backward(vjp, cotangents, inputs, params, opt_state, received):
            """The stage's gradients; its own weights updated (with the gradients `received` from later
            stages' readers of its tied weights added), the borrowed weights' gradients returned."""
            data = inputs.get(DATA)
            moving = {name: x for name, x in inputs.items() if name != DATA}
            grads, input_cotangents = _with_inputs(vjp, (params, moving, data))(cotangents)
            borrowed_grads = {owner: grads.pop(owner) for owner in borrowed_shardings}
            for owner, entry in received.items():
                grads[owner] = {**grads[owner], **{name: grads[owner][name] + g for name, g in entry.items()}}
            own = {name: params[name] for name in grads}
            own, opt_state = _update(self.optimizer, grads, own, opt_state)
            return own, opt_state, input_cotangents, borrowed_grads

        return jax.jit(backward, out_shardings=(param_shardings, opt_shardings, input_shardings, borrowed_shardings))

    def _staged_step(self, state: TrainState, images: jax.Array, labels: jax.Array,
                     record: list[tuple[str, float]] | None = None):
        def run(label: str, program: Callable, *args):
            if record is None:
                return program(*args)
            start = time.perf_counter()
            result = jax.block_until_ready(program(*args))
            record.append((label, (time.perf_counter() - start) * 1e3))
            return result

        moved: dict[tuple[int, str], jax.Array] = {}  # (stage, tensor) -> the tensor where that stage reads it

        def hand_on(name: str, value: jax.Array) -> None:
            """Move a tensor to every stage that reads it at once, before later programs queue on its devices."""
            for reader in self._readers.get(name, ()):
                moved[reader, name] = run(f"to stage {reader}: {name}", transfer, value,
                                          self.stage_input_sharding(reader, name))

        hand_on(DATA, images)
        model_state = dict(state.model_state)
        saved, loss = [], None
        for number, stage in enumerate(self.stages):
            inputs = {name: moved.pop((number, name)) for name in stage.inputs}
            params = self._of_stage(number, state.params)
            for (owner, name), sharding in self._borrowed[number].items():
                params.setdefault(owner, {})[name] = run(f"to stage {number}: {owner}.{name}", transfer,
                                                         state.params[owner][name], sharding)
            outputs, new_state, vjp = run(f"stage {number} forward", self._forwards[number], inputs, params,
                                          self._of_stage(number, model_state), labels if stage.has_loss else None,
                                          self._step_number(state, self._meshes[number]))
            for name in stage.outputs:
                hand_on(name, outputs[name])
            loss = outputs.get(LOSS, loss)
            model_state.update(new_state)
            saved.append((inputs, params, vjp))
        cotangents: dict[str, jax.Array] = {LOSS: jnp.ones_like(loss)}
        received: dict[str, dict[str, jax.Array]] = {}  # owner -> tied weight -> its readers' gradients, summed
        params, opt_state = dict(state.params), dict(state.opt_state)
        for number in reversed(range(len(self.stages))):
            stage, (inputs, stage_params, vjp) = self.stages[number], saved[number]
            wanted = stage.outputs + ((LOSS,) if stage.has_loss else ())
            stage_params, stage_opt, input_cotangents, borrowed_grads = run(
                f"stage {number} backward", self._backwards[number], vjp,
                {name: cotangents.pop(name) for name in wanted}, inputs, stage_params,
                self._of_stage(number, opt_state), {name: received.pop(name) for name in stage.names if name in received})
            params.update(stage_params)
            opt_state.update(stage_opt)
            for name, cotangent in input_cotangents.items():  # summed where several stages read the tensor
                target = self.shardings.activations[name]
                moved = run(f"grad of {name} from stage {number}", transfer, cotangent, target)
                cotangents[name] = _adder(target)(cotangents[name], moved) if name in cotangents else moved
            for owner, entry in borrowed_grads.items():  # a tied weight's gradient, home to its owner
                for name, grad in entry.items():
                    target = self.shardings.params[owner][name]
                    moved = run(f"grad of {owner}.{name} from stage {number}", transfer, grad, target)
                    sums = received.setdefault(owner, {})
                    sums[name] = _adder(target)(sums[name], moved) if name in sums else moved
        return loss, TrainState(params, opt_state, model_state, state.step + 1)


@jax.tree_util.register_static
@dataclass(frozen=True)
class _Input:
    """In a stage forward's residuals, the place of leaf `index` of the forward's inputs (no array)."""

    index: int


def residuals_without_inputs(vjp, inputs):
    """The vjp's residuals with every leaf that IS one of `inputs`' leaves (a kernel, the stage input)
    replaced by its place: a jitted program copies each array it returns, and returning a residual that
    is an input copied fc6's 151 MB kernel in every step (+41 ms on one core)."""
    leaves = jax.tree.leaves(inputs)
    return jax.tree.map(lambda r: next((_Input(i) for i, leaf in enumerate(leaves) if leaf is r), r), vjp)


def _with_inputs(vjp, inputs):
    """The vjp with the inputs put back in their places (see residuals_without_inputs)."""
    leaves = jax.tree.leaves(inputs)
    return jax.tree.map(lambda r: leaves[r.index] if isinstance(r, _Input) else r, vjp,
                        is_leaf=lambda r: isinstance(r, _Input))
