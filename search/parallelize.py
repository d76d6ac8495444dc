"""SOAP as a library: search a strategy for a flax nnx model and hand back the plan of its own training step.

    import soap
    plan = soap.parallelize(model, images, num_devices=8, machine="h100x8", budget_s=20, optimizer="adamw")
    print(plan.table)                      # simulated step times: the searched strategy beside the baselines
    plan.annotate(model)                   # flax's sharding metadata: nnx.get_partition_spec(nnx.state(model))
    logits = plan.forward(model, images)   # in the user's own jitted step, instead of model(images)
    plan.save("strategy.json")             # and soap.load_plan(model, "strategy.json", images)

`parallelize` reads what the model trains on from `example_inputs`, one global batch of what its
`__call__` takes: NHWC float32 images of a registered dataset's size (models.datasets; where several
have that size, the one whose class count is the model's logits width) or [batch, seq] int32 token ids
(dataset `tokens`, the sequence length from the batch). It imports the module (models.importer), prices
strategies on `machine` (a preset such as "h100x8" or a Machine: the datasheet's roofline; "local": the
devices at hand, calibrated and cached as `python -m search.optimize --no-run` calibrates them) and
searches the SPMD space only (soap.space: every op on all `num_devices` devices, split any way), since a
user's step is one jitted program. The search is search.optimize's, from the baselines of that space
(data parallel, OWT, Megatron's where they exist) and a random strategy, and the plan holds its
recommendation (search.strategy_search.recommend).

Nothing but the plan's shardings needs devices: the strategy, the table and `save` come from the
simulator alone (search for "h100x8" on a laptop, save, load on the machine). The shardings, the mesh and
`forward` are built on first use on `jax.devices()[:num_devices]` (soap.plan.lower_plan); fewer devices
than that is one LoweringError line then. Bad input is one SoapError line.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from models.cli import read_text, write_atomic
from models.datasets import DATASETS, TOKEN_DATASETS
from models.errors import ModelImportError, SoapError
from models.graph import OpGraph
from models.importer import ImportedModel, Source, import_model
from models.user_model import summary
from search.mcmc import Budget
from search.report import StrategyRow, format_table, strategy_rows
from search.strategy_search import baseline_strategies, recommend, search_starts, search_strategy
from simulator.cost import RooflineCostModel
from simulator.calibrate import calibrate
from simulator.machine import Machine, load_machine
from soap.optimizer import Optimizer
from soap.plan import ShardPlan, lower_plan, require_one_program, strategy_file_devices
from soap.space import enumerate_configs
from soap.strategy import Strategy, strategy_from_json, strategy_to_json

LOCAL = "local"


class ParallelizeError(SoapError):
    """Inputs that soap.parallelize cannot plan for: a batch, a device count, an optimizer."""


@dataclass(frozen=True)
class Batch:
    """What one training step reads, as `example_inputs` says: a dataset's name, the global batch size and,
    for token ids, the sequence length (None for images)."""

    dataset: str
    batch_size: int
    seq_len: int | None = None


@dataclass(frozen=True)
class Plan:
    """A strategy for a user's model and what their own jitted step needs to run it (module docstring).

    Two plans are equal when their strategies are (the same graph on the same devices: everything else
    follows from it); a plan read back by `load_plan` has no table."""

    strategy: Strategy
    graph: OpGraph = field(compare=False, repr=False)
    sources: tuple[Source, ...] = field(compare=False, repr=False)  # where the graph's arrays live in the model
    state: nnx.State = field(compare=False, repr=False)  # the model's nnx.state, abstract (paths and variables)
    rows: tuple[StrategyRow, ...] = field(default=(), compare=False, repr=False)  # simulated, searched last
    note: str = field(default="", compare=False)  # why this strategy: search.strategy_search.Recommendation

    @functools.cached_property
    def lowered(self) -> ShardPlan:
        """The strategy on jax.devices()[:num_devices] (soap.plan), built on first use."""
        return lower_plan(self.graph, self.sources, self.state, self.strategy,
                          jax.devices()[:self.strategy.num_devices])

    @property
    def table(self) -> str:
        """The simulated table (search.report.format_table): every baseline and the searched strategy."""
        return format_table(list(self.rows)) if self.rows else "(no table: a plan read back by load_plan)"

    @property
    def state_shardings(self) -> nnx.State:
        """nnx.state(model) with each array's NamedSharding (on its op's mesh: soap.plan)."""
        return self.lowered.state_shardings

    @property
    def partition_specs(self) -> nnx.State:
        """nnx.state(model) with each array's PartitionSpec on `mesh`: what `annotate` writes."""
        return self.lowered.partition_specs

    @property
    def mesh(self) -> Mesh:
        return self.lowered.mesh

    @property
    def inputs_sharding(self) -> NamedSharding:
        """Where the batch's images or token ids go."""
        return self.lowered.images_sharding

    @property
    def labels_sharding(self) -> NamedSharding:
        return self.lowered.labels_sharding

    @property
    def forward(self) -> Callable[..., jax.Array]:
        """forward(model, inputs, key=None): the model's logits, every op placed as the strategy says, dropout
        drawn from `key` (soap.plan.ShardPlan.forward)."""
        return self.lowered.forward

    def annotate(self, model: nnx.Module) -> None:
        """Write the plan into `model`'s variables as flax's sharding metadata (soap.plan.ShardPlan.annotate)."""
        self.lowered.annotate(model)

    def save(self, path: str | os.PathLike) -> None:
        """Write the strategy to `path` as search.optimize writes strategy.json (soap.strategy)."""
        write_atomic(os.fspath(path), strategy_to_json(self.strategy, self.graph))


def parallelize(model: nnx.Module, example_inputs, *, num_devices: int | None = None,
                machine: str | Machine = LOCAL, budget_s: float | None = None, optimizer: str = "sgd",
                seed: int = 0) -> Plan:
    """The plan of the best SPMD strategy found for training `model` on batches like `example_inputs` on
    `num_devices` devices of `machine` (default: all of a preset's or a Machine's devices; for "local",
    every JAX device), with `optimizer` (sgd: momentum 0.9; adamw) priced in the step. `budget_s`: the
    search's seconds (None: search.strategy_search's adaptive budget, which can run minutes on large
    graphs); the same seed finds the same strategy when the search converges before its budget."""
    if num_devices is not None:
        _require_device_count(num_devices)
    optimizer = _optimizer(optimizer)
    simulated = None if machine == LOCAL else _simulated_machine(machine, num_devices)
    imported = _import(model, example_batch(model, example_inputs))
    return search_imported(model, imported, simulated, num_devices, budget_s, optimizer, seed)


def search_imported(model: nnx.Module, imported: ImportedModel, simulated: Machine | None, num_devices: int | None,
                    budget_s: float | None, optimizer: Optimizer, seed: int = 0) -> Plan:
    """`parallelize` after its import (benchmarks.parallelize_time times the two apart): the plan of the best
    SPMD strategy for `imported` on `simulated` (None: the local devices, calibrated)."""
    num_devices = num_devices or (jax.device_count() if simulated is None else simulated.num_devices)
    graph = imported.graph
    _require_spmd_space(graph, num_devices)
    machine, cost_model = (calibrate(graph, num_devices, optimizer=optimizer.value) if simulated is None
                           else (simulated, RooflineCostModel(simulated.device, optimizer=optimizer)))
    baselines, _ = baseline_strategies(graph, num_devices, machine.devices_per_node)
    starts = search_starts(graph, num_devices, baselines, seed, spmd=True)
    budget = None if budget_s is None else Budget(seconds=budget_s)
    chosen = recommend(search_strategy(graph, machine, cost_model, starts, budget, seed, spmd=True))
    strategies = {**baselines, "searched": chosen.strategy}
    rows = strategy_rows(graph, machine, cost_model, strategies, {}, chosen, None)
    return Plan(chosen.strategy, graph, imported.sources, _abstract(model), tuple(rows), chosen.note)


def load_plan(model: nnx.Module, path: str | os.PathLike, example_inputs, *, num_devices: int | None = None) -> Plan:
    """The plan `Plan.save` wrote to `path` (or search.optimize's strategy.json of one program) for `model`
    on batches like `example_inputs`; on the file's device count, or `num_devices` if given (checked)."""
    batch = example_batch(model, example_inputs)
    imported = _import(model, batch)
    path = os.fspath(path)
    text = read_text("plan", path, "a strategy.json that Plan.save or search.optimize wrote")
    count = strategy_file_devices(text) if num_devices is None else _require_device_count(num_devices)
    strategy = strategy_from_json(text, imported.graph, count, source=f"plan {path!r}")
    require_one_program(imported.graph, strategy)
    return Plan(strategy, imported.graph, imported.sources, _abstract(model), note=f"loaded from {path}")


def example_batch(model: nnx.Module, example_inputs) -> Batch:
    """The dataset, batch size and sequence length that `example_inputs` (an array or a
    jax.ShapeDtypeStruct) stands for; ParallelizeError (one line) when it matches none."""
    shape, dtype = tuple(getattr(example_inputs, "shape", ())), np.dtype(getattr(example_inputs, "dtype", object))
    if len(shape) == 2 and dtype == np.int32:
        return Batch(TOKEN_DATASETS[0], *shape)
    if len(shape) == 4 and dtype == np.float32:
        sized = [name for name, data in DATASETS.items() if (data.height, data.width, data.channels) == shape[1:]]
        classes = _logits_width(model, shape) if sized else None
        matched = [name for name in sized if DATASETS[name].classes == classes]
        if matched:
            return Batch(matched[0], shape[0])
        found = ("no dataset of that image size" if not sized else f"logits of {classes} classes" if classes
                 else "the model's output is not [batch, classes] logits")
    else:
        found = "neither images nor token ids"
    datasets = ", ".join(f"{name} {data.height}x{data.width}x{data.channels} with {data.classes} classes"
                         for name, data in DATASETS.items())
    raise ParallelizeError(f"example_inputs of shape {shape} and dtype {dtype} ({found}) match no dataset; pass one "
                           f"global batch of float32 NHWC images ({datasets}) or of [batch, seq] int32 token ids")


def _logits_width(model: nnx.Module, shape: tuple[int, ...]) -> int | None:
    """The last dim of the model's output on a float32 batch of `shape`, traced abstractly (the model is
    not changed); None where it is not a [batch, classes] array."""
    graphdef, state = nnx.split(model)
    images = jax.ShapeDtypeStruct(shape, jnp.float32)
    try:
        logits = jax.eval_shape(lambda state, images: nnx.merge(graphdef, state)(images), state, images)
    except Exception as error:  # the user's own forward failing: one line, not a traceback
        raise ModelImportError(f"calling {type(model).__name__} on example_inputs {shape} float32 failed: "
                               f"{summary(error)}; its __call__ must take the batch and return the logits") from None
    return logits.shape[-1] if len(getattr(logits, "shape", ())) == 2 else None


def _import(model: nnx.Module, batch: Batch) -> ImportedModel:
    if batch.seq_len is None:
        return import_model(model, batch.dataset, batch.batch_size)
    return import_model(model, batch.dataset, batch.batch_size, seq_len=batch.seq_len)


def _abstract(model: nnx.Module) -> nnx.State:
    """nnx.state(model) with ShapeDtypeStructs for arrays: what a plan keeps (not the model's arrays)."""
    return jax.tree.map(lambda array: jax.ShapeDtypeStruct(array.shape, array.dtype), nnx.state(model))


def _require_device_count(num_devices) -> int:
    if not isinstance(num_devices, int) or isinstance(num_devices, bool) or num_devices < 1:
        raise ParallelizeError(f"num_devices must be an integer >= 1, got {num_devices!r}")
    return num_devices


def _optimizer(name: str) -> Optimizer:
    try:
        return Optimizer(name)
    except ValueError:
        raise ParallelizeError(f"unknown optimizer {name!r}; one of {', '.join(o.value for o in Optimizer)}") from None


def _require_spmd_space(graph: OpGraph, num_devices: int) -> None:
    """ParallelizeError unless every op splits into `num_devices` equal tasks (soap.space's SPMD space)."""
    for op in graph.ops:
        if not enumerate_configs(op, num_devices, spmd=True):
            labels = ", ".join(f"{label.name}={label.size}" for label in op.config_labels
                               if label.name in op.space.splittable)
            raise ParallelizeError(
                f"{op.kind.value} {op.name!r} ({labels}) splits into no {num_devices} equal tasks, so one jitted step "
                f"cannot run it on all {num_devices} devices; pass a batch size that {num_devices} divides (got "
                f"{graph.batch_size}) or fewer devices")


def _simulated_machine(machine: str | Machine, num_devices: int | None) -> Machine:
    """A preset, a machine file or a Machine, of `num_devices` devices (None: as it is), priced from its
    datasheet; one line for anything else."""
    if isinstance(machine, Machine):
        return machine if num_devices is None else machine.with_devices(num_devices)
    if isinstance(machine, str):
        return load_machine(machine, num_devices)
    raise ParallelizeError(f"machine must be {LOCAL!r}, a preset's name, a machine JSON path or a "
                           f"simulator.machine.Machine, got {type(machine).__name__}")
