"""The proposal move alone: what it draws, and how often."""

import collections

import numpy as np

from models.graph import GraphBuilder
from search.proposals import copy_from_neighbour, mixture, random_op_random_split
from soap.baselines import single
from soap.config import ParallelConfig
from soap.space import enumerate_configs
from soap.strategy import Strategy


def flatten_and_loss(batch: int = 16):
    builder = GraphBuilder("head", "toy", (batch, 2, 2, 2))
    builder.flatten("flatten")
    builder.softmax_xent("loss")
    return builder.build(batch)


def test_each_split_is_as_likely_and_the_current_config_never_comes_back():
    # On 16 devices the loss (batch 16) has 31 configs: whole on any of 16 devices, and batch splits
    # 2/4/8/16 on 8/4/2/1 blocks. Drawn uniformly over configs, the 16-way split would come 1 in 31.
    graph = flatten_and_loss()
    move = random_op_random_split(graph, 16)
    start = single(graph, 16)
    rng = np.random.default_rng(0)
    degrees = collections.Counter()
    for _ in range(4000):
        proposal = move(start, rng)
        changed = [op.name for op in graph.ops if proposal[op.name] != start[op.name]]
        assert len(changed) == 1 and proposal[changed[0]] in enumerate_configs(graph.op(changed[0]), 16)
        if changed == ["loss"]:
            degrees[proposal["loss"].degrees] += 1
    assert sorted(degrees) == [(1,), (2,), (4,), (8,), (16,)]
    total = sum(degrees.values())
    # The whole-op split counts 15 blocks out of its 16 (never the current one), so it is drawn a bit
    # less than 1/5 of the time.
    assert all(0.15 < count / total < 0.25 for count in degrees.values()), degrees


def test_same_seed_same_proposals_and_none_without_a_choice():
    graph = flatten_and_loss()
    start = single(graph, 16)

    def walk(seed: int) -> list:
        """50 proposals, each applied to the last, from one move built once: no state outside the rng."""
        move, rng, strategy, seen = random_op_random_split(graph, 16), np.random.default_rng(seed), start, []
        for _ in range(50):
            strategy = move(strategy, rng) or strategy
            seen.append(strategy)
        return seen

    assert walk(7) == walk(7) and walk(7) != walk(8)
    one_device = single(graph, 1)
    assert random_op_random_split(graph, 1)(one_device, np.random.default_rng(0)) is None


def test_copy_from_neighbour_takes_a_valid_neighbour_config_or_none():
    builder = GraphBuilder("chain", "toy", (16, 8))
    builder.dense("fc1", 8)
    builder.dense("fc2", 8)
    builder.softmax_xent("loss")
    graph = builder.build(16)
    move = copy_from_neighbour(graph, 16)
    rng = np.random.default_rng(0)
    # fc1 split 4 ways on the batch, fc2 and the loss whole on device 0. fc1 may take fc2's config and fc2
    # fc1's; the loss's config (one dim) fits no dense layer's (two dims) and the other way round, so a
    # proposal for the loss is None.
    whole, split = ParallelConfig((1, 1), (0,)), ParallelConfig((4, 1), (0, 1, 2, 3))
    start = Strategy.for_graph(graph, 16, {"fc1": split, "fc2": whole, "loss": ParallelConfig((1,), (0,))})
    seen, nones = set(), 0
    for _ in range(60):
        proposal = move(start, rng)
        if proposal is None:
            nones += 1
            continue
        changed = [op.name for op in graph.ops if proposal[op.name] != start[op.name]]
        assert len(changed) == 1
        seen.add((changed[0], proposal[changed[0]]))
    assert seen == {("fc1", whole), ("fc2", split)} and 10 < nones < 30
    # Ops that already agree have nothing to copy.
    assert move(Strategy.for_graph(graph, 16, {"fc1": whole, "fc2": whole, "loss": ParallelConfig((1,), (0,))}),
                rng) is None


def test_mixture_draws_each_move_by_its_weight():
    calls = collections.Counter()

    def named(name):
        def move(strategy, rng):
            calls[name] += 1
            return None
        return move

    move = mixture([(0.25, named("a")), (0.75, named("b"))])
    rng = np.random.default_rng(0)
    for _ in range(4000):
        move(None, rng)
    assert 0.22 < calls["a"] / 4000 < 0.28 and calls["a"] + calls["b"] == 4000
