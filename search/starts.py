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
RANDOM_CHARGES random ones, on the same priced tables) and the simulator ranks what it finds. The search
descends from the fastest with search.joint_descent, which reads the same candidates and the edges' placed
costs under SYNC_CHARGES (`PlacedStarts`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from models.graph import OpGraph
from models.labels import Role, output_labels
from models.op import Op
from search.series_parallel import NotSeriesParallelError, batched_min_cost_choices, min_cost_choices
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
        degrees = tuple(width if label.role is Role.SAMPLE else 1 for label in op.config_labels)
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


def additive_start(graph: OpGraph, builder: TaskGraphBuilder, stop_requested: Callable[[], bool] = lambda: False,
                   placed: PricedCandidates | None = None, spmd: bool = False) -> Strategy | None:
    """The strategy of least additive cost among `block_candidates` per op, or None when the graph is not
    series-parallel or `stop_requested()` turned true while its edges were priced (a Ctrl-C: Inception-v3
    on 64 devices prices about 180,000 pairs of configs). With `placed` (`placed_candidates`), whose
    candidates hold these, their prices are read from it instead of priced again. `spmd`: among the
    candidates on all the devices (soap.space), None where an op has none."""
    candidates = [block_candidates(op, builder.machine.num_devices, spmd) for op in graph.ops]
    if not all(candidates):
        return None
    if placed is None:
        priced = priced_candidates(graph, builder, candidates, False, stop_requested)
    else:
        priced = restricted(placed, [[own.index(config) for config in block]
                                     for own, block in zip(placed.candidates, candidates)])
    return None if priced is None else least_cost_strategy(graph, builder.machine.num_devices, priced)


def placed_candidates(graph: OpGraph, builder: TaskGraphBuilder,
                      stop_requested: Callable[[], bool] = lambda: False) -> PricedCandidates | None:
    """`half_block_candidates` per op, priced with their syncs: what `placed_starts` solves over (None on a
    stop)."""
    candidates = [half_block_candidates(op, builder.machine.num_devices) for op in graph.ops]
    return priced_candidates(graph, builder, candidates, True, stop_requested)


class PlacedStarts(NamedTuple):
    """The placed strategies, fastest first, and what a joint descent from them reads (search.joint_descent):
    each op's `half_block_candidates` and the placed cost of every edge under each of SYNC_CHARGES."""

    ranked: list[Strategy]
    candidates: list[tuple[ParallelConfig, ...]]
    pair_tables: tuple[dict[tuple[int, int], np.ndarray], ...]


def placed_starts(graph: OpGraph, builder: TaskGraphBuilder, price: Callable[[Strategy], float],
                  rng: np.random.Generator, stop_requested: Callable[[], bool] = lambda: False,
                  placed: PricedCandidates | None = None) -> PlacedStarts | None:
    """The distinct strategies of least placed cost among `half_block_candidates` per op, one for each of
    `placed_charges(num ops, rng)`, the fastest by `price` first (each priced once; equals in the order of
    the charges); None as for `additive_start`. `placed`: those candidates already priced
    (`placed_candidates`)."""
    priced = placed if placed is not None else placed_candidates(graph, builder, stop_requested)
    if priced is None:
        return None
    candidates = priced.candidates
    charges = placed_charges(len(graph.ops), rng)
    pair_tables, chosen = [], []
    for first in range(0, len(charges), CHARGES_PER_SOLVE):
        tables = [charged_edge_ms(priced, charge) for charge in charges[first:first + CHARGES_PER_SOLVE]]
        pair_tables += tables[:max(0, len(SYNC_CHARGES) - first)]
        stacked = {pair: np.stack([table[pair] for table in tables]) for pair in priced.edge_ms}
        try:
            solved = batched_min_cost_choices(len(graph.ops), list(stacked), _placed_op_ms(priced), stacked)
        except NotSeriesParallelError:
            return None
        chosen += [tuple(choices) for choices, _ in solved]
        if stop_requested():
            return None
    prices = {}
    for choices in dict.fromkeys(chosen):
        strategy = chosen_strategy(graph, builder.machine.num_devices, candidates, choices)
        prices[strategy] = price(strategy)
    return PlacedStarts(sorted(prices, key=prices.__getitem__), candidates, tuple(pair_tables))


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
# p100-4x4, seeds 0-3, the joint descent (search.joint_descent) from the fastest placed strategy, ms: on 32
# GPUs with 32 such charges 1.5691 / 1.6488 / 1.5956 / 1.5081, with 128 1.5081 / 1.5081 / 1.6513 / 1.5081,
# with 256 1.5081 on every seed (the best known); on 64 GPUs with 32 1.3261 / 1.3287 / 1.3287 / 1.3287, with
# 256 1.3261 / 1.3232 / 1.3287 / 1.3253. The placed start on 8 / 16 GPUs takes 0.054 / 0.12 CPU s with 32,
# 0.082 / 0.21 s with 256, its dynamic programs solved CHARGES_PER_SOLVE at a time.
RANDOM_CHARGES = 256
# How many charges one dynamic program solves at once (search.series_parallel.batched_min_cost_choices): a
# series step's table holds this many times K^3 floats where the graph branches (K^2 along a chain), K the
# candidates per op (up to 64 on AlexNet on 64 devices).
CHARGES_PER_SOLVE = 32


class PricedCandidates(NamedTuple):
    """Each op's candidate configs and what they cost alone, priced once for the dynamic programs: `op_ms`,
    with `sync` its sync (`op_sync_ms`) and backward compute (else None), every edge's `edge_ms_table`
    (an op's inputs from one producer summed) and, with `sync`, whether the edge's two ends share a device
    (`_shares_a_device`; else empty)."""

    candidates: list[tuple[ParallelConfig, ...]]
    op_ms: list[np.ndarray]
    sync_ms: list[np.ndarray] | None
    backward_ms: list[np.ndarray] | None
    edge_ms: dict[tuple[int, int], np.ndarray]
    inputs: list[tuple[int, ...]]  # the producer of each input of each op (TaskGraphBuilder.inputs)
    shares_device: dict[tuple[int, int], np.ndarray]


def priced_candidates(graph: OpGraph, builder: TaskGraphBuilder, candidates: list[tuple[ParallelConfig, ...]],
                      sync: bool, stop_requested: Callable[[], bool]) -> PricedCandidates | None:
    """`candidates` priced (None where `stop_requested()` turned true). Costs are kept by value (the ops
    without their names, the configs), so a block repeated through the graph (ResNet-101's 23 bottlenecks
    of one shape) is priced once."""
    unnamed = [dataclasses.replace(op, name="") for op in graph.ops]
    op_ms, sync_ms, backward_ms, priced = [], [], [], {}
    for i, configs in enumerate(candidates):
        key = (unnamed[i], configs)
        if key not in priced:
            priced[key] = (np.array([builder.op_ms(i, config) for config in configs]),
                           np.array([builder.op_sync_ms(i, config) for config in configs]) if sync else None,
                           np.array([builder.op_cost(i, config.degrees).backward_ms for config in configs])
                           if sync else None)
        op_ms.append(priced[key][0])
        sync_ms.append(priced[key][1])
        backward_ms.append(priced[key][2])
    edge_ms: dict[tuple[int, int], np.ndarray] = {}
    shares_device: dict[tuple[int, int], np.ndarray] = {}
    inputs = [builder.inputs(c) for c in range(len(graph.ops))]
    for c, producers in enumerate(inputs):
        if stop_requested():
            return None
        for input_index, p in enumerate(producers):
            key = (unnamed[p], unnamed[c], input_index, candidates[p], candidates[c])
            if key not in priced:
                priced[key] = builder.edge_ms_table(p, c, input_index, candidates[p], candidates[c])
            edge_ms[p, c] = edge_ms.get((p, c), 0.0) + priced[key]
            if sync and (p, c) not in shares_device:
                shares_device[p, c] = _shares_a_device(candidates[p], candidates[c])
    return PricedCandidates(candidates, op_ms, sync_ms if sync else None, backward_ms if sync else None, edge_ms,
                            inputs, shares_device)


def restricted(priced: PricedCandidates, keep: list[list[int]]) -> PricedCandidates:
    """`priced` for the candidates keep[i] (positions) of each op i only: its arrays sliced. Each entry is
    priced alone, so these are bit for bit what pricing those candidates gives."""
    def sliced(arrays: list[np.ndarray] | None) -> list[np.ndarray] | None:
        return None if arrays is None else [array[own] for array, own in zip(arrays, keep)]

    def pairs(tables: dict[tuple[int, int], np.ndarray]) -> dict[tuple[int, int], np.ndarray]:
        return {(p, c): table[np.ix_(keep[p], keep[c])] for (p, c), table in tables.items()}

    candidates = [tuple(own[k] for k in kept) for own, kept in zip(priced.candidates, keep)]
    return PricedCandidates(candidates, sliced(priced.op_ms), sliced(priced.sync_ms), sliced(priced.backward_ms),
                            pairs(priced.edge_ms), priced.inputs, pairs(priced.shares_device))


def charged_edge_ms(priced: PricedCandidates, charge: SyncCharge) -> dict[tuple[int, int], np.ndarray]:
    """Every edge's placed cost: its `edge_ms` and, from each input, `charge` of the consumer's sync shared
    among the consumer's inputs."""
    charged: dict[tuple[int, int], np.ndarray] = {}
    for c, producers in enumerate(priced.inputs):
        for p in producers:
            share = charge(c, priced.sync_ms[c], priced.backward_ms[p], priced.shares_device[p, c]) / len(producers)
            charged[p, c] = charged.get((p, c), 0.0) + share
    return {pair: table + charged[pair] for pair, table in priced.edge_ms.items()}


def least_cost_strategy(graph: OpGraph, num_devices: int, priced: PricedCandidates,
                        charged_edges: dict[tuple[int, int], np.ndarray] | None = None) -> Strategy | None:
    """The strategy of `least_cost_choices`, or None where the graph is not series-parallel."""
    choices = least_cost_choices(len(graph.ops), priced, charged_edges)
    return None if choices is None else chosen_strategy(graph, num_devices, priced.candidates, choices)


def least_cost_choices(num_ops: int, priced: PricedCandidates,
                       charged_edges: dict[tuple[int, int], np.ndarray] | None = None) -> tuple[int, ...] | None:
    """The choice of candidate per op of least cost by search.series_parallel (None where the graph is not
    series-parallel): the additive cost (each op's `op_ms`, each edge's `edge_ms`), or with `charged_edges`
    (`charged_edge_ms`), the placed cost: an op with producers costs `op_ms` less its sync, which the
    edges from its producers charge."""
    if charged_edges is None:
        op_costs, edge_costs = priced.op_ms, priced.edge_ms
    else:
        op_costs, edge_costs = _placed_op_ms(priced), charged_edges
    try:
        choices, _ = min_cost_choices(num_ops, list(edge_costs), op_costs, edge_costs)
    except NotSeriesParallelError:
        return None
    return tuple(choices)


def _placed_op_ms(priced: PricedCandidates) -> list[np.ndarray]:
    """Each op's placed cost: `op_ms`, less its sync where it has producers (their edges charge it)."""
    return [ms - sync if producers else ms for ms, sync, producers in zip(priced.op_ms, priced.sync_ms, priced.inputs)]


def chosen_strategy(graph: OpGraph, num_devices: int, candidates: list[tuple[ParallelConfig, ...]],
                    choices: tuple[int, ...]) -> Strategy:
    """The strategy with candidates[i][choices[i]] for each op i."""
    configs = {op.name: own[choice] for op, own, choice in zip(graph.ops, candidates, choices)}
    return Strategy.for_graph(graph, num_devices, configs)


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


def block_candidates(op: Op, num_devices: int, spmd: bool = False) -> tuple[ParallelConfig, ...]:
    """The configs of `op`'s space (`spmd`: its SPMD space) on devices 0 up that split only its batch and
    its channels: the choices of the additive start (K per op costs K^2 edge prices per edge; these are up
    to 28 on 64 devices, where every config of a conv is about 1700)."""
    return tuple(config for config in enumerate_configs(op, num_devices, spmd)
                 if config.devices[0] == 0 and _splits_only(op, config, _BLOCK_ROLES))


def half_block_candidates(op: Op, num_devices: int) -> tuple[ParallelConfig, ...]:
    """`block_candidates`' splits on devices 0 up and, where they fit in half the devices, on the second
    half too: the choices of the placed start."""
    half = num_devices // 2
    return tuple(config for config in enumerate_configs(op, num_devices)
                 if config.devices[0] in (0, half) and config.devices[0] % config.num_tasks == 0
                 and _splits_only(op, config, _BLOCK_ROLES))


_BLOCK_ROLES = frozenset({Role.SAMPLE, Role.CHANNEL})


def _splits_only(op: Op, config: ParallelConfig, roles: frozenset[Role]) -> bool:
    """Whether `config` splits only output labels of `roles`: a conv's or dense's input channels (a
    contracting split) stay for the search's moves, which keeps the starts' choices as few as before."""
    outputs = output_labels(op.space)
    return all(d == 1 or (label.role in roles and label.name in outputs)
               for label, d in zip(op.config_labels, config.degrees))
