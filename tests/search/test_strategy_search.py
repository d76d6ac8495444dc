"""The SOAP search against exhaustive enumeration on a reduced AlexNet, and its guarantees."""

import itertools
import math

import numpy as np
import pytest

from models.graph import GraphBuilder
from search.mcmc import Budget
from search.strategy_search import search_strategy
from simulator.simulate import Simulator
from soap.baselines import data_parallel, model_parallel, owt, random_strategy, single
from soap.space import enumerate_configs
from soap.strategy import Strategy
from tests.simulator.fakes import FlopCost, fake_machine


def reduced_alexnet():
    """AlexNet's first ops (conv1, pool1) with a small head, at 32x32, batch 8: 5 ops, 864 strategies (pool1 is 3x3, so it splits on batch and channels only)."""
    builder = GraphBuilder("alexnet-head", "toy", (8, 32, 32, 3))
    builder.conv2d("conv1", 64, kernel=11, stride=4)
    builder.pool2d("pool1")
    builder.flatten("flatten")
    builder.dense("fc", 512)
    builder.softmax_xent("loss")
    return builder.build(8)


GRAPH = reduced_alexnet()
MACHINE = fake_machine(2, bandwidth_bytes_per_s=2e9, latency_s=1e-5)
COST = FlopCost(ms_per_gflop=10.0)


def exhaustive_best_ms() -> float:
    simulator = Simulator(GRAPH, MACHINE, COST)
    spaces = [enumerate_configs(op, 2) for op in GRAPH.ops]
    assert math.prod(len(space) for space in spaces) == 6 * 4 * 3 * 4 * 3 == 864
    best = math.inf
    for configs in itertools.product(*spaces):
        strategy = Strategy.for_graph(GRAPH, 2, dict(zip((op.name for op in GRAPH.ops), configs)))
        best = min(best, simulator.full(strategy).step_ms)
    return best


def starts():
    return [("data_parallel", data_parallel(GRAPH, 2)), ("owt", owt(GRAPH, 2)),
            ("model_parallel", model_parallel(GRAPH, 2)), ("random", random_strategy(GRAPH, 2, np.random.default_rng(0)))]


def test_search_finds_the_exhaustive_optimum_and_is_deterministic():
    budget = Budget(iterations=8000, min_iterations=1500)
    first = search_strategy(GRAPH, MACHINE, COST, starts(), budget, seed=3)
    assert first.best_ms == pytest.approx(exhaustive_best_ms(), rel=1e-12)
    second = search_strategy(GRAPH, MACHINE, COST, starts(), budget, seed=3)
    assert second.best == first.best and second.iterations == first.iterations
    assert Simulator(GRAPH, MACHINE, COST).full(first.best).step_ms == first.best_ms


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_result_is_never_worse_than_the_best_start(seed):
    result = search_strategy(GRAPH, MACHINE, COST, starts(), Budget(iterations=40, min_iterations=1), seed=seed)
    assert result.best_ms <= min(chain.start_ms for chain in result.chains)
    assert all(chain.mcmc.best_cost <= chain.start_ms for chain in result.chains)


def test_strategies_over_memory_are_never_chosen():
    tight = fake_machine(2, bandwidth_bytes_per_s=2e9, memory_bytes=2_600_000)
    # fc's weights, gradients and momentum alone (3 x 576 x 512 x 4 B = 3.5 MB) overflow one device.
    assert not Simulator(GRAPH, tight, COST).full(single(GRAPH, 2)).fits_memory
    result = search_strategy(GRAPH, tight, COST, starts(), Budget(iterations=2000, min_iterations=500), seed=0)
    assert math.isfinite(result.best_ms)
    assert Simulator(GRAPH, tight, COST).full(result.best).fits_memory
