"""Starts for the search derived by simulation, beside the baselines (search.strategy_search uses them):
data parallelism on a narrower device block, and the cheapest strategy under an additive cost.

Data parallelism on all N devices is the common baseline, but on many devices with a small batch its
gradient all-reduces and per-op overheads outweigh the compute it splits: Inception-v3 (batch 128) on
p100-4x4 simulates 325 ms a step on 64 GPUs and 135 ms on 16. A chain from all-N data parallelism
must move every op to a narrower split one at a time, each move alone paying reshardings on both sides,
so it does not get there; starting from the narrower block it does not need to.

The additive start goes further: each op picks its own split (batch and channels, on the devices from
0 up), by the dynamic program of search.series_parallel on what the simulator's tasks of one op
(TaskGraphBuilder.op_ms) and of one edge (edge_ms_table) take alone. The sum leaves out what runs at the same
time (a gradient all-reduce beside the backward of the ops before it), so it is a start, priced again by
the simulator, not an answer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from models.graph import OpGraph
from models.op import Dim, Op
from search.series_parallel import NotSeriesParallelError, min_cost_choices
from simulator.taskgraph import TaskGraphBuilder
from soap.config import ParallelConfig
from soap.space import enumerate_configs
from soap.strategy import Strategy


def data_parallel_on(graph: OpGraph, num_devices: int, width: int) -> Strategy | None:
    """Every op split `width` ways on its batch over devices 0..width-1 (the other ops' dims whole), or
    None when some op cannot take that split (its batch is not divisible by `width`)."""
    configs = {}
    for op in graph.ops:
        degrees = tuple(width if dim == Dim.SAMPLE else 1 for dim in op.output_dims)
        config = ParallelConfig(degrees, tuple(range(width)))
        if config not in enumerate_configs(op, num_devices):
            return None
        configs[op.name] = config
    return Strategy.for_graph(graph, num_devices, configs)


def narrower_data_parallel(graph: OpGraph, num_devices: int,
                           price: Callable[[Strategy], float]) -> tuple[str, Strategy, float] | None:
    """(name, strategy, price) of the fastest data parallelism on fewer than `num_devices` devices (widths
    2, 4, ... dividing the device count; ties to the narrower), or None when no such width exists."""
    best = None
    for width in range(2, num_devices):
        if num_devices % width:
            continue
        strategy = data_parallel_on(graph, num_devices, width)
        if strategy is None:
            continue
        cost = price(strategy)
        if best is None or cost < best[2]:
            best = (f"data_parallel_{width}", strategy, cost)
    return best if best is not None and math.isfinite(best[2]) else None


def additive_start(graph: OpGraph, builder: TaskGraphBuilder,
                   stop_requested: Callable[[], bool] = lambda: False) -> Strategy | None:
    """The strategy of least additive cost among `block_candidates` per op, or None when the graph is not
    series-parallel or `stop_requested()` turned true while its edges were priced (a Ctrl-C: Inception-v3
    on 64 devices prices about 180,000 pairs of configs). Costs are kept by value (the ops without their
    names, the configs), so a block repeated through the graph (ResNet-101's 23 bottlenecks of one shape)
    is priced once."""
    num_devices = builder.machine.num_devices
    candidates = [block_candidates(op, num_devices) for op in graph.ops]
    unnamed = [dataclasses.replace(op, name="") for op in graph.ops]
    op_costs, priced = [], {}
    for i, configs in enumerate(candidates):
        key = (unnamed[i], configs)
        if key not in priced:
            priced[key] = np.array([builder.op_ms(i, config) for config in configs])
        op_costs.append(priced[key])
    edge_costs: dict[tuple[int, int], np.ndarray] = {}
    for c in range(len(graph.ops)):
        if stop_requested():
            return None
        for input_index, p in enumerate(builder.inputs(c)):
            key = (unnamed[p], unnamed[c], input_index, candidates[p], candidates[c])
            if key not in priced:
                priced[key] = builder.edge_ms_table(p, c, input_index, candidates[p], candidates[c])
            edge_costs[p, c] = edge_costs.get((p, c), 0.0) + priced[key]
    try:
        choices, _ = min_cost_choices(len(graph.ops), list(edge_costs), op_costs, edge_costs)
    except NotSeriesParallelError:
        return None
    return Strategy.for_graph(graph, num_devices, {op.name: candidates[i][choice]
                                                   for i, (op, choice) in enumerate(zip(graph.ops, choices))})


def block_candidates(op: Op, num_devices: int) -> tuple[ParallelConfig, ...]:
    """The configs of `op`'s space on devices 0 up that split only its batch and its channels: the
    choices of the additive start (K per op costs K^2 edge prices per edge; these are up to 28 on 64
    devices, where every config of a conv is about 1700)."""
    split_dims = {Dim.SAMPLE, Dim.CHANNEL}
    return tuple(config for config in enumerate_configs(op, num_devices)
                 if config.devices[0] == 0
                 and all(d == 1 or dim in split_dims for dim, d in zip(op.output_dims, config.degrees)))
