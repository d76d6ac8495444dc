"""A sharding plan for a user's own training step: a strategy applied to their flax nnx model as it is.

    plan = shard_plan(model, "runs/x/strategy.json", dataset="tiny-imagenet", batch_size=16)
    nnx.update(model, jax.device_put(nnx.state(model), plan.state_shardings))   # parameters and state placed
    logits = plan.forward(model, images)           # in the user's own jitted step, instead of model(images)

`shard_plan` imports the model (models.importer: its operator graph, ops named by module path) and lowers
the strategy (soap.lowering) as SOAP's own runtime does (`lower_plan`, given the graph already imported).
What the user takes home:

- `state_shardings`: an nnx.State matching `nnx.state(model)`, each leaf the NamedSharding of that array
  (op `blocks.3.conv`'s kernel split on its output channels where the strategy splits that op's
  channels; replicated over the strategy's devices where it splits the batch); leaves the graph does
  not hold (an RNG counter) are replicated over all of the strategy's devices. An array the graph holds
  reshaped (nnx.MultiHeadAttention's [d h k] query kernel as a dense's [d (h k)]) is placed in the
  module's own layout: a split of h*k is a split of whole heads (`_module_sharding`; soap.space offers no
  other).
- `mesh` (one mesh over the strategy's devices that refines every op's mesh: soap.stages.stage_mesh, axes
  `stage0`, `stage1`, ...) and `meshes` (op name -> the op's own mesh, one axis per config label),
  `images_sharding` (the first op's input: images or token ids) and `labels_sharding` for the batch.
- `partition_specs`: the same placements as `state_shardings`, each a PartitionSpec on `mesh`'s axes, and
  `annotate(model)`, which writes them into the model's variables as flax's sharding metadata
  (`out_sharding`, with `mesh`), so that `nnx.get_partition_spec(nnx.state(model))` gives them and
  `nnx.get_named_sharding(nnx.state(model), plan.mesh)` places the model as the plan does; variables the
  model creates from annotated ones (nnx.Optimizer's states) are placed alike as flax creates them.
- `forward(model, images, key=None)`: the model's logits with every op's input and output pinned by
  `with_sharding_constraint`, reading the model's own variables (so nnx.value_and_grad differentiates
  them) and writing batch norm's running averages back into the model, as its training-mode call does;
  dropout draws from `key` (the step's: pass a new one each step), not from the model's nnx.Rngs.

Why `forward` computes the imported graph (soap.step.pinned_apply on the module's own arrays) rather
than the module's `__call__` with constraints slipped in: the importer has matched every primitive of the
module's forward to an op of the graph (same parameters, and the same loss and gradients: tests/models/
test_importer.py), and the runtime must pin each op's INPUT as well as its output, since XLA computes a
conv wrongly when its input is split spatially and its kernel on output channels (ARCHITECTURE.md, what
the runtime learned). So the user's jitted step runs exactly the program SOAP's runtime runs for the
strategy, with the numerics of one device.

A plan is one SPMD program: a strategy that puts ops on device subsets (several soap.stages stages) is
one PlanError line saying how to run it through SOAP's staged runtime instead.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from models.cli import read_text
from models.errors import SoapError
from models.graph_file import DATA
from models.graph import OpGraph
from models.importer import Source, import_model
from models.network import loss_op, op_params
from models.trace import Path
from soap.lowering import strategy_shardings
from soap.stages import refine, sources as op_sources, split_stages, stage_mesh
from soap.step import Shardings, input_sharding, pinned_apply, step_stages
from soap.strategy import Strategy, strategy_from_json

RUN_STAGED = ("run it through SOAP's staged runtime: python -m search.optimize --model path/to/file.py:NAME --init "
              "strategy.json, or soap.runner.run_strategy(imported.graph, strategy, initial=InitialValues("
              "imported.params, imported.state)); or plan a strategy whose ops all use the same devices "
              "(e.g. soap.baselines.data_parallel)")


class PlanError(SoapError):
    """A strategy that a plan for the user's own step cannot apply (several stages)."""


@dataclass(frozen=True, eq=False)
class ShardPlan:
    """A strategy lowered onto a user's nnx model (see the module docstring). It keeps the imported graph
    and where each of its arrays lives in the model (`sources`), not the model's arrays."""

    graph: OpGraph
    sources: tuple[Source, ...]
    strategy: Strategy
    shardings: Shardings
    state_shardings: nnx.State
    mesh: Mesh
    meshes: dict[str, Mesh]
    images_sharding: NamedSharding
    labels_sharding: NamedSharding
    partition_specs: nnx.State

    def annotate(self, model: nnx.Module) -> None:
        """Write `partition_specs` into `model`'s variables as flax's sharding metadata (`out_sharding` and
        `mesh`), so that nnx.get_partition_spec(nnx.state(model)) gives them; the arrays stay where they are."""
        specs = {path: variable.get_value() for path, variable in nnx.to_flat_state(self.partition_specs)}
        for path, variable in _variables(model).items():
            variable.set_metadata(out_sharding=tuple(specs[path]), mesh=self.mesh)

    def forward(self, model: nnx.Module, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """The logits of `model` (training mode) on `images`, every op placed as the strategy says;
        batch norm's running averages are updated in the model. `key`: the step's random key, from which
        each dropout draws its own (models.keys.op_key; None: step 0 of seed 0, the same masks every
        step), not the model's nnx.Rngs."""
        graph = self.graph
        variables = _variables(model)
        params = _per_op(self.sources, variables, trainable=True)
        state = _per_op(self.sources, variables, trainable=False)
        paths = {(source.op, source.name): source.path for source in self.sources}
        logits = graph.producers(loss_op(graph).name)[0]
        values = {DATA: images}
        for op in graph.ops[:graph.index(logits) + 1]:
            inputs = tuple(values[name] for name in op_sources(graph, op))
            values[op.name], new_state = pinned_apply(op, self.shardings.activations[op.name], op_params(op, params),
                                                      state.get(op.name), inputs, key=key)
            for name, value in (new_state or {}).items():
                variables[paths[op.name, name]].set_value(value)
        return values[logits]


def shard_plan(model: nnx.Module, strategy: Strategy | str | os.PathLike, *, dataset: str, batch_size: int,
               seq_len: int | None = None, devices: Sequence[jax.Device] | None = None) -> ShardPlan:
    """The plan of `strategy` (a Strategy for the model's imported graph, or a strategy.json written by
    search.optimize) for `model` trained on `dataset` in batches of `batch_size` (token ids: of `seq_len`
    tokens); strategy device id i is `devices[i]` (default: jax.devices())."""
    imported = import_model(model, dataset, batch_size, seq_len=seq_len)
    graph = imported.graph
    if not isinstance(strategy, Strategy):
        path = os.fspath(strategy)
        text = read_text("strategy", path, "a strategy.json written by search.optimize")
        strategy = strategy_from_json(text, graph, strategy_file_devices(text), source=f"strategy {path!r}")
    return lower_plan(graph, imported.sources, nnx.state(model), strategy, devices)


def lower_plan(graph: OpGraph, sources: tuple[Source, ...], state: nnx.State, strategy: Strategy,
               devices: Sequence[jax.Device] | None = None) -> ShardPlan:
    """The plan of `strategy` for the model whose imported graph is `graph` (models.importer: its arrays at
    `sources`) and whose nnx.state is `state` (arrays or abstract: only its paths and variables are read)."""
    require_one_program(graph, strategy)
    shardings = strategy_shardings(graph, strategy, devices)
    (stage,) = step_stages(graph, shardings)
    mesh = stage_mesh([sharding for op in stage.ops for sharding in (
        shardings.activations[op.name], *shardings.params.get(op.name, {}).values())])
    meshes = {name: sharding.mesh for name, sharding in shardings.activations.items()}
    labels = shardings.activations[loss_op(graph).name]
    first = graph.ops[0]
    images = input_sharding(first, shardings.activations[first.name])  # where the first op reads them
    state_shardings = _state_shardings(state, sources, shardings, mesh)
    specs = jax.tree.map(lambda sharding: _canonical(refine(sharding, mesh).spec), state_shardings)
    return ShardPlan(graph, sources, strategy, shardings, state_shardings, mesh, meshes, images, labels, specs)


def require_one_program(graph: OpGraph, strategy: Strategy) -> None:
    """PlanError unless `strategy` is one stage (soap.stages): what one jitted step runs."""
    stages = split_stages(graph, {name: config.device_set for name, config in strategy.items()})
    if len(stages) > 1:
        raise PlanError(f"the strategy puts {graph.model}'s ops on different device sets ({len(stages)} stages, the "
                        f"first {list(stages[0].names)}), which one jitted step cannot run; {RUN_STAGED}")


def strategy_file_devices(text: str) -> int:
    """The device count a strategy file says (strategy_from_json then checks the rest); the process's
    device count where the file does not say one, for strategy_from_json's own one-line error."""
    try:
        count = json.loads(text).get("num_devices")
    except (ValueError, AttributeError):
        count = None
    return count if isinstance(count, int) and count > 0 else jax.device_count()


def _variables(model: nnx.Module) -> dict[Path, nnx.Variable]:
    """The model's live variables by nnx state path (reading and setting them reads and sets the model's)."""
    return {path: node for path, node in nnx.iter_graph(model) if isinstance(node, nnx.Variable)}


def _per_op(sources: tuple[Source, ...], variables: dict[Path, nnx.Variable], trainable: bool) -> dict:
    """The model's current arrays in the graph's per-op layout (op -> {name -> array}; an array the graph
    holds reshaped, reshaped: differentiable, so the gradient reaches the module's own variable)."""
    tree: dict[str, dict[str, jax.Array]] = {}
    for source in sources:
        if source.trainable == trainable:
            tree.setdefault(source.op, {})[source.name] = source.to_graph(variables[source.path].get_value())
    return tree


def _canonical(spec: PartitionSpec) -> PartitionSpec:
    """`spec` without its trailing Nones, as the jitted step's outputs name their shardings: a parameter
    placed as P(None,) and returned as P() would compile the user's step a second time."""
    entries = list(spec)
    while entries and entries[-1] is None:
        entries.pop()
    return PartitionSpec(*entries)


def _module_sharding(sharding: NamedSharding, source: Source) -> NamedSharding:
    """The sharding of the graph's array `source` as one of the module's variable. Where the graph holds the
    variable reshaped (dims merged: [d h k] as [d (h k)]), a split of a merged dim into contiguous blocks is
    a split of its leading dim: the space splits such a dim only by a degree its heads divide
    (models/kinds/dense.py, soap.space), so the op's mesh axis splitting it goes to the heads h."""
    if source.shapes is None:
        return sharding
    spec = _merged_dims_spec(sharding, *source.shapes)
    assert spec is not None, (source, sharding)
    return NamedSharding(sharding.mesh, spec)


def _merged_dims_spec(sharding: NamedSharding, module_shape: tuple[int, ...],
                      graph_shape: tuple[int, ...]) -> PartitionSpec | None:
    """`sharding`'s spec on the graph's shape as a spec on the module's (each graph dim a run of module dims,
    each mesh axis of a dim's entry, major first, given to the first of its module dims not split whole);
    None where an axis would straddle two module dims."""
    sizes = dict(zip(sharding.mesh.axis_names, sharding.mesh.devices.shape))
    entries = tuple(sharding.spec) + (None,) * (len(graph_shape) - len(sharding.spec))
    spec, start = [], 0
    for size, entry in zip(graph_shape, entries):
        group = [start]
        while math.prod(module_shape[group[0]:group[-1] + 1]) < size:
            group.append(group[-1] + 1)
        start = group[-1] + 1
        names = (entry,) if isinstance(entry, str) else tuple(entry or ())
        split = [[] for _ in group]
        index, left = 0, module_shape[group[0]]
        for name in names:
            while left == 1 and index + 1 < len(group):
                index += 1
                left = module_shape[group[index]]
            if left % sizes[name]:
                return None
            split[index].append(name)
            left //= sizes[name]
        spec += [tuple(names) if len(names) > 1 else names[0] if names else None for names in split]
    return PartitionSpec(*spec)


def _state_shardings(state: nnx.State, sources: tuple[Source, ...], shardings: Shardings, mesh: Mesh) -> nnx.State:
    """`state` (a model's nnx.state) with each array's NamedSharding in its place."""
    by_path = {}
    for source in sources:
        arrays = (shardings.params if source.trainable else shardings.state).get(source.op, {})
        if source.name in arrays:
            by_path[source.path] = _module_sharding(arrays[source.name], source)
    replicated = NamedSharding(mesh, PartitionSpec())
    return nnx.from_flat_state([(path, variable.replace(by_path.get(path, replicated)))
                                for path, variable in nnx.to_flat_state(state)])
