"""The SOAP search against exhaustive enumeration on a reduced AlexNet, and its guarantees."""

import itertools
import math

import numpy as np
import pytest

from models.graph import GraphBuilder
from models.zoo import FamilyOptions, build_graph
from search.descent import descent_move
from search.mcmc import Budget
from search.strategy_search import (MAX_ADAPTIVE_BUDGET_S, SearchResult, _chain_budget, adaptive_budget,
                                    adaptive_min_iterations, baseline_strategies, priced_ms, proposal, recommend,
                                    search_starts, search_strategy)
from simulator.simulate import Simulator
from soap.baselines import TENSOR_PARALLEL, data_parallel, model_parallel, owt, random_strategy, single, tensor_degree
from soap.space import enumerate_configs, on_all_devices, valid_degrees
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


def _result(best_ms: float, **start_ms: float) -> SearchResult:
    strategies = {"data_parallel": data_parallel(GRAPH, 2), "owt": owt(GRAPH, 2),
                  "random": random_strategy(GRAPH, 2, np.random.default_rng(0))}
    return SearchResult(best=single(GRAPH, 2), best_ms=best_ms, chains=(),
                        starts=tuple((name, strategies[name], ms) for name, ms in start_ms.items()),
                        seconds=1.0, best_found_at_s=0.5, interrupted=False)


@pytest.mark.parametrize("best_ms, min_gain, kept", [
    (97.0, 0.02, None),  # 3% faster than owt: the search's best
    (98.5, 0.02, "owt"),  # 1.5%: owt is kept
    (100.0, 0.0, "owt"),  # not faster at all: kept even with no minimum gain
    (99.9, 0.0, None),
])
def test_recommend_keeps_the_best_known_start_unless_the_gain_is_large_enough(best_ms, min_gain, kept):
    result = _result(best_ms, data_parallel=120.0, owt=100.0, random=50.0)  # the random start is no reference
    chosen = recommend(result, min_gain)
    assert chosen.kept == kept
    if kept:
        assert chosen.strategy == owt(GRAPH, 2) and chosen.step_ms == 100.0 and chosen.note.startswith("kept owt")
    else:
        assert chosen.strategy == result.best and chosen.step_ms == best_ms


def test_recommend_never_keeps_a_start_over_memory():
    chosen = recommend(_result(500.0, data_parallel=math.inf, owt=math.inf), 0.02)
    assert chosen.kept is None and chosen.step_ms == 500.0


def test_the_minimum_before_convergence_grows_with_the_graph_and_the_devices():
    # Every (op, split) pair of the space once, at least FlexFlow's 1000.
    assert adaptive_min_iterations(GRAPH, 2) == 1000
    wide = GraphBuilder("wide", "toy", (64, 16, 16, 64))
    for index in range(40):
        wide.conv2d(f"conv{index}", 64, kernel=3)
    wide.flatten("flatten")
    wide.softmax_xent("loss")
    graph = wide.build(64)
    counts = [adaptive_min_iterations(graph, n) for n in (4, 16, 64)]
    assert counts[0] < counts[1] < counts[2]
    assert counts[2] == sum(len(valid_degrees(op, 64)) for op in graph.ops) > 1000


def test_a_budget_without_a_minimum_gets_the_adaptive_one():
    seen = set()
    search_strategy(GRAPH, MACHINE, COST, starts()[:1], Budget(iterations=30), seed=0,
                    on_iteration=lambda name, progress: seen.add(progress.budget.convergence_floor))
    assert seen == {adaptive_min_iterations(GRAPH, 2)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_full_proposal_changes_valid_configs_and_same_seed_same_proposal(seed):
    simulator = Simulator(GRAPH, MACHINE, COST)
    propose = proposal(GRAPH, 2, descent_move(GRAPH, 2, lambda strategy: priced_ms(simulator.full(strategy))))
    strategy = data_parallel(GRAPH, 2)
    rng, again = np.random.default_rng(seed), np.random.default_rng(seed)
    for _ in range(300):
        candidate = propose(strategy, rng)
        assert candidate == propose(strategy, again)
        if candidate is not None:
            assert candidate != strategy
            for op in GRAPH.ops:
                assert candidate[op.name] in enumerate_configs(op, 2)
            strategy = candidate


def test_the_progress_hooks_name_the_starts_being_built_then_every_start_with_its_price():
    events = []
    result = search_strategy(GRAPH, fake_machine(4), COST, [("data_parallel", data_parallel(GRAPH, 4))],
                             Budget(iterations=20), seed=0, on_building=lambda what: events.append(("building", what)),
                             on_starts=lambda priced, budget: events.append(("starts", (priced, budget))))
    assert [kind for kind, _ in events] == ["building", "building", "building", "starts"]
    assert events[0][1] == "data parallel on fewer devices" and events[1][1].startswith("additive")
    assert events[2][1].startswith("placed")
    assert events[3][1] == ([(name, ms) for name, _, ms in result.starts], Budget(iterations=20))


def test_the_adaptive_budget_gives_each_chain_twice_its_floor_and_seconds_for_twice_that_capped():
    budget = adaptive_budget(num_chains=7, min_iterations=1000, simulation_s=1e-4, spent_s=0.5)
    assert budget.iterations == 14_000 and budget.min_iterations == 1000
    assert budget.seconds == pytest.approx(0.5 + 2 * 14_000 * 1e-4)
    assert adaptive_budget(7, 22_165, 0.1, 30.0).seconds == MAX_ADAPTIVE_BUDGET_S


def test_no_budget_gets_the_adaptive_one_and_the_same_seed_the_same_strategy():
    def run():
        budgets = []
        # A clock that stands still: no seconds pass, so the iterations bind, whatever the machine's load.
        result = search_strategy(GRAPH, MACHINE, COST, starts()[:2], None, seed=3, clock=lambda: 0.0,
                                 on_starts=lambda priced, budget: budgets.append(budget))
        return result, budgets[0]

    (first, budget), (again, _) = run(), run()
    floor = adaptive_min_iterations(GRAPH, 2)
    assert budget.iterations == 2 * len(first.starts) * floor and budget.min_iterations == floor
    assert all(chain.mcmc.iterations <= 2 * floor for chain in first.chains)
    assert first.best == again.best and first.iterations == again.iterations


@pytest.mark.parametrize("spent_s, position, expected_s", [
    pytest.param(3.0, 0, 1.0, id="building-took-3-of-10-s"),
    pytest.param(6.0, 6, 4.0, id="the-last-chain-gets-what-is-left"),
    pytest.param(12.0, 0, 1e-9, id="nothing-left-the-chain-prices-its-start"),
])
def test_the_chains_share_the_seconds_left_after_building_the_starts(spent_s, position, expected_s):
    share = _chain_budget(Budget(seconds=10.0), 7, position, min_iterations=5, spent_s=spent_s)
    assert share.seconds == pytest.approx(expected_s) and share.min_iterations == 5 and share.iterations is None


def test_a_stop_requested_before_the_starts_are_built_builds_none_and_keeps_the_best_start():
    called = []
    result = search_strategy(GRAPH, MACHINE, COST, starts(), Budget(iterations=50), seed=0,
                             stop_requested=lambda: True, on_building=called.append)
    assert called == [] and result.interrupted
    assert result.best_ms == min(ms for _, _, ms in result.starts)


@pytest.mark.parametrize("collector_on", [True, False])
def test_the_cyclic_collector_is_off_while_searching_and_as_it_was_after(collector_on):
    import gc

    seen = []
    gc.enable() if collector_on else gc.disable()
    try:
        search_strategy(GRAPH, MACHINE, COST, starts(), Budget(iterations=8, min_iterations=1), seed=0,
                        on_iteration=lambda _name, _progress: seen.append(gc.isenabled()))
        assert seen and not any(seen)
        assert gc.isenabled() == collector_on

        def interrupted(_name, _progress):
            raise RuntimeError("stopped from a progress hook")

        with pytest.raises(RuntimeError):
            search_strategy(GRAPH, MACHINE, COST, starts(), Budget(iterations=8, min_iterations=1), seed=0,
                            on_iteration=interrupted)
        assert gc.isenabled() == collector_on
    finally:
        gc.enable()


def test_the_improvements_run_from_the_first_start_priced_to_the_best_in_time_order():
    starts = search_starts(GRAPH, 4, baseline_strategies(GRAPH, 4)[0], seed=0)
    result = search_strategy(GRAPH, fake_machine(4), COST, starts, Budget(iterations=300), seed=0, descent=True)
    times, costs = zip(*result.improvements)
    assert list(times) == sorted(times) and all(a > b for a, b in zip(costs, costs[1:]))
    assert costs[0] == result.starts[0][2] and costs[-1] == result.best_ms
    assert max(times) <= result.seconds
    fastest_start = min(ms for _, _, ms in result.starts)
    first_chain_s = min(chain.began_at_s for chain in result.chains)
    assert min(result.starts, key=lambda entry: entry[2])[0] not in dict(starts)  # a derived start is fastest
    assert any(ms <= fastest_start and seconds <= first_chain_s  # noted while the starts were built
               for seconds, ms in result.improvements)
    chain_bests = [chain.began_at_s + t for chain in result.chains for t, ms in chain.mcmc.history
                   if ms == result.best_ms]
    assert times[-1] <= min(chain_bests)


def test_megatron_baselines_keep_their_tensor_groups_inside_a_node():
    # 8 heads on 8 devices: one tensor group of 8 on one node, two groups of 4 on nodes of 4.
    graph = build_graph("gpt2", "tokens", 8, FamilyOptions(depth=1, width=32, heads=8, vocab=64, seq_len=8))
    whole, _ = baseline_strategies(graph, 8)
    in_nodes, _ = baseline_strategies(graph, 8, devices_per_node=4)
    assert tensor_degree(graph, 8) == 8 and tensor_degree(graph, 8, 4) == 4
    for name in ("megatron", "megatron_sp"):
        assert whole[name] == TENSOR_PARALLEL[name](graph, 8)
        assert in_nodes[name] == TENSOR_PARALLEL[name](graph, 8, 4) != whole[name]
    assert in_nodes["data_parallel"] == whole["data_parallel"]


def test_the_spmd_search_keeps_every_op_on_all_the_devices():
    """spmd=True: the starts, every chain's best and the result stay in soap.space's SPMD space, and the
    search finds its exhaustive optimum (fewer strategies than the whole space's 864)."""
    baselines, _ = baseline_strategies(GRAPH, 2)
    spmd_starts = search_starts(GRAPH, 2, baselines, seed=0, spmd=True)
    assert [name for name, _ in spmd_starts] == ["data_parallel", "owt", "random"]
    result = search_strategy(GRAPH, MACHINE, COST, spmd_starts, Budget(iterations=2000, min_iterations=500), seed=1,
                             spmd=True, descent=True)
    assert all(on_all_devices(strategy.values(), 2) for _, strategy, _ in result.starts)
    assert all(on_all_devices(chain.mcmc.best.values(), 2) for chain in result.chains)
    simulator = Simulator(GRAPH, MACHINE, COST)
    spaces = [enumerate_configs(op, 2, spmd=True) for op in GRAPH.ops]
    best = min(simulator.full(Strategy.for_graph(GRAPH, 2, dict(zip((op.name for op in GRAPH.ops), configs)))).step_ms
               for configs in itertools.product(*spaces))
    assert result.best_ms == pytest.approx(best, rel=1e-12)
    propose, rng, strategy = proposal(GRAPH, 2, spmd=True), np.random.default_rng(0), data_parallel(GRAPH, 2)
    for _ in range(500):
        strategy = propose(strategy, rng) or strategy
        assert on_all_devices(strategy.values(), 2)
