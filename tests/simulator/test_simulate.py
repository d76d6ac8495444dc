"""The simulator on hand-built graphs: whole traces, closed forms, delta == full, memory by hand."""

import dataclasses
import json
import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from models.errors import ShapeError
from models.graph import GraphBuilder, OpGraph
from models.zoo import build_graph
from soap.baselines import data_parallel, random_strategy, single
from soap.config import ParallelConfig
from soap.space import enumerate_configs
from soap.strategy import Strategy
from simulator.machine import Link
from simulator.simulate import Simulator, simulate
from simulator.taskgraph import (ALL_REDUCED, REDUCE_SCATTERED, TRANSFER, ring_allreduce_ms, ring_reduce_scatter_ms,
                                 task_name)
from tests.simulator.fakes import FlopCost, KindTableCost, fake_machine

# Costs 1/10/100/1000 as the style guide asks: dense forward 10, backward 100; loss 1 and 1000.
COSTS = KindTableCost((("dense", 10.0, 100.0), ("softmax_xent", 1.0, 1000.0)), update_ms_each=1.0)


def two_layer_graph(batch: int = 4) -> OpGraph:
    builder = GraphBuilder("toy", "toy", (batch, 8))
    builder.dense("fc", 8)
    builder.softmax_xent("loss")
    return builder.build(batch)


def dense_chain_graph(batch: int = 4) -> OpGraph:
    builder = GraphBuilder("toy3", "toy", (batch, 8))
    builder.dense("fc1", 8)
    builder.dense("fc2", 8)
    builder.softmax_xent("loss")
    return builder.build(batch)


def events(trace):
    return [(e.name, e.resource, round(e.start_ms, 9), round(e.end_ms, 9)) for e in trace.events]


def test_whole_trace_on_one_device():
    graph = two_layer_graph()
    result, trace = simulate(graph, single(graph, 1), fake_machine(1), COSTS)
    assert events(trace) == [
        ("fc[0]", "device 0", 0.0, 10.0),
        ("loss[0]", "device 0", 10.0, 11.0),
        ("grad loss[0]", "device 0", 11.0, 1011.0),
        ("grad fc[0]", "device 0", 1011.0, 1111.0),
        ("update fc[0]", "device 0", 1111.0, 1112.0),
    ]
    assert result.step_ms == trace.makespan_ms == 1112.0


def test_whole_trace_with_transfers_and_allreduce():
    # fc batch-split on 2 devices, the loss whole on device 1: device 0's half of fc's output (2 samples x
    # 8 features x 4 bytes = 64 bytes) moves to device 1 at 1 byte per us (1e6 B/s): 0.064 ms; the gradient
    # returns the same way. fc's weights (8*8+8 floats = 288 bytes) all-reduce over a ring of 2:
    # 2(r-1)/r * 288 B / 1e6 B/s = 0.288 ms.
    graph = two_layer_graph()
    strategy = Strategy.for_graph(graph, 2, {"fc": ParallelConfig((2, 1, 1), (0, 1)), "loss": ParallelConfig((1,), (1,))})
    _, trace = simulate(graph, strategy, fake_machine(2, bandwidth_bytes_per_s=1e6), COSTS)
    assert events(trace) == [
        ("fc[0]", "device 0", 0.0, 10.0),
        ("fc[1]", "device 1", 0.0, 10.0),
        ("fc[0] -> loss[0]", "link 0->1", 10.0, 10.064),
        ("loss[0]", "device 1", 10.064, 11.064),
        ("grad loss[0]", "device 1", 11.064, 1011.064),
        ("grad loss[0] -> fc[0]", "link 1->0", 1011.064, 1011.128),
        ("grad fc[0]", "device 0", 1011.128, 1111.128),
        ("grad fc[1]", "device 1", 1011.064, 1111.064),
        ("allreduce fc slice 0", "link 0->1", 1111.128, 1111.416),
        ("allreduce fc slice 0", "link 1->0", 1111.128, 1111.416),
        ("update fc[0]", "device 0", 1111.416, 1112.416),
        ("update fc[1]", "device 1", 1111.416, 1112.416),
    ]


def test_transfers_block_compute_where_the_machine_does_not_overlap():
    graph = two_layer_graph()
    strategy = Strategy.for_graph(graph, 2, {"fc": ParallelConfig((2, 1, 1), (0, 1)), "loss": ParallelConfig((1,), (1,))})
    machine = fake_machine(2, bandwidth_bytes_per_s=1e6, overlap=False)
    _, trace = simulate(graph, strategy, machine, COSTS)
    rows = {(e.name, e.resource) for e in trace.events}
    assert ("fc[0] -> loss[0]", "device 0") in rows and ("fc[0] -> loss[0]", "device 1") in rows
    assert ("allreduce fc slice 0", "device 1") in rows


def test_data_parallel_with_free_links_is_single_over_n():
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    free = fake_machine(8, bandwidth_bytes_per_s=1e30)
    cost = FlopCost()
    one = Simulator(graph, free.with_devices(1), cost).full(single(graph, 1)).step_ms
    for n in (2, 4, 8):
        dp = Simulator(graph, free.with_devices(n), cost).full(data_parallel(graph, n)).step_ms
        assert dp == pytest.approx(one / n, rel=1e-12)


def test_data_parallel_is_compute_over_n_plus_ring_allreduce_of_weights():
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    bandwidth, latency = 10e9, 1e-5
    machine = fake_machine(4, bandwidth_bytes_per_s=bandwidth, latency_s=latency, overlap=False)
    cost = FlopCost()
    compute_ms = sum(op.forward_flops + op.backward_flops for op in graph.ops) / 1e9
    # One all-reduce per parameter array (kernel, bias), one after the other.
    allreduce_ms = sum(ring_allreduce_ms(math.prod(shape) * op.dtype_bytes, 4, bandwidth, latency)
                       for op in graph.ops for _, shape in op.param_shapes)
    dp = Simulator(graph, machine, cost).full(data_parallel(graph, 4)).step_ms
    assert dp == pytest.approx(compute_ms / 4 + allreduce_ms, rel=1e-9)
    # The ring formula by hand: fc7's 67,125,248 bytes over 4 devices at 10 GB/s and 10 us per step:
    # 6 steps * 10 us + 6/4 * 67,125,248 / 1e10 s = 0.06 ms + 10.0688 ms.
    assert ring_allreduce_ms(67_125_248, 4, bandwidth, latency) == pytest.approx(0.06 + 10.0687872)


def test_a_weight_heavy_dense_layer_prefers_a_channel_split():
    builder = GraphBuilder("wide", "toy", (8, 4096))
    builder.dense("fc", 4096)
    builder.softmax_xent("loss")
    graph = builder.build(8)
    machine = fake_machine(2, bandwidth_bytes_per_s=10e9)
    simulator = Simulator(graph, machine, FlopCost())
    times = {}
    for name, degrees in (("sample", (2, 1, 1)), ("channel", (1, 2, 1))):
        configs = {"fc": ParallelConfig(degrees, (0, 1)), "loss": ParallelConfig((2,), (0, 1))}
        times[name] = simulator.full(Strategy.for_graph(graph, 2, configs)).step_ms
    assert times["channel"] < times["sample"] / 2


def test_peak_memory_by_hand():
    # fc (4 x 8 -> 4 x 8) batch-split on devices 0,1; loss whole on device 1.
    # Device 0: weights+grads+momentum 3 * 288 B, fc output shard 2*8*4 = 64 B          -> 928 B.
    # Device 1: the same 928 B, plus the 64 B received from device 0 for the loss,
    #           plus the loss output (4 floats = 16 B)                                   -> 1008 B.
    graph = two_layer_graph()
    strategy = Strategy.for_graph(graph, 2, {"fc": ParallelConfig((2, 1, 1), (0, 1)), "loss": ParallelConfig((1,), (1,))})
    result, _ = simulate(graph, strategy, fake_machine(2), COSTS)
    assert result.peak_memory_bytes == (928, 1008)
    assert result.fits_memory and result.over_memory() is None
    small = fake_machine(2, memory_bytes=1000)
    result, _ = simulate(graph, strategy, small, COSTS)
    assert not result.fits_memory
    assert result.over_memory() == "device 1 needs 0.00 GiB of its 0.00 GiB (1008 bytes)"


def test_height_split_conv_moves_only_its_halo():
    builder = GraphBuilder("halo", "toy", (2, 8, 8, 4))
    builder.conv2d("a", 4, kernel=3)
    builder.conv2d("b", 4, kernel=3)
    builder.flatten("flat")
    builder.softmax_xent("loss")
    graph = builder.build(2)
    split_h = ParallelConfig((1, 2, 1, 1, 1), (0, 1))
    configs = {"a": split_h, "b": split_h, "flat": ParallelConfig((1, 1), (0,)), "loss": ParallelConfig((1,), (0,))}
    simulator = Simulator(graph, fake_machine(2, bandwidth_bytes_per_s=1e6), FlopCost())
    simulator.full(Strategy.for_graph(graph, 2, configs))
    halo = [(e.resource, round(e.start_ms, 9), round(e.end_ms, 9)) for e in simulator.trace().events
            if e.name == "a -> b (2 slices)"]
    # One row of 2 x 8 x 4 floats = 256 bytes each way, both ways at once in one resharding: 0.256 ms at
    # 1e6 B/s on each link, after conv a's task: 2 x 4 rows x 8 x 4 x 4 x 9 x 2 = 18,432 FLOPs at 1 TFLOP/s.
    start = 2 * 4 * 8 * 4 * 4 * 9 * 2 / 1e12 * 1e3
    assert halo == [("link 0->1", round(start, 9), round(start + 0.256, 9)),
                    ("link 1->0", round(start, 9), round(start + 0.256, 9))]


def test_chrome_trace_has_a_row_per_device_and_link():
    graph = two_layer_graph()
    strategy = Strategy.for_graph(graph, 2, {"fc": ParallelConfig((2, 1, 1), (0, 1)), "loss": ParallelConfig((1,), (1,))})
    _, trace = simulate(graph, strategy, fake_machine(2), COSTS)
    document = json.loads(trace.to_chrome_json())
    rows = [r["args"]["name"] for r in document["traceEvents"] if r["ph"] == "M"]
    assert rows == ["device 0", "device 1", "link 0->1", "link 1->0"]
    spans = [r for r in document["traceEvents"] if r["ph"] == "X"]
    assert len(spans) == len(trace.events) and spans[0]["ts"] == 0.0 and spans[0]["dur"] == 10_000.0


def test_graph_with_a_cycle_is_rejected():
    cyclic = nx.DiGraph([("a", "b"), ("b", "a")])
    with pytest.raises(ShapeError, match="operator graph of 'toy' has a cycle"):
        OpGraph("toy", "toy", 1, cyclic)


ALEXNET = build_graph("alexnet", "tiny-imagenet", 64)


def mixed_machine(num_devices: int, overlap: bool):
    """Two devices per node, inter-node links five times slower: transfers of every duration."""
    machine = fake_machine(num_devices, bandwidth_bytes_per_s=5e9, latency_s=2e-6, overlap=overlap, devices_per_node=2)
    return dataclasses.replace(machine, inter_node=dataclasses.replace(machine.inter_node, bandwidth_bytes_per_s=1e9))


def random_move(strategy: Strategy, num_devices: int, rng: np.random.Generator) -> Strategy:
    op = ALEXNET.ops[rng.integers(len(ALEXNET.ops))]
    space = enumerate_configs(op, num_devices)
    return strategy.with_config(op.name, space[rng.integers(len(space))])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_devices=st.sampled_from([2, 3, 4, 8]), overlap=st.booleans(),
       moves=st.integers(1, 30), ops_per_move=st.sampled_from([1, 1, 2, 3]))
def test_delta_equals_full_on_random_move_sequences(seed, num_devices, overlap, moves, ops_per_move):
    rng = np.random.default_rng(seed)
    machine = mixed_machine(num_devices, overlap)
    delta, full = Simulator(ALEXNET, machine, FlopCost()), Simulator(ALEXNET, machine, FlopCost())
    strategy = random_strategy(ALEXNET, num_devices, rng)
    delta.full(strategy)
    for _ in range(moves):
        for _ in range(ops_per_move):  # several ops at once, as when MCMC reverts a move and proposes the next
            strategy = random_move(strategy, num_devices, rng)
        by_delta, by_full = delta.delta(strategy), full.full(strategy)
        assert by_delta.step_ms == by_full.step_ms  # bit for bit, not approximately
        assert by_delta.peak_memory_bytes == by_full.peak_memory_bytes
    assert delta.trace() == full.trace()


@pytest.mark.parametrize("num_devices", [pytest.param(4, id="4gpu"), pytest.param(8, id="8gpu")])
def test_delta_after_a_full_simulation_of_another_strategy(num_devices):
    # A full simulation in the middle of a walk replaces the timeline the next delta starts from; so does
    # a delta to a strategy that differs in every op (the first move of each MCMC chain).
    rng = np.random.default_rng(num_devices)
    machine = mixed_machine(num_devices, overlap=False)
    simulator, reference = Simulator(ALEXNET, machine, FlopCost()), Simulator(ALEXNET, machine, FlopCost())
    strategy = data_parallel(ALEXNET, num_devices)
    simulator.full(strategy)
    for step in range(40):
        if step % 10 == 9:
            strategy = random_strategy(ALEXNET, num_devices, rng)
        else:
            strategy = random_move(strategy, num_devices, rng)
        if step % 13 == 6:
            simulator.full(random_strategy(ALEXNET, num_devices, rng))
        assert simulator.delta(strategy).step_ms == reference.full(strategy).step_ms
    assert simulator.trace() == reference.trace()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_devices=st.sampled_from([2, 4, 8]), overlap=st.booleans(),
       accept=st.sampled_from([0.0, 0.3, 0.8]))
def test_delta_equals_full_on_mcmc_shaped_sequences(seed, num_devices, overlap, accept):
    # MCMC prices candidates one move from the current strategy and keeps some: after a rejection the
    # candidate is one op from the timeline before the last delta, which delta then starts from.
    rng = np.random.default_rng(seed)
    machine = mixed_machine(num_devices, overlap)
    delta, full = Simulator(ALEXNET, machine, FlopCost()), Simulator(ALEXNET, machine, FlopCost())
    current = random_strategy(ALEXNET, num_devices, rng)
    delta.full(current)
    for _ in range(25):
        candidate = random_move(current, num_devices, rng)
        by_delta, by_full = delta.delta(candidate), full.full(candidate)
        assert by_delta.step_ms == by_full.step_ms
        assert by_delta.peak_memory_bytes == by_full.peak_memory_bytes
        if rng.random() < accept:
            current = candidate
    assert delta.trace() == full.trace()


def test_a_reverted_move_gives_back_the_same_step_time():
    rng = np.random.default_rng(5)
    simulator = Simulator(ALEXNET, mixed_machine(8, overlap=True), FlopCost())
    start = random_strategy(ALEXNET, 8, rng)
    before = simulator.full(start).step_ms
    for _ in range(20):
        simulator.delta(random_move(start, 8, rng))
        assert simulator.delta(start).step_ms == before


def test_a_measured_allreduce_replaces_the_ring_formula():
    # Measured: 1 ms + ring traffic / 1e6 B/s. fc's kernel (256 bytes) and bias (32 bytes) over 2 devices,
    # 2(r-1)/r * bytes = bytes, one after the other: 1.256 + 1.032 ms.
    graph = two_layer_graph()
    strategy = Strategy.for_graph(graph, 2, {"fc": ParallelConfig((2, 1, 1), (0, 1)), "loss": ParallelConfig((2,), (0, 1))})
    machine = dataclasses.replace(fake_machine(2), allreduce=Link(1e6, 1e-3))
    _, trace = simulate(graph, strategy, machine, COSTS)
    allreduce = [e for e in trace.events if e.kind == "allreduce"]
    assert {round(e.end_ms - e.start_ms, 9) for e in allreduce} == {2.288}


def test_a_combined_allreduce_charges_the_operand_after_the_largest_once_per_op():
    # As above, plus the machine's combined all-reduce: a (b-byte, 1 KB) pair in one collective takes
    # 5 ms + b / 1e6 B/s. fc's kernel (256 B) then pays 5.256 - 1.256 - 2.024 (1 KB alone) = 1.976 ms more
    # for the operand after it, once: 2.288 + 1.976 = 4.264 ms.
    graph = two_layer_graph()
    strategy = Strategy.for_graph(graph, 2, {"fc": ParallelConfig((2, 1, 1), (0, 1)), "loss": ParallelConfig((2,), (0, 1))})
    machine = dataclasses.replace(fake_machine(2), allreduce=Link(1e6, 1e-3), combined_allreduce=Link(1e6, 5e-3))
    _, trace = simulate(graph, strategy, machine, COSTS)
    allreduce = [e for e in trace.events if e.kind == "allreduce"]
    assert {round(e.end_ms - e.start_ms, 9) for e in allreduce} == {4.264}
    # Where the pair costs no more than its two arrays alone, nothing is added.
    cheap = dataclasses.replace(machine, combined_allreduce=Link(1e6, 1e-3))
    _, trace = simulate(graph, strategy, cheap, COSTS)
    assert {round(e.end_ms - e.start_ms, 9) for e in trace.events if e.kind == "allreduce"} == {2.288}


def test_delta_after_a_task_leaves_a_resource_that_a_later_task_uses():
    # Found by the property test above: flatten's move removes a transfer from a link in pool5's backward
    # while an earlier, unmoved task on that link made the link look settled; conv5's backward then used
    # the link. A resource's free time must come from the new timeline, not from the old segment.
    rng = np.random.default_rng(113234496)
    machine = mixed_machine(8, overlap=False)
    delta, full = Simulator(ALEXNET, machine, FlopCost()), Simulator(ALEXNET, machine, FlopCost())
    strategy = random_strategy(ALEXNET, 8, rng)
    delta.full(strategy)
    for _ in range(5):
        strategy = random_move(strategy, 8, rng)
        assert delta.delta(strategy).step_ms == full.full(strategy).step_ms


def test_a_resharding_is_one_collective_and_inner_dim_splits_have_their_own_link():
    # fc1 batch-split -> fc2 channel-split -> loss batch-split, on 2 devices that do not overlap
    # communication with compute. fc2's tasks read every sample: each device receives the other's half of
    # fc1's output (2 samples x 8 features x 4 B = 64 B) in ONE all-gather: both ways at once, both devices
    # and both links busy, 1 ms + 64 B / 1e6 B/s = 1.064 ms (not twice that, one way after the other).
    # The loss reads fc2's output, split on its features (its last dim): that move is priced by the
    # machine's inner-dim link, 2 ms + 32 B / 0.5e6 B/s = 2.064 ms (each device receives 2 x 4 x 4 B).
    graph = dense_chain_graph()
    configs = {"fc1": ParallelConfig((2, 1, 1), (0, 1)), "fc2": ParallelConfig((1, 2, 1), (0, 1)),
               "loss": ParallelConfig((2,), (0, 1))}
    machine = dataclasses.replace(fake_machine(2, bandwidth_bytes_per_s=1e6, latency_s=1e-3, overlap=False),
                                  inner_dim_reshard=Link(0.5e6, 2e-3))
    _, trace = simulate(graph, Strategy.for_graph(graph, 2, configs), machine, COSTS)
    gather = {(e.resource, round(e.start_ms, 9), round(e.end_ms, 9)) for e in trace.events
              if e.name == "fc1 -> fc2 (2 slices)"}
    assert gather == {(resource, 10.0, 11.064) for resource in ("device 0", "device 1", "link 0->1", "link 1->0")}
    move = {round(e.end_ms - e.start_ms, 9) for e in trace.events if e.name == "fc2 -> loss (2 slices)"}
    assert move == {2.064}
    # The gradient flows back into fc2's feature-split output on the inner-dim link too.
    assert {round(e.end_ms - e.start_ms, 9) for e in trace.events if e.name == "grad loss -> fc2 (2 slices)"} == {2.064}


def test_partial_sums_of_a_channel_split_layer_are_all_reduced_then_moved():
    # fc2 split on its output features over devices 1 and 2 reads all of fc1's output in both tasks, so
    # each computes a partial sum of the whole input gradient (4 x 8 floats = 128 B): XLA all-reduces it
    # over the two (ring formula: 2 x 1 ms + 128 B / 1e6 B/s = 2.128 ms), then fc1, whole on device 0,
    # gets it from device 1 (1 ms + 128 B / 1e6 B/s = 1.128 ms). Forward, fc1's output goes to both in
    # one resharding: each receives 128 B, 1.128 ms.
    graph = dense_chain_graph()
    configs = {"fc1": ParallelConfig((1, 1, 1), (0,)), "fc2": ParallelConfig((1, 2, 1), (1, 2)),
               "loss": ParallelConfig((1,), (1,))}
    machine = fake_machine(3, bandwidth_bytes_per_s=1e6, latency_s=1e-3, overlap=False)
    _, trace = simulate(graph, Strategy.for_graph(graph, 3, configs), machine, COSTS)
    durations = {}
    for e in trace.events:
        durations.setdefault(e.name, set()).add((e.resource, round(e.end_ms - e.start_ms, 9)))
    assert durations["grad fc2 -> fc1 (partial sums all-reduced)"] == {
        (resource, 2.128) for resource in ("device 1", "device 2", "link 1->2", "link 2->1")}
    assert durations["grad fc2[0] -> fc1[0]"] == {(r, 1.128) for r in ("device 0", "device 1", "link 1->0")}
    assert {d for _, d in durations["fc1 -> fc2 (2 slices)"]} == {1.128}
    reduce, move = (next(e for e in trace.events if e.name == name and e.resource == "device 1")
                    for name in ("grad fc2 -> fc1 (partial sums all-reduced)", "grad fc2[0] -> fc1[0]"))
    assert move.start_ms == reduce.end_ms


def test_a_strategy_for_another_graph_or_device_count_is_one_line():
    from models.zoo import build_graph
    from simulator.cost import RooflineCostModel
    from simulator.machine import machine_preset
    from simulator.simulate import Simulator
    from soap.baselines import data_parallel
    from soap.errors import StrategyFileError

    graph = build_graph("alexnet", "tiny-imagenet", 128)
    machine = machine_preset("p100-4x4", 4)
    simulator = Simulator(graph, machine, RooflineCostModel(machine.device))
    with pytest.raises(StrategyFileError, match=r"on 2 devices cannot be simulated for graph .* on 4; search or load"):
        simulator.full(data_parallel(graph, 2))
    with pytest.raises(StrategyFileError, match="cannot be simulated"):
        simulator.delta(data_parallel(build_graph("alexnet", "tiny-imagenet", 64), 4))


def input_channel_graph():
    """conv k1 8 -> 6 channels on (4, 4, 4, 8), batch norm, flatten, dense 96 -> 2, loss; no fused ReLUs."""
    b = GraphBuilder("cin", "toy", (4, 4, 4, 8))
    b.conv2d("conv", 6, kernel=1, relu=False)
    b.batch_norm("bn")
    b.flatten("flat")
    b.dense("fc", 2, relu=False)
    b.softmax_xent("loss")
    return b.build(4)


@pytest.mark.parametrize("scatter", [pytest.param(False, id="all-reduce"), pytest.param(True, id="reduce-scatter")])
def test_input_channel_splits_sum_their_outputs_once_forward(scatter):
    # conv and fc split on their input channels over devices 0 and 1, each reader on the batch over the same
    # two: each output is summed once, an all-reduce, or a reduce-scatter where the machine says XLA emits one
    # (each reader takes its half of the sum). conv's output is 4*4*4*6 floats = 1536 B, fc's 4*2 floats = 32 B;
    # at 1e6 B/s and 1 ms a step over a ring of 2. The backward moves slices only: an input-channel task's input
    # gradient is its own slice, no partial sum.
    graph = input_channel_graph()

    def split(name, **degrees):
        return ParallelConfig(tuple(degrees.get(n, 1) for n in graph.op(name).space.config_labels), (0, 1))

    strategy = Strategy.for_graph(graph, 2, {"conv": split("conv", in_channel=2), "bn": split("bn", sample=2),
                                             "flat": split("flat", sample=2), "fc": split("fc", in_channel=2),
                                             "loss": split("loss", sample=2)})
    machine = dataclasses.replace(fake_machine(2, bandwidth_bytes_per_s=1e6, latency_s=1e-3), reduce_scatter=scatter)
    simulator = Simulator(graph, machine, FlopCost())
    simulator.full(strategy)
    moved = {task_name(task, graph): task.duration_ms for task in simulator.tasks() if task.kind == TRANSFER}
    summed = REDUCE_SCATTERED if scatter else ALL_REDUCED
    price = ring_reduce_scatter_ms if scatter else ring_allreduce_ms
    assert {name: ms for name, ms in moved.items() if "partial sums" in name} == {
        f"conv -> bn (partial sums {summed})": price(1536, 2, 1e6, 1e-3),
        f"fc -> loss (partial sums {summed})": price(32, 2, 1e6, 1e-3)}
    assert price(1536, 2, 1e6, 1e-3) == pytest.approx(1.768 if scatter else 3.536)
    assert sorted(name for name in moved if name.startswith("grad")) == [
        "grad bn -> conv (2 slices)", "grad fc -> flat (2 slices)", "grad loss -> fc (2 slices)"]
