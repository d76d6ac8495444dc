"""Joint descent: a greedy descent whose step may change many ops at once.

    found = joint_descent(strategy, price, graph, candidates, pair_tables)
    found.strategy, found.ms, found.simulations

Each step prices, in the current strategy, every op changed alone to each of its other candidates: what a
sweep of search.descent prices, so each change's cost in context is known (its own tasks, its edges to its
neighbours where they are, what runs beside it). Changes of neighbouring ops do not add up: the edge
between them reshards from one new config into the other, and what overlaps whose sync moves. A pair
table (the cost of an edge under each pair of candidates, as the placed start prices it) says by how
much: under table T, changing producer p from a to a' and consumer c from b to b' costs T[a', b'] - T[a',
b] - T[a, b'] + T[a, b] more than the two changes alone. For each pair table, the dynamic program of
search.series_parallel chooses one candidate per op minimising the single changes' costs plus these
terms, and the simulator prices the joint change it finds. The step takes the fastest of the single and
the joint changes while it is faster than the current strategy. Under a price that is additive with one
of the pair tables as its edge costs, the first step reaches the least-cost strategy (tests check it
against enumeration). On AlexNet on 16 p100-4x4 GPUs (seed 0), the first step from the fastest placed
strategy moves conv3 and conv4 together, 1.937 -> 1.886 ms, where no single change is faster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from models.graph import OpGraph
from search.descent import Descent
from search.series_parallel import NotSeriesParallelError, min_cost_choices
from soap.config import ParallelConfig
from soap.strategy import Strategy

PairTable = dict[tuple[int, int], np.ndarray]  # (producer, consumer) -> [producer's choice, consumer's choice]


def joint_descent(strategy: Strategy, price: Callable[[Strategy], float], graph: OpGraph,
                  candidates: Sequence[tuple[ParallelConfig, ...]], pair_tables: Sequence[PairTable],
                  stop_requested: Callable[[], bool] = lambda: False) -> Descent:
    """The strategy reached from `strategy` (each op's config among its `candidates`) by steps to the
    fastest single or joint change, until none is faster (or `stop_requested()`: the best so far)."""
    names = [op.name for op in graph.ops]
    chosen = [candidates[i].index(strategy[name]) for i, name in enumerate(names)]
    ms, simulations = price(strategy), 1
    while math.isfinite(ms):
        best_ms, best, changes = ms, None, []
        for i, name in enumerate(names):
            change_ms = np.zeros(len(candidates[i]))
            for k, config in enumerate(candidates[i]):
                if stop_requested():
                    return Descent(strategy, ms, simulations) if best is None else Descent(best[0], best_ms,
                                                                                           simulations)
                if k != chosen[i]:
                    candidate = strategy.with_config(name, config)
                    candidate_ms, simulations = price(candidate), simulations + 1
                    change_ms[k] = candidate_ms - ms
                    if candidate_ms < best_ms:
                        best_ms, best = candidate_ms, (candidate, _with_choice(chosen, i, k))
            changes.append(change_ms)
        for choices in dict.fromkeys(_joint_choices(len(names), changes, pair_tables, chosen)):
            if stop_requested():
                break
            if list(choices) != chosen:
                candidate = _with_choices(strategy, names, candidates, choices)
                candidate_ms, simulations = price(candidate), simulations + 1
                if candidate_ms < best_ms:
                    best_ms, best = candidate_ms, (candidate, list(choices))
        if best is None or stop_requested():
            return Descent(strategy if best is None else best[0], best_ms, simulations)
        (strategy, chosen), ms = best, best_ms
    return Descent(strategy, ms, simulations)


def _joint_choices(num_ops: int, changes: list[np.ndarray], pair_tables: Sequence[PairTable],
                   chosen: list[int]) -> list[tuple[int, ...]]:
    """For each pair table, the choice per op minimising the single changes' costs plus the table's
    interaction terms around `chosen`; none where the graph is not series-parallel."""
    joint = []
    for table in pair_tables:
        interactions = {(p, c): costs - costs[chosen[p]][None, :] - costs[:, chosen[c]][:, None]
                        + costs[chosen[p], chosen[c]] for (p, c), costs in table.items()}
        try:
            choices, _ = min_cost_choices(num_ops, list(interactions), changes, interactions)
        except NotSeriesParallelError:
            return []
        joint.append(tuple(choices))
    return joint


def _with_choice(chosen: list[int], i: int, k: int) -> list[int]:
    return [k if j == i else choice for j, choice in enumerate(chosen)]


def _with_choices(strategy: Strategy, names: list[str], candidates: Sequence[tuple[ParallelConfig, ...]],
                  choices: tuple[int, ...]) -> Strategy:
    for name, own, choice in zip(names, candidates, choices):
        if strategy[name] != own[choice]:
            strategy = strategy.with_config(name, own[choice])
    return strategy
