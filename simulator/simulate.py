"""Full and delta simulation of one training step: a pure timeline of the task graph.

    python -m benchmarks.simulator_speed

Each device and link runs its tasks one at a time in program order (the task keys of
simulator.taskgraph), so a task starts at max(end of its dependencies, end of the previous task on each
of its resources) and the timeline is the longest path through a DAG: a full simulation is one pass in
key order. A delta simulation, after one op's config changes (or a few), rebuilds only the segments
the changed ops reach (an op's forward and backward, its consumers' forwards, its producers'
backwards) and re-times from the first rebuilt segment on, with each resource's free time taken from
the previous timeline, stopping at the first segment boundary past the rebuilt ones where nothing
moved can reach further: no resource's last end moved, and no moved task feeds a later segment. Its
result is exactly the full simulation's (tests check it on random move sequences).
"""

from __future__ import annotations

from dataclasses import dataclass

from models.graph import OpGraph
from simulator.cost import CostModel
from simulator.machine import Machine
from simulator.taskgraph import Segment, TaskGraphBuilder, resource_name, task_name
from simulator.trace import Trace, TraceEvent
from soap.config import ParallelConfig
from soap.strategy import Strategy


@dataclass(frozen=True)
class SimResult:
    step_ms: float
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


class Simulator:
    """Simulates strategies of one graph on one machine; keeps the last timeline for delta simulation.

    `full(strategy)` rebuilds everything; `delta(strategy)` moves from the last simulated strategy to
    `strategy` (typically one op's config changed) and returns exactly what `full(strategy)` would.
    """

    def __init__(self, graph: OpGraph, machine: Machine, cost: CostModel):
        self.graph = graph
        self.machine = machine
        self.builder = TaskGraphBuilder(graph, machine, cost)
        self._configs: tuple[ParallelConfig, ...] | None = None

    def _check(self, strategy: Strategy) -> tuple[ParallelConfig, ...]:
        if strategy.graph_signature != self.graph.signature or strategy.num_devices != self.machine.num_devices:
            raise ValueError(f"strategy for graph {strategy.graph_signature} on {strategy.num_devices} devices given "
                             f"to a simulator of graph {self.graph.signature} on {self.machine.num_devices}")
        return tuple(config for _, config in strategy.items_)

    # --- full ----------------------------------------------------------------------------------------

    def full(self, strategy: Strategy) -> SimResult:
        configs = self._check(strategy)
        self._segments: list[Segment] = [self.builder.segment(s, configs) for s in range(2 * len(self.graph.ops))]
        self._last_use: list[dict[int, int] | None] = [None] * len(self._segments)
        self._end: dict[int, float] = {}
        self._memory = self._memory_totals()
        self._configs = configs
        self._pass(0, {})
        return self._result()

    def _pass(self, first_segment: int, free: dict[int, float], last_changed: int = -1,
              replaced: dict[int, set[int]] | None = None) -> None:
        """Time the segments from `first_segment` on, each resource free at `free`; one pass in key order.

        In a delta pass (`last_changed` >= 0, the last rebuilt segment) it stops at a segment boundary
        once the tasks whose end moved can reach no later task: no resource's free time moved, and no
        data edge from a segment that moved reaches past the boundary. `replaced` maps each rebuilt
        segment to the resources its old tasks used: after that segment, the next task on each of them
        may follow another task than before, so they count as moved there.
        """
        end = self._end
        reach = self.builder.segment_reach
        replaced = replaced or {}
        moved_resources: set[int] = set()
        max_reach = -1
        for segment_id in range(first_segment, len(self._segments)):
            if last_changed >= 0 and segment_id > last_changed and not moved_resources and max_reach < segment_id:
                return
            segment_moved = False
            for key, _, _, resources, duration_ms, deps in self._segments[segment_id].tasks:  # in key order
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
                if end.get(key) != finish:
                    end[key] = finish
                    segment_moved = True
                    moved_resources.update(resources)
                elif moved_resources:
                    moved_resources.difference_update(resources)
            if segment_moved and reach[segment_id] > max_reach:
                max_reach = reach[segment_id]
            if segment_id in replaced:
                moved_resources |= replaced[segment_id]

    def _memory_totals(self) -> list[int]:
        memory = [0] * self.machine.num_devices
        for segment in self._segments:
            for device, num_bytes in segment.memory_bytes.items():
                memory[device] += num_bytes
        return memory

    def _result(self) -> SimResult:
        return SimResult(max(self._end.values()), tuple(self._memory), self.machine.device.memory_bytes)

    # --- delta ---------------------------------------------------------------------------------------

    def delta(self, strategy: Strategy) -> SimResult:
        """Move the last simulation to `strategy`: rebuild the segments its changed ops reach and re-time.

        Any number of ops may differ (MCMC reverts a rejected move and proposes the next in one call);
        the re-timing pass starts at the first rebuilt segment and runs at least past the last.
        """
        configs = self._check(strategy)
        if self._configs is None:
            return self.full(strategy)
        changed = [i for i, (old, new) in enumerate(zip(self._configs, configs)) if old != new]
        if not changed:
            return self._result()
        affected = sorted({s for i in changed for s in self.builder.affected_segments(i)})
        replaced: dict[int, set[int]] = {}
        for segment_id in affected:
            old = self._segments[segment_id]
            new = self.builder.segment(segment_id, configs)
            self._segments[segment_id] = new
            self._last_use[segment_id] = None
            for device, num_bytes in old.memory_bytes.items():
                self._memory[device] -= num_bytes
            for device, num_bytes in new.memory_bytes.items():
                self._memory[device] += num_bytes
            kept = {task.key for task in new.tasks}
            replaced[segment_id] = {resource for task in old.tasks for resource in task.resources}
            for task in old.tasks:
                if task.key not in kept:
                    del self._end[task.key]
        self._configs = configs
        self._pass(affected[0], self._free_before(affected[0]), affected[-1], replaced)
        return self._result()

    def _free_before(self, segment_id: int) -> dict[int, float]:
        """Each resource's free time at the start of segment `segment_id`: the end of its last task before."""
        last_key: dict[int, int] = {}
        for s in range(segment_id):
            if self._last_use[s] is None:
                self._last_use[s] = {r: task.key for task in self._segments[s].tasks for r in task.resources}
            last_key.update(self._last_use[s])
        return {resource: self._end[key] for resource, key in last_key.items()}

    # --- trace ---------------------------------------------------------------------------------------

    def trace(self) -> Trace:
        """The last simulated timeline: one event per task and resource it occupies."""
        n = self.machine.num_devices
        events = [
            TraceEvent(task_name(task, self.graph), task.kind, resource_name(resource, n),
                       self._end[task.key] - task.duration_ms, self._end[task.key])
            for segment in self._segments
            for task in segment.tasks
            for resource in task.resources
        ]
        return Trace(tuple(events), max(self._end.values()))


def simulate(graph: OpGraph, strategy: Strategy, machine: Machine, cost: CostModel) -> tuple[SimResult, Trace]:
    """One full simulation: the step's result and its timeline."""
    simulator = Simulator(graph, machine, cost)
    result = simulator.full(strategy)
    return result, simulator.trace()
