"""The task graph of one training step: what every device and link runs, in program order.

Following shared/ARCHITECTURE.md ("One execution semantics"):
- Task k of op i computes output shard k on devices[k] (forward) and, later, its backward there.
- It reads the slices of its producers' outputs that it needs (models.labels.tasks_input_boxes: the halo
  of a spatial split, all input features of a dense layer, the whole image of a channel-split conv). Every
  box, flow, copy, replica, partial-sum and statistics group here is asked of simulator.splits (which asks
  the op's labelled space, models.labels); this module keeps only the tasks and their timing. The
  slices on other devices move in ONE resharding per producer -> consumer edge, a TRANSFER task, as XLA
  runs one collective (all-gather, collective-permute, ...) per resharding and the runtime one transfer
  program per stage boundary: it starts when all its source tasks are done, occupies every link it uses,
  and lasts until the device receiving most has its bytes, priced by its (slowest incoming) link; a
  tensor split on its last dim (channels, features) moves on the machine's inner-dim link where the machine
  has one (XLA transposes around the collective). Backward sends the gradient back along the same
  intersections, as one resharding too; but where the consumer's tasks hold partial sums of their input's
  gradient (models.labels.has_partial_input_gradient: the split divides a label the input does not carry,
  a dense layer or conv split on its output channels): one all-reduce of the whole input box per
  partial-sum group and consumer (XLA sums each dot's partial gradient before adding them), then a
  resharding to the tasks outside the group. A partial sum's all-reduce is priced as one in a step, right
  after its contraction (Machine.partial_sum_allreduce), where the machine measured that.
  An op read by several consumers waits for all their gradients (their sum).
- An op whose kind keeps statistics over labels a split divides (batch norm split on its batch, height or
  width: models.labels.Space.statistics, KindSpec.stats_bytes) all-reduces them over the tasks that differ only in their
  index on those dims, once in the forward after its inputs arrive and once in the backward after its
  gradients arrive (a STATS task), before its tasks compute.
- Tasks that hold the same parameter slice (same channel shard; replicas from sample/height/width splits)
  all-reduce their gradients over a ring of their devices, one all-reduce per parameter array (kernel,
  bias) one after the other: 2(r-1)/r * bytes / bandwidth + 2(r-1) * latency each, or the machine's
  measured all-reduce, plus, on a machine that runs the step's combined gradient all-reduce operand by
  operand, the floor the array after the op's largest pays (Machine.combined_allreduce). Then every task
  updates its slice. The step ends when the last update ends.
- Program order: forward in op order (one topological order of the DAG), then backward in reverse op
  order; within an op, incoming transfers, then statistics, then compute, then the gradient all-reduce, then the update. A task's integer key encodes
  that order: (segment << 24) | (part << 20) | index, where op i's forward segment is i and its backward
  segment is 2n-1-i (compute task k of op i's forward is key i << 24 | 1 << 20 | k). Every task's
  dependencies have smaller keys.
- Resources: device d is resource d; the directed link src->dst is resource N + src*N + dst. A transfer or
  all-reduce also occupies its devices (senders and receivers) when the machine does not overlap
  communication with compute.
Memory per device (models the peak at the forward/backward boundary, where every activation kept for the
backward is live, those of parallel branches included): for each task, its weights, gradients and
momentum (3 x the parameter slice), its state slice, its output shard (kept for backward) and the input
bytes it received from other devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from models.graph import OpGraph
from models.op import local_op
from simulator.calibration_plan import INPUT_GRADIENT, OUTPUT, transposed_copies
from simulator.cost import CostModel, OpCost, optimizer_of
from simulator.machine import Link, Machine
from simulator.memo import memoized
from simulator.splits import Flows, GraphSplits, intersections
from soap.config import ParallelConfig

FORWARD, TRANSFER, STATS, BACKWARD, ALLREDUCE, UPDATE = (
    "forward", "transfer", "stats", "backward", "allreduce", "update")
# How a TRANSFER summing partial sums sums them (its label's third field; simulator.taskgraph._summed_incoming).
ALL_REDUCED, REDUCE_SCATTERED = "all-reduced", "reduce-scattered"
# The part of a segment a task belongs to, already shifted into place in the key.
_TRANSFER, _COMPUTE, _ALLREDUCE, _UPDATE = 0 << 20, 1 << 20, 2 << 20, 3 << 20
KIB = 2**10


class Task(NamedTuple):
    """One task. `label` names it for traces: (op, task) for compute, all-reduce (op, slice), statistics
    (op, slice) and update; (source op, op, ALL_REDUCED or REDUCE_SCATTERED) for the sum of partial
    sums; (source op, op, source tasks, tasks) for a resharding, slice j from source task j to task j.
    See `task_name`."""

    key: int
    kind: str
    label: tuple[int, ...]
    resources: tuple[int, ...]
    duration_ms: float
    deps: tuple[int, ...]


_new_task = tuple.__new__  # _new_task(Task, fields): a Task without the Python-level __new__, for the hot loops


def task_name(task: Task, graph: OpGraph) -> str:
    names = [op.name for op in graph.ops]
    if task.kind == TRANSFER:
        source, op, *moved = task.label
        prefix = "grad " if task.key >> 24 >= len(names) else ""
        if len(moved) == 1:
            return f"{prefix}{names[source]} -> {names[op]} (partial sums {moved[0]})"
        source_tasks, tasks = moved
        if len(tasks) == 1:
            return f"{prefix}{names[source]}[{source_tasks[0]}] -> {names[op]}[{tasks[0]}]"
        return f"{prefix}{names[source]} -> {names[op]} ({len(tasks)} slices)"
    op, index = task.label
    if task.kind == STATS:
        return f"{'grad ' if task.key >> 24 >= len(names) else ''}stats {names[op]} slice {index}"
    prefix = {FORWARD: "", BACKWARD: "grad ", ALLREDUCE: "allreduce ", UPDATE: "update "}[task.kind]
    suffix = f" slice {index}" if task.kind == ALLREDUCE else f"[{index}]"
    return f"{prefix}{names[op]}{suffix}"


class Segment(NamedTuple):
    """The tasks of one op's forward (or backward) in program order, and its memory per device."""

    tasks: tuple[Task, ...]
    memory_bytes: dict[int, int]


def ring_allreduce_ms(num_bytes: int, ring_size: int, bandwidth_bytes_per_s: float, latency_s: float) -> float:
    """Ring all-reduce: 2(r-1) steps, each moving bytes/r over the slowest link of the ring."""
    steps = 2 * (ring_size - 1)
    return (steps * latency_s + steps / ring_size * num_bytes / bandwidth_bytes_per_s) * 1e3


def ring_reduce_scatter_ms(num_bytes: int, ring_size: int, bandwidth_bytes_per_s: float, latency_s: float) -> float:
    """Ring reduce-scatter: r-1 steps, each moving bytes/r over the slowest link of the ring."""
    steps = ring_size - 1
    return (steps * latency_s + steps / ring_size * num_bytes / bandwidth_bytes_per_s) * 1e3


class TaskGraphBuilder:
    """Builds the forward and backward segments of ops under a strategy and prices their tasks; what a
    config implies (boxes, flows, groups) it asks of `splits`, both memoized by value."""

    def __init__(self, graph: OpGraph, machine: Machine, cost: CostModel):
        self.graph = graph
        self.machine = machine
        self.cost = cost
        self.splits = GraphSplits(graph, optimizer_of(cost).states)
        self.num_ops = len(graph.ops)
        self._producers = [tuple(graph.index(p) for p in graph.producers(op.name)) for op in graph.ops]
        # (consumer, input index) for every input that reads the op: a consumer reading it twice is two.
        self._consumers = [tuple((graph.index(c), j) for c in graph.consumers(op.name)
                                 for j, p in enumerate(graph.producers(c)) if p == op.name) for op in graph.ops]
        # For each input of each op, the earlier readers of the same producer (op, input index), program order.
        self._earlier_readers = [[tuple((c, j) for c, j in self._consumers[p] if c < i)
                                  for p in self._producers[i]] for i in range(self.num_ops)]
        # Tied weights: for each op owning a weight other ops read, (reader, reader's param, owner's param).
        self._tied_readers: list[list[tuple[int, str, str]]] = [[] for _ in graph.ops]
        for reader, op in enumerate(graph.ops):
            for name, owner in op.tied:
                self._tied_readers[graph.index(owner)].append((reader, name, name))
        # The distinct links of the machine; the link tables name them by position, as hashing a Link
        # (a frozen dataclass, hashed field by field) for each of up to 4096 slices of a resharding costs
        # more than the rest of the resharding.
        self._distinct_links: list[Link] = []
        self._links = self._link_table(inner_dim=False)
        self._inner_dim_links = self._link_table(inner_dim=True)
        self._link_ids = np.array([[link_id for link_id, _ in row] for row in self._links], dtype=np.int64)
        self._inner_dim_link_ids = np.array([[link_id for link_id, _ in row] for row in self._inner_dim_links],
                                            dtype=np.int64)

    def _link_table(self, inner_dim: bool) -> list[list[tuple[int, tuple[int, ...]]]]:
        """(link id, resources) of every directed device pair, computed once: the link is
        `_distinct_links[link id]`, the machine's inner-dim resharding link where `inner_dim` and the
        machine has one."""
        n, overlap = self.machine.num_devices, self.machine.comm_overlaps_compute
        inner = self.machine.inner_dim_reshard if inner_dim else None
        return [[(self._link_id(inner or self.machine.link(src, dst)),
                  (n + src * n + dst,) if overlap else (n + src * n + dst, src, dst)) for dst in range(n)]
                for src in range(n)]

    def _link_id(self, link: Link) -> int:
        if link not in self._distinct_links:
            self._distinct_links.append(link)
        return self._distinct_links.index(link)

    def forward_segment_id(self, op_index: int) -> int:
        return op_index

    def backward_segment_id(self, op_index: int) -> int:
        return 2 * self.num_ops - 1 - op_index

    def affected_segments(self, op_index: int) -> tuple[int, ...]:
        """The segments whose tasks change when op `op_index` gets another config."""
        segments = {self.forward_segment_id(op_index), self.backward_segment_id(op_index)}
        segments.update(self.forward_segment_id(c) for c, _ in self._consumers[op_index])
        segments.update(self.backward_segment_id(p) for p in self._producers[op_index])
        segments.update(self.backward_segment_id(self.graph.index(owner)) for _, owner in self.graph.ops[op_index].tied)
        segments.update(self.forward_segment_id(c) for p in self._producers[op_index]
                        for c, _ in self._consumers[p] if c > op_index)
        return tuple(sorted(segments))

    def segment_key(self, segment: int, configs: tuple[ParallelConfig, ...]) -> tuple:
        """What a segment's tasks depend on: its id and the configs of the ops it reads (an op's forward:
        the op, its producers and their earlier readers (`_twin_reader`); its backward: the op, its consumers
        and the readers of its tied weights).
        Equal keys, equal segments."""
        if segment < self.num_ops:
            return (segment, configs[segment], *(configs[p] for p in self._producers[segment]),
                    *(configs[c] for readers in self._earlier_readers[segment] for c, _ in readers))
        i = 2 * self.num_ops - 1 - segment
        return (segment, configs[i], *(configs[c] for c, _ in self._consumers[i]),
                *(configs[reader] for reader, _, _ in self._tied_readers[i]))

    def segment(self, segment: int, configs: tuple[ParallelConfig, ...]) -> Segment:
        if segment < self.num_ops:
            return self._forward(segment, configs)
        return self._backward(2 * self.num_ops - 1 - segment, configs)

    # --- memoized values (what a config implies is self.splits'; these price or place it) ---------------

    @memoized
    def _device_array(self, devices: tuple[int, ...]) -> np.ndarray:
        return np.array(devices, dtype=np.int64)

    @memoized
    def op_cost(self, op_index: int, degrees: tuple[int, ...]) -> OpCost:
        """Op i's local op's costs under `degrees`: the forward or backward that also writes a transposed
        copy where the step computes one and the cost model measured it (calibration_plan.transposed_copies)."""
        op = self.graph.ops[op_index]
        costs = self.cost.op_cost(local_op(op, degrees), self.machine.device.kind)
        copies = transposed_copies(self.graph, op)
        if OUTPUT in copies and costs.forward_transposed_ms is not None:
            costs = replace(costs, forward_ms=costs.forward_transposed_ms)
        if INPUT_GRADIENT in copies and costs.backward_transposed_ms is not None:
            costs = replace(costs, backward_ms=costs.backward_transposed_ms)
        return costs

    def _twin_reader(self, i: int, input_index: int, configs: tuple[ParallelConfig, ...]) -> int | None:
        """An earlier op reading the same producer's output in the same boxes on the same devices as op i's
        input `input_index`, whose moved tensor op i reads too (XLA resharding one tensor to one sharding
        once: q, k and v reading one layer norm's output); None if none. Only devices and boxes count, not
        the degrees naming them: a conv's config has an in_channel degree that its sibling pool's lacks."""
        for c, j in self._earlier_readers[i][input_index]:
            if configs[c].devices == configs[i].devices and np.array_equal(
                    self.splits.input_boxes(c, configs[c].degrees, j),
                    self.splits.input_boxes(i, configs[i].degrees, input_index)):
                return c
        return None

    # --- additive costs (search.starts' dynamic program) -------------------------------------------

    def op_ms(self, i: int, config: ParallelConfig) -> float:
        """What op i's own tasks take under `config` when nothing else runs: forward and backward compute,
        the statistics all-reduce before each, the slowest replica group's gradient all-reduce, the update."""
        costs = self.op_cost(i, config.degrees)
        stats: list[Task] = []
        self._stats(self.forward_segment_id(i), i, config, [[] for _ in config.devices], stats)
        allreduce_ms, update_ms = self._sync_parts_ms(i, config)
        return (costs.forward_ms + costs.backward_ms + 2 * max((task.duration_ms for task in stats), default=0.0)
                + allreduce_ms + update_ms)

    def op_sync_ms(self, i: int, config: ParallelConfig) -> float:
        """The part of `op_ms` after op i's backward compute: the slowest replica group's gradient
        all-reduce and the update, which hold op i's devices (program order) until they end."""
        allreduce_ms, update_ms = self._sync_parts_ms(i, config)
        return allreduce_ms + update_ms

    def _sync_parts_ms(self, i: int, config: ParallelConfig) -> tuple[float, float]:
        """(the slowest replica group's gradient all-reduce, the update) of op i alone; (0, 0) without
        parameters."""
        slice_bytes = self.splits.param_slice_bytes(i, config.degrees)
        sync = self._sync_and_update(i, config, self.backward_segment_id(i), slice_bytes) if slice_bytes else []
        return (max((task.duration_ms for task in sync if task.kind == ALLREDUCE), default=0.0),
                max((task.duration_ms for task in sync if task.kind == UPDATE), default=0.0))

    def edge_ms_table(self, p: int, c: int, input_index: int, sources: Sequence[ParallelConfig],
                      configs: Sequence[ParallelConfig]) -> np.ndarray:
        """[a, b]: what the edge from op p (under `sources[a]`) into input `input_index` of op c (under
        `configs[b]`) costs when nothing else runs: the resharding of p's output into c's tasks and that of
        the gradient back (the partial sums' all-reduces, or reduce-scatters as `_summed_incoming` picks them,
        first where c's tasks hold them, side by side), one after the other. Where p's tasks hold partial
        sums of their output (a split contracting label), the forward is the slowest group's sum, then the
        move to readers outside the groups. A replicated
        op's copies (models.labels.replicated) send as `_incoming` has them send: each of c's tasks reads
        p's output from the copy on its device, else from the first copy; every copy of p receives the
        gradient from the copy of c on its device, else from c's first copy. These are the durations of
        the tasks `_incoming` and `_summed_incoming` build, priced without building them (but for partial
        outputs, rare among the candidates), every config of p at once for each config of c (the additive
        start prices every pair of candidates of every edge: about 180,000 on Inception-v3)."""
        boxes = np.concatenate([self.splits.output_boxes(p, source.degrees) for source in sources])
        owner = np.repeat(np.arange(len(sources)), [source.num_tasks for source in sources])
        owner_devices = np.concatenate([self._device_array(source.devices) for source in sources])
        owner_inner_dim = np.array([self.splits.splits_inner_dim(p, source.degrees) for source in sources])
        partial = [a for a, source in enumerate(sources) if self.splits.partial_output(p, source.degrees)]
        is_first = np.concatenate([np.arange(source.num_tasks) % self.splits.copies(p, source.degrees) == 0
                                   for source in sources])  # a shard's first copy
        first = np.flatnonzero(is_first)
        shard_holders = self._holders(np.cumsum(is_first) - 1, owner_devices)
        dtype_bytes = self.graph.ops[p].dtype_bytes
        table = np.empty((len(sources), len(configs)))
        for b, config in enumerate(configs):
            needed = self.splits.input_boxes(c, config.degrees, input_index)
            config_devices = self._device_array(config.devices)
            source_tasks, tasks, num_bytes = intersections(boxes, needed, dtype_bytes)  # into every copy of p
            # The forward reads each shard once, from the copy on the reader's device where there is one.
            shards, readers, read_bytes = (intersections(boxes[first], needed, dtype_bytes)
                                           if len(first) < len(boxes) else (source_tasks, tasks, num_bytes))
            dst, read_pair = config_devices[readers], owner[first[shards]]
            src = _nearest_copy(shard_holders, owner_devices[first[shards]], shards, dst)
            forward_ms = self._reshards_ms(len(sources), read_pair, src, dst, read_bytes, owner_inner_dim[read_pair])
            for a in partial:
                forward_ms[a] = self._summed_read_ms(p, sources[a], c, config, input_index)
            pair, source_devices = owner[source_tasks], owner_devices[source_tasks]
            devices, inner_dim = config_devices[tasks], owner_inner_dim[pair]
            if not self.splits.partial_input(c, config.degrees, input_index):
                receivers, src, back_bytes = self._gradient_flows(c, config, needed, boxes, owner_devices,
                                                                  Flows(source_tasks, tasks, num_bytes), dtype_bytes)
                back_pair = owner[receivers]
                table[:, b] = forward_ms + self._reshards_ms(len(sources), back_pair, src, owner_devices[receivers],
                                                             back_bytes, owner_inner_dim[back_pair])
                continue
            leader_group = self.splits.leader_groups(c, config.degrees, input_index)[tasks]
            read = leader_group >= 0  # the box a group all-reduces is what its first task reads
            once = is_first[source_tasks[read]]  # (the box's bytes counted once over p's copies)
            pair, group, num_bytes = pair[read], leader_group[read], num_bytes[read]
            devices, source_devices, inner_dim = devices[read], source_devices[read], inner_dim[read]
            num_groups = len(self.splits.partial_sum_groups(c, config.degrees, input_index))
            box_bytes = np.bincount(pair[once] * num_groups + group[once], weights=num_bytes[once],
                                    minlength=len(sources) * num_groups).astype(np.int64)
            # Slices for tasks of p on devices outside the group move from the group's first device.
            outside = ~self._group_members(c, config, input_index)[group, source_devices]
            scatter = self._scattered(c, config.degrees, input_index, len(sources), pair * num_groups + group,
                                      source_devices, num_bytes, outside)
            summed_ms = self._partial_sums_ms(c, config, input_index, box_bytes.reshape(len(sources), num_groups),
                                              scatter.reshape(len(sources), num_groups))
            backward_ms = self._reshards_ms(len(sources), pair[outside], devices[outside], source_devices[outside],
                                            num_bytes[outside], inner_dim[outside])
            table[:, b] = summed_ms + (forward_ms + backward_ms)
        return table

    def _gradient_flows(self, c: int, config: ParallelConfig, needed: np.ndarray, boxes: np.ndarray,
                        box_devices: np.ndarray, flows: Flows, dtype_bytes: int) -> tuple[np.ndarray, ...]:
        """(producer task, the device its slice leaves from, bytes) for each slice of op c's input gradient
        (c under `config`, reading `needed`) into every producer task (`boxes`, on `box_devices`; `flows`:
        their intersections with `needed`): of a replicated c, from the copy of c's task on the receiver's
        device where there is one, else from its first copy (the tasks `_incoming` builds from
        `GraphSplits.backward_volumes`)."""
        config_devices = self._device_array(config.devices)
        copies = self.splits.copies(c, config.degrees)
        if copies == 1:
            return flows.source_tasks, config_devices[flows.tasks], flows.num_bytes
        receivers, readers, num_bytes = intersections(boxes, needed[::copies], dtype_bytes)
        holders = self._holders(np.arange(config.num_tasks) // copies, config_devices)
        return receivers, _nearest_copy(holders, config_devices[readers * copies], readers,
                                        box_devices[receivers]), num_bytes

    def _holders(self, shard: np.ndarray, devices: np.ndarray) -> np.ndarray:
        """[shard, device]: whether a task of the shard (task m computes shard `shard[m]` on `devices[m]`)
        runs on the device."""
        holders = np.zeros((int(shard.max()) + 1, self.machine.num_devices), dtype=bool)
        holders[shard, devices] = True
        return holders

    def _summed_read_ms(self, p: int, source: ParallelConfig, c: int, config: ParallelConfig,
                        input_index: int) -> float:
        """Op c (under `config`) reading op p's partial-sum output (p under `source`) alone: the slowest
        group's sum, then the resharding to the tasks outside the groups (the tasks `_summed_incoming`
        builds)."""
        tasks: list[Task] = []
        flows = self.splits.volumes(p, c, input_index, source.degrees, config.degrees)
        self._summed_incoming(0, p, self.splits.output_partial_groups(p, source.degrees),
                              self.splits.output_group_bytes(p, source.degrees), [0], source, c, config.devices, flows,
                              [[] for _ in config.devices], tasks, self.splits.splits_inner_dim(p, source.degrees))
        summed = [task.duration_ms for task in tasks if len(task.label) == 3]
        return max(summed, default=0.0) + sum(task.duration_ms for task in tasks if len(task.label) == 4)

    def _reshards_ms(self, num_pairs: int, pair: np.ndarray, src: np.ndarray, dst: np.ndarray,
                     num_bytes: np.ndarray, inner_dim: np.ndarray) -> np.ndarray:
        """[pair]: how long the resharding of pair `pair[j]`'s slices (slice j from device `src[j]` to
        `dst[j]`, `num_bytes[j]` bytes, `inner_dim[j]`: of a tensor split on its last dim) lasts, priced as
        `_reshard_ms` prices one; 0.0 where no slice changes device."""
        moved = src != dst
        pair, src, dst, num_bytes, inner_dim = pair[moved], src[moved], dst[moved], num_bytes[moved], inner_dim[moved]
        n = self.machine.num_devices
        link_ids = np.where(inner_dim, self._inner_dim_link_ids[src, dst], self._link_ids[src, dst])
        at = pair * n + dst
        # Byte counts stay far under 2**53, so the float sums are exact integers.
        received = np.bincount(at, weights=num_bytes, minlength=num_pairs * n).astype(np.int64)[at]
        durations = np.zeros(num_pairs)
        for link_id, link in enumerate(self._distinct_links):
            on_link = link_ids == link_id
            if not on_link.any():
                continue
            if link.measured:
                for a, b in set(zip(pair[on_link].tolist(), received[on_link].tolist())):
                    durations[a] = max(durations[a], link.transfer_ms(b))
                continue
            most = np.full(num_pairs, -1, dtype=np.int64)  # a line never falls: the most bytes price the link
            np.maximum.at(most, pair[on_link], received[on_link])
            for a in np.flatnonzero(most >= 0).tolist():
                durations[a] = max(durations[a], link.transfer_ms(int(most[a])))
        return durations

    def _scattered(self, op_index: int, degrees: tuple[int, ...], input_index: int, num_pairs: int,
                   at: np.ndarray, receiver_devices: np.ndarray, num_bytes: np.ndarray,
                   outside: np.ndarray) -> np.ndarray:
        """[pair * group]: whether `_summed_incoming` sums the partial sums of group g of op i's input
        gradient (op i under `degrees`) for pair a by a reduce-scatter: on a machine that runs one
        (Machine.reduce_scatter), where slice j (`at[j]` = a * groups + g, `num_bytes[j]` bytes, for the
        producer task on `receiver_devices[j]`, `outside[j]`: off the group's devices) goes to more than
        one task, each on its own device, all in the group, and the slices make the whole box."""
        num_groups = len(self.splits.partial_sum_groups(op_index, degrees, input_index))
        size = num_pairs * num_groups
        if not self.machine.reduce_scatter:
            return np.zeros(size, dtype=bool)
        slices = np.bincount(at, minlength=size)
        devices = np.bincount(np.unique(at * self.machine.num_devices + receiver_devices) // self.machine.num_devices,
                              minlength=size)
        # Byte counts stay far under 2**53, so the float sums are exact integers.
        total = np.bincount(at, weights=num_bytes, minlength=size).astype(np.int64)
        group_bytes = np.tile(self.splits.input_group_bytes(op_index, degrees, input_index), num_pairs)
        return ((slices > 1) & (devices == slices) & (np.bincount(at[outside], minlength=size) == 0)
                & (total == group_bytes))

    def _partial_sums_ms(self, op_index: int, config: ParallelConfig, input_index: int,
                         box_bytes: np.ndarray, scatter: np.ndarray) -> np.ndarray:
        """[pair]: the slowest of the op's partial-sum collectives under `config`, group g's of
        `box_bytes[pair, g]` bytes over the ring of its devices, a reduce-scatter where `scatter[pair, g]`
        (`_scattered`), else an all-reduce. Where the machine has no measured all-reduce and no group
        reduce-scatters, a ring's time grows with its bytes and depends on the ring only by its size and
        slowest link, so each such class of rings is priced once, by the most bytes any ring of it carries."""
        rings, classes, class_links = self._group_rings(op_index, config, input_index)
        if (scatter.any() or self.machine.allreduce is not None
                or self.machine.partial_sum_allreduce is not None):
            return np.array([max(self._summed_ms(b, ring, 1, s) for b, ring, s in zip(row, rings, scattered))
                             for row, scattered in zip(box_bytes.tolist(), scatter.tolist())])
        durations = np.zeros(len(box_bytes))
        for ring_class, (ring_size, slowest) in enumerate(class_links):
            most = box_bytes[:, classes == ring_class].max(axis=1).tolist()
            for a, b in enumerate(most):
                durations[a] = max(durations[a], ring_allreduce_ms(b, ring_size, slowest.bandwidth_bytes_per_s,
                                                                   slowest.latency_s))
        return durations

    @memoized
    def _group_members(self, op_index: int, config: ParallelConfig, input_index: int) -> np.ndarray:
        """[group, device]: whether the device runs a task of the op's partial-sum group (of input
        `input_index`'s gradient) under `config`."""
        groups = self.splits.partial_sum_groups(op_index, config.degrees, input_index)
        members = np.zeros((len(groups), self.machine.num_devices), dtype=bool)
        for group_index, group in enumerate(groups):
            members[group_index, [config.devices[k] for k in group]] = True
        return members

    @memoized
    def _group_rings(self, op_index: int, config: ParallelConfig, input_index: int
                     ) -> tuple[list[list[tuple[int, int]]], np.ndarray, list[tuple[int, Link]]]:
        """The ring of each partial-sum group's devices under `config`; its class; and per class the ring
        size and slowest link, what `_allreduce_ms` prices a ring by (rings alike in both share a class)."""
        rings, classes, seen = [], [], {}
        for group in self.splits.partial_sum_groups(op_index, config.degrees, input_index):
            devices = [config.devices[k] for k in group]
            ring = list(zip(devices, devices[1:] + devices[:1]))
            slowest = min((self.machine.link(a, b) for a, b in ring), key=lambda link: link.bandwidth_bytes_per_s)
            rings.append(ring)
            classes.append(seen.setdefault((len(ring), slowest), len(seen)))
        return rings, np.array(classes, dtype=np.int64), list(seen)

    def inputs(self, i: int) -> tuple[int, ...]:
        """The producers of op i's inputs, in input order (one per input: an op read twice appears twice)."""
        return self._producers[i]

    # --- segments ------------------------------------------------------------------------------------

    def _forward(self, i: int, configs: tuple[ParallelConfig, ...]) -> Segment:
        config = configs[i]
        devices, degrees = config.devices, config.degrees
        seg = self.forward_segment_id(i)
        deps: list[list[int]] = [[] for _ in devices]
        tasks: list[Task] = []
        memory: dict[int, int] = {}
        for input_index, p in enumerate(self._producers[i]):
            source = configs[p]
            twin = self._twin_reader(i, input_index, configs)
            if twin is not None:  # XLA moves one tensor to one sharding once: read where the twin read it
                for k in range(len(devices)):
                    deps[k].append(twin << 24 | _COMPUTE | k)
                continue
            flows = self.splits.volumes(p, i, input_index, source.degrees, degrees)
            inner_dim = self.splits.splits_inner_dim(p, source.degrees)
            if self.splits.partial_output(p, source.degrees):
                groups = self.splits.output_partial_groups(p, source.degrees)
                self._summed_incoming(seg, p, groups, self.splits.output_group_bytes(p, source.degrees),
                                      [p << 24 | _COMPUTE], source, i, devices, flows, deps, tasks, inner_dim, memory)
            else:
                self._incoming(seg, p, p << 24 | _COMPUTE, source, i, devices, flows, deps, tasks, memory, inner_dim)
        self._stats(seg, i, config, deps, tasks)
        forward_ms = self.op_cost(i, degrees).forward_ms
        kept_bytes = self.splits.kept_bytes(i, degrees)
        base = seg << 24 | _COMPUTE
        for k, device in enumerate(devices):
            tasks.append(_new_task(Task, (base | k, FORWARD, (i, k), (device,), forward_ms, tuple(deps[k]))))
            memory[device] = memory.get(device, 0) + kept_bytes
        return Segment(tuple(tasks), memory)

    def _backward(self, i: int, configs: tuple[ParallelConfig, ...]) -> Segment:
        config = configs[i]
        devices, degrees = config.devices, config.degrees
        seg = self.backward_segment_id(i)
        forward_base = i << 24 | _COMPUTE
        deps = [[forward_base | k] for k in range(len(devices))]
        tasks: list[Task] = []
        inner_dim = self.splits.splits_inner_dim(i, degrees)
        summed: dict[tuple, list[tuple[int, int]]] = {}  # consumers whose partial sums XLA adds, then sums once
        for c, input_index in self._consumers[i]:
            source = configs[c]
            if self.splits.partial_input(c, source.degrees, input_index):
                groups = self.splits.partial_sum_groups(c, source.degrees, input_index)
                key = (source, tuple(map(tuple, groups)), self.splits.input_group_bytes(c, source.degrees, input_index))
                summed.setdefault(key, []).append((c, input_index))
                continue
            flows = self.splits.backward_volumes(i, c, input_index, degrees, source.degrees)
            source_base = self.backward_segment_id(c) << 24 | _COMPUTE
            self._incoming(seg, c, source_base, source, i, devices, flows, deps, tasks, None, inner_dim)
        for (source, groups, group_bytes), readers in summed.items():
            c, input_index = readers[0]
            flows = self.splits.backward_volumes(i, c, input_index, degrees, source.degrees)
            bases = [self.backward_segment_id(reader) << 24 | _COMPUTE for reader, _ in readers]
            self._summed_incoming(seg, c, [list(g) for g in groups], group_bytes, bases, source, i, devices,
                                  flows, deps, tasks, inner_dim)
        self._stats(seg, i, config, deps, tasks)
        backward_ms = self.op_cost(i, degrees).backward_ms
        base = seg << 24 | _COMPUTE
        for k, device in enumerate(devices):
            tasks.append(_new_task(Task, (base | k, BACKWARD, (i, k), (device,), backward_ms, tuple(deps[k]))))
        slice_bytes = self.splits.param_slice_bytes(i, degrees)
        if slice_bytes:
            received = self._tied_gradients(seg, i, configs, tasks)
            tasks.extend(self._sync_and_update(i, config, seg, slice_bytes, received))
        return Segment(tuple(tasks), {})

    def _tied_gradients(self, seg: int, i: int, configs: tuple[ParallelConfig, ...],
                        tasks: list[Task]) -> dict[int, list[int]]:
        """The gradients of op i's weights that other ops read (tied), added to its own before its
        all-reduce: each reader task's slice goes to every replica group of op i holding part of it, where
        it is if a task of the group is on its device, else in one resharding to the group's first device.
        Returns, per replica group, the keys its all-reduce (or update) waits for besides its own tasks."""
        received: dict[int, list[int]] = {}
        config = configs[i]
        groups = self.splits.replica_groups(i, config.degrees)
        for reader, reader_param, param in self._tied_readers[i]:
            source = configs[reader]
            reader_boxes = self.splits.param_boxes(reader, source.degrees, reader_param)
            owner_boxes = self.splits.param_boxes(i, config.degrees, param)[[group[0] for group in groups]]
            flows = intersections(reader_boxes, owner_boxes, self.graph.ops[i].dtype_bytes)
            source_base = self.backward_segment_id(reader) << 24 | _COMPUTE
            moves = []
            for m, g, num_bytes in zip(*(column.tolist() for column in flows)):
                group_devices = [config.devices[k] for k in groups[g]]
                if source.devices[m] in group_devices:
                    received.setdefault(g, []).append(source_base | m)
                else:
                    moves.append((m, groups[g][0], num_bytes))
            if moves:
                m, k, num_bytes = (np.array(column, dtype=np.int64) for column in zip(*moves))
                deps = [[] for _ in config.devices]
                self._reshard(seg, reader, i, Flows(m, k, num_bytes), source_base | m,
                              self._device_array(source.devices)[m], self._device_array(config.devices)[k], deps,
                              tasks, None, inner_dim=False)
                leaders = {group[0]: g for g, group in enumerate(groups)}
                for k_index in set(k.tolist()):
                    received.setdefault(leaders[k_index], []).extend(deps[k_index])
        return received

    def _incoming(self, seg: int, source_op: int, source_base: int, source: ParallelConfig, i: int,
                  devices: tuple[int, ...], flows: Flows, deps: list[list[int]], tasks: list[Task],
                  memory: dict[int, int] | None, inner_dim: bool) -> None:
        """Wire the slices op i's tasks read from `source_op`'s tasks (activations forward, gradients
        backward): a dependency when on the same device; the slices on other devices move in ONE
        resharding (see `_reshard`). Of a replicated source, each slice comes from the copy on the reader's
        device where there is one, else from the first copy."""
        source_devices = self._device_array(source.devices)
        dst = self._device_array(devices)[flows.tasks]
        copies = self.splits.copies(source_op, source.degrees)
        if copies > 1:
            candidates = flows.source_tasks[:, None] + np.arange(copies)
            on_device = source_devices[candidates] == dst[:, None]
            flows = Flows(np.where(on_device.any(axis=1), candidates[np.arange(len(dst)), on_device.argmax(axis=1)],
                                   flows.source_tasks), flows.tasks, flows.num_bytes)
        src = source_devices[flows.source_tasks]
        local = src == dst
        for m, k in zip(flows.source_tasks[local].tolist(), flows.tasks[local].tolist()):
            deps[k].append(source_base | m)
        moved = ~local
        if moved.any():
            source_tasks = flows.source_tasks[moved]
            self._reshard(seg, source_op, i, Flows(source_tasks, flows.tasks[moved], flows.num_bytes[moved]),
                          source_base | source_tasks, src[moved], dst[moved], deps, tasks, memory, inner_dim)

    def _summed_incoming(self, seg: int, source_op: int, groups: list[list[int]], group_bytes: Sequence[int],
                         source_bases: list[int], source: ParallelConfig, i: int, devices: tuple[int, ...],
                         flows: Flows, deps: list[list[int]], tasks: list[Task], inner_dim: bool,
                         memory: dict[int, int] | None = None) -> None:
        """What op i reads from `source_op`, whose tasks hold partial sums: of the gradient of their input
        (backward; a dense layer or conv split on its output channels) or of their output (forward; a split
        contracting label: a row-split dense, a vocabulary-split embedding). The tasks of one group hold
        partial sums of one box (`group_bytes[g]` bytes) and XLA sums it over the group's devices (the
        compiled step of a channel-split AlexNet: all-reduces of f32[128,7,7,64] for conv2's input,
        f32[128,4096] for fc7's): a reduce-scatter where the readers are on the group's devices and each
        reads its own part of the box, else an all-reduce (priced as a partial sum in a step,
        `_partial_sum_ms`). Then each task of op i takes its slice: where it is, if its device is in the
        group, else in one resharding from the group's first device. Several consumers under one config
        whose partial gradients of op i's output fall in the same groups (`source_bases`, one compute base
        each: q, k and v of an attention split on heads) are each summed, then added: XLA sums each dot's
        partial gradient before the add, in one combined collective (a 4-layer GPT's megatron step on 2
        devices all-reduces (f32[16,128,256] x 3) for ln_1's input gradient, 2026-12-07), so one task
        carries them all (`_summed_ms`). With `memory`
        (the forward), each device keeps what its task reads of the sum (GraphSplits.kept_bytes keeps no partial
        sum)."""
        reads: dict[int, list[tuple[int, int]]] = {}
        for n, k, num_bytes in zip(*(column.tolist() for column in flows)):
            reads.setdefault(n, []).append((k, num_bytes))
        moves = []
        for group, box_bytes in zip(groups, group_bytes):
            group_devices = [source.devices[n] for n in group]
            box = reads.get(group[0], [])
            ring = list(zip(group_devices, group_devices[1:] + group_devices[:1]))
            resources = tuple(self._links[a][b][1][0] for a, b in ring)
            if not self.machine.comm_overlaps_compute:
                resources += tuple(group_devices)
            key = seg << 24 | _TRANSFER | len(tasks)
            readers = {devices[k] for k, _ in box}
            scatter = (self.machine.reduce_scatter and len(box) > 1 and len(readers) == len(box)
                       and readers <= set(group_devices)
                       and sum(num_bytes for _, num_bytes in box) == box_bytes)
            duration_ms = self._summed_ms(box_bytes, ring, len(source_bases), scatter)
            label = (source_op, i, REDUCE_SCATTERED if scatter else ALL_REDUCED)
            tasks.append(_new_task(Task, (key, TRANSFER, label, tuple(sorted(resources)), duration_ms,
                                          tuple(base | n for base in source_bases for n in group))))
            for k, num_bytes in box:
                if devices[k] in group_devices:
                    deps[k].append(key)
                    if memory is not None:
                        memory[devices[k]] = memory.get(devices[k], 0) + num_bytes
                else:
                    moves.append((key, group_devices[0], group[0], k, num_bytes))
        if moves:
            columns = (np.array(column, dtype=np.int64) for column in zip(*moves))
            keys, src, source_tasks, moved_tasks, num_bytes = columns
            self._reshard(seg, source_op, i, Flows(source_tasks, moved_tasks, num_bytes), keys, src,
                          self._device_array(devices)[moved_tasks], deps, tasks, memory, inner_dim)

    def _reshard(self, seg: int, source_op: int, i: int, moves: Flows, source_keys: np.ndarray, src: np.ndarray,
                 dst: np.ndarray, deps: list[list[int]], tasks: list[Task], memory: dict[int, int] | None,
                 inner_dim: bool) -> None:
        """ONE TRANSFER task for `moves` into op i's tasks (see the module docstring): slice j leaves task
        `source_keys[j]` on device `src[j]` for device `dst[j]`; `inner_dim`: the tensor moved is split on
        its last dim."""
        n = self.machine.num_devices
        duration_ms, received = self._reshard_ms(src, dst, moves.num_bytes, inner_dim)
        if memory is not None:
            received = received.tolist()
            for device in np.unique(dst).tolist():
                memory[device] = memory.get(device, 0) + received[device]
        key = seg << 24 | _TRANSFER | len(tasks)
        link_resources = n + src * n + dst
        resources = np.unique(link_resources if self.machine.comm_overlaps_compute
                              else np.concatenate((link_resources, src, dst)))
        label = (source_op, i, tuple(moves.source_tasks.tolist()), tuple(moves.tasks.tolist()))
        tasks.append(_new_task(Task, (key, TRANSFER, label, tuple(resources.tolist()), duration_ms,
                                      tuple(np.unique(source_keys).tolist()))))
        for k in np.unique(moves.tasks).tolist():
            deps[k].append(key)

    def _reshard_ms(self, src: np.ndarray, dst: np.ndarray, num_bytes: np.ndarray,
                    inner_dim: bool) -> tuple[float, np.ndarray]:
        """How long one resharding of slices from devices `src` to `dst` lasts (each receiving device takes
        in its bytes at its slowest incoming link's rate; it lasts until the slowest device has them), and
        the bytes each device receives. A link without measured timings prices bytes by a line, which
        never falls, so the device receiving most on it prices it: one call per link, not per device."""
        link_ids = (self._inner_dim_link_ids if inner_dim else self._link_ids)[src, dst]
        # Byte counts stay far under 2**53, so the float sums are exact integers.
        received = np.bincount(dst, weights=num_bytes, minlength=self.machine.num_devices).astype(np.int64)
        durations = []
        for link_id, link in enumerate(self._distinct_links):
            on_link = received[dst[link_ids == link_id]]
            if not on_link.size:
                continue
            if link.measured:
                durations.extend(link.transfer_ms(b) for b in set(on_link.tolist()))
            else:
                durations.append(link.transfer_ms(int(on_link.max())))
        return max(durations), received

    def _stats(self, seg: int, i: int, config: ParallelConfig, deps: list[list[int]], tasks: list[Task]) -> None:
        """One all-reduce of op i's statistics per group of `GraphSplits.stats_groups`, after the group's tasks have
        their inputs; its tasks compute after it (see the module docstring)."""
        num_bytes = self.splits.stats_bytes(i, config.degrees)
        if not num_bytes:
            return
        for group_index, group in enumerate(self.splits.stats_groups(i, config.degrees)):
            if len(group) < 2:
                continue
            devices = [config.devices[k] for k in group]
            ring = list(zip(devices, devices[1:] + devices[:1]))
            resources = tuple(self._links[a][b][1][0] for a, b in ring)
            if not self.machine.comm_overlaps_compute:
                resources += tuple(devices)
            key = seg << 24 | _TRANSFER | len(tasks)
            ready = tuple(sorted({dep for k in group for dep in deps[k]}))
            tasks.append(_new_task(Task, (key, STATS, (i, group_index), tuple(sorted(resources)),
                                          self._allreduce_ms(num_bytes, ring), ready)))
            for k in group:
                deps[k] = [key]

    def _reduce_scatter_ms(self, num_bytes: int, ring: list[tuple[int, int]]) -> float:
        """A ring reduce-scatter of `num_bytes` (each device ends with its 1/r, summed): (r-1) steps of bytes/r,
        half an all-reduce. On a machine with a measured reduce-scatter, that curve at the (r-1)/r * bytes each
        device sends (2 gloo workers, 16 MB each, 2026-12-07 on a busy machine: 68 ms, the all-reduce 67 ms, not
        half); else, with a measured all-reduce, that curve at half the bytes it moves."""
        if self.machine.reduce_scatter_link is not None:
            return self.machine.reduce_scatter_link.transfer_ms((len(ring) - 1) / len(ring) * num_bytes)
        measured = self.machine.allreduce
        if measured is not None:
            return measured.transfer_ms((len(ring) - 1) / len(ring) * num_bytes)
        slowest = min((self.machine.link(a, b) for a, b in ring), key=lambda link: link.bandwidth_bytes_per_s)
        return ring_reduce_scatter_ms(num_bytes, len(ring), slowest.bandwidth_bytes_per_s, slowest.latency_s)

    def _summed_ms(self, box_bytes: int, ring: list[tuple[int, int]], operands: int, scatter: bool) -> float:
        """One collective summing `operands` partial sums of a `box_bytes` box over `ring` (a reduce-scatter
        if `scatter`, else an all-reduce): priced operand by operand where the machine runs a combined
        collective so (Machine.combined_allreduce measured: XLA:CPU over gloo), else as one collective of
        all their bytes."""
        priced = self._reduce_scatter_ms if scatter else self._partial_sum_ms
        if self.machine.combined_allreduce is not None:
            return operands * priced(box_bytes, ring)
        return priced(operands * box_bytes, ring)

    def _partial_sum_ms(self, num_bytes: int, ring: list[tuple[int, int]]) -> float:
        """The all-reduce of a partial sum right after the contraction that computed it, on a machine that
        measured one (Machine.partial_sum_allreduce), else an all-reduce."""
        measured = self.machine.partial_sum_allreduce
        if measured is not None:
            return measured.transfer_ms(2 * (len(ring) - 1) / len(ring) * num_bytes)
        return self._allreduce_ms(num_bytes, ring)

    def _allreduce_ms(self, num_bytes: int, ring: list[tuple[int, int]]) -> float:
        measured = self.machine.allreduce
        if measured is not None:
            return measured.transfer_ms(2 * (len(ring) - 1) / len(ring) * num_bytes)
        slowest = min((self.machine.link(a, b) for a, b in ring), key=lambda link: link.bandwidth_bytes_per_s)
        return ring_allreduce_ms(num_bytes, len(ring), slowest.bandwidth_bytes_per_s, slowest.latency_s)

    def _follower_floor_ms(self, largest_bytes: int, ring: list[tuple[int, int]]) -> float:
        """What the operand after an op's largest gradient array pays beyond its own all-reduce, where the
        machine runs the step's combined gradient all-reduce operand by operand (Machine.combined_allreduce:
        a (b-byte, 1 KB) pair measured in one collective, less the two measured alone). Every op with a
        large array is followed by a small one there (its bias, or the next batch norm's scale), so each op
        pays it once; 0 on machines without the measurement. XLA:CPU over gloo, 2 workers, 2026-12-07: a
        256 KB weight and its 1 KB bias 7.3 ms together, 4.0 + 0.3 ms apart."""
        combined = self.machine.combined_allreduce
        if combined is None:
            return 0.0
        pair_ms = combined.transfer_ms(2 * (len(ring) - 1) / len(ring) * largest_bytes)
        return max(pair_ms - self._allreduce_ms(largest_bytes, ring) - self._allreduce_ms(KIB, ring), 0.0)

    def _sync_and_update(self, i: int, config: ParallelConfig, seg: int, slice_bytes: tuple[int, ...],
                         received: dict[int, list[int]] | None = None) -> list[Task]:
        """Per replica group: one all-reduce per parameter array, one after the other (XLA:CPU over gloo
        runs a combined all-reduce array by array: OWT's 10 conv arrays, 9 MB, took 37-43 ms in a step
        against 20 ms priced per op, 2026-11-25), then the update of the task's slice. A group waits for
        `received[group]` too (its tied weights' gradients from their readers)."""
        tasks = []
        update_ms = self.op_cost(i, config.degrees).update_ms
        compute_base, update_base = seg << 24 | _COMPUTE, seg << 24 | _UPDATE
        for group_index, group in enumerate(self.splits.replica_groups(i, config.degrees)):
            ready = tuple(sorted({compute_base | k for k in group} | set((received or {}).get(group_index, ()))))
            if len(group) > 1:
                devices = [config.devices[k] for k in group]
                ring = list(zip(devices, devices[1:] + devices[:1]))
                duration = (sum(self._allreduce_ms(num_bytes, ring) for num_bytes in slice_bytes)
                            + self._follower_floor_ms(max(slice_bytes), ring))
                resources = tuple(self._links[a][b][1][0] for a, b in ring)
                if not self.machine.comm_overlaps_compute:
                    resources += tuple(devices)
                key = seg << 24 | _ALLREDUCE | group_index
                tasks.append(Task(key, ALLREDUCE, (i, group_index), resources, duration, ready))
                ready = (key,)
            for k in group:
                tasks.append(Task(update_base | k, UPDATE, (i, k), (config.devices[k],), update_ms, ready))
        return tasks


def _nearest_copy(holders: np.ndarray, first_devices: np.ndarray, shards: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The device each slice leaves from: `dst` itself where a copy of its shard is there (`holders`
    [shard, device]), else its shard's first copy's device (`first_devices`, per slice)."""
    return np.where(holders[shards, dst], dst, first_devices)


def resource_name(resource: int, num_devices: int) -> str:
    if resource < num_devices:
        return f"device {resource}"
    src, dst = divmod(resource - num_devices, num_devices)
    return f"link {src}->{dst}"

