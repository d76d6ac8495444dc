"""Stages: the programs a training step runs, and what crosses between them.

    stages = split_stages(graph, shardings)      # soap.step.Shardings
    stages[1].inputs, stages[1].outputs          # tensor names that move in and out

Consecutive ops (program order) whose outputs live on the same device set form one stage, compiled as
one jitted program on a mesh of those devices; a stage ends after an op whose output another device set
reads and before an op that reads another device set's output, so that no op waits for more than what
it reads. A stage reads `inputs` from earlier stages (or the data
batch, DATA) and hands `outputs` (its ops' outputs that later stages read) on; the stage holding the
loss returns the mean loss as well (LOSS). Stages on disjoint device sets with no tensor between them
have no dependency: dispatched one after the other, they run at the same time (each process of a
cluster only computes the programs on its own devices), as the simulator assumes; the step moves a
stage's outputs to every later stage that reads them as soon as the stage has run, before the next
stage's program is queued on the same devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from models.errors import PlacementError
from models.graph import OpGraph
from models.graph_file import DATA  # the data batch, read by the ops without producers
from models.op import Op

LOSS = "loss mean"  # the mean loss a stage holding the loss op returns


@dataclass(frozen=True)
class Stage:
    ops: tuple[Op, ...]
    inputs: tuple[str, ...]  # tensors read from outside the stage, in the order first read (DATA: the batch)
    outputs: tuple[str, ...]  # its ops' outputs read by later stages, in program order
    has_loss: bool

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(op.name for op in self.ops)


def sources(graph: OpGraph, op: Op) -> tuple[str, ...]:
    """The tensors `op` reads: its producers' outputs, or the data batch."""
    return graph.producers(op.name) or (DATA,)


def split_stages(graph: OpGraph, device_sets: dict, device_orders: dict | None = None) -> tuple[Stage, ...]:
    """The ops grouped into stages: runs of consecutive ops with the same device set (`device_sets`: op
    name -> a frozenset), cut after an op that another device set reads and before an op that reads
    another device set's output, so that no op waits for more than what it reads (a branch on other
    devices runs beside the ops here that do not need it, as the simulator times them). `device_orders` (op name -> ((what, device ids in mesh order), ...)) checks
    that the ops of one stage list their devices in one order: one jitted program needs one."""
    groups: list[list[Op]] = []
    for op in graph.ops:
        previous = groups[-1][-1].name if groups else None
        here = device_sets[op.name]
        if (previous is not None and device_sets[previous] == here
                and all(device_sets[c] == here for c in graph.consumers(previous))
                and all(device_sets[p] == here for p in graph.producers(op.name))):
            groups[-1].append(op)
        else:
            groups.append([op])
        if device_orders is not None:
            _require_one_device_order(groups[-1][0], op, device_orders)
    stage_of = {op.name: s for s, group in enumerate(groups) for op in group}
    loss = graph.ops[-1].name
    stages = []
    for s, group in enumerate(groups):
        inputs: list[str] = []
        for op in group:
            for name in sources(graph, op):
                if (name == DATA or stage_of[name] != s) and name not in inputs:
                    inputs.append(name)
        outputs = tuple(op.name for op in group if any(stage_of[c] != s for c in graph.consumers(op.name)))
        stages.append(Stage(tuple(group), tuple(inputs), outputs, stage_of[loss] == s))
    return tuple(stages)


def _require_one_device_order(first: Op, op: Op, device_orders: dict) -> None:
    want = device_orders[first.name][0][1]
    for what, order in device_orders[op.name]:
        if order != want:
            raise PlacementError(
                f"op {op.name!r} ({what}) orders its devices {order} but op {first.name!r} of the same stage "
                f"orders them {want}; one stage is one jitted program: list the devices in one order")


def _strides(mesh: Mesh) -> set[int]:
    sizes = mesh.devices.shape
    return {math.prod(sizes[j:]) for j in range(len(sizes) + 1)}


def stage_mesh(stage_shardings: list[NamedSharding]) -> Mesh:
    """A mesh over the stage's devices whose axes refine every mesh of the stage (shared mixed radix).

    A stage's forward returns its vjp residuals with shardings that XLA chooses; JAX names them on the
    mesh of the program's first argument, which must be able to express them all. This mesh can: each of
    its axes is one step of the stage meshes' common chain of strides (on 4 devices: two axes of 2).
    """
    strides = sorted(set().union(*(_strides(s.mesh) for s in stage_shardings)))
    for small, large in zip(strides, strides[1:]):
        if large % small:
            grids = sorted({s.mesh.devices.shape for s in stage_shardings})
            raise PlacementError(
                f"a stage mixes the device grids {grids}, which share no common refinement (strides {small} and "
                f"{large}); give its ops grids that nest (e.g. powers of two) or put them in separate stages"
            )
    sizes = tuple(large // small for small, large in zip(strides, strides[1:]))[::-1] or (1,)
    names = tuple(f"stage{i}" for i in range(len(sizes)))
    devices = stage_shardings[0].mesh.devices.reshape(sizes)
    return Mesh(devices, names, axis_types=(AxisType.Auto,) * len(sizes))


def refine(sharding: NamedSharding, mesh: Mesh) -> NamedSharding:
    """The same placement as `sharding`, named on the stage mesh (each axis -> the stage axes it spans)."""
    sizes, stage_sizes = sharding.mesh.devices.shape, mesh.devices.shape
    spans = {}
    for j, name in enumerate(sharding.mesh.axis_names):
        low = math.prod(sizes[j + 1:])
        spans[name] = tuple(stage_name for i, stage_name in enumerate(mesh.axis_names)
                            if low <= math.prod(stage_sizes[i + 1:]) < low * sizes[j])

    def entry(e):
        names = sum((spans[name] for name in ((e,) if isinstance(e, str) else e)), ()) if e is not None else ()
        return names or None

    refined = NamedSharding(mesh, PartitionSpec(*(entry(e) for e in sharding.spec)))
    assert refined.is_equivalent_to(sharding, len(sharding.spec)), (sharding, refined)
    return refined
