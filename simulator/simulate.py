"""Full and delta simulation of one training step: a pure timeline of the task graph.

    python -m benchmarks.simulator_speed

Each device and link runs its tasks one at a time in program order (the task keys of
simulator.taskgraph), so a task starts at max(end of its dependencies, end of the previous task on each
of its resources) and the timeline is the longest path through a DAG: a full simulation is one pass in
key order. A delta simulation, after one op's config changes (or a few), rebuilds only the segments
the changed ops reach (an op's forward and backward, its consumers' forwards, its producers'
backwards) and re-times from the first rebuilt segment on, each resource free at the time the previous
timeline left it there. Its result is exactly the full simulation's, bit for bit (tests check it on
random move sequences).

The delta pass runs each segment as a `_Program`, made when the segment is built: every time lives at
a fixed position of one list, and a task's resource constraints are inputs like its dependencies (the
previous task on the resource in the segment, or the resource's slot: its free time as the segment
begins), so re-timing a task is two or three list reads, a comparison and an addition, the very floats
the full pass compares. It does not stop early: nearly every task after a changed one moves (93% in
benchmarks.simulator_speed at 16 GPUs), and knowing what did not costs more than re-timing it.

A caller that prices a strategy over a device's memory as infinite, whatever its time (the search),
asks `delta(strategy, time_over_memory=False)`: over memory, the pass is put off (the result's step time
is inf) until a later delta or a trace needs the times, and then runs from the first segment left
untimed. The memory is summed before the pass, so it costs nothing to know. Chains from layouts over
memory price mostly such strategies (GPT-2 Medium on 64 k80-16x4 GPUs, 2 sequences per GPU: the chains
from model_parallel, single and the random start).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from models.graph import OpGraph
from simulator.cost import CostModel
from simulator.machine import Machine
from simulator.taskgraph import Segment, Task, TaskGraphBuilder, resource_name, task_name
from simulator.trace import Trace, TraceEvent
from soap.config import ParallelConfig
from soap.errors import StrategyFileError
from soap.strategy import Strategy


@dataclass(frozen=True)
class SimResult:
    step_ms: float  # inf when not timed: a delta over memory asked without its time (Simulator.delta)
    peak_memory_bytes: tuple[int, ...]
    device_memory_bytes: int

    @property
    def fits_memory(self) -> bool:
        return max(self.peak_memory_bytes) <= self.device_memory_bytes

    def over_memory(self) -> str | None:
        """One line naming the first device over its memory, or None."""
        for device, used in enumerate(self.peak_memory_bytes):
            if used > self.device_memory_bytes:
                return (f"device {device} needs {used / 2**30:.2f} GiB of its {self.device_memory_bytes / 2**30:.2f} "
                        f"GiB ({used} bytes)")
        return None


class _Program(NamedTuple):
    """A segment as the delta pass runs it; numbers are positions in the simulator's list of times.

    Each step is (task, input, input, more inputs, duration ms): the task ends at max(its inputs' times)
    + duration. Its inputs are its dependencies and, on each of its resources, the previous task of the
    segment there or, for the first, the resource's slot: its free time as the segment begins. After the
    segment, each slot it uses takes the end of its last task there.
    """

    steps: tuple[tuple[int, int, int, tuple[int, ...], float], ...]
    slots: tuple[int, ...]  # the slots of the resources the segment uses
    last_tasks: tuple[int, ...]  # the segment's last task on each


class _Timeline(NamedTuple):
    """What a delta simulation changes, kept for the timeline before the last delta."""

    configs: tuple[ParallelConfig, ...]
    segments: list[Segment]
    programs: list[_Program]
    memory: list[int]
    times: list[float]
    makespan_ms: float
    untimed_from: int | None


def _changed_ops(old: tuple[ParallelConfig, ...], new: tuple[ParallelConfig, ...]) -> list[int]:
    return [i for i, (a, b) in enumerate(zip(old, new)) if a is not b and a != b]


class Simulator:
    """Simulates strategies of one graph on one machine; keeps the last timeline for delta simulation.

    `full(strategy)` rebuilds everything; `delta(strategy)` moves from the last simulated strategy to
    `strategy` (typically one op's config changed) and returns exactly what `full(strategy)` would.
    """

    # A delta keeps a copy of the timeline before it while moves back to that timeline come (MCMC
    # rejecting a move, then pricing the next from the strategy before); after this many deltas without
    # one it stops copying, until one comes.
    KEEP_PREVIOUS_UNUSED = 8
    # Segments a delta built, with their programs, kept by `TaskGraphBuilder.segment_key` (MCMC proposes
    # the same op config beside the same neighbours again: 27-53% of the segments of AlexNet and
    # Inception-v3 searches on 16-64 GPUs); the oldest goes first past this many (at 64 GPUs a segment
    # and its program take up to about 100 KB).
    MAX_BUILT_SEGMENTS = 4096

    def __init__(self, graph: OpGraph, machine: Machine, cost: CostModel):
        self.graph = graph
        self.machine = machine
        self.builder = TaskGraphBuilder(graph, machine, cost)
        self._configs: tuple[ParallelConfig, ...] | None = None
        # The delta pass's times: the slots first (`_slot`: resource -> slot, in the order resources are
        # first used), then every task key ever seen (`_position`: key -> position).
        num_resources = machine.num_devices * (machine.num_devices + 1)
        self._times: list[float] = [0.0] * num_resources
        self._slot: dict[int, int] = {}
        self._position: dict[int, int] = {}
        self._previous: _Timeline | None = None
        self._previous_configs: tuple[ParallelConfig, ...] | None = None
        self._previous_unused = 0
        self._built: dict[tuple, tuple[Segment, _Program]] = {}
        # The first segment whose times a delta over memory left stale (None: every time is current).
        self._untimed_from: int | None = None

    def _check(self, strategy: Strategy) -> tuple[ParallelConfig, ...]:
        if strategy.graph_signature != self.graph.signature or strategy.num_devices != self.machine.num_devices:
            raise StrategyFileError(f"a strategy for graph {strategy.graph_signature} on {strategy.num_devices} devices "
                                    f"cannot be simulated for graph {self.graph.signature} on "
                                    f"{self.machine.num_devices}; search or load a strategy for this model and "
                                    f"device count")
        return tuple(config for _, config in strategy.items_)

    # --- full ----------------------------------------------------------------------------------------

    def full(self, strategy: Strategy) -> SimResult:
        configs = self._check(strategy)
        self._segments: list[Segment] = [self.builder.segment(s, configs) for s in range(2 * len(self.graph.ops))]
        self._memory = self._memory_totals()
        self._configs = configs
        self._full_pass()
        return self._result()

    def _full_pass(self) -> None:
        """Time every task in key order, each resource free at the end of its last task so far."""
        end: dict[int, float] = {}
        free: dict[int, float] = {}
        for segment in self._segments:
            for key, _, _, resources, duration_ms, deps in segment.tasks:
                begin = 0.0
                for dep in deps:
                    if end[dep] > begin:
                        begin = end[dep]
                for resource in resources:
                    free_at = free.get(resource, 0.0)
                    if free_at > begin:
                        begin = free_at
                finish = begin + duration_ms
                for resource in resources:
                    free[resource] = finish
                end[key] = finish
        self._end: dict[int, float] | None = end  # by key, until the next delta moves the times to its list
        self._makespan_ms = max(free.values())  # a resource's last task ends last on it
        self._programs: list[_Program] | None = None  # made by the next delta, which needs them
        self._previous = self._previous_configs = None
        self._untimed_from = None

    def _memory_totals(self) -> list[int]:
        memory = [0] * self.machine.num_devices
        for segment in self._segments:
            for device, num_bytes in segment.memory_bytes.items():
                memory[device] += num_bytes
        return memory

    def _result(self) -> SimResult:
        return SimResult(self._makespan_ms, tuple(self._memory), self.machine.device.memory_bytes)

    # --- delta ---------------------------------------------------------------------------------------

    def delta(self, strategy: Strategy, time_over_memory: bool = True) -> SimResult:
        """Move the last simulation to `strategy`: rebuild the segments its changed ops reach and re-time
        from the first of them on, starting from the last timeline or, when `strategy` is closer to it,
        the one before. With `time_over_memory=False`, a strategy over a device's memory is not timed:
        its step time is inf, and its re-timing waits for the next delta or trace that needs it.

        Any number of ops may differ (MCMC reverts a rejected move and proposes the next in one call).
        """
        configs = self._check(strategy)
        if self._configs is None:
            return self.full(strategy)
        changed = _changed_ops(self._configs, configs)
        if self._previous_configs is not None and len(_changed_ops(self._previous_configs, configs)) < len(changed):
            if self._previous is not None:
                self._restore_previous()
                changed = _changed_ops(self._configs, configs)
            self._previous_unused = 0
        else:
            self._previous_unused += 1
        if not changed:
            return self._timed_result(time_over_memory)
        if self._programs is None:
            self._make_programs()
        keep = self._previous_unused < self.KEEP_PREVIOUS_UNUSED
        self._previous = self._timeline() if keep else None
        self._previous_configs = self._configs
        affected = sorted({s for i in changed for s in self.builder.affected_segments(i)})
        memory = self._memory
        for segment_id in affected:
            old = self._segments[segment_id]
            new, self._programs[segment_id] = self._built_segment(segment_id, configs)
            self._segments[segment_id] = new
            for device, num_bytes in old.memory_bytes.items():
                memory[device] -= num_bytes
            for device, num_bytes in new.memory_bytes.items():
                memory[device] += num_bytes
        self._configs = configs
        if self._untimed_from is None or affected[0] < self._untimed_from:
            self._untimed_from = affected[0]
        return self._timed_result(time_over_memory)

    def _timed_result(self, time_over_memory: bool) -> SimResult:
        """The result, after the pass from the first untimed segment unless the strategy is over memory and
        its time is not asked for."""
        if self._untimed_from is not None:
            if not time_over_memory and max(self._memory) > self.machine.device.memory_bytes:
                return SimResult(math.inf, tuple(self._memory), self.machine.device.memory_bytes)
            self._pass(self._untimed_from)
            self._untimed_from = None
        return self._result()

    def _built_segment(self, segment_id: int, configs: tuple[ParallelConfig, ...]) -> tuple[Segment, _Program]:
        """The segment under `configs` and its program, built once per segment key. A program holds
        positions in the list of times, which a task key keeps for the simulator's life, so it stays valid."""
        key = self.builder.segment_key(segment_id, configs)
        built = self._built.get(key)
        if built is None:
            segment = self.builder.segment(segment_id, configs)
            built = self._built[key] = (segment, self._program(segment.tasks))
            if len(self._built) > self.MAX_BUILT_SEGMENTS:
                del self._built[next(iter(self._built))]
        return built

    def _timeline(self) -> _Timeline:
        """A copy of what a delta changes."""
        return _Timeline(self._configs, self._segments[:], self._programs[:], self._memory[:], self._times[:],
                         self._makespan_ms, self._untimed_from)

    def _restore_previous(self) -> None:
        length = len(self._times)
        (self._configs, self._segments, self._programs, self._memory, self._times,
         self._makespan_ms, self._untimed_from) = self._previous
        self._previous = self._previous_configs = None
        # Positions given out since the copy was made are unused in it but must exist.
        self._times.extend([0.0] * (length - len(self._times)))

    def _program(self, tasks: tuple[Task, ...]) -> _Program:
        position, slot, times = self._position, self._slot, self._times
        position_of = position.__getitem__
        last: dict[int, int] = {}  # resource -> the position of the segment's latest task on it so far
        steps = []
        for key, _, _, resources, duration_ms, deps in tasks:
            at = position.get(key)
            if at is None:
                at = position[key] = len(times)
                times.append(0.0)
            if len(resources) == 1:  # most tasks: one resource, at most one dependency
                resource = resources[0]
                before = last.get(resource)
                if before is None:
                    before = slot.get(resource)
                    if before is None:
                        before = slot[resource] = len(slot)
                last[resource] = at
                if len(deps) == 1:
                    steps.append((at, position_of(deps[0]), before, (), duration_ms))
                elif deps:
                    steps.append((at, position_of(deps[0]), before, tuple(map(position_of, deps[1:])), duration_ms))
                else:
                    steps.append((at, before, before, (), duration_ms))
            else:
                inputs = list(map(position_of, deps))
                for resource in resources:
                    before = last.get(resource)
                    if before is None:
                        before = slot.get(resource)
                        if before is None:
                            before = slot[resource] = len(slot)
                    inputs.append(before)
                    last[resource] = at
                steps.append((at, inputs[0], inputs[-1], tuple(inputs[1:-1]), duration_ms))
        return _Program(tuple(steps), tuple(map(slot.__getitem__, last)), tuple(last.values()))

    def _make_programs(self) -> None:
        """The programs of the segments a full simulation built, and its times."""
        self._programs = [self._program(segment.tasks) for segment in self._segments]
        times, position = self._times, self._position
        for key, end_ms in self._end.items():
            times[position[key]] = end_ms
        self._end = None

    def _pass(self, first_segment: int) -> None:
        """Run the programs from `first_segment` on, the slots first set to the free times there: every
        slot at 0.0, then each earlier segment's last task on each of its resources, in order. The step
        time is the latest slot: a resource's last task ends last on it."""
        times, programs = self._times, self._programs
        num_slots = len(self._slot)
        times[:num_slots] = [0.0] * num_slots
        for _, slots, last_tasks in programs[:first_segment]:
            for slot, last in zip(slots, last_tasks):
                times[slot] = times[last]
        for steps, slots, last_tasks in programs[first_segment:]:
            for at, a, b, more, duration_ms in steps:
                begin, other = times[a], times[b]
                if other > begin:
                    begin = other
                if more:
                    for m in more:
                        other = times[m]
                        if other > begin:
                            begin = other
                times[at] = begin + duration_ms
            for slot, last in zip(slots, last_tasks):
                times[slot] = times[last]
        # A slot only moves later (its resource's next task ends after it), so its last value is its latest.
        self._makespan_ms = max(times[:num_slots], default=0.0)

    # --- trace ---------------------------------------------------------------------------------------

    def tasks(self) -> Iterator[Task]:
        """The tasks of the last simulated strategy, in program order."""
        for segment in self._segments:
            yield from segment.tasks

    def trace(self) -> Trace:
        """The last simulated timeline: one event per task and resource it occupies."""
        n = self.machine.num_devices
        if self._untimed_from is not None:
            self._pass(self._untimed_from)
            self._untimed_from = None
        end = self._end
        if end is None:  # a delta ran: the times are in its list
            end = {key: self._times[at] for key, at in self._position.items()}
        events = [
            TraceEvent(task_name(task, self.graph), task.kind, resource_name(resource, n),
                       end[task.key] - task.duration_ms, end[task.key])
            for task in self.tasks()
            for resource in task.resources
        ]
        return Trace(tuple(events), self._makespan_ms)


def simulate(graph: OpGraph, strategy: Strategy, machine: Machine, cost: CostModel) -> tuple[SimResult, Trace]:
    """One full simulation: the step's result and its timeline."""
    simulator = Simulator(graph, machine, cost)
    result = simulator.full(strategy)
    return result, simulator.trace()
