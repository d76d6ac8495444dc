"""Starts for the search derived by simulation, beside the baselines (search.strategy_search uses them):
data parallelism on a narrower device block, the cheapest strategy under an additive cost, and the
cheapest strategies under a placed cost.

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

The placed start sees what the additive one leaves out, where an op runs. In a step each device runs its
tasks in program order, so an op's update, after its gradient all-reduce, holds its devices until the
all-reduce ends, and the backward of a producer on those devices waits for it; on other devices the
producer's backward runs beside the all-reduce. AlexNet's best strategies on 16-64 GPUs put neighbouring
ops on alternate halves of the devices for that reason (README). The placed start chooses among the
additive start's splits on the first and on the second half of the devices, under a placed cost: an op's
compute alone, each edge's reshardings, and on each edge from a producer a charge for the op's all-reduce
and update (its sync), all of it where the two share a device and less where they do not. How much less
is a guess either way, so the dynamic program runs under each of `placed_charges` (SYNC_CHARGES and
RANDOM_CHARGES random ones, on the same priced tables) and the simulator ranks what it finds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from models.graph import OpGraph
from models.op import Dim, Op
from search.series_parallel import NotSeriesParallelError, min_cost_choices
from simulator.taskgraph import TaskGraphBuilder
from soap.config import ParallelConfig
from soap.space import enumerate_configs
from soap.strategy import Strategy

# The shares of an op's sync that the `shared_links_charge`s leave out where the op shares no device with a
# producer (the rest queues behind other all-reduces on the same links). AlexNet on p100-4x4, the placed
# start under each charge alone, ms on 8 / 16 / 32 / 64 GPUs: shares 0.2: 2.2563 / 2.0621 / 1.7345 / 1.7667;
# 0.4: 2.2563 / 2.0621 / 1.7345 / 1.5106; 0.6: 2.2563 / 2.0312 / 2.0139 / 1.3933; 0.8: 2.3147 / 3.2908 /
# 2.1044 / 2.0852; the overlap charge: 2.0793 / 1.9642 / 1.8127 / 1.8284 (the additive start: 2.2563 /
# 2.0621 / 1.8682 / 1.8679). No one charge is best everywhere.
HIDDEN_SHARES = (0.2, 0.4, 0.6, 0.8)

SyncCharge = Callable[[int, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


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
    on 64 devices prices about 180,000 pairs of configs)."""
    candidates = [block_candidates(op, builder.machine.num_devices) for op in graph.ops]
    chosen = least_cost_strategies(graph, builder, candidates, (), stop_requested)
    return None if chosen is None else chosen[0]


def placed_starts(graph: OpGraph, builder: TaskGraphBuilder, price: Callable[[Strategy], float],
                  rng: np.random.Generator,
                  stop_requested: Callable[[], bool] = lambda: False) -> list[Strategy] | None:
    """The distinct strategies of least placed cost among `half_block_candidates` per op, one for each of
    `placed_charges(num ops, rng)`, the fastest by `price` first (each priced once; equals in the order of
    the charges); None as for `additive_start`."""
    candidates = [half_block_candidates(op, builder.machine.num_devices) for op in graph.ops]
    chosen = least_cost_strategies(graph, builder, candidates, placed_charges(len(graph.ops), rng), stop_requested)
    if chosen is None:
        return None
    prices = {strategy: price(strategy) for strategy in dict.fromkeys(chosen)}
    return sorted(prices, key=prices.__getitem__)


def placed_charges(num_ops: int, rng: np.random.Generator) -> tuple[SyncCharge, ...]:
    """SYNC_CHARGES, then RANDOM_CHARGES shared-links charges with a share hidden per op drawn uniformly
    from [0, 1)."""
    return SYNC_CHARGES + tuple(shared_links_charge(rng.uniform(0.0, 1.0, num_ops)) for _ in range(RANDOM_CHARGES))


def shared_links_charge(hidden_share: float | np.ndarray) -> SyncCharge:
    """charge(c, ...)[a, b]: all of consumer c's sync (under its config b) where it shares a device with
    the producer (under a), else all but `hidden_share` of it (one share, or one per op: `hidden_share[c]`):
    all-reduces on one half's links queue one after another."""
    def charge(c: int, sync_ms: np.ndarray, backward_ms: np.ndarray, shares_device: np.ndarray) -> np.ndarray:
        share = hidden_share[c] if np.ndim(hidden_share) else hidden_share
        return np.where(shares_device, sync_ms[None, :], (1 - share) * sync_ms[None, :])

    return charge


def overlap_charge(c: int, sync_ms: np.ndarray, backward_ms: np.ndarray, shares_device: np.ndarray) -> np.ndarray:
    """[a, b]: all of consumer c's sync where it shares a device with the producer, else what outlasts
    the producer's backward compute, which it runs beside."""
    return np.where(shares_device, sync_ms[None, :], np.maximum(0.0, sync_ms[None, :] - backward_ms[:, None]))


# How the placed start charges an op's sync (`op_sync_ms`: its gradient all-reduce and update) on each edge
# from a producer, given the op's index, its sync under each of its configs, the producer's backward compute
# under each of its configs, and whether the two share a device (HIDDEN_SHARES has the figures).
SYNC_CHARGES: tuple[SyncCharge, ...] = (*map(shared_links_charge, HIDDEN_SHARES), overlap_charge)
# How many charges with a random share hidden per op the placed start adds to SYNC_CHARGES. AlexNet on
# p100-4x4, the fastest of 16 / 32 / 64 / 100 such placed strategies (one seed), ms: 16 GPUs 1.9517 / 1.9397
# / 1.9397 / 1.9374, 32 GPUs 1.6921 / 1.7345 / 1.7345 / 1.6536, 64 GPUs 1.4474 / 1.3733 / 1.3765 / 1.3521
# (SYNC_CHARGES alone: 1.9642 / 1.7345 / 1.3933), in 0.14-0.35 s on 16 GPUs, 0.9-1.4 s on 64.
RANDOM_CHARGES = 32


def least_cost_strategies(graph: OpGraph, builder: TaskGraphBuilder, candidates: list[tuple[ParallelConfig, ...]],
                          charges: tuple[SyncCharge, ...], stop_requested: Callable[[], bool]
                          ) -> list[Strategy] | None:
    """The choices among `candidates` (per op) of least cost, one per charge of `charges`, or the one of
    least additive cost without charges: each op's `op_ms` and each edge's `edge_ms_table`; with a charge,
    an op with producers costs `op_ms` less its sync, and each edge from a producer adds the charge of
    that sync, shared among its producers. Costs are kept by value (the ops without their names, the
    configs), so a block repeated through the graph (ResNet-101's 23 bottlenecks of one shape) is priced
    once. None where the graph is not series-parallel or `stop_requested()` turned true."""
    unnamed = [dataclasses.replace(op, name="") for op in graph.ops]
    op_costs, priced = [], {}
    for i, configs in enumerate(candidates):
        key = (unnamed[i], configs)
        if key not in priced:
            priced[key] = _OpCosts(np.array([builder.op_ms(i, config) for config in configs]),
                                   np.array([builder.op_sync_ms(i, config) for config in configs]) if charges else None,
                                   np.array([builder.op_cost(i, config.degrees).backward_ms for config in configs])
                                   if charges else None)
        op_costs.append(priced[key])
    edge_costs: dict[tuple[int, int], np.ndarray] = {}
    charged: list[dict[tuple[int, int], np.ndarray]] = [{} for _ in charges]
    for c in range(len(graph.ops)):
        if stop_requested():
            return None
        producers = builder.inputs(c)
        for input_index, p in enumerate(producers):
            key = (unnamed[p], unnamed[c], input_index, candidates[p], candidates[c])
            if key not in priced:
                priced[key] = builder.edge_ms_table(p, c, input_index, candidates[p], candidates[c])
            edge_costs[p, c] = edge_costs.get((p, c), 0.0) + priced[key]
            if charges:
                shares_device = _shares_a_device(candidates[p], candidates[c])
                for charge, edges in zip(charges, charged):
                    share = charge(c, op_costs[c].sync_ms, op_costs[p].backward_ms, shares_device) / len(producers)
                    edges[p, c] = edges.get((p, c), 0.0) + share
    if not charges:
        solved = [_solved(graph, builder, candidates, [costs.op_ms for costs in op_costs], edge_costs)]
    else:
        own = [costs.op_ms - costs.sync_ms if builder.inputs(i) else costs.op_ms for i, costs in enumerate(op_costs)]
        solved = [_solved(graph, builder, candidates, own, {pair: table + edges[pair]
                                                              for pair, table in edge_costs.items()})
                  for edges in charged]
    return None if None in solved else solved


class _OpCosts(NamedTuple):
    """One op's costs under each of its candidates: `op_ms`, its sync (`op_sync_ms`) and backward compute."""

    op_ms: np.ndarray
    sync_ms: np.ndarray | None
    backward_ms: np.ndarray | None


def _solved(graph: OpGraph, builder: TaskGraphBuilder, candidates: list[tuple[ParallelConfig, ...]],
            op_costs: list[np.ndarray], edge_costs: dict[tuple[int, int], np.ndarray]) -> Strategy | None:
    """The strategy of least cost by search.series_parallel, or None where the graph is not series-parallel."""
    try:
        choices, _ = min_cost_choices(len(graph.ops), list(edge_costs), op_costs, edge_costs)
    except NotSeriesParallelError:
        return None
    configs = {op.name: candidates[i][choice] for i, (op, choice) in enumerate(zip(graph.ops, choices))}
    return Strategy.for_graph(graph, builder.machine.num_devices, configs)


def _shares_a_device(sources: tuple[ParallelConfig, ...], configs: tuple[ParallelConfig, ...]) -> np.ndarray:
    """[a, b]: whether sources[a] and configs[b] have a device in common."""
    def uses(group: tuple[ParallelConfig, ...]) -> np.ndarray:
        width = 1 + max(device for config in group for device in config.devices)
        used = np.zeros((len(group), width), dtype=np.int64)
        for row, config in enumerate(group):
            used[row, list(config.devices)] = 1
        return used

    a, b = uses(sources), uses(configs)
    width = max(a.shape[1], b.shape[1])
    a, b = np.pad(a, ((0, 0), (0, width - a.shape[1]))), np.pad(b, ((0, 0), (0, width - b.shape[1])))
    return (a @ b.T) > 0


def block_candidates(op: Op, num_devices: int) -> tuple[ParallelConfig, ...]:
    """The configs of `op`'s space on devices 0 up that split only its batch and its channels: the
    choices of the additive start (K per op costs K^2 edge prices per edge; these are up to 28 on 64
    devices, where every config of a conv is about 1700)."""
    split_dims = {Dim.SAMPLE, Dim.CHANNEL}
    return tuple(config for config in enumerate_configs(op, num_devices)
                 if config.devices[0] == 0
                 and all(d == 1 or dim in split_dims for dim, d in zip(op.output_dims, config.degrees)))


def half_block_candidates(op: Op, num_devices: int) -> tuple[ParallelConfig, ...]:
    """`block_candidates`' splits on devices 0 up and, where they fit in half the devices, on the second
    half too: the choices of the placed start."""
    half = num_devices // 2
    split_dims = {Dim.SAMPLE, Dim.CHANNEL}
    return tuple(config for config in enumerate_configs(op, num_devices)
                 if config.devices[0] in (0, half) and config.devices[0] % config.num_tasks == 0
                 and all(d == 1 or dim in split_dims for dim, d in zip(op.output_dims, config.degrees)))
