"""Proposal moves for the SOAP search: small named functions, `move(strategy, rng) -> Strategy | None`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.graph import OpGraph
from soap.space import enumerate_configs
from soap.strategy import Strategy

Move = Callable[[Strategy, np.random.Generator], "Strategy | None"]


def random_op_random_config(graph: OpGraph, num_devices: int) -> Move:
    """FlexFlow's proposal: a random op gets a random valid config other than its current one."""
    spaces = [enumerate_configs(op, num_devices) for op in graph.ops]

    def move(strategy: Strategy, rng: np.random.Generator) -> Strategy | None:
        i = int(rng.integers(len(graph.ops)))
        space = spaces[i]
        if len(space) < 2:
            return None
        name = graph.ops[i].name
        current = strategy[name]
        config = space[int(rng.integers(len(space)))]
        while config == current:
            config = space[int(rng.integers(len(space)))]
        return strategy.with_config(name, config)

    return move
