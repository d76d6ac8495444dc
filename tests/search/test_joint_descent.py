"""The joint descent (search.joint_descent): exact on additive costs, a descent on any price, and the placed
start of the search."""

import itertools

import numpy as np
import pytest

from models.graph import GraphBuilder
from models.zoo import build_graph
from search.descent import descend, op_neighbourhoods
from search.joint_descent import joint_descent
from search.mcmc import Budget
from search.starts import placed_starts
from search.strategy_search import PLACED_START, PLACED_STREAM, priced_ms, search_strategy
from soap.baselines import single
from soap.space import enumerate_configs
from soap.strategy import Strategy
from tests.search.test_strategy_search import COST
from tests.simulator.fakes import fake_machine
from tests.simulator.test_dag_simulate import fork_join_graph
from simulator.simulate import Simulator


def _problem(graph, num_devices, seed):
    """Each op's configs, random op costs and a random pair table on every edge."""
    rng = np.random.default_rng(seed)
    candidates = [enumerate_configs(op, num_devices) for op in graph.ops]
    op_costs = [rng.uniform(0.0, 10.0, len(own)) for own in candidates]
    pairs = {(graph.index(p), graph.index(op.name)) for op in graph.ops for p in graph.producers(op.name)}
    table = {(p, c): rng.uniform(0.0, 10.0, (len(candidates[p]), len(candidates[c]))) for p, c in sorted(pairs)}
    return candidates, op_costs, table


def _additive_price(graph, candidates, op_costs, table):
    def price(strategy: Strategy) -> float:
        choices = [own.index(strategy[op.name]) for own, op in zip(candidates, graph.ops)]
        return (sum(costs[k] for costs, k in zip(op_costs, choices))
                + sum(costs[choices[p], choices[c]] for (p, c), costs in table.items()))

    return price


def _strategy(graph, num_devices, candidates, choices):
    return Strategy.for_graph(graph, num_devices, {op.name: own[k] for op, own, k in zip(graph.ops, candidates,
                                                                                         choices)})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_an_additive_price_one_joint_step_reaches_the_exhaustive_optimum_of_a_branching_graph(seed):
    graph = fork_join_graph()  # stem -> bn and pool -> join -> flat -> loss
    candidates, op_costs, table = _problem(graph, 2, seed)
    price = _additive_price(graph, candidates, op_costs, table)
    least = min(sum(costs[k] for costs, k in zip(op_costs, choices))
                + sum(costs[choices[p], choices[c]] for (p, c), costs in table.items())
                for choices in itertools.product(*(range(len(own)) for own in candidates)))
    start = _strategy(graph, 2, candidates, [0] * len(candidates))
    other = {pair: costs[::-1, ::-1] for pair, costs in table.items()}  # a second table, wrong: never better
    found = joint_descent(start, price, graph, candidates, [other, table])
    assert found.ms == pytest.approx(least, rel=1e-12) and found.ms == price(found.strategy)
    # The start, a sweep of single changes and the joint ones, then a sweep finding nothing: the optimum's
    # joint change under `table` is no change (it is not priced again), `other`'s at most one price.
    singles = sum(len(own) - 1 for own in candidates)
    assert 1 + 2 * singles + 2 <= found.simulations <= 1 + 2 * singles + 3


def test_on_any_price_it_ends_where_no_single_change_is_faster_and_never_above_its_start():
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    machine = fake_machine(8, bandwidth_bytes_per_s=1e9, latency_s=1e-5)
    simulator = Simulator(graph, machine, COST)
    price = lambda strategy: priced_ms(simulator.full(strategy))  # noqa: E731
    placed = placed_starts(graph, simulator.builder, price, np.random.default_rng([0, PLACED_STREAM]))
    start = single(graph, 8)  # every op whole on device 0: a block candidate
    found = joint_descent(start, price, graph, placed.candidates, placed.pair_tables)
    assert found.ms == price(found.strategy) < price(start)
    for op, own in zip(graph.ops, placed.candidates):
        assert found.strategy[op.name] in own
        for config in own:
            assert price(found.strategy.with_config(op.name, config)) >= found.ms


def test_a_stop_ends_it_with_the_fastest_strategy_priced():
    graph = fork_join_graph()
    candidates, op_costs, table = _problem(graph, 2, 3)
    additive = _additive_price(graph, candidates, op_costs, table)
    priced = []

    def price(strategy):
        priced.append((additive(strategy), strategy))
        return priced[-1][0]

    start = _strategy(graph, 2, candidates, [0] * len(candidates))
    found = joint_descent(start, price, graph, candidates, [table], stop_requested=lambda: len(priced) >= 9)
    assert found.simulations == len(priced) == 9
    assert (found.ms, found.strategy) == min(priced, key=lambda entry: entry[0])


@pytest.mark.parametrize("descent", [False, True])
def test_the_placed_start_is_the_greedy_descent_from_the_joint_descent_from_the_fastest_placed_strategy(descent):
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    machine = fake_machine(16, bandwidth_bytes_per_s=1e9, latency_s=1e-5)
    result = search_strategy(graph, machine, COST, [("single", single(graph, 16))], Budget(iterations=1), seed=0,
                             descent=descent)
    simulator = Simulator(graph, machine, COST)
    price = lambda strategy: priced_ms(simulator.full(strategy))  # noqa: E731
    placed = placed_starts(graph, simulator.builder, price, np.random.default_rng([0, PLACED_STREAM]))
    joint = joint_descent(placed.ranked[0], price, graph, placed.candidates, placed.pair_tables)
    found = descend(joint.strategy, price, graph, op_neighbourhoods(graph, 16))
    assert [(strategy, ms) for name, strategy, ms in result.starts if name == PLACED_START] == [(found.strategy,
                                                                                              found.ms)]
    assert found.ms <= joint.ms < price(placed.ranked[0])  # here the greedy descent finds nothing more
    # the placed start's descents, and with descent=True the chains' (none in one iteration here)
    assert result.descent_simulations == joint.simulations + found.simulations


def test_on_a_graph_that_is_not_series_parallel_it_is_a_descent_by_single_changes():
    b = GraphBuilder("n-shape", "toy", (2, 4, 4, 2))  # a -> c, a -> d, b -> d: not series-parallel
    b.conv2d("a", 2, kernel=1, input=None)
    b.conv2d("b", 2, kernel=1, input=None)
    b.conv2d("c", 2, kernel=1, input="a")
    b.add("d", inputs=["a", "b"])
    b.add("e", inputs=["c", "d"])
    b.flatten("flat")
    b.softmax_xent("loss")
    graph = b.build(2)
    candidates, op_costs, table = _problem(graph, 2, 4)
    price = _additive_price(graph, candidates, op_costs, table)
    start = _strategy(graph, 2, candidates, [0] * len(candidates))
    found = joint_descent(start, price, graph, candidates, [table])
    # steepest descent by single changes: each sweep prices every single change, and nothing else
    singles = sum(len(own) - 1 for own in candidates)
    assert (found.simulations - 1) % singles == 0 and found.simulations > 1 + singles
    for op, own in zip(graph.ops, candidates):
        for config in own:
            assert price(found.strategy.with_config(op.name, config)) >= found.ms
