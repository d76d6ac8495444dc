"""Greedy descent: one op's config at a time changed to any in its neighbourhood that the simulator prices
faster, until no op has one.

    result = descend(strategy, price, graph, op_neighbourhoods(graph, num_devices))
    result.strategy, result.ms, result.simulations

An op's neighbourhood (`op_neighbourhoods`) is its current split and its adjacent splits (one or two
degrees doubled or halved: search.proposals.adjacent_splits), each on every aligned block of devices of its
size in the op's space. It holds what MCMC reaches only through uphill steps: a split halved onto the half of
the devices that its neighbours do not use, so that their gradient all-reduces run on other links than its
own (AlexNet's best strategies on 16 to 64 GPUs put neighbouring ops on alternate halves; one op moved to the
half of its neighbour costs up to 55% more). The ops are visited in graph order; after an op improves, it and
the ops joined to it by an edge are visited again (the others' best change only through their neighbours'
resharding), and the descent ends when a visit of every op still to visit improves none. The first faster
config of an op's neighbourhood is taken, so the result is the same for the same strategy and prices.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from dataclasses import dataclass

from models.graph import OpGraph
from search.proposals import Move, adjacent_splits
from soap.config import ParallelConfig
from soap.space import enumerate_configs, valid_degrees
from soap.strategy import Strategy

Neighbourhood = Callable[[int, ParallelConfig], tuple[ParallelConfig, ...]]


@dataclass(frozen=True)
class Descent:
    strategy: Strategy
    ms: float
    simulations: int  # the strategies priced, the start's included


def op_neighbourhoods(graph: OpGraph, num_devices: int, spmd: bool = False) -> Neighbourhood:
    """neighbourhood(i, config): the configs of op i's space with config's split or an adjacent one, on every
    aligned block of devices (first device a multiple of the task count): config's split first, then the
    adjacent ones in the order of valid_degrees, each on its blocks from device 0 up (`spmd`: of the SPMD
    space, soap.space)."""
    spaces = [enumerate_configs(op, num_devices, spmd) for op in graph.ops]
    splits = [valid_degrees(op, num_devices, spmd) for op in graph.ops]
    aligned: list[dict[tuple[int, ...], list[ParallelConfig]]] = [{} for _ in spaces]
    for blocks, space in zip(aligned, spaces):
        for config in space:
            first = config.devices[0]
            if first % config.num_tasks == 0 and config.devices == tuple(range(first, first + config.num_tasks)):
                blocks.setdefault(config.degrees, []).append(config)
    cached: dict[tuple[int, tuple[int, ...]], tuple[ParallelConfig, ...]] = {}

    def neighbourhood(i: int, config: ParallelConfig) -> tuple[ParallelConfig, ...]:
        key = (i, config.degrees)
        if key not in cached:
            nearby = (config.degrees, *adjacent_splits(config.degrees, splits[i]))
            cached[key] = tuple(other for degrees in nearby for other in aligned[i].get(degrees, ()))
        return cached[key]

    return neighbourhood


def descend(strategy: Strategy, price: Callable[[Strategy], float], graph: OpGraph, neighbourhood: Neighbourhood,
            stop_requested: Callable[[], bool] = lambda: False) -> Descent:
    """The strategy reached from `strategy` by taking, op after op, the first config of its neighbourhood
    priced faster, until none is (or `stop_requested()`: the best so far)."""
    names = [op.name for op in graph.ops]
    joined = [sorted({graph.index(n) for n in graph.producers(name) + graph.consumers(name)}) for name in names]
    best_ms, simulations = price(strategy), 1
    to_visit, queued = collections.deque(range(len(names))), set(range(len(names)))
    while to_visit and math.isfinite(best_ms) and not stop_requested():
        i = to_visit.popleft()
        queued.discard(i)
        improved = False
        for config in neighbourhood(i, strategy[names[i]]):
            if config == strategy[names[i]]:
                continue
            candidate = strategy.with_config(names[i], config)
            ms, simulations = price(candidate), simulations + 1
            if ms < best_ms:
                strategy, best_ms, improved = candidate, ms, True
        if improved:
            for j in [i, *joined[i]]:
                if j not in queued:
                    to_visit.append(j)
                    queued.add(j)
    return Descent(strategy, best_ms, simulations)


def descent_move(graph: OpGraph, num_devices: int, price: Callable[[Strategy], float],
                 stop_requested: Callable[[], bool] = lambda: False, spmd: bool = False) -> Move:
    """A proposal move (search.proposals.Move): the strategy `descend` reaches from the current one, or None
    where no op has a faster config in its neighbourhood. It never proposes a slower strategy, so MCMC
    always accepts it, and it is not reversible: a chain using it is a search, not a sampler (basin
    hopping: the other moves leave a local optimum, this one finds the next). `spmd`: within the SPMD space."""
    neighbourhood = op_neighbourhoods(graph, num_devices, spmd)

    def move(strategy: Strategy, rng) -> Strategy | None:
        found = descend(strategy, price, graph, neighbourhood, stop_requested).strategy
        return None if found == strategy else found

    return move
