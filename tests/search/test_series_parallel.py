"""The series-parallel dynamic program against exhaustive enumeration, with additive random costs."""

import itertools

import numpy as np
import pytest

from search.series_parallel import NotSeriesParallelError, batched_min_cost_choices, min_cost_choices

GRAPHS = {
    "chain": (6, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]),
    "diamond": (4, [(0, 1), (0, 2), (1, 3), (2, 3)]),
    # ResNet's block: a residual branch of two ops beside the shortcut edge 0 -> 3.
    "residual": (5, [(0, 1), (1, 2), (2, 3), (0, 3), (3, 4)]),
    # Inception's block: three branches from 0 into a concat (7), one of them forking again (2 -> 3, 4 -> 5).
    "inception": (8, [(0, 1), (1, 7), (0, 2), (2, 3), (2, 4), (3, 5), (4, 5), (5, 7), (0, 6), (6, 7)]),
    "two-sources-two-sinks": (5, [(0, 2), (1, 2), (2, 3), (2, 4)]),
    "blocks-in-series": (7, [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (3, 5), (4, 6), (5, 6), (3, 6)]),
}


def _random_costs(num_ops, edges, num_choices, rng):
    op_costs = [rng.uniform(0, 10, size=num_choices[i]) for i in range(num_ops)]
    edge_costs = {(p, c): rng.uniform(0, 10, size=(num_choices[p], num_choices[c])) for p, c in edges}
    return op_costs, edge_costs


def _exhaustive(num_ops, edges, num_choices, op_costs, edge_costs):
    def total(choices):
        return (sum(op_costs[i][choices[i]] for i in range(num_ops))
                + sum(edge_costs[p, c][choices[p], choices[c]] for p, c in edges))

    return min(total(choices) for choices in itertools.product(*(range(k) for k in num_choices)))


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_program_finds_the_exhaustive_optimum(name, seed):
    num_ops, edges = GRAPHS[name]
    rng = np.random.default_rng(seed)
    num_choices = [int(k) for k in rng.integers(1, 4, size=num_ops)]
    op_costs, edge_costs = _random_costs(num_ops, edges, num_choices, rng)
    choices, cost = min_cost_choices(num_ops, edges, op_costs, edge_costs)
    assert cost == pytest.approx(_exhaustive(num_ops, edges, num_choices, op_costs, edge_costs), rel=1e-12)
    # The choices returned reach that cost.
    reached = (sum(op_costs[i][choices[i]] for i in range(num_ops))
               + sum(edge_costs[p, c][choices[p], choices[c]] for p, c in edges))
    assert reached == pytest.approx(cost, rel=1e-12)


def test_a_long_chain_does_not_recurse_per_op():
    num_ops = 3000
    edges = [(i, i + 1) for i in range(num_ops - 1)]
    choices, cost = min_cost_choices(num_ops, edges, [np.array([1.0, 0.0])] * num_ops,
                                     {edge: np.array([[0.0, 5.0], [5.0, 0.0]]) for edge in edges})
    assert choices == [1] * num_ops and cost == 0.0


def test_a_graph_that_is_not_series_parallel_is_refused():
    # The bridge: 0 -> 1, 0 -> 2, 1 -> 2, 1 -> 3, 2 -> 3.
    edges = [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    with pytest.raises(NotSeriesParallelError, match="neither in series nor in parallel"):
        min_cost_choices(4, edges, [np.zeros(2)] * 4, {edge: np.zeros((2, 2)) for edge in edges})


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_several_cost_sets_at_once_give_each_set_s_own_solution_bit_for_bit(name):
    num_ops, edges = GRAPHS[name]
    rng = np.random.default_rng(5)
    num_choices = [int(k) for k in rng.integers(1, 4, size=num_ops)]
    sets = [_random_costs(num_ops, edges, num_choices, rng) for _ in range(4)]
    shared_op_costs = sets[0][0]  # one op cost for every set, edge costs per set
    stacked_edges = {edge: np.stack([edge_costs[edge] for _, edge_costs in sets]) for edge in edges}
    solved = batched_min_cost_choices(num_ops, edges, shared_op_costs, stacked_edges)
    assert solved == [min_cost_choices(num_ops, edges, shared_op_costs, edge_costs) for _, edge_costs in sets]
    stacked_ops = [np.stack([op_costs[i] for op_costs, _ in sets]) for i in range(num_ops)]
    solved = batched_min_cost_choices(num_ops, edges, stacked_ops, stacked_edges)
    assert solved == [min_cost_choices(num_ops, edges, op_costs, edge_costs) for op_costs, edge_costs in sets]
