"""Proposal moves for the SOAP search: small named functions, `move(strategy, rng) -> Strategy | None`.

Each draws from soap.space's configs of an op; with `spmd=True`, from its SPMD space only (every op on all
the devices), so that a chain from an SPMD strategy stays in that space."""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import numpy as np

from models.graph import OpGraph
from soap.config import ParallelConfig
from soap.space import carried_over, enumerate_configs, valid_degrees
from soap.strategy import Strategy

Move = Callable[[Strategy, np.random.Generator], "Strategy | None"]

# The most ops one run move changes. Each op it changes rebuilds up to four segments of the delta
# simulation (its forward and backward, its consumers' forwards, its producers' backwards): on Inception-v3
# (219 ops) from data parallelism, where every op shares one config, a whole run is a full rebuild.
# 16 keeps AlexNet's runs (13 ops) whole.
MAX_RUN_OPS = 16


def random_op_random_split(graph: OpGraph, num_devices: int, spmd: bool = False) -> Move:
    """A random op gets a random config other than its current one, drawn in two steps: a split (the
    degrees) uniformly among the op's valid splits, then a device block uniformly among those for it.

    FlexFlow's uniform draw over configs favours splits into few tasks, which have the most blocks:
    on 16 devices, 16 of flatten's 31 configs leave it whole and one splits the batch 16 ways. Here
    each split is as likely (1/5 for flatten), which is what finds AlexNet's best strategies on 16 and
    32 devices in tens of iterations instead of hundreds (benchmarks.search_time).
    """
    splits = [_by_split(enumerate_configs(op, num_devices, spmd)) for op in graph.ops]

    def move(strategy: Strategy, rng: np.random.Generator) -> Strategy | None:
        i = int(rng.integers(len(graph.ops)))
        config = _other_config(splits[i], strategy[graph.ops[i].name], rng)
        return None if config is None else strategy.with_config(graph.ops[i].name, config)

    return move


def _other_config(splits: list[tuple[ParallelConfig, ...]], current: ParallelConfig,
                  rng: np.random.Generator) -> ParallelConfig | None:
    """A config other than `current`: a split uniformly among `splits`, then a device block of it; None
    when the space has no other."""
    if len(splits) < 2 and len(splits[0]) < 2:
        return None
    while True:
        blocks = splits[int(rng.integers(len(splits)))]
        config = blocks[int(rng.integers(len(blocks)))]
        if config != current:
            return config


def _by_split(space: tuple[ParallelConfig, ...]) -> list[tuple[ParallelConfig, ...]]:
    """The configs of a space grouped by degrees, in the space's order."""
    groups: dict[tuple[int, ...], list[ParallelConfig]] = {}
    for config in space:
        groups.setdefault(config.degrees, []).append(config)
    return [tuple(group) for group in groups.values()]


def copy_from_neighbour(graph: OpGraph, num_devices: int, spmd: bool = False) -> Move:
    """A random op takes the config of one of its producers or consumers (drawn uniformly among those
    whose config is valid for it and differs from its own); None when none is.

    A run of ops that shares one config needs no resharding inside it; growing such a run one op at a
    time by random configs means passing through a resharding at each step, uphill. On 8 and 16 GPUs
    the best AlexNet strategies under one-collective-per-resharding pricing are runs (convs 2-5 split
    2 x 4 on batch and channels, fc6-fc7 split 8 ways) that random configs alone took 4x longer to find
    than FlexFlow's figures (benchmarks.search_time).
    """
    names = [op.name for op in graph.ops]
    neighbours = [tuple(dict.fromkeys(graph.producers(name) + graph.consumers(name))) for name in names]
    spaces = [frozenset(enumerate_configs(op, num_devices, spmd)) for op in graph.ops]

    def move(strategy: Strategy, rng: np.random.Generator) -> Strategy | None:
        i = int(rng.integers(len(names)))
        current, op = strategy[names[i]], graph.ops[i]
        taken = (carried_over(strategy[n], graph.op(n), op) for n in neighbours[i])
        choices = [config for config in dict.fromkeys(taken)
                   if config is not None and config != current and config in spaces[i]]
        if not choices:
            return None
        return strategy.with_config(names[i], choices[int(rng.integers(len(choices)))])

    return move


def adjacent_split(graph: OpGraph, num_devices: int, spmd: bool = False) -> Move:
    """A random op moves to an adjacent split (`adjacent_splits`, drawn uniformly): on the block of the new
    size that holds its current block where the split has more tasks, on one inside it (drawn uniformly)
    where it has fewer, on the same block otherwise. None when the op has no adjacent split, or when the
    block so found is not in its space (an op whose devices are not an aligned block, as a user's
    strategy may have them). From an aligned block, moving back is one such move.

    A random config is mostly far from the current one (a conv on 64 devices has about 1700), and a chain
    near a good strategy rejects nearly all of them; an adjacent split is a small step in the split and
    keeps the op where it is. With it, AlexNet's 40,000-iteration searches on p100-4x4 find 1.894 /
    1.549 / 1.313 ms at 16 / 32 / 64 GPUs, against 1.941 / 1.637 / 1.342 without (benchmarks.search_time,
    best of seeds 0-3).
    """
    names = [op.name for op in graph.ops]
    splits = [valid_degrees(op, num_devices, spmd) for op in graph.ops]
    spaces = [frozenset(enumerate_configs(op, num_devices, spmd)) for op in graph.ops]
    adjacent: dict[tuple[int, tuple[int, ...]], tuple[tuple[int, ...], ...]] = {}

    def move(strategy: Strategy, rng: np.random.Generator) -> Strategy | None:
        i = int(rng.integers(len(names)))
        current = strategy[names[i]]
        choices = adjacent.get((i, current.degrees))
        if choices is None:
            choices = adjacent[i, current.degrees] = adjacent_splits(current.degrees, splits[i])
        if not choices:
            return None
        degrees = choices[int(rng.integers(len(choices)))]
        num_tasks, first = math.prod(degrees), current.devices[0]
        if num_tasks > current.num_tasks:
            first -= first % num_tasks
        elif num_tasks < current.num_tasks:
            first += num_tasks * int(rng.integers(current.num_tasks // num_tasks))
        config = ParallelConfig(degrees, tuple(range(first, first + num_tasks)))
        return strategy.with_config(names[i], config) if config in spaces[i] else None

    return move


def adjacent_splits(degrees: tuple[int, ...], splits: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    """The splits among `splits` that differ from `degrees` in one or two dims, each doubled or halved
    (4 x 8 -> 8 x 8, 2 x 8, 8 x 4, 2 x 16, 8 x 16, ...), in the order of `splits`."""
    def adjacent(other: tuple[int, ...]) -> bool:
        changed = [(a, b) for a, b in zip(degrees, other) if a != b]
        return 0 < len(changed) <= 2 and all(a == 2 * b or b == 2 * a for a, b in changed)

    return tuple(other for other in splits if adjacent(other))


def mixture(moves: list[tuple[float, Move]]) -> Move:
    """One of `moves`, drawn with its weight (weights sum to 1), makes the proposal."""
    weights = np.array([weight for weight, _ in moves])
    assert abs(weights.sum() - 1.0) < 1e-9, weights
    cumulative = np.cumsum(weights)

    def move(strategy: Strategy, rng: np.random.Generator) -> Strategy | None:
        index = min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(moves) - 1)
        return moves[index][1](strategy, rng)

    return move


def run_random_split(graph: OpGraph, num_devices: int, max_ops: int = MAX_RUN_OPS, spmd: bool = False) -> Move:
    """A random op and the run around it (the ops joined to it by edges through ops of its own config, the
    `max_ops` nearest) get one random config, drawn as in `random_op_random_split`; each op of the run
    takes it where its space has it. None when the op has no other config.

    A run sharing one config needs no resharding inside it, so moving it one op at a time passes through a
    resharding at each step, uphill; moving it whole does not (AlexNet's convs 2-5 and pools, split alike
    on 8-64 GPUs, and fc6-fc7 on one device block).
    """
    names = [op.name for op in graph.ops]
    neighbours = [tuple(graph.index(n) for n in dict.fromkeys(graph.producers(name) + graph.consumers(name)))
                  for name in names]
    spaces = [enumerate_configs(op, num_devices, spmd) for op in graph.ops]
    splits, members = [_by_split(space) for space in spaces], [frozenset(space) for space in spaces]

    def move(strategy: Strategy, rng: np.random.Generator) -> Strategy | None:
        i = int(rng.integers(len(names)))
        config = _other_config(splits[i], strategy[names[i]], rng)
        if config is None:
            return None
        taken = {names[j]: carried_over(config, graph.ops[i], graph.ops[j])
                 for j in _run(graph, strategy, neighbours, i, max_ops)}
        run = {name: c for name, c in taken.items() if c is not None and c in members[graph.index(name)]}
        items = tuple((name, run.get(name, current)) for name, current in strategy.items_)
        return Strategy(strategy.model, strategy.graph_signature, strategy.num_devices, items)

    return move


def _run(graph: OpGraph, strategy: Strategy, neighbours: list[tuple[int, ...]], i: int, max_ops: int) -> list[int]:
    """Op i and the ops joined to it by edges through ops of op i's config (`carried_over`), at most `max_ops`
    of them, the nearest first (breadth first, neighbours in graph order); in op order."""
    ops = graph.ops
    config, seen, frontier = strategy[ops[i].name], {i}, collections.deque([i])
    while frontier and len(seen) < max_ops:
        for j in neighbours[frontier.popleft()]:
            if j not in seen and carried_over(strategy[ops[j].name], ops[j], ops[i]) == config:
                seen.add(j)
                frontier.append(j)
                if len(seen) == max_ops:
                    break
    return sorted(seen)
