"""The greedy descent: its neighbourhood, local optimality, and the search with it among the moves."""

import itertools

import numpy as np
import pytest

from benchmarks.search_time import run_size
from models.zoo import build_graph
from search.descent import descend, descent_move, op_neighbourhoods
from search.mcmc import Budget
from search.proposals import adjacent_splits
from search import strategy_search
from search.strategy_search import baseline_strategies, priced_ms, search_starts, search_strategy
from simulator.simulate import Simulator
from soap.baselines import data_parallel, single
from soap.config import ParallelConfig
from soap.space import enumerate_configs, valid_degrees
from tests.search.test_proposals import two_dense_and_loss
from tests.search.test_strategy_search import COST, GRAPH, reduced_alexnet
from tests.simulator.fakes import fake_machine

MACHINE4 = fake_machine(4, bandwidth_bytes_per_s=2e9, latency_s=1e-5)


def is_aligned_block(config: ParallelConfig) -> bool:
    first = config.devices[0]
    return first % config.num_tasks == 0 and config.devices == tuple(range(first, first + config.num_tasks))


def test_the_neighbourhood_is_the_current_and_adjacent_splits_on_every_aligned_block():
    graph = two_dense_and_loss()
    neighbourhood = op_neighbourhoods(graph, 8)
    fc1 = graph.op("fc1")
    current = ParallelConfig((2, 2, 1), (4, 5, 6, 7))
    nearby = {current.degrees, *adjacent_splits(current.degrees, valid_degrees(fc1, 8))}
    expected = [config for config in enumerate_configs(fc1, 8) if config.degrees in nearby and is_aligned_block(config)]
    found = neighbourhood(0, current)
    assert sorted(found, key=expected.index) == expected and len(set(found)) == len(found)
    assert [config.degrees for config in found[:2]] == [(2, 2, 1), (2, 2, 1)]  # the current split's blocks first
    # (2, 2) on either half, (1, 1) on each device, 8 tasks (4 x 2, 2 x 4, 8 x 1, 1 x 8 ...) on all of them.
    assert current in expected and ParallelConfig((2, 2, 1), (0, 1, 2, 3)) in expected
    assert {config.devices for config in expected if config.degrees == (1, 1, 1)} == {(d,) for d in range(8)}
    assert ParallelConfig((4, 2, 1), tuple(range(8))) in expected and ParallelConfig((1, 2, 1), (2, 3)) in expected
    assert all(config.degrees != (8, 2, 1) for config in expected)  # 16 tasks: not on 8 devices


def price_on(graph, machine):
    simulator = Simulator(graph, machine, COST)
    return lambda strategy: priced_ms(simulator.full(strategy))


@pytest.mark.parametrize("start", [single, data_parallel])
def test_the_descent_ends_at_a_local_optimum_no_slower_than_its_start(start):
    price = price_on(GRAPH, MACHINE4)
    neighbourhood = op_neighbourhoods(GRAPH, 4)
    strategy = start(GRAPH, 4)
    result = descend(strategy, price, GRAPH, neighbourhood)
    assert result.ms == price(result.strategy) <= price(strategy)
    assert result.simulations > 1
    for i, op in enumerate(GRAPH.ops):
        for config in neighbourhood(i, result.strategy[op.name]):
            assert price(result.strategy.with_config(op.name, config)) >= result.ms
    assert descend(strategy, price, GRAPH, neighbourhood) == result  # same start, same prices: same descent


def test_a_stop_request_keeps_the_start():
    price = price_on(GRAPH, MACHINE4)
    strategy = single(GRAPH, 4)
    result = descend(strategy, price, GRAPH, op_neighbourhoods(GRAPH, 4), stop_requested=lambda: True)
    assert result.strategy == strategy and result.simulations == 1 and result.ms == price(strategy)


def test_the_move_proposes_the_descended_strategy_and_none_at_a_local_optimum():
    price = price_on(GRAPH, MACHINE4)
    move = descent_move(GRAPH, 4, price)
    rng = np.random.default_rng(0)
    found = move(single(GRAPH, 4), rng)
    assert found is not None and price(found) < price(single(GRAPH, 4))
    assert move(found, rng) is None


def test_a_search_with_descents_is_no_worse_than_its_best_start_and_repeats_with_its_seed():
    graph = reduced_alexnet()
    starts = search_starts(graph, 4, baseline_strategies(graph, 4)[0], seed=0)
    runs = [search_strategy(graph, MACHINE4, COST, starts, Budget(iterations=600), seed=3, descent=True)
            for _ in range(2)]
    assert runs[0].best == runs[1].best and runs[0].iterations == runs[1].iterations
    assert runs[0].best_ms <= min(ms for _, _, ms in runs[0].starts)
    assert runs[0].descent_simulations > 0  # 600 iterations at 0.5%: about 3 descents
    assert runs[0].simulations_per_second == pytest.approx(
        (runs[0].iterations + runs[0].descent_simulations) / runs[0].seconds)


def test_full_and_delta_simulation_lead_a_search_with_descents_alike():
    # run_size asserts that the delta and the full search end at the same strategy, and each stops at the
    # same iteration: as soon as its best is within 1% of the reference.
    row = run_size(build_graph("alexnet", "tiny-imagenet", 128), 8, iterations=300, seeds=(0,), descent=True)
    assert (row["delta_s_by_seed"][0] is None) == (row["full_s_by_seed"][0] is None)


def test_a_descent_stops_at_its_chains_time_budget(monkeypatch):
    # Every proposal a descent, and a clock that advances one second each time it is read (the descent reads
    # it before each op it visits): a chain's share of the budget ends inside its first descent, which then
    # stops there, as the chain does. The budget leaves the chains time after the starts (338 reads).
    monkeypatch.setattr(strategy_search, "DESCENT_SHARE", 1.0)
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    ticks = itertools.count()
    result = search_strategy(graph, fake_machine(16), COST, [("single", single(graph, 16))],
                             Budget(seconds=3000.0, iterations=10**6), seed=0, descent=True,
                             clock=lambda: float(next(ticks)))
    assert result.chains[0].began_at_s < 3000 - 100
    assert result.seconds <= 3000 + len(result.chains) * 3
