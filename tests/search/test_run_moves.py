"""The run move (search.proposals.run_random_split): a run of ops sharing one config moves whole, validly
and reversibly."""

import numpy as np
import pytest

from models.graph import GraphBuilder
from search.proposals import run_random_split
from soap.config import ParallelConfig
from soap.space import enumerate_configs
from soap.strategy import Strategy


def dense_chain():
    builder = GraphBuilder("chain", "toy", (16, 8))
    for name in ("fc1", "fc2", "fc3"):
        builder.dense(name, 8)
    builder.softmax_xent("loss")
    return builder.build(16)


GRAPH = dense_chain()
A, B = ParallelConfig((4, 1, 1), (0, 1, 2, 3)), ParallelConfig((1, 2, 1), (4, 5))
START = Strategy.for_graph(GRAPH, 8, {"fc1": A, "fc2": A, "fc3": B, "loss": ParallelConfig((1,), (0,))})


@pytest.mark.parametrize("seed", range(5))
def test_a_run_move_gives_the_drawn_op_and_its_run_one_valid_config(seed):
    move, rng = run_random_split(GRAPH, 8), np.random.default_rng(seed)
    for _ in range(200):
        proposal = move(START, rng)
        changed = [op.name for op in GRAPH.ops if proposal[op.name] != START[op.name]]
        assert changed in (["fc1", "fc2"], ["fc3"], ["loss"])  # fc1 and fc2 share A: one run
        assert len({proposal[name] for name in changed}) == 1
        for name in changed:
            assert proposal[name] in enumerate_configs(GRAPH.op(name), 8)


def test_a_run_move_is_undone_by_a_run_move():
    move, rng = run_random_split(GRAPH, 8), np.random.default_rng(0)
    for _ in range(20):
        proposal = move(START, rng)
        if proposal["fc1"] == B:  # the run joined fc3: moving it back moves fc3 too
            continue
        back = np.random.default_rng(1)
        assert any(move(proposal, back) == START for _ in range(20000)), proposal


def test_same_seed_same_run_moves_and_none_on_one_device():
    def walk(seed):
        move, rng, strategy = run_random_split(GRAPH, 8), np.random.default_rng(seed), START
        seen = []
        for _ in range(50):
            strategy = move(strategy, rng) or strategy
            seen.append(strategy)
        return seen

    assert walk(3) == walk(3) != walk(4)
    whole = ParallelConfig((1, 1, 1), (0,))
    one_device = Strategy.for_graph(GRAPH, 1, {"fc1": whole, "fc2": whole, "fc3": whole,
                                               "loss": ParallelConfig((1,), (0,))})
    assert run_random_split(GRAPH, 1)(one_device, np.random.default_rng(0)) is None


def test_a_run_longer_than_max_ops_moves_its_max_ops_nearest_ops_around_the_drawn_one():
    builder = GraphBuilder("long", "toy", (16, 8))
    for index in range(8):
        builder.dense(f"fc{index}", 8)
    builder.softmax_xent("loss")
    graph = builder.build(16)
    shared = {f"fc{index}": A for index in range(8)}
    start = Strategy.for_graph(graph, 8, {**shared, "loss": ParallelConfig((1,), (0,))})
    move, rng = run_random_split(graph, 8, max_ops=3), np.random.default_rng(0)
    for _ in range(200):
        proposal = move(start, rng)
        changed = [index for index, op in enumerate(graph.ops) if proposal[op.name] != start[op.name]]
        if graph.ops[changed[0]].name == "loss":
            continue
        # Breadth first along the chain: the drawn op and its neighbours, or two on one side at an end.
        assert len(changed) == 3 and changed == list(range(changed[0], changed[0] + 3)), changed


def test_a_conv_and_its_pool_split_alike_are_one_run():
    # A conv's config has an in_channel degree its pool's lacks; split alike otherwise, they move together.
    builder = GraphBuilder("convs", "toy", (8, 8, 8, 4))
    builder.conv2d("conv", 8, kernel=3)
    builder.pool2d("pool", kernel=2, stride=2)
    builder.flatten("flatten")
    builder.softmax_xent("loss")
    graph = builder.build(8)
    split = {"conv": ParallelConfig((2, 1, 1, 2, 1), (0, 1, 2, 3)), "pool": ParallelConfig((2, 1, 1, 2), (0, 1, 2, 3))}
    start = Strategy.for_graph(graph, 4, {**split, "flatten": ParallelConfig((1, 1), (0,)),
                                          "loss": ParallelConfig((1,), (0,))})
    move, rng, together = run_random_split(graph, 4), np.random.default_rng(0), 0
    for _ in range(100):
        proposal = move(start, rng)
        changed = [op.name for op in graph.ops if proposal[op.name] != start[op.name]]
        if changed[0] == "conv" and proposal["conv"].degrees[:4] in {c.degrees for c in enumerate_configs(graph.op("pool"), 4)}:
            assert changed == ["conv", "pool"] and proposal["pool"].degrees == proposal["conv"].degrees[:4]
            together += 1
    assert together > 10
