"""Proposal moves for the SOAP search: small named functions, `move(strategy, rng) -> Strategy | None`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.graph import OpGraph
from soap.config import ParallelConfig
from soap.space import enumerate_configs
from soap.strategy import Strategy

Move = Callable[[Strategy, np.random.Generator], "Strategy | None"]


def random_op_random_split(graph: OpGraph, num_devices: int) -> Move:
    """A random op gets a random config other than its current one, drawn in two steps: a split (the
    degrees) uniformly among the op's valid splits, then a device block uniformly among those for it.

    FlexFlow's uniform draw over configs favours splits into few tasks, which have the most blocks:
    on 16 devices, 16 of flatten's 31 configs leave it whole and one splits the batch 16 ways. Here
    each split is as likely (1/5 for flatten), which is what finds AlexNet's best strategies on 16 and
    32 devices in tens of iterations instead of hundreds (benchmarks.search_time).
    """
    splits = [_by_split(enumerate_configs(op, num_devices)) for op in graph.ops]

    def move(strategy: Strategy, rng: np.random.Generator) -> Strategy | None:
        i = int(rng.integers(len(graph.ops)))
        if len(splits[i]) < 2 and len(splits[i][0]) < 2:
            return None
        name = graph.ops[i].name
        current = strategy[name]
        while True:
            blocks = splits[i][int(rng.integers(len(splits[i])))]
            config = blocks[int(rng.integers(len(blocks)))]
            if config != current:
                return strategy.with_config(name, config)

    return move


def _by_split(space: tuple[ParallelConfig, ...]) -> list[tuple[ParallelConfig, ...]]:
    """The configs of a space grouped by degrees, in the space's order."""
    groups: dict[tuple[int, ...], list[ParallelConfig]] = {}
    for config in space:
        groups.setdefault(config.degrees, []).append(config)
    return [tuple(group) for group in groups.values()]
