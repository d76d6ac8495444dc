"""The proposal move alone: what it draws, and how often."""

import collections

import numpy as np

from models.graph import GraphBuilder
from search.proposals import adjacent_split, adjacent_splits, copy_from_neighbour, mixture, random_op_random_split
from soap.baselines import single
from soap.config import ParallelConfig
from soap.space import enumerate_configs, valid_degrees
from soap.strategy import Strategy


def flatten_and_loss(batch: int = 16):
    builder = GraphBuilder("head", "toy", (batch, 2, 2, 2))
    builder.flatten("flatten")
    builder.softmax_xent("loss")
    return builder.build(batch)


def two_dense_and_loss():
    builder = GraphBuilder("chain", "toy", (16, 8))
    builder.dense("fc1", 8)
    builder.dense("fc2", 8)
    builder.softmax_xent("loss")
    return builder.build(16)


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
    graph = two_dense_and_loss()
    move = copy_from_neighbour(graph, 16)
    rng = np.random.default_rng(0)
    # fc1 split 4 ways on the batch, fc2 and the loss whole on device 0. fc1 may take fc2's config and fc2
    # fc1's; the loss's config (one dim) fits no dense layer's (two dims) and the other way round, so a
    # proposal for the loss is None.
    whole, split = ParallelConfig((1, 1, 1), (0,)), ParallelConfig((4, 1, 1), (0, 1, 2, 3))
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


def test_adjacent_splits_double_or_halve_one_or_two_dims():
    splits = ((1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (1, 4), (4, 2), (2, 4), (4, 4), (8, 2), (3, 1))
    assert adjacent_splits((2, 2), splits) == ((1, 1), (1, 2), (2, 1), (4, 1), (1, 4), (4, 2), (2, 4), (4, 4))
    assert adjacent_splits((4, 4), splits) == ((2, 2), (4, 2), (2, 4), (8, 2))
    assert adjacent_splits((3, 1), splits) == ()  # 6 and 1.5 are not splits


def test_an_adjacent_split_is_valid_near_and_undone_by_one_more():
    graph = two_dense_and_loss()
    move, rng = adjacent_split(graph, 16), np.random.default_rng(0)
    start = Strategy.for_graph(graph, 16, {"fc1": ParallelConfig((2, 2, 1), (4, 5, 6, 7)),
                                           "fc2": ParallelConfig((8, 1, 1), tuple(range(8, 16))),
                                           "loss": ParallelConfig((1,), (3,))})
    seen = set()
    for _ in range(300):
        proposal = move(start, rng)
        if proposal is None:
            continue
        (name,) = [op.name for op in graph.ops if proposal[op.name] != start[op.name]]
        old, new = start[name], proposal[name]
        assert new in enumerate_configs(graph.op(name), 16)
        assert new.degrees in adjacent_splits(old.degrees, valid_degrees(graph.op(name), 16))
        small, large = sorted((old.devices, new.devices), key=len)
        assert set(small) <= set(large)
        back = np.random.default_rng(1)
        assert any(move(proposal, back) == start for _ in range(400)), (name, new)
        seen.add((name, new))
    # fc1 (2 x 2 on 4-7) may go to 1 x 2 or 2 x 1 on 4-5 or 6-7, 4 x 1 or 1 x 4 on 4-7, 4 x 2 or 2 x 4 on 0-7, 4 x 4
    # on 0-15; the loss (whole on device 3) only to a 2-way split on 2-3 (one dim: 4 ways is two doublings).
    assert ("fc1", ParallelConfig((1, 2, 1), (6, 7))) in seen and ("fc1", ParallelConfig((4, 2, 1), tuple(range(8)))) in seen
    assert {new for name, new in seen if name == "loss"} == {ParallelConfig((2,), (2, 3))}


def test_no_adjacent_split_on_one_device():
    graph = flatten_and_loss()
    assert adjacent_split(graph, 1)(single(graph, 1), np.random.default_rng(0)) is None
