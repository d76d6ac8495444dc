"""A user's imported model runs its own parameters: every baseline, a random and a searched strategy of
the test models (tests/models/test_importer.py) give the module's own loss, updated parameters and
batch-norm averages after one SGD step, on 2 CPU devices here and on the 2-process local cluster; so does
a token model with cross-attention under data parallel and Megatron's layout, and a hand-written GPT
(tests/models/user_gpt.py) under Megatron's layout on the 2-process cluster."""

from dataclasses import dataclass

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from models.batch import synthetic_batch
from models.importer import ImportedModel, import_model
from soap.baselines import BASELINES, data_parallel, megatron, random_strategy
from soap.devices import ClusterJob, run_on_cluster
from soap.runner import InitialValues, RunConfig, RunResult, module_loss, run_strategy
from tests.models.test_importer import BATCH, DATASET, MeanMLP, ResidualCNN, TwoBranch, _build
from tests.models.test_importer_transformers import TokenModel, cross_attention
from tests.models.user_gpt import GPT

CONFIG = RunConfig(fetch_params=True)  # one step of SGD with momentum, learning rate 0.01


@dataclass(frozen=True, eq=False)
class Expected:
    """One step of the user's module on one device: what every strategy must give (by nnx path)."""

    imported: ImportedModel
    loss: float
    params: dict
    model_state: dict

    def assert_matches(self, result: RunResult) -> None:
        np.testing.assert_allclose(result.losses[0], self.loss, rtol=1e-5)
        for expected, got in ((self.params, result.params), (self.model_state, result.model_state)):
            mapped = self.imported.module_paths(got)
            assert set(mapped) == set(expected)
            for path, value in expected.items():
                # A conv's bias before a batch norm has a gradient of zero in exact arithmetic: rounding
                # noise, compared at the scale of the array's step.
                np.testing.assert_allclose(mapped[path], value, rtol=1e-5, atol=1e-7, err_msg=str(path))


def _one_device_step(module: nnx.Module, imported: ImportedModel) -> Expected:
    images, labels = synthetic_batch(imported.graph, CONFIG.seed)
    module.train()
    optimizer = nnx.Optimizer(module, optax.sgd(0.01, momentum=0.9), wrt=nnx.Param)

    @nnx.jit
    def step(module, optimizer, images, labels):
        def loss_fn(module):
            return optax.softmax_cross_entropy_with_integer_labels(module(images), labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(module)
        optimizer.update(module, grads)
        return loss

    loss = float(step(module, optimizer, images, labels))
    # Parameters and batch-norm averages (a dropout's random key is state too, and no array of the graph's).
    flat = {path: np.asarray(variable.get_value())
            for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Any(nnx.Param, nnx.BatchStat)))}
    params = {path: flat[path] for path in imported.module_paths(imported.params)}
    state = {path: flat[path] for path in imported.module_paths(imported.state)}
    return Expected(imported, loss, params, state)


MODELS = {"residual": ResidualCNN, "two-branch": TwoBranch, "mean-mlp": MeanMLP}


@pytest.fixture(scope="module", params=sorted(MODELS))
def expected(request) -> Expected:
    module = _build(MODELS[request.param])
    imported = import_model(module, DATASET, BATCH)
    reference = module_loss(module, imported.graph, CONFIG.seed)  # what report.json's reference_loss says
    expected = _one_device_step(module, imported)
    # The reference is the module's own first-step loss, and computing it left the module as it was.
    assert reference == pytest.approx(expected.loss, rel=1e-6)
    return expected


def _strategies(graph):
    # Seed 6 draws strategies of 3-4 stages for these models (seed 3: up to 11, each a program to compile).
    return {**{name: baseline(graph, 2) for name, baseline in BASELINES.items()},
            "random": random_strategy(graph, 2, np.random.default_rng(6)), "searched": _searched(graph)}


def _searched(graph):
    """What search.optimize would search for the model on 2 datasheet devices (a short search)."""
    from search.mcmc import Budget
    from search.strategy_search import baseline_strategies, search_starts, search_strategy
    from simulator.cost import RooflineCostModel
    from simulator.machine import machine_preset

    machine = machine_preset("p100x2-pcie", 2)
    baselines, _ = baseline_strategies(graph, 2)
    starts = search_starts(graph, 2, baselines, seed=0)
    return search_strategy(graph, machine, RooflineCostModel(machine.device), starts,
                           Budget(iterations=300, min_iterations=1), seed=0).best


def test_every_strategy_trains_the_module_s_own_parameters_as_one_device_does(expected):
    imported = expected.imported
    initial = InitialValues(imported.params, imported.state)
    for name, strategy in _strategies(imported.graph).items():
        result = run_strategy(imported.graph, strategy, CONFIG, jax.devices()[:2], initial)
        try:
            expected.assert_matches(result)
        except AssertionError as error:
            raise AssertionError(f"strategy {name}: {error}") from None


@pytest.mark.parametrize("baseline", [data_parallel, megatron], ids=["data-parallel", "megatron"])
def test_cross_attention_trains_on_2_devices_as_on_one(baseline):
    """nnx.MultiHeadAttention from the tokens to a memory beside them (tests/models/
    test_importer_transformers.py): Megatron splits its heads, q's input and k's and v's apart."""
    module = TokenModel(cross_attention(), nnx.Rngs(0))
    imported = import_model(module, "tokens", BATCH, seq_len=8)
    expected = _one_device_step(module, imported)
    result = run_strategy(imported.graph, baseline(imported.graph, 2), CONFIG, jax.devices()[:2],
                          InitialValues(imported.params, imported.state))
    expected.assert_matches(result)


def test_a_job_carries_the_initial_values_to_its_workers(tmp_path):
    imported = import_model(nnx.eval_shape(lambda: MeanMLP(rngs=nnx.Rngs(0))), DATASET, BATCH)
    initial = InitialValues({"hidden": {"kernel": np.ones((16, 32), np.float32)}}, {})
    job = ClusterJob.for_strategies(imported.graph, [], RunConfig(), initial)
    for name, data in job.files().items():
        (tmp_path / name).write_bytes(data)
    read = ClusterJob.from_json(job.to_json(), tmp_path)
    assert (read.graph, read.strategies, read.run) == (job.graph, job.strategies, job.run)
    np.testing.assert_array_equal(read.initial.params["hidden"]["kernel"], initial.params["hidden"]["kernel"])
    assert read.initial.model_state == {}


def test_the_module_s_own_parameters_train_on_the_2_process_cluster():
    module = _build(ResidualCNN)
    imported = import_model(module, DATASET, BATCH)
    graph = imported.graph
    # One strategy: what this adds to the in-process runs is the initial values reaching the workers.
    job = ClusterJob.for_strategies(graph, [BASELINES["owt"](graph, 2)], CONFIG,
                                    InitialValues(imported.params, imported.state))
    (result,) = run_on_cluster(job, num_workers=2, timeout_s=300).results
    _one_device_step(module, imported).assert_matches(result)


def test_a_hand_written_gpt_trains_under_megatron_on_the_2_process_cluster():
    """Its tied head (one table, two readers), hand-written causal attention and vocabulary-parallel loss,
    with the partial sums all-reduced across processes."""
    module = GPT(vocab=64, context=16, width=32, heads=4, depth=1, rate=0.0, rngs=nnx.Rngs(0))
    imported = import_model(module, "tokens", BATCH, seq_len=16)
    expected = _one_device_step(module, imported)
    job = ClusterJob.for_strategies(imported.graph, [megatron(imported.graph, 2)], CONFIG,
                                    InitialValues(imported.params, imported.state))
    (result,) = run_on_cluster(job, num_workers=2, timeout_s=300).results
    expected.assert_matches(result)
