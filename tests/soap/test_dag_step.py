"""Training steps of branching graphs: every strategy computes what one device computes (loss, updated
parameters, batch norm's running averages), on 2 and 4 CPU devices of this process."""

import functools

import numpy as np
import pytest

from models.datasets import DatasetShape
from models.graph import GraphBuilder
from models.resnet import resnet18
from soap.baselines import BASELINES, random_strategy, whole_ops
from soap.devices import ClusterJob, run_on_cluster
from soap.lowering import strategy_shardings
from search.report import loss_mismatch
from soap.runner import RunConfig, reference_loss, run_strategy
from soap.step import step_stages
from soap.strategy import Strategy

CONFIG = RunConfig(steps=2, fetch_params=True)


def residual_block():
    """stem conv -> [conv-bn-relu -> conv-bn] + projection conv-bn -> add+relu -> global pool -> dense -> loss."""
    b = GraphBuilder("residual", "toy", (8, 8, 8, 3))
    stem = b.conv2d("stem", 8, kernel=3, input=None)
    y = b.conv2d("a", 8, kernel=3, relu=False, bias=False, input=stem)
    y = b.batch_norm("bn_a", relu=True)
    y = b.conv2d("b", 16, kernel=3, stride=2, relu=False, bias=False, input=y)
    y = b.batch_norm("bn_b")
    s = b.conv2d("proj", 16, kernel=1, stride=2, relu=False, bias=False, input=stem)
    s = b.batch_norm("bn_proj")
    b.add("res", inputs=[y, s], relu=True)
    b.global_avg_pool("pool")
    b.dense("fc", 5, relu=False)
    b.softmax_xent("loss")
    return b.build(8)


def inception_block():
    """stem -> (1x1 | 1x1-3x3 | 3x3 avg pool-1x1 | 3x3 max pool) concatenated -> bn -> pool -> dense -> loss."""
    b = GraphBuilder("inception", "toy", (8, 8, 8, 3))
    stem = b.conv2d("stem", 8, kernel=3, input=None)
    one = b.conv2d("b1", 4, kernel=1, input=stem)
    three = b.conv2d("b3", 8, kernel=3, input=b.conv2d("b3_1", 4, kernel=1, input=stem))
    pooled = b.conv2d("bp", 4, kernel=1, input=b.avg_pool2d("bp_avg", 3, 1, "SAME", input=stem))
    maxed = b.pool2d("bm", 3, 1, "SAME", input=stem)
    b.concat("mixed", inputs=[one, three, pooled, maxed])
    b.batch_norm("bn", relu=True)
    b.global_avg_pool("pool")
    b.dense("fc", 5, relu=False)
    b.softmax_xent("loss")
    return b.build(8)


RESIDUAL, INCEPTION = residual_block(), inception_block()
TINY_RESNET = resnet18(DatasetShape("toy", 16, 16, 3, 5), 8, width=4, blocks=(1, 1))


@functools.cache
def one_device(name: str):
    """The block's CONFIG run on one device (`name`: residual or inception): what every strategy must give,
    computed once for the tests that compare with it."""
    graph = {"residual": RESIDUAL, "inception": INCEPTION}[name]
    return run_strategy(graph, BASELINES["single"](graph, 1), CONFIG)


def branches_apart(graph, num_devices: int, rng) -> Strategy:
    """Every op whole on a device drawn at random: branches run on different devices, with transfers
    wherever a tensor crosses."""
    return whole_ops(graph, num_devices, lambda op: int(rng.integers(num_devices)))


def spatial_and_channel(graph, num_devices: int, seed: int) -> Strategy:
    """A random strategy drawn until an add or concat is split on height or width and a batch norm on channels."""
    rng = np.random.default_rng(seed)
    while True:
        strategy = random_strategy(graph, num_devices, rng)
        joins = [op for op in graph.ops if op.kind.value in ("add", "concat")]
        norms = [op for op in graph.ops if op.kind.value == "batch_norm"]
        spatial = any(max(strategy[op.name].degrees[1:3]) > 1 for op in joins)
        channel = any(strategy[op.name].degrees[op.space.config_labels.index("channel")] > 1 for op in norms)
        if spatial and channel:
            return strategy


def cases(graph, num_devices: int):
    rng = np.random.default_rng(num_devices)
    found = {name: build(graph, num_devices) for name, build in BASELINES.items() if name != "single"}
    found["apart1"] = branches_apart(graph, num_devices, rng)
    found["apart2"] = branches_apart(graph, num_devices, rng)
    found["spatial-channel"] = spatial_and_channel(graph, num_devices, num_devices)
    for k in range(2):
        found[f"random{k}"] = random_strategy(graph, num_devices, rng)
    return found


def assert_same(result, want):
    np.testing.assert_allclose(result.losses, want.losses, rtol=1e-5)
    for tree, expected in ((result.params, want.params), (result.model_state, want.model_state)):
        assert tree.keys() == expected.keys()
        for name, entry in expected.items():
            for key, value in entry.items():
                # atol: entries near zero, where a sum split over devices adds in another order (~1e-9).
                np.testing.assert_allclose(tree[name][key], value, rtol=1e-5, atol=1e-7, err_msg=f"{name}.{key}")


@pytest.mark.parametrize("graph", [RESIDUAL, INCEPTION], ids=["residual", "inception"])
@pytest.mark.parametrize("num_devices", [2, 4])
def test_every_strategy_of_a_branching_block_equals_one_device(graph, num_devices):
    want = one_device(graph.model)
    assert want.model_state and all(np.any(e["mean"] != 0) for e in want.model_state.values())  # averages moved
    for name, strategy in cases(graph, num_devices).items():
        try:
            assert_same(run_strategy(graph, strategy, CONFIG), want)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None


def test_a_tiny_resnet_trains_as_one_device_under_the_baselines():
    want = run_strategy(TINY_RESNET, BASELINES["single"](TINY_RESNET, 1), CONFIG)
    for name in ("data_parallel", "model_parallel", "owt"):
        assert_same(run_strategy(TINY_RESNET, BASELINES[name](TINY_RESNET, 2), CONFIG), want)


def test_branches_on_disjoint_devices_are_stages_that_overlap():
    # The b3 branch on device 1, the rest on device 0: the stem's stage ends where device 1 reads it, and a
    # stage begins where device 0 reads b3 (the concat), so the other branches (b1, the pools) are stages
    # beside the b3 branch, reading only the stem; the simulator runs them at the same time too.
    from simulator.simulate import simulate
    from tests.simulator.fakes import FlopCost, fake_machine

    strategy = whole_ops(INCEPTION, 2, lambda op: 1 if op.name in ("b3_1", "b3") else 0)
    stages = step_stages(INCEPTION, strategy_shardings(INCEPTION, strategy))
    assert [stage.names for stage in stages] == [("stem",), ("b1",), ("b3_1", "b3"), ("bp_avg", "bp", "bm"),
                                                 ("mixed", "bn", "pool", "fc", "loss")]
    assert stages[1].inputs == stages[2].inputs == stages[3].inputs == ("stem",)
    assert set(stages[4].inputs) == {"b1", "b3", "bp", "bm"}
    _, trace = simulate(INCEPTION, strategy, fake_machine(2), FlopCost(ms_per_gflop=1e4))
    span = {e.name[:-3]: (e.start_ms, e.end_ms) for e in trace.events if e.kind == "forward"}
    branch = (span["b3_1"][0], span["b3"][1])
    beside = [name for name in ("b1", "bp_avg", "bp", "bm") if span[name][0] < branch[1] and branch[0] < span[name][1]]
    assert beside  # device 0 computes other branches while device 1 computes b3's


def test_the_reference_loss_is_the_flax_module_on_one_device_and_every_first_step_equals_it():
    reference = reference_loss(TINY_RESNET, seed=0)
    rng = np.random.default_rng(7)
    for strategy in (BASELINES["single"](TINY_RESNET, 1), branches_apart(TINY_RESNET, 4, rng),
                     random_strategy(TINY_RESNET, 4, rng)):
        first = run_strategy(TINY_RESNET, strategy, RunConfig()).losses[0]
        assert first == pytest.approx(reference, rel=1e-5)
        assert loss_mismatch(first, reference) == ""
    assert loss_mismatch(reference * 1.01, reference).startswith("LOSS DIFFERS from one device")


def test_branching_blocks_on_the_two_process_cluster_equal_one_device():
    # One launch per block: data parallel (one program) and the branches whole on different processes
    # (stages that pass tensors both ways between the processes, gradients summed where a tensor is read twice).
    for graph in (RESIDUAL, INCEPTION):
        want = one_device(graph.model)
        strategies = [BASELINES["data_parallel"](graph, 2), whole_ops(graph, 2, lambda op: op.name in APART)]
        report = run_on_cluster(ClusterJob.for_strategies(graph, strategies, CONFIG), num_workers=2, timeout_s=300)
        assert [result.num_stages > 1 for result in report.results] == [False, True]
        for result in report.results:
            assert_same(result, want)


# The ops on process 1 in the cluster test: one branch of each block.
APART = {"a", "bn_a", "b", "bn_b", "b3_1", "b3", "bm"}
