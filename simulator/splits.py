"""What op i of a graph under degrees d implies, for the task graph (simulator.taskgraph) to wire and price:
the box each task writes and reads, the slices that flow between a producer's and a consumer's tasks, the
copies of a replicated op, the parameter slices and bytes a task keeps, which tasks hold partial sums and
of which box, which share a parameter slice or a slice of statistics.

Every answer is asked of the op's labelled space (models.labels) and memoized by value (op index, degrees,
input index): independent of device ids, so one answer serves every placement of a config.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from models import labels
from models.graph import OpGraph
from models.op import local_op
from simulator.memo import memoized


class Flows(NamedTuple):
    """What a resharding may move: slice j goes from `source_tasks[j]` to `tasks[j]`, `num_bytes[j]`
    bytes (arrays, so that a 64 x 64 resharding is priced by array operations, not 4096 Python steps)."""

    source_tasks: np.ndarray
    tasks: np.ndarray
    num_bytes: np.ndarray


class GraphSplits:
    """The split facts of one graph's ops, for a training step whose optimizer keeps `optimizer_states`
    values per parameter (simulator.cost.Optimizer.states)."""

    def __init__(self, graph: OpGraph, optimizer_states: int):
        self.graph = graph
        self.optimizer_states = optimizer_states

    @memoized
    def copies(self, op_index: int, degrees: tuple[int, ...]) -> int:
        """How many tasks compute each shard of the op (models.labels.replica_degree; the copies of a shard
        are consecutive tasks)."""
        return labels.replica_degree(self.graph.ops[op_index].space, degrees)

    @memoized
    def output_boxes(self, op_index: int, degrees: tuple[int, ...]) -> np.ndarray:
        """[task, dim, (begin, end)]: the output box of each task of the op under `degrees`."""
        return np.array(labels.tasks_output_boxes(self.graph.ops[op_index].space, degrees), dtype=np.int64)

    @memoized
    def input_boxes(self, op_index: int, degrees: tuple[int, ...], input_index: int) -> np.ndarray:
        """[task, dim, (begin, end)]: the box each task of the op under `degrees` reads from input
        `input_index` (models.labels.tasks_input_boxes)."""
        space = self.graph.ops[op_index].space
        return np.array(labels.tasks_input_boxes(space, degrees, input_index), dtype=np.int64)

    @memoized
    def param_boxes(self, op_index: int, degrees: tuple[int, ...], param: str) -> np.ndarray:
        """[task, axis, (begin, end)]: the slice of parameter `param` each task holds."""
        space = self.graph.ops[op_index].space
        return np.array(labels.tasks_array_boxes(space, degrees, dict(space.params)[param]), dtype=np.int64)

    @memoized
    def volumes(self, producer: int, consumer: int, input_index: int,
                producer_degrees: tuple[int, ...], consumer_degrees: tuple[int, ...]) -> Flows:
        """Every non-empty intersection of what a consumer task reads with what a producer task wrote, from
        producer task to consumer task. Of a replicated producer (models.labels.replicated) only the first
        copy of each shard is a source here; the task graph takes the copy on the reader's device where
        there is one."""
        copies = self.copies(producer, producer_degrees)
        flows = intersections(self.output_boxes(producer, producer_degrees)[::copies],
                              self.input_boxes(consumer, consumer_degrees, input_index),
                              self.graph.ops[producer].dtype_bytes)
        return Flows(flows.source_tasks * copies, flows.tasks, flows.num_bytes)

    @memoized
    def backward_volumes(self, producer: int, consumer: int, input_index: int,
                         producer_degrees: tuple[int, ...], consumer_degrees: tuple[int, ...]) -> Flows:
        """The intersections as the gradient flows back, from consumer task to producer task: every copy of
        a replicated producer receives it, from the first copy of a replicated consumer's tasks (the task
        graph takes the copy on the receiver's device where there is one)."""
        if self.copies(producer, producer_degrees) == 1 and self.copies(consumer, consumer_degrees) == 1:
            source_tasks, tasks, num_bytes = self.volumes(producer, consumer, input_index, producer_degrees,
                                                          consumer_degrees)
            return Flows(tasks, source_tasks, num_bytes)
        copies = self.copies(consumer, consumer_degrees)
        flows = intersections(self.output_boxes(producer, producer_degrees),
                              self.input_boxes(consumer, consumer_degrees, input_index)[::copies],
                              self.graph.ops[producer].dtype_bytes)
        return Flows(flows.tasks * copies, flows.source_tasks, flows.num_bytes)

    @memoized
    def param_slice_bytes(self, op_index: int, degrees: tuple[int, ...]) -> tuple[int, ...]:
        """The bytes of each parameter array's slice (a kernel, a bias) that one task holds and updates: a
        tied weight another op owns is held, all-reduced and updated at its owner."""
        op = self.graph.ops[op_index]
        local, tied = local_op(op, degrees), {name for name, _ in op.tied}
        return tuple(math.prod(shape) * local.dtype_bytes for name, shape in local.param_shapes if name not in tied)

    @memoized
    def kept_bytes(self, op_index: int, degrees: tuple[int, ...]) -> int:
        """What one task keeps on its device through the step: its parameter slice, their gradients and the
        optimizer's states (2 + states x the slice: 3 x for SGD with momentum, 4 x for AdamW), its state
        slice and its output shard. A partial sum is not kept: what its readers take of the sum is, on
        their devices (simulator.taskgraph), as Megatron frees a row-parallel dense's partial output once
        reduced."""
        local = local_op(self.graph.ops[op_index], degrees)
        output_bytes = (0 if self.partial_output(op_index, degrees)
                        else math.prod(local.output_shape) * local.dtype_bytes)
        return ((2 + self.optimizer_states) * sum(self.param_slice_bytes(op_index, degrees))
                + local.state_count * local.dtype_bytes + output_bytes)

    @memoized
    def partial_input(self, op_index: int, degrees: tuple[int, ...], input_index: int) -> bool:
        """Whether the op's tasks hold partial sums of input `input_index`'s gradient under `degrees`."""
        return labels.has_partial_input_gradient(self.graph.ops[op_index].space, degrees, input_index)

    @memoized
    def partial_output(self, op_index: int, degrees: tuple[int, ...]) -> bool:
        """Whether the op's tasks hold partial sums of their output under `degrees` (models.labels)."""
        return labels.output_partial(self.graph.ops[op_index].space, degrees)

    @memoized
    def output_partial_groups(self, op_index: int, degrees: tuple[int, ...]) -> list[list[int]]:
        """Tasks holding partial sums of one output box (models.labels.output_partial_groups)."""
        return labels.output_partial_groups(self.graph.ops[op_index].space, degrees)

    @memoized
    def output_group_bytes(self, op_index: int, degrees: tuple[int, ...]) -> tuple[int, ...]:
        """The bytes of the output box each partial-output group sums."""
        boxes = self.output_boxes(op_index, degrees)
        volumes = np.prod(boxes[:, :, 1] - boxes[:, :, 0], axis=1) * self.graph.ops[op_index].dtype_bytes
        return tuple(int(volumes[group[0]]) for group in self.output_partial_groups(op_index, degrees))

    @memoized
    def partial_sum_groups(self, op_index: int, degrees: tuple[int, ...], input_index: int) -> list[list[int]]:
        """Tasks that read the same box of input `input_index`, each holding a partial sum of its gradient
        where `partial_input` (models.labels.partial_sum_groups)."""
        return labels.partial_sum_groups(self.graph.ops[op_index].space, degrees, input_index)

    @memoized
    def input_group_bytes(self, op_index: int, degrees: tuple[int, ...], input_index: int) -> tuple[int, ...]:
        """The bytes of the input box each partial-sum group of input `input_index`'s gradient sums."""
        boxes = self.input_boxes(op_index, degrees, input_index)
        producer = self.graph.producers(self.graph.ops[op_index].name)[input_index]
        volumes = np.prod(boxes[:, :, 1] - boxes[:, :, 0], axis=1) * self.graph.op(producer).dtype_bytes
        return tuple(int(volumes[group[0]]) for group in self.partial_sum_groups(op_index, degrees, input_index))

    @memoized
    def leader_groups(self, op_index: int, degrees: tuple[int, ...], input_index: int) -> np.ndarray:
        """Per task of the op: the index of its partial-sum group (of input `input_index`'s gradient) if it is
        the group's first task, else -1."""
        leaders = np.full(math.prod(degrees), -1, dtype=np.int64)
        for group_index, group in enumerate(self.partial_sum_groups(op_index, degrees, input_index)):
            leaders[group[0]] = group_index
        return leaders

    @memoized
    def replica_groups(self, op_index: int, degrees: tuple[int, ...]) -> list[list[int]]:
        """Tasks holding the same parameter slice (models.labels.replica_groups)."""
        return labels.replica_groups(self.graph.ops[op_index].space, degrees)

    @memoized
    def stats_bytes(self, op_index: int, degrees: tuple[int, ...]) -> int:
        """The bytes of one task's statistics, all-reduced before its forward and its backward (0: none)."""
        op = self.graph.ops[op_index]
        return op.spec.stats_bytes(op, degrees)

    @memoized
    def stats_groups(self, op_index: int, degrees: tuple[int, ...]) -> list[list[int]]:
        """Tasks that all-reduce one slice of the op's statistics (models.labels.statistics_groups)."""
        return labels.statistics_groups(self.graph.ops[op_index].space, degrees)

    @memoized
    def splits_inner_dim(self, op_index: int, degrees: tuple[int, ...]) -> bool:
        """Whether the op's output is split on its last dim (channels, features: models.labels)."""
        return labels.splits_inner_dim(self.graph.ops[op_index].space, degrees)


def intersections(producer_boxes: np.ndarray, needed: np.ndarray, dtype_bytes: int) -> Flows:
    """(producer task m, consumer task k, bytes) for every non-empty overlap of what consumer task k reads
    (needed[k]) with producer shard m (producer_boxes[m]), ordered by k then m. Boxes are products of
    intervals, so the overlap volume of every (k, m) pair is one array product over dims (64 x 64 tasks:
    4096 pairs at once)."""
    volumes = None  # [k, m], dim by dim (one [k, m] array at a time, not [k, m, dims])
    for d in range(needed.shape[1]):
        overlap = (np.minimum(producer_boxes[None, :, d, 1], needed[:, None, d, 1])
                   - np.maximum(producer_boxes[None, :, d, 0], needed[:, None, d, 0]))
        np.maximum(overlap, 0, out=overlap)
        volumes = overlap if volumes is None else np.multiply(volumes, overlap, out=volumes)
    ks, ms = np.nonzero(volumes)
    num_bytes = volumes[ks, ms] * dtype_bytes
    return Flows(ms, ks, num_bytes)
