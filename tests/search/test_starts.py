"""The starts search.strategy_search derives by simulation: data parallelism on a narrower device block, and
the least additive cost over block candidates, and the placed start over half-block candidates."""

import dataclasses
import functools
import itertools
import math

import numpy as np
import pytest

from models.graph import GraphBuilder
from models.zoo import FamilyOptions, build_graph
from search.mcmc import Budget
from search import starts
from search.starts import (additive_start, block_candidates, data_parallel_on, half_block_candidates,
                          narrower_data_parallel, placed_starts)
from search.strategy_search import search_strategy
from simulator.cost import RooflineCostModel
from simulator.machine import Link, Machine, machine_preset
from simulator.simulate import Simulator
from simulator.taskgraph import TRANSFER
from soap.baselines import data_parallel
from soap.space import enumerate_configs, validate_config
from tests.search.test_strategy_search import COST, GRAPH
from tests.simulator.fakes import FlopCost, fake_machine


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_data_parallel_on_splits_every_op_on_its_batch_over_the_first_devices(width):
    strategy = data_parallel_on(GRAPH, 8, width)
    for op in GRAPH.ops:
        config = strategy[op.name]
        validate_config(op, config, 8)
        assert config.devices == tuple(range(width)) and config.num_tasks == width
        assert config.degrees[0] == width  # the sample dim comes first
    assert data_parallel_on(GRAPH, 8, 8) == data_parallel(GRAPH, 8)


def test_data_parallel_on_a_width_that_does_not_divide_the_batch_is_none():
    builder = GraphBuilder("odd", "toy", (6, 4))
    builder.dense("fc", 4)
    builder.softmax_xent("loss")
    assert data_parallel_on(builder.build(6), 8, 4) is None


def test_the_narrower_start_is_the_cheapest_width_under_the_device_count_ties_to_the_narrower():
    by_width = {2: 5.0, 4: 3.0, 8: 3.0, 16: 1.0}  # 16 is all the devices: not narrower
    name, strategy, cost = narrower_data_parallel(GRAPH, 16, lambda s: by_width[s["conv1"].num_tasks])
    assert (name, cost) == ("data_parallel_4", 3.0) and strategy == data_parallel_on(GRAPH, 16, 4)
    assert narrower_data_parallel(GRAPH, 2, lambda s: 1.0) is None  # no width between 1 and 2


def test_the_search_starts_from_the_narrower_block_when_it_beats_every_start_and_keeps_it_as_a_floor():
    # Slow links: the gradient all-reduce over 4 devices costs more than the compute it saves.
    machine = fake_machine(4, bandwidth_bytes_per_s=1e8, latency_s=1e-3)
    simulator = Simulator(GRAPH, machine, COST)
    narrower_ms = simulator.full(data_parallel_on(GRAPH, 4, 2)).step_ms
    assert narrower_ms < simulator.full(data_parallel(GRAPH, 4)).step_ms
    result = search_strategy(GRAPH, machine, COST, [("data_parallel", data_parallel(GRAPH, 4))],
                             Budget(iterations=60, min_iterations=1), seed=0)
    names = [name for name, _, _ in result.starts]
    assert names[:2] == ["data_parallel", "data_parallel_2"]
    assert result.best_ms <= min(ms for _, _, ms in result.starts) <= narrower_ms


def _edge_ms(builder, p, c, input_index, source, config):
    return builder.edge_ms_table(p, c, input_index, [source], [config])[0, 0]


def _exhaustive_additive(graph, builder):
    """The least additive cost over every combination of block candidates, by enumeration."""
    candidates = [block_candidates(op, builder.machine.num_devices) for op in graph.ops]
    best = math.inf
    for configs in itertools.product(*candidates):
        total = sum(builder.op_ms(i, config) for i, config in enumerate(configs))
        total += sum(_edge_ms(builder, p, c, j, configs[p], configs[c])
                     for c in range(len(graph.ops)) for j, p in enumerate(builder.inputs(c)))
        best = min(best, total)
    return best


def _additive_cost(graph, builder, strategy):
    configs = [strategy[op.name] for op in graph.ops]
    return (sum(builder.op_ms(i, config) for i, config in enumerate(configs))
            + sum(_edge_ms(builder, p, c, j, configs[p], configs[c])
                  for c in range(len(graph.ops)) for j, p in enumerate(builder.inputs(c))))


def test_the_additive_start_is_the_least_additive_cost_over_the_block_candidates():
    builder = Simulator(GRAPH, fake_machine(4, bandwidth_bytes_per_s=1e8, latency_s=1e-4), COST).builder
    start = additive_start(GRAPH, builder)
    for op in GRAPH.ops:
        assert start[op.name] in block_candidates(op, 4)
    assert _additive_cost(GRAPH, builder, start) == pytest.approx(_exhaustive_additive(GRAPH, builder), rel=1e-12)


def _placed_cost(graph, builder, configs, charge):
    """The placed cost of one choice per op under `charge`, term by term as least_cost_strategy states it."""
    return (sum(_placed_op_ms(builder, i, config) for i, config in enumerate(configs))
            + sum(_placed_edge_ms(builder, p, i, j, configs[p], configs[i], charge)
                  for i in range(len(configs)) for j, p in enumerate(builder.inputs(i))))


@functools.cache
def _placed_op_ms(builder, i, config):
    return builder.op_ms(i, config) - (builder.op_sync_ms(i, config) if builder.inputs(i) else 0.0)


@functools.cache
def _placed_edge_ms(builder, p, c, input_index, source, config, charge):
    shares_device = np.array([[bool(source.device_set & config.device_set)]])
    backward_ms = builder.op_cost(p, source.degrees).backward_ms
    charged = charge(c, np.array([builder.op_sync_ms(c, config)]), np.array([backward_ms]), shares_device)[0, 0]
    return _edge_ms(builder, p, c, input_index, source, config) + float(charged) / len(builder.inputs(c))


@pytest.mark.parametrize("charge", starts.SYNC_CHARGES, ids=[*map(str, starts.HIDDEN_SHARES), "overlap"])
def test_each_placed_strategy_is_the_least_placed_cost_under_its_charge(charge):
    builder = Simulator(GRAPH, fake_machine(4, bandwidth_bytes_per_s=1e9, latency_s=1e-5), COST).builder
    candidates = [half_block_candidates(op, 4) for op in GRAPH.ops]
    priced = starts.priced_candidates(GRAPH, builder, candidates, True, lambda: False)
    strategy = starts.least_cost_strategy(GRAPH, 4, priced, starts.charged_edge_ms(priced, charge))
    for op, own in zip(GRAPH.ops, candidates):
        assert strategy[op.name] in own
    least = min(_placed_cost(GRAPH, builder, configs, charge) for configs in itertools.product(*candidates))
    assert _placed_cost(GRAPH, builder, [strategy[op.name] for op in GRAPH.ops], charge) == pytest.approx(least,
                                                                                                        rel=1e-12)


def test_the_charges_charge_all_of_the_sync_on_a_shared_device_and_less_on_others():
    sync_ms, backward_ms = np.array([1.0, 4.0]), np.array([0.5, 3.0, 10.0])
    shares_device = np.array([[True, False], [False, True], [False, False]])
    shared_links = starts.shared_links_charge(0.25)(1, sync_ms, backward_ms, shares_device)
    overlap = starts.overlap_charge(1, sync_ms, backward_ms, shares_device)
    assert shared_links.tolist() == [[1.0, 3.0], [0.75, 4.0], [0.75, 3.0]]
    per_op = starts.shared_links_charge(np.array([0.0, 0.5]))  # op 1's share
    assert per_op(1, sync_ms, backward_ms, shares_device).tolist() == [[1.0, 2.0], [0.5, 4.0], [0.5, 2.0]]
    assert overlap.tolist() == [[1.0, 3.5], [0.0, 4.0], [0.0, 0.0]]  # what outlasts the producer's backward


def test_the_placed_starts_are_the_distinct_placed_strategies_fastest_first():
    builder = Simulator(GRAPH, fake_machine(4, bandwidth_bytes_per_s=1e9, latency_s=1e-5), COST).builder
    candidates = [half_block_candidates(op, 4) for op in GRAPH.ops]
    charges = starts.placed_charges(len(GRAPH.ops), np.random.default_rng(7))
    assert len(charges) == len(starts.SYNC_CHARGES) + starts.RANDOM_CHARGES
    priced_candidates = starts.priced_candidates(GRAPH, builder, candidates, True, lambda: False)
    tables = [starts.charged_edge_ms(priced_candidates, charge) for charge in charges]
    chosen = [starts.least_cost_strategy(GRAPH, 4, priced_candidates, table) for table in tables]
    distinct = list(dict.fromkeys(chosen))
    for fastest in distinct:
        priced = []
        found = placed_starts(GRAPH, builder, lambda strategy: priced.append(strategy) or (strategy != fastest),
                              np.random.default_rng(7))
        assert found.ranked == [fastest] + [strategy for strategy in distinct if strategy != fastest]
        assert sorted(priced, key=distinct.index) == distinct  # each priced once
        assert found.candidates == candidates
        assert len(found.pair_tables) == len(starts.SYNC_CHARGES)
        for table, expected in zip(found.pair_tables, tables):  # the SYNC_CHARGES' tables, first of the charges
            assert table.keys() == expected.keys() and all(np.array_equal(table[k], expected[k]) for k in table)
    assert placed_starts(GRAPH, builder, lambda strategy: 1.0, np.random.default_rng(7),
                         stop_requested=lambda: True) is None


def test_on_alexnet_at_32_gpus_the_placed_start_alternates_halves_and_beats_the_additive_one():
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    machine = machine_preset("p100-4x4", 32)
    simulator = Simulator(graph, machine, RooflineCostModel(machine.device))
    placed = placed_starts(graph, simulator.builder, lambda strategy: simulator.full(strategy).step_ms,
                           np.random.default_rng(0)).ranked[0]
    additive = additive_start(graph, simulator.builder)
    assert {placed[op.name].devices[0] for op in graph.ops} == {0, 16}
    assert simulator.full(placed).step_ms < 0.95 * simulator.full(additive).step_ms  # 1.7345 or less against 1.8682


def test_the_sync_is_the_all_reduce_and_update_part_of_an_ops_additive_cost():
    builder = Simulator(GRAPH, fake_machine(4, bandwidth_bytes_per_s=1e8, latency_s=1e-4), COST).builder
    conv = GRAPH.index("conv1")
    whole, split = block_candidates(GRAPH.op("conv1"), 4)[0], data_parallel(GRAPH, 4)["conv1"]
    costs = builder.op_cost(conv, split.degrees)
    assert builder.op_sync_ms(conv, split) > costs.update_ms  # a 4-way all-reduce, then the update
    assert builder.op_sync_ms(conv, whole) == builder.op_cost(conv, whole.degrees).update_ms  # no replicas
    compute_ms = costs.forward_ms + costs.backward_ms  # conv has no statistics
    assert builder.op_ms(conv, split) == pytest.approx(compute_ms + builder.op_sync_ms(conv, split), rel=1e-12)
    assert builder.op_sync_ms(GRAPH.index("pool1"), data_parallel(GRAPH, 4)["pool1"]) == 0.0  # no parameters


def test_half_block_candidates_are_the_block_candidates_and_those_moved_to_the_second_half():
    conv = GRAPH.op("conv1")
    candidates = half_block_candidates(conv, 8)
    first = [config for config in candidates if config.devices[0] == 0]
    second = [config for config in candidates if config.devices[0] == 4]
    assert first == list(block_candidates(conv, 8)) and len(first) + len(second) == len(candidates)
    assert [config.degrees for config in second] == [config.degrees for config in first if config.num_tasks <= 4]
    assert all(config.devices == tuple(range(4, 4 + config.num_tasks)) for config in second)


def test_block_candidates_split_batch_and_channels_only_from_device_0():
    conv = GRAPH.op("conv1")  # sample, height, width, channel, in_channel
    candidates = block_candidates(conv, 4)
    assert {config.degrees for config in candidates} == {(1, 1, 1, 1, 1), (2, 1, 1, 1, 1), (4, 1, 1, 1, 1),
                                                         (1, 1, 1, 2, 1), (1, 1, 1, 4, 1), (2, 1, 1, 2, 1)}
    assert all(config.devices == tuple(range(config.num_tasks)) for config in candidates)


def test_an_edge_costs_nothing_where_every_slice_stays_on_its_device():
    builder = Simulator(GRAPH, fake_machine(4), COST).builder
    split = data_parallel(GRAPH, 4)
    conv, pool = GRAPH.index("conv1"), GRAPH.index("pool1")
    assert _edge_ms(builder, conv, pool, 0, split["conv1"], split["pool1"]) == 0.0
    whole = data_parallel_on(GRAPH, 4, 1)
    assert _edge_ms(builder, conv, pool, 0, whole["conv1"], split["pool1"]) > 0.0


def _two_node_machine(measured: bool, reduce_scatter: bool = False) -> Machine:
    """8 devices, 4 a node; with `measured`, links and the all-reduce priced through measured points; with
    `reduce_scatter`, a sliced partial sum runs as a reduce-scatter (Machine.reduce_scatter)."""
    points = ((4096.0, 1e-3), (2**20, 2e-3), (2**22, 1.5e-3), (2**26, 9e-3)) if measured else ()
    intra, inter = Link(2e10, 1e-6, points), Link(1e9, 5e-6, points)
    machine = fake_machine(8, devices_per_node=4)
    return dataclasses.replace(machine, intra_node=intra, inter_node=inter,
                               allreduce=Link(5e9, 2e-5, points) if measured else None, reduce_scatter=reduce_scatter)


def _edge_tasks_ms(builder, p, c, configs):
    """The edge p -> c priced from the tasks the simulator builds (p's only consumer is c, c's only
    producer p): the forward resharding, then the slowest partial-sum all-reduce and the gradient's."""
    forward = [task for task in builder.segment(builder.forward_segment_id(c), configs).tasks
               if task.kind == TRANSFER]
    backward = [task for task in builder.segment(builder.backward_segment_id(p), configs).tasks
                if task.kind == TRANSFER]
    summed = [task.duration_ms for task in backward if len(task.label) == 3]  # (source, op, how summed)
    summed_forward = [task.duration_ms for task in forward if len(task.label) == 3]  # p's partial outputs
    resharded = [task.duration_ms for task in forward + backward if len(task.label) == 4]
    return max(summed, default=0.0) + max(summed_forward, default=0.0) + sum(resharded)


@pytest.mark.parametrize("measured, reduce_scatter", [
    pytest.param(False, False, id="datasheet-links"),
    pytest.param(True, False, id="measured-links"),
    pytest.param(False, True, id="datasheet-links-reduce-scatter"),
    pytest.param(True, True, id="measured-links-reduce-scatter"),
])
def test_the_edge_table_equals_the_durations_of_the_tasks_the_simulator_builds(measured, reduce_scatter):
    builder = Simulator(GRAPH, _two_node_machine(measured, reduce_scatter), COST).builder
    spaces = [enumerate_configs(op, 8) for op in GRAPH.ops]
    rng = np.random.default_rng(0)
    for p in range(len(GRAPH.ops) - 1):
        sources = [spaces[p][int(k)] for k in rng.choice(len(spaces[p]), size=min(12, len(spaces[p])), replace=False)]
        configs = [spaces[p + 1][int(k)] for k in rng.choice(len(spaces[p + 1]), size=min(12, len(spaces[p + 1])),
                                                               replace=False)]
        table = builder.edge_ms_table(p, p + 1, 0, sources, configs)
        for (a, source), (b, config) in itertools.product(enumerate(sources), enumerate(configs)):
            others = [space[0] for space in spaces]
            others[p], others[p + 1] = source, config
            assert table[a, b] == _edge_tasks_ms(builder, p, p + 1, tuple(others)), (source, config)


TINY_GPT = FamilyOptions(depth=1, width=16, heads=4, vocab=32, seq_len=8)


def test_the_edge_table_prices_a_partial_sum_output_as_the_tasks_the_simulator_builds():
    # A row-split attn_proj (its contracting hidden label split) holds partial sums its dropout reads:
    # all-reduced (whole readers) or all-reduced and moved (readers elsewhere), each as the simulator builds;
    # the dropout's copies (Megatron's replicated dropout) each read, and send the gradient back from one.
    graph = build_graph("gpt2", "tokens", 4, TINY_GPT)
    builder = Simulator(graph, _two_node_machine(True), FlopCost()).builder
    p, c = graph.index("h0.attn_proj"), graph.index("h0.attn_drop")
    spaces = [enumerate_configs(op, 8) for op in graph.ops]
    sources = [config for config in spaces[p] if builder.splits.partial_output(p, config.degrees)]
    sources = sources[:6] + [config for config in spaces[p] if not builder.splits.partial_output(p, config.degrees)][:3]
    configs = spaces[c][:: max(len(spaces[c]) // 12, 1)]
    assert len(sources) == 9 and any(builder.splits.partial_output(p, config.degrees) for config in sources)
    assert any(builder.splits.copies(c, config.degrees) > 1 for config in configs)
    table = builder.edge_ms_table(p, c, 0, sources, configs)
    for (a, source), (b, config) in itertools.product(enumerate(sources), enumerate(configs)):
        others = [space[0] for space in spaces]
        others[p], others[c] = source, config
        assert table[a, b] == _edge_tasks_ms(builder, p, c, tuple(others)), (source, config)


@pytest.mark.parametrize("producer, consumer", [
    pytest.param("h0.fc", "h0.act", id="replicated-reader"),
    pytest.param("h0.act", "h0.mlp_proj", id="replicated-producer-partial-input-gradient"),
    pytest.param("h0.add_2", "ln_f", id="both-replicated"),
])
def test_the_edge_table_prices_replicated_copies_as_the_tasks_the_simulator_builds(producer, consumer):
    # A replicated op's copies (models.labels.replicated) are one reader and one source each way: the
    # simulator reads a shard from the copy on the reader's device, else the first copy, and sends the
    # gradient to every copy of the producer from the consumer's copy on its device, else its first copy.
    graph = build_graph("gpt2", "tokens", 4, TINY_GPT)
    builder = Simulator(graph, _two_node_machine(True), FlopCost()).builder
    p, c = graph.index(producer), graph.index(consumer)
    spaces = [enumerate_configs(op, 8) for op in graph.ops]
    rng = np.random.default_rng(1)
    sources = [spaces[p][int(k)] for k in rng.choice(len(spaces[p]), size=10, replace=False)]
    configs = [spaces[c][int(k)] for k in rng.choice(len(spaces[c]), size=10, replace=False)]
    replicated = [builder.splits.copies(op, config.degrees) > 1 for op, candidates in ((p, sources), (c, configs))
                  for config in candidates]
    assert any(replicated) and not all(replicated)
    table = builder.edge_ms_table(p, c, 0, sources, configs)
    for (a, source), (b, config) in itertools.product(enumerate(sources), enumerate(configs)):
        others = [space[0] for space in spaces]
        others[p], others[c] = source, config
        assert table[a, b] == _edge_tasks_ms(builder, p, c, tuple(others)), (source, config)


def test_the_additive_start_reads_the_placed_candidates_prices_bit_for_bit():
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    machine = machine_preset("p100-4x4", 16)
    builder = Simulator(graph, machine, RooflineCostModel(machine.device)).builder
    candidates = [block_candidates(op, 16) for op in graph.ops]
    direct = starts.priced_candidates(graph, builder, candidates, False, lambda: False)
    placed = starts.placed_candidates(graph, builder)
    sliced = starts.restricted(placed, [[own.index(config) for config in block]
                                        for own, block in zip(placed.candidates, candidates)])
    assert sliced.candidates == direct.candidates
    assert all(np.array_equal(a, b) for a, b in zip(sliced.op_ms, direct.op_ms))
    assert sliced.edge_ms.keys() == direct.edge_ms.keys()
    assert all(np.array_equal(sliced.edge_ms[pair], direct.edge_ms[pair]) for pair in direct.edge_ms)
    assert additive_start(graph, builder, placed=placed) == additive_start(graph, builder)
