"""The simulator on DAGs: fork-join traces by hand, batch norm's statistics all-reduces, an op read by two
consumers, delta == full on random branching DAGs, and the memory of parallel branches."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from models.graph import GraphBuilder, OpGraph
from models.zoo import FamilyOptions, build_graph
from simulator.cost import RooflineCostModel
from simulator.machine import machine_preset
from simulator.simulate import Simulator, simulate
from simulator.taskgraph import STATS, ring_allreduce_ms
from soap.baselines import megatron, megatron_sp, random_strategy
from soap.config import ParallelConfig
from soap.optimizer import Optimizer
from soap.space import enumerate_configs
from soap.strategy import Strategy
from tests.simulator.fakes import KindTableCost, fake_machine

# Forward 1, 10, 100, 1000 ms by kind, backward twice that; flatten and the loss free; free updates. Any sum
# of them names the ops in it (its digits).
COSTS = KindTableCost((("conv2d", 1.0, 2.0), ("batch_norm", 10.0, 20.0), ("avg_pool2d", 100.0, 200.0),
                       ("add", 1000.0, 2000.0), ("concat", 1000.0, 2000.0), ("flatten", 0.0, 0.0),
                       ("softmax_xent", 0.0, 0.0)))
# The same with the branches' prices swapped: batch norm the slow branch.
SWAPPED = KindTableCost((("conv2d", 1.0, 2.0), ("batch_norm", 100.0, 200.0), ("avg_pool2d", 10.0, 20.0),
                         ("add", 1000.0, 2000.0), ("concat", 1000.0, 2000.0), ("flatten", 0.0, 0.0),
                         ("softmax_xent", 0.0, 0.0)))
# 1 byte per us, no latency: a transfer of b bytes takes b / 1000 ms. Every tensor that moves in the fork-join
# graph below (stem's, bn's and pool's outputs and their gradients) is 2 x 4 x 4 x 2 floats = 256 bytes: 0.256 ms.
LINK_BYTES_PER_S = 1e6


def fork_join_graph(join: str = "add") -> OpGraph:
    """stem (conv k3, 2 ch) -> bn and pool (avg k3 SAME), both (2, 4, 4, 2) -> join (add or concat) -> flatten
    -> loss."""
    b = GraphBuilder("forkjoin", "toy", (2, 4, 4, 2))
    b.conv2d("stem", 2, kernel=3, input=None)
    b.batch_norm("bn", input="stem")
    b.avg_pool2d("pool", input="stem")
    getattr(b, join)("join", inputs=["bn", "pool"])
    b.flatten("flat")
    b.softmax_xent("loss")
    return b.build(2)


def whole(device: int, labels: int = 4) -> ParallelConfig:
    """An op whole on `device`; `labels`: its config labels (an image op's 4, a conv's 5 with in_channel)."""
    return ParallelConfig((1,) * labels, (device,))


def fork_join_strategy(graph: OpGraph, num_devices: int, stem=0, bn=0, pool=0, join=0) -> Strategy:
    configs = {"stem": whole(stem, 5), "bn": whole(bn), "pool": whole(pool), "join": whole(join),
               "flat": whole(join, 2), "loss": whole(join, 1)}
    return Strategy.for_graph(graph, num_devices, configs)


def events(trace):
    return [(e.name, e.resource, round(e.start_ms, 9), round(e.end_ms, 9)) for e in trace.events]


def spans(trace):
    """name -> (start, end), for tasks on one resource (compute and updates)."""
    return {e.name: (round(e.start_ms, 9), round(e.end_ms, 9)) for e in trace.events}


# --- a. fork-join ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("join", ["add", "concat"])
def test_fork_join_on_one_device_is_the_sum(join):
    graph = fork_join_graph(join)
    result, trace = simulate(graph, fork_join_strategy(graph, 1), fake_machine(1, LINK_BYTES_PER_S), COSTS)
    # Forward 1 + 10 + 100 + 1000 + 0 + 0, backward 0 + 0 + 2000 + 200 + 20 + 2, one after the other: 3333.
    assert events(trace) == [
        ("stem[0]", "device 0", 0.0, 1.0),
        ("bn[0]", "device 0", 1.0, 11.0),
        ("pool[0]", "device 0", 11.0, 111.0),
        ("join[0]", "device 0", 111.0, 1111.0),
        ("flat[0]", "device 0", 1111.0, 1111.0),
        ("loss[0]", "device 0", 1111.0, 1111.0),
        ("grad loss[0]", "device 0", 1111.0, 1111.0),
        ("grad flat[0]", "device 0", 1111.0, 1111.0),
        ("grad join[0]", "device 0", 1111.0, 3111.0),
        ("grad pool[0]", "device 0", 3111.0, 3311.0),
        ("grad bn[0]", "device 0", 3311.0, 3331.0),
        ("update bn[0]", "device 0", 3331.0, 3331.0),
        ("grad stem[0]", "device 0", 3331.0, 3333.0),
        ("update stem[0]", "device 0", 3333.0, 3333.0),
    ]
    assert result.step_ms == trace.makespan_ms == 3333.0


@pytest.mark.parametrize("join", ["add", "concat"])
def test_fork_join_branches_on_two_devices_overlap(join):
    # pool on device 1, the rest on device 0. Forward: stem 0-1; bn 1-11 on device 0 while stem's output moves
    # to device 1 (256 B: 0.256 ms, 1-1.256) and pool runs 1.256-101.256; pool's output comes back
    # (101.256-101.512); join 101.512-1101.512. Backward: join's gradient 1101.512-3101.512; it goes to device 1
    # (3101.512-3101.768) for pool's 200 ms (-3301.768) while bn's runs on device 0 (3101.512-3121.512); pool's
    # input gradient returns (3301.768-3302.024) and stem's backward ends at 3304.024.
    # Step: stem 1 + 0.256 + longer branch 100 + 0.256 + join 1000 + 2000 + 0.256 + 200 + 0.256 + 2 = 3304.024,
    # not the sum 3333 (bn's 10 + 20 are hidden behind the pool branch).
    graph = fork_join_graph(join)
    strategy = fork_join_strategy(graph, 2, pool=1)
    result, trace = simulate(graph, strategy, fake_machine(2, LINK_BYTES_PER_S), COSTS)
    assert events(trace) == [
        ("stem[0]", "device 0", 0.0, 1.0),
        ("bn[0]", "device 0", 1.0, 11.0),
        ("stem[0] -> pool[0]", "link 0->1", 1.0, 1.256),
        ("pool[0]", "device 1", 1.256, 101.256),
        ("pool[0] -> join[0]", "link 1->0", 101.256, 101.512),
        ("join[0]", "device 0", 101.512, 1101.512),
        ("flat[0]", "device 0", 1101.512, 1101.512),
        ("loss[0]", "device 0", 1101.512, 1101.512),
        ("grad loss[0]", "device 0", 1101.512, 1101.512),
        ("grad flat[0]", "device 0", 1101.512, 1101.512),
        ("grad join[0]", "device 0", 1101.512, 3101.512),
        ("grad join[0] -> pool[0]", "link 0->1", 3101.512, 3101.768),
        ("grad pool[0]", "device 1", 3101.768, 3301.768),
        ("grad bn[0]", "device 0", 3101.512, 3121.512),
        ("update bn[0]", "device 0", 3121.512, 3121.512),
        ("grad pool[0] -> stem[0]", "link 1->0", 3301.768, 3302.024),
        ("grad stem[0]", "device 0", 3302.024, 3304.024),
        ("update stem[0]", "device 0", 3304.024, 3304.024),
    ]
    assert result.step_ms == pytest.approx(1 + 0.256 + 100 + 0.256 + 1000 + 2000 + 0.256 + 200 + 0.256 + 2, abs=1e-9)
    assert result.step_ms == trace.makespan_ms


def test_fork_join_with_the_join_on_a_third_device():
    # stem on 0, bn on 1, pool on 2, join (and flatten, loss) on 0. Forward: stem 0-1; its output goes to bn and
    # pool in two transfers (one per edge) at once on links 0->1 and 0->2, 1-1.256; bn 1.256-11.256 and pool
    # 1.256-101.256 run side by side; their outputs return, bn's 11.256-11.512, pool's 101.256-101.512; join
    # 101.512-1101.512. Backward: join 1101.512-3101.512; the gradient goes out on both links 3101.512-3101.768;
    # bn 3101.768-3121.768, pool 3101.768-3301.768; the later returns at 3302.024; stem 3302.024-3304.024.
    graph = fork_join_graph("add")
    _, trace = simulate(graph, fork_join_strategy(graph, 3, bn=1, pool=2), fake_machine(3, LINK_BYTES_PER_S), COSTS)
    assert events(trace) == [
        ("stem[0]", "device 0", 0.0, 1.0),
        ("stem[0] -> bn[0]", "link 0->1", 1.0, 1.256),
        ("bn[0]", "device 1", 1.256, 11.256),
        ("stem[0] -> pool[0]", "link 0->2", 1.0, 1.256),
        ("pool[0]", "device 2", 1.256, 101.256),
        ("bn[0] -> join[0]", "link 1->0", 11.256, 11.512),
        ("pool[0] -> join[0]", "link 2->0", 101.256, 101.512),
        ("join[0]", "device 0", 101.512, 1101.512),
        ("flat[0]", "device 0", 1101.512, 1101.512),
        ("loss[0]", "device 0", 1101.512, 1101.512),
        ("grad loss[0]", "device 0", 1101.512, 1101.512),
        ("grad flat[0]", "device 0", 1101.512, 1101.512),
        ("grad join[0]", "device 0", 1101.512, 3101.512),
        ("grad join[0] -> pool[0]", "link 0->2", 3101.512, 3101.768),
        ("grad pool[0]", "device 2", 3101.768, 3301.768),
        ("grad join[0] -> bn[0]", "link 0->1", 3101.512, 3101.768),
        ("grad bn[0]", "device 1", 3101.768, 3121.768),
        ("update bn[0]", "device 1", 3121.768, 3121.768),
        ("grad bn[0] -> stem[0]", "link 1->0", 3121.768, 3122.024),
        ("grad pool[0] -> stem[0]", "link 2->0", 3301.768, 3302.024),
        ("grad stem[0]", "device 0", 3302.024, 3304.024),
        ("update stem[0]", "device 0", 3304.024, 3304.024),
    ]


# --- b. batch norm statistics ---------------------------------------------------------------------------

BN_COSTS = KindTableCost((("conv2d", 1.0, 2.0), ("batch_norm", 10.0, 20.0), ("global_avg_pool", 100.0, 200.0),
                          ("dense", 1000.0, 2000.0), ("softmax_xent", 0.0, 0.0)))


def bn_graph() -> OpGraph:
    """stem conv k1 (4, 2, 2, 4) -> (4, 2, 2, 8) -> bn (8 channels) -> gap (4, 8) -> fc 4 (no ReLU) -> loss."""
    b = GraphBuilder("bn", "toy", (4, 2, 2, 4))
    b.conv2d("stem", 8, kernel=1, input=None)
    b.batch_norm("bn", relu=True)
    b.global_avg_pool("gap")
    b.dense("fc", 4, relu=False)
    b.softmax_xent("loss")
    return b.build(4)


def bn_strategy(graph: OpGraph, num_devices: int, bn: ParallelConfig) -> Strategy:
    """Everything else split on the batch over devices 0 and 1."""
    pair = (0, 1)
    configs = {"stem": ParallelConfig((2, 1, 1, 1, 1), pair), "bn": bn, "gap": ParallelConfig((2, 1), pair),
               "fc": ParallelConfig((2, 1, 1), pair), "loss": ParallelConfig((2,), pair)}
    return Strategy.for_graph(graph, num_devices, configs)


# 1 byte per us, 1 ms a step: a ring all-reduce of b bytes over 2 devices takes 2 steps * 1 ms + 2/2 * b / 1000 ms.
BN_MACHINE = dict(bandwidth_bytes_per_s=1e6, latency_s=1e-3)


def test_batch_norm_split_on_the_batch_all_reduces_its_statistics():
    graph = bn_graph()
    strategy = bn_strategy(graph, 2, ParallelConfig((2, 1, 1, 1), (0, 1)))
    result, trace = simulate(graph, strategy, fake_machine(2, **BN_MACHINE), BN_COSTS)
    stats = [(e.name, e.resource, round(e.start_ms, 9), round(e.end_ms, 9)) for e in trace.events if e.kind == STATS]
    # 2 * 8 channels * 4 bytes = 64 B over a ring of 2: 2 * 1 ms + 64 B / 1e6 B/s = 2.064 ms, on both links.
    assert ring_allreduce_ms(64, 2, 1e6, 1e-3) == pytest.approx(2.064)
    # Forward: after stem's tasks (0-1), 1-3.064; bn computes 3.064-13.064, gap 13.064-113.064, fc -1113.064,
    # the loss (free) at 1113.064. Backward: fc 1113.064-3113.064, then fc's weights all-reduce (kernel 8*4 floats
    # = 128 B: 2 + 0.128 ms, bias 16 B: 2 + 0.016 ms; 3113.064-3117.208) before fc's update, which each device
    # runs before gap's backward (program order): gap 3117.208-3317.208; then the gradient statistics
    # 3317.208-3319.272 before bn's backward 3319.272-3339.272.
    assert stats == [
        ("stats bn slice 0", "link 0->1", 1.0, 3.064), ("stats bn slice 0", "link 1->0", 1.0, 3.064),
        ("grad stats bn slice 0", "link 0->1", 3317.208, 3319.272),
        ("grad stats bn slice 0", "link 1->0", 3317.208, 3319.272),
    ]
    times = spans(trace)
    assert times["bn[0]"] == times["bn[1]"] == (3.064, 13.064)
    assert times["grad gap[0]"] == times["grad gap[1]"] == (3117.208, 3317.208)
    assert times["grad bn[0]"] == times["grad bn[1]"] == (3319.272, 3339.272)
    # Then bn's scale and bias all-reduce (8 floats = 32 B each: 2.032 ms each, 3339.272-3343.336),
    # stem's backward 3343.336-3345.336 and its kernel (1*1*4*8 floats = 128 B: 2.128 ms) and bias (32 B: 2.032
    # ms) all-reduce 3345.336-3349.496. Step: 3349.496 = 1 + 2.064 + 10 + 100 + 1000 + 2000 + 4.144 + 200 + 2.064
    # + 20 + 4.064 + 2 + 4.16.
    assert result.step_ms == pytest.approx(3349.496, abs=1e-9)
    assert result.step_ms == pytest.approx(1 + 2.064 + 10 + 100 + 1000 + 2000 + 4.144 + 200 + 2.064 + 20 + 4.064
                                           + 2 + 4.16, abs=1e-9)


@pytest.mark.parametrize("degrees,devices,num_devices,groups,num_bytes", [
    pytest.param((1, 2, 1, 1), (0, 1), 2, 1, 64, id="height"),
    pytest.param((1, 1, 2, 1), (0, 1), 2, 1, 64, id="width"),
    # Two channel slices of 4 channels, each over 2 devices: 2 * 4 * 4 = 32 B each.
    pytest.param((2, 1, 1, 2), (0, 1, 2, 3), 4, 2, 32, id="sample-and-channel"),
])
def test_statistics_all_reduce_per_channel_slice(degrees, devices, num_devices, groups, num_bytes):
    graph = bn_graph()
    strategy = bn_strategy(graph, num_devices, ParallelConfig(degrees, devices))
    _, trace = simulate(graph, strategy, fake_machine(num_devices, **BN_MACHINE), BN_COSTS)
    stats = [e for e in trace.events if e.kind == STATS]
    names = sorted({e.name for e in stats})
    expected_names = sorted([f"stats bn slice {g}" for g in range(groups)] +
                            [f"grad stats bn slice {g}" for g in range(groups)])
    assert names == expected_names
    # 64 B: 2.064 ms; 32 B: 2 * 1 ms + 32 B / 1e6 B/s = 2.032 ms.
    assert {round(e.end_ms - e.start_ms, 9) for e in stats} == {round(2 + num_bytes / 1000, 9)}
    if groups == 2:  # degrees (2, 1, 1, 2): tasks 0, 2 (devices 0, 2) hold channels 0-3, tasks 1, 3 channels 4-7
        assert {e.resource for e in stats if e.name == "stats bn slice 0"} == {"link 0->2", "link 2->0"}
        assert {e.resource for e in stats if e.name == "stats bn slice 1"} == {"link 1->3", "link 3->1"}


@pytest.mark.parametrize("bn,num_devices", [
    pytest.param(ParallelConfig((1, 1, 1, 2), (0, 1)), 2, id="channels-only"),
    pytest.param(ParallelConfig((1, 1, 1, 1), (0,)), 2, id="one-device"),
    pytest.param(ParallelConfig((1, 1, 1, 4), (0, 1, 2, 3)), 4, id="channels-only-4"),
])
def test_no_statistics_all_reduce_without_a_split_of_the_reduced_dims(bn, num_devices):
    graph = bn_graph()
    _, trace = simulate(graph, bn_strategy(graph, num_devices, bn), fake_machine(num_devices, **BN_MACHINE), BN_COSTS)
    assert [e for e in trace.events if e.kind == STATS] == []


# --- c. an op read by two consumers ---------------------------------------------------------------------

@pytest.mark.parametrize("cost", [pytest.param(COSTS, id="pool-slow"), pytest.param(SWAPPED, id="bn-slow")])
@pytest.mark.parametrize("placement", [
    pytest.param(dict(bn=1, pool=2), id="both-remote"),
    pytest.param(dict(bn=0, pool=1), id="pool-remote"),
    pytest.param(dict(bn=1, pool=0), id="bn-remote"),
])
def test_backward_of_an_op_with_two_consumers_waits_for_both(cost, placement):
    graph = fork_join_graph("add")
    strategy = fork_join_strategy(graph, 3, **placement)
    _, trace = simulate(graph, strategy, fake_machine(3, LINK_BYTES_PER_S), cost)
    by_name = {e.name: e for e in trace.events}
    stem = by_name["grad stem[0]"]
    arrivals = []
    for consumer in ("bn", "pool"):
        done = by_name[f"grad {consumer}[0]"]
        assert stem.start_ms >= done.end_ms
        moved = by_name.get(f"grad {consumer}[0] -> stem[0]")
        if placement[consumer] == 0:
            assert moved is None
            arrivals.append(done.end_ms)
        else:  # the gradient moves back to device 0: 256 B, 0.256 ms, after the consumer's backward
            assert moved.start_ms == done.end_ms and moved.end_ms == pytest.approx(done.end_ms + 0.256)
            arrivals.append(moved.end_ms)
    # It starts when the later of the two gradients is there (device 0 is otherwise idle by then).
    assert stem.start_ms == max(arrivals)
    # The slow branch's backward (200 ms against the other's 20, plus at most 0.512 ms of transfers) arrives last.
    slow = "pool" if cost is COSTS else "bn"
    assert stem.start_ms == max(arrivals) == arrivals[("bn", "pool").index(slow)]


def test_a_consumer_reading_one_op_twice_moves_as_much_back_as_forward():
    # a (2, 4, 4, 2) on device 0, cat = concat(a, a) on device 1: forward moves a's 256 B for each of cat's two
    # inputs (0.256 ms each at 1e6 B/s); the gradient of each half of cat's output must come back as well.
    b = GraphBuilder("twice", "toy", (2, 4, 4, 2))
    b.conv2d("a", 2, kernel=1, input=None)
    b.concat("cat", inputs=["a", "a"])
    b.flatten("flat")
    b.softmax_xent("loss")
    graph = b.build(2)
    configs = {"a": whole(0, 5), "cat": whole(1), "flat": whole(1, 2), "loss": whole(1, 1)}
    _, trace = simulate(graph, Strategy.for_graph(graph, 2, configs), fake_machine(2, LINK_BYTES_PER_S), COSTS)
    moved = [e for e in trace.events if e.kind == "transfer"]
    forward = sum(e.end_ms - e.start_ms for e in moved if not e.name.startswith("grad "))
    backward = sum(e.end_ms - e.start_ms for e in moved if e.name.startswith("grad "))
    assert forward == pytest.approx(0.512)
    assert backward == pytest.approx(forward)


# --- d. delta == full on random branching DAGs ----------------------------------------------------------

def random_dag(rng: np.random.Generator) -> OpGraph:
    """4 to 12 ops on (8, 4, 4, 4) images, each reading 1 or 2 earlier ops (an add of two ops of one shape, a
    concat of any two: every op keeps 4 x 4), then the ops nobody reads concatenated, global_avg_pool, dense
    and softmax_xent. Convs after the first fuse a ReLU or not (without, their input channels split)."""
    b = GraphBuilder("dag", "toy", (8, 4, 4, 4))
    names = [b.conv2d("op0", int(rng.choice([4, 8])), kernel=int(rng.choice([1, 3])), input=None)]
    read = set()
    for i in range(1, int(rng.integers(4, 13))):
        name, kind = f"op{i}", str(rng.choice(["conv2d", "batch_norm", "pool2d", "avg_pool2d", "add", "concat"]))
        by_shape = {}
        for n in names:
            by_shape.setdefault(b.shape(n), []).append(n)
        pairs = [group for group in by_shape.values() if len(group) > 1]
        if kind == "add" and pairs:
            group = pairs[rng.integers(len(pairs))]
            inputs = [str(n) for n in rng.choice(group, 2, replace=False)]
            names.append(b.add(name, inputs=inputs, relu=bool(rng.integers(2))))
            read.update(inputs)
            continue
        if kind == "concat" and len(names) > 1:
            inputs = [str(n) for n in rng.choice(names, 2, replace=False)]
            names.append(b.concat(name, inputs=inputs))
            read.update(inputs)
            continue
        source = names[rng.integers(len(names))]
        read.add(source)
        if kind == "batch_norm":
            names.append(b.batch_norm(name, relu=bool(rng.integers(2)), input=source))
        elif kind == "pool2d":
            names.append(b.pool2d(name, kernel=3, stride=1, padding="SAME", input=source))
        elif kind == "avg_pool2d":
            names.append(b.avg_pool2d(name, input=source))
        else:  # without a ReLU a conv may split its input channels (partial sums of its output)
            names.append(b.conv2d(name, int(rng.choice([4, 8])), kernel=int(rng.choice([1, 3])),
                                  relu=bool(rng.integers(2)), input=source))
    sinks = [n for n in names if n not in read]  # (a builder cannot add ops after build(): it freezes its graph)
    if len(sinks) > 1:
        b.concat("tail", inputs=sinks)
    b.global_avg_pool("gap")
    b.dense("fc", 4, relu=False)
    b.softmax_xent("loss")
    return b.build(8)


def preset(num_devices: int, overlap: bool):
    """p100x2-pcie for 2 devices; for 4, p100-4x4 cut into nodes of 2 (NVLink inside, InfiniBand across)."""
    if num_devices == 2:
        machine = machine_preset("p100x2-pcie")
    else:
        machine = dataclasses.replace(machine_preset("p100-4x4", 4), devices_per_node=2)
    return dataclasses.replace(machine, comm_overlaps_compute=overlap)


def random_moves(graph: OpGraph, strategy: Strategy, num_devices: int, rng: np.random.Generator) -> Strategy:
    for _ in range(int(rng.integers(1, 4))):
        op = graph.ops[rng.integers(len(graph.ops))]
        space = enumerate_configs(op, num_devices)
        strategy = strategy.with_config(op.name, space[rng.integers(len(space))])
    return strategy


def test_random_dags_have_branches():
    # The generator makes what the property test needs: adds, concats, and ops read by several consumers.
    kinds, fanout, contracting = set(), 0, 0
    for seed in range(20):
        graph = random_dag(np.random.default_rng(seed))
        kinds |= {op.kind.value for op in graph.ops}
        contracting += sum("in_channel" in op.space.splittable and op.kind.value == "conv2d" for op in graph.ops)
        fanout = max(fanout, max(len(graph.consumers(op.name)) for op in graph.ops))
        assert 7 <= len(graph.ops) <= 16 and graph.ops[-1].kind.value == "softmax_xent"
    assert {"add", "concat", "batch_norm", "pool2d", "avg_pool2d", "conv2d"} <= kinds and fanout >= 2
    assert contracting >= 10  # convs and the dense whose input channels split: partial-sum outputs


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_devices=st.sampled_from([2, 4]), overlap=st.booleans(),
       moves=st.integers(1, 20), scatter=st.booleans())
def test_delta_equals_full_on_random_dags(seed, num_devices, overlap, moves, scatter):
    # `scatter`: a machine on which XLA sums a partial output that its readers split as a reduce-scatter.
    rng = np.random.default_rng(seed)
    graph = random_dag(rng)
    machine = dataclasses.replace(preset(num_devices, overlap), reduce_scatter=scatter)
    cost = RooflineCostModel(machine.device)
    delta, full = Simulator(graph, machine, cost), Simulator(graph, machine, cost)
    strategy = random_strategy(graph, num_devices, rng)
    delta.full(strategy)
    for _ in range(moves):
        strategy = random_moves(graph, strategy, num_devices, rng)
        by_delta, by_full = delta.delta(strategy), full.full(strategy)
        assert by_delta.step_ms == by_full.step_ms  # bit for bit
        assert by_delta.peak_memory_bytes == by_full.peak_memory_bytes
    assert delta.trace() == full.trace()


# --- e. the memory of parallel branches -----------------------------------------------------------------

def wide_branches_graph() -> OpGraph:
    """stem conv k3 2 -> 2 ch on (2, 4, 4, 2); branch a: conv k1 -> 4 ch; branch b: bn; concat -> 6 ch; gap; fc 3."""
    b = GraphBuilder("wide", "toy", (2, 4, 4, 2))
    b.conv2d("stem", 2, kernel=3, input=None)
    b.conv2d("a", 4, kernel=1, input="stem")
    b.batch_norm("b", input="stem")
    b.concat("cat", inputs=["a", "b"])
    b.global_avg_pool("gap")
    b.dense("fc", 3, relu=False)
    b.softmax_xent("loss")
    return b.build(2)


def test_peak_memory_holds_both_branches_kept_outputs():
    # The rule (simulator/taskgraph.py): per task, 3 x its parameter slice + its state slice + its output shard +
    # the input bytes it received from other devices. Everything on device 0:
    #   stem  3 x (3*3*2*2 + 2) floats = 3 x 152 B = 456, output 2*4*4*2 floats = 256        ->  712
    #   a     3 x (1*1*2*4 + 4) floats = 3 x 48 B = 144, output 2*4*4*4 floats = 512         ->  656
    #   b     3 x (2 + 2) floats = 48, state (2 + 2) floats = 16, output 256                  ->  320
    #   cat   output 2*4*4*6 floats = 768                                                      ->  768
    #   gap   output 2*6 floats = 48                                                           ->   48
    #   fc    3 x (6*3 + 3) floats = 3 x 84 B = 252, output 2*3 floats = 24                    ->  276
    #   loss  output 2 floats = 8                                                              ->    8
    # Both branches' outputs (512 + 256) are kept at once:                              total 2788 B.
    graph = wide_branches_graph()
    configs = {op.name: whole(0, len(op.space.config_labels)) for op in graph.ops}
    result, _ = simulate(graph, Strategy.for_graph(graph, 1, configs), fake_machine(1), COSTS_WIDE)
    assert result.peak_memory_bytes == (2788,)
    # Branch a on device 1: device 0 keeps 2788 - 656 = 2132 of its own and receives a's output for the concat
    # (512 B): 2644; device 1 holds a (656) and the stem output it received (256): 912.
    configs["a"] = whole(1, 5)
    result, _ = simulate(graph, Strategy.for_graph(graph, 2, configs), fake_machine(2), COSTS_WIDE)
    assert result.peak_memory_bytes == (2644, 912)
    # Both branches batch-split over devices 0 and 1 (stem, cat and the rest whole on 0): each device holds half
    # of each branch's output; a's weights are replicated. Device 0: stem 712, a 144 + 256, b 48 + 16 + 128, cat
    # 768 + received halves of a (256) and b (128), gap 48, fc 276, loss 8 = 2788 - 384 + 384 = 2788.
    # Device 1: a 144 + 256, b 64 + 128, and half of stem's output received once for both branches, which read
    # it in the same boxes on the same devices (128): 720.
    configs["a"] = ParallelConfig((2, 1, 1, 1, 1), (0, 1))
    configs["b"] = ParallelConfig((2, 1, 1, 1), (0, 1))
    result, _ = simulate(graph, Strategy.for_graph(graph, 2, configs), fake_machine(2), COSTS_WIDE)
    assert result.peak_memory_bytes == (2788, 720)


COSTS_WIDE = KindTableCost((("conv2d", 1.0, 2.0), ("batch_norm", 10.0, 20.0), ("concat", 100.0, 200.0),
                            ("global_avg_pool", 1.0, 1.0), ("dense", 1.0, 2.0), ("softmax_xent", 0.0, 0.0)))


# --- f. delta == full on random transformers ------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_devices=st.sampled_from([2, 4]), overlap=st.booleans(),
       reduce_scatter=st.booleans(), depth=st.integers(1, 2), heads=st.sampled_from([2, 4]),
       moves=st.integers(1, 12))
def test_delta_equals_full_on_random_transformers(seed, num_devices, overlap, reduce_scatter, depth, heads, moves):
    """Partial sums both ways, replicas, heads, vocabulary splits and the tied head, from random strategies
    and the Megatron layouts, moved at random."""
    rng = np.random.default_rng(seed)
    graph = build_graph("gpt2", "tokens", 4, FamilyOptions(depth=depth, width=16, heads=heads, vocab=32, seq_len=8))
    machine = dataclasses.replace(preset(num_devices, overlap), reduce_scatter=reduce_scatter)
    cost = RooflineCostModel(machine.device, optimizer=Optimizer.ADAMW)
    delta, full = Simulator(graph, machine, cost), Simulator(graph, machine, cost)
    strategy = [random_strategy(graph, num_devices, rng), megatron(graph, num_devices),
                megatron_sp(graph, num_devices)][rng.integers(3)]
    delta.full(strategy)
    for _ in range(moves):
        strategy = random_moves(graph, strategy, num_devices, rng)
        by_delta, by_full = delta.delta(strategy), full.full(strategy)
        assert by_delta.step_ms == by_full.step_ms  # bit for bit
        assert by_delta.peak_memory_bytes == by_full.peak_memory_bytes
    assert delta.trace() == full.trace()


# --- g. deltas over memory left untimed -----------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_devices=st.sampled_from([2, 4]), moves=st.integers(1, 16))
def test_deltas_over_memory_left_untimed_time_the_rest_as_full_does(seed, num_devices, moves):
    """On a device holding what a random strategy needs, some moves go over memory: those deltas
    (time_over_memory=False) return inf; every other one, and the final trace, equal full simulation bit for
    bit, though the pass put off over memory must start from an earlier segment. Half the moves go back to
    the strategy before, as MCMC's rejections do (a delta from the timeline before the last)."""
    rng = np.random.default_rng(seed)
    graph = build_graph("gpt2", "tokens", 4, FamilyOptions(depth=1, width=16, heads=2, vocab=32, seq_len=8))
    machine = preset(num_devices, overlap=True)
    cost = RooflineCostModel(machine.device, optimizer=Optimizer.ADAMW)
    strategy = random_strategy(graph, num_devices, rng)
    memory = max(Simulator(graph, machine, cost).full(strategy).peak_memory_bytes)
    machine = dataclasses.replace(machine, device=dataclasses.replace(machine.device, memory_bytes=memory))
    delta, full = Simulator(graph, machine, cost), Simulator(graph, machine, cost)
    delta.full(strategy)
    for _ in range(moves):
        proposed = random_moves(graph, strategy, num_devices, rng)
        by_delta, by_full = delta.delta(proposed, time_over_memory=False), full.full(proposed)
        assert by_delta.peak_memory_bytes == by_full.peak_memory_bytes
        assert by_delta.step_ms == (by_full.step_ms if by_full.fits_memory else float("inf"))  # bit for bit
        strategy = proposed if rng.integers(2) else strategy
    delta.delta(strategy, time_over_memory=False)
    full.full(strategy)
    assert delta.trace() == full.trace()  # a trace times what was left untimed
