"""Run a strategy for real on JAX's devices (this process's, or a cluster's): lower, train, fetch, time.

    result = run_strategy(graph, owt(graph, 2), RunConfig(steps=1, timed_steps=10))
    result.losses, result.step_time.median_ms

Every process of a cluster calls this with the same arguments (SPMD, one program per process); the
initial parameters and the batch come from seeds, so every process builds the same ones and places
only its shards. A user's imported model trains its own parameters and batch-norm state instead
(`InitialValues`, e.g. from models.importer.ImportedModel), and its reference loss is its own module
called directly (`module_loss`). The first `steps` steps give the losses and the parameters; the timing steps follow.
Process 0 reports: values are moved to it to be read, and the other processes' results carry NaN
losses and no parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from models.batch import synthetic_batch
from models.graph import OpGraph
from models.keys import step_key
from models.network import Params, init_params, init_state, module_with
from soap.timing import StepTime, time_steps
from soap.optimizer import Optimizer
from soap.step import TrainStep
from soap.transfer import transfer
from soap.lowering import strategy_shardings
from soap.strategy import Strategy


@dataclass(frozen=True)
class RunConfig:
    """How to run a strategy: steps kept for their losses, then timed steps (0: no timing)."""

    steps: int = 1
    warmup_steps: int = 2
    timed_steps: int = 0
    seed: int = 0
    optimizer: str = "sgd"  # soap.optimizer.Optimizer: sgd (momentum 0.9) or adamw
    learning_rate: float | None = None  # None: the optimizer's usual (soap.optimizer)
    fetch_params: bool = False


@dataclass(frozen=True)
class RunResult:
    losses: tuple[float, ...]
    params: dict[str, dict[str, np.ndarray]] | None  # after the first `steps` steps, if fetched
    model_state: dict[str, dict[str, np.ndarray]] | None  # batch norm's running averages then, if fetched
    step_time: StepTime | None
    num_stages: int


@dataclass(frozen=True, eq=False)
class InitialValues:
    """The parameters and model state a run starts from (op name -> {array name -> host array}), where they
    are not the graph's seeded initial ones: a user's module trains its own. Arrays: compared by identity."""

    params: dict[str, dict[str, np.ndarray]]
    model_state: dict[str, dict[str, np.ndarray]]

    @classmethod
    def seeded(cls, graph: OpGraph, seed: int) -> InitialValues:
        """The graph's own initial values: init_params(graph, seed) and init_state(graph)."""
        return cls(jax.tree.map(np.asarray, init_params(graph, seed)), init_state(graph))


def module_loss(module: nnx.Module, graph: OpGraph, seed: int = 0) -> float:
    """The mean softmax cross-entropy of a user's module (its `__call__(images) -> logits`, training mode)
    called directly on this process's first device on the first batch a run with `seed` uses: the
    reference loss of an imported model. A copy runs, so the module's batch-norm averages stay as they are."""
    images, labels = synthetic_batch(graph, seed)
    graphdef, state = nnx.split(module)
    device = jax.devices()[0]

    def loss(state, images, labels):
        copy = nnx.merge(graphdef, state)
        copy.train()
        return optax.softmax_cross_entropy_with_integer_labels(copy(images), labels).mean()

    return float(jax.jit(loss)(jax.device_put(state, device), jax.device_put(images, device),
                               jax.device_put(labels, device)))


def reference_loss(graph: OpGraph, seed: int = 0) -> float:
    """The loss of the model's own flax module (models.network.Network) called directly on this process's
    first device, on the first batch and the initial parameters a run with `seed` uses: what the first
    step of every strategy must compute."""
    images, labels = synthetic_batch(graph, seed)
    device = jax.devices()[0]
    params = jax.device_put(init_params(graph, seed), device)
    losses = jax.jit(lambda p, x, y: module_with(graph, p)(x, y))(params, jax.device_put(images, device),
                                                                    jax.device_put(labels, device))
    return float(np.mean(np.asarray(losses)))


def to_host(value: jax.Array) -> np.ndarray | None:
    """A global array's whole value on process 0; None on the other processes of a cluster.

    Every process must call it for the same arrays in the same order: where the array lives on other
    processes' devices, it is moved to process 0's first device (soap.transfer).
    """
    if jax.process_count() == 1:
        return np.asarray(value)
    reporter = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("reporter",), axis_types=(AxisType.Auto,)),
                             PartitionSpec())
    fetched = transfer(value, reporter)
    return np.asarray(fetched) if jax.process_index() == 0 else None


def _fetch_params(params: Params) -> dict[str, dict[str, np.ndarray]] | None:
    fetched = {name: {k: to_host(v) for k, v in entry.items()} for name, entry in params.items()}
    return fetched if jax.process_index() == 0 else None


def run_strategy(graph: OpGraph, strategy: Strategy, config: RunConfig = RunConfig(),
                 devices: Sequence[jax.Device] | None = None, initial: InitialValues | None = None) -> RunResult:
    """Train `strategy` from `initial` (default: the graph's seeded initial values) on the seeded batch."""
    step = TrainStep(graph, strategy_shardings(graph, strategy, devices),
                     Optimizer(config.optimizer).transformation(config.learning_rate), seed=config.seed)
    initial = initial or InitialValues.seeded(graph, config.seed)
    state = step.init(initial.params, initial.model_state)
    images, labels = step.place_batch(*synthetic_batch(graph, config.seed))
    losses = []
    for _ in range(config.steps):
        loss, state = step(state, images, labels)
        value = to_host(loss)
        losses.append(float("nan") if value is None else float(value))
    params = _fetch_params(state.params) if config.fetch_params else None
    model_state = _fetch_params(state.model_state) if config.fetch_params else None
    step_time = None
    if config.timed_steps:
        def one_step():
            nonlocal state
            loss, state = step(state, images, labels)
            return loss, state
        step_time = time_steps(one_step, config.warmup_steps, config.timed_steps)
    return RunResult(tuple(losses), params, model_state, step_time, len(step.stages))
