"""The proposal move alone: what it draws, and how often."""

import collections

import numpy as np

from models.graph import GraphBuilder
from search.proposals import random_op_random_split
from soap.baselines import single
from soap.space import enumerate_configs


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
    first = [random_op_random_split(graph, 16)(start, np.random.default_rng(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    one_device = single(graph, 1)
    assert random_op_random_split(graph, 1)(one_device, np.random.default_rng(0)) is None
