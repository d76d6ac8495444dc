"""Cost models: the time of one task's computation on a device kind, behind one narrow protocol.

A task's computation is its local op (models.op.local_op: the shard's shapes, name-less), so a cost
is keyed by value, (local_op.cost_key, device kind), never by device id or object identity.

- RooflineCostModel: time = max(FLOPs / (eff * peak FLOP/s), bytes / (eff * memory bandwidth)),
  regime: compute-bound convs and dense layers, memory-bound pools and updates; eff defaults to 0.6
  (achievable rates sit at 50-70% of peak, shared/REFERENCE.md). Worked number: AlexNet conv1 at
  64x64, batch 128, on a P100-PCIe (9.3 TFLOP/s): 1.52 GFLOP / (0.6 * 9.3e12) = 0.273 ms forward.
  Backward FLOPs and bytes are twice forward's for conv and dense (input and weight gradients).
- TableCostModel: a measured profile (written by calibration), versioned JSON:
    {"format": "soap-profile", "version": 2, "device_kind": "cpu-core", "jax_version": "0.10.2",
     "entries": {"<local op cost_key>": {"forward_ms": 1.2, "backward_ms": 2.5, "update_ms": 0.3}, ...}}
- ConstantCostModel and the table fake in tests: for simulator and search tests.
An op's cost includes the optimizer update of its parameter slice (SGD with momentum: read weight,
gradient and momentum, write weight and momentum: 5 x bytes), measured per shard shape because its rate
depends on the size: on one CPU core a 4 MiB kernel updates at 0.14 ms/MiB, a 64 MiB one at 0.72 (the
caches), so one rate for every size was 2-4x off for some ops (benchmarks.op_breakdown).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from models.documents import read_document
from models.op import Op
from simulator.errors import ProfileError
from simulator.machine import DeviceSpec
from soap.optimizer import Optimizer

PROFILE_FORMAT = "soap-profile"
PROFILE_VERSION = 2


@dataclass(frozen=True)
class OpCost:
    forward_ms: float
    backward_ms: float
    update_ms: float = 0.0  # the optimizer update of the op's parameter slice (0 without parameters)


class CostModel(Protocol):
    def op_cost(self, op: Op, device_kind: str) -> OpCost:
        """Forward, backward and update time of the local op `op` (a task's computation) on `device_kind`."""


@dataclass(frozen=True)
class ConstantCostModel:
    """Every op costs the same (tests): forward_ms, backward_ms; updates cost update_ms."""

    forward_ms: float = 1.0
    backward_ms: float = 2.0
    update_ms_each: float = 0.0

    def op_cost(self, op: Op, device_kind: str) -> OpCost:
        return OpCost(self.forward_ms, self.backward_ms, self.update_ms_each if op.param_bytes else 0.0)


@dataclass(frozen=True)
class RooflineCostModel:
    device: DeviceSpec
    efficiency: float = 0.6
    optimizer: Optimizer = Optimizer.SGD  # its update's traffic: 5 x the parameter bytes for SGD, 7 x for AdamW

    def _ms(self, flops: float, num_bytes: float) -> float:
        compute_s = flops / (self.efficiency * self.device.peak_flops_per_s)
        memory_s = num_bytes / (self.efficiency * self.device.memory_bandwidth_bytes_per_s)
        return max(compute_s, memory_s) * 1e3

    def op_cost(self, op: Op, device_kind: str) -> OpCost:
        forward_bytes = op.input_bytes + op.output_bytes + op.param_bytes
        return OpCost(self._ms(op.forward_flops, forward_bytes), self._ms(op.backward_flops, 2 * forward_bytes),
                      self._ms(0, self.optimizer.update_traffic * op.param_bytes))


@dataclass(frozen=True)
class TableCostModel:
    """Measured costs: entries keyed by local op cost_key, for one device kind and JAX version."""

    device_kind: str
    jax_version: str
    entries: dict
    source: str = "profile"

    def op_cost(self, op: Op, device_kind: str) -> OpCost:
        if device_kind != self.device_kind:
            raise ProfileError(f"{self.source} was measured on {self.device_kind!r} but the machine's devices are "
                               f"{device_kind!r}; calibrate on this device kind")
        cost = self.entries.get(op.cost_key)
        if cost is None:
            raise ProfileError(f"{self.source} has no entry for [{op.cost_key}]; calibrate the shard shapes of "
                               f"this model and device count (python -m simulator.calibrate)")
        return cost

    def to_json(self) -> str:
        entries = {key: {"forward_ms": c.forward_ms, "backward_ms": c.backward_ms, "update_ms": c.update_ms}
                   for key, c in sorted(self.entries.items())}
        return json.dumps({"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "device_kind": self.device_kind,
                           "jax_version": self.jax_version, "entries": entries}, indent=1)


def profile_from_json(text: str, device_kind: str, jax_version: str, source: str = "profile") -> TableCostModel:
    """Read a measured profile; ProfileError if malformed or for another device kind or JAX version."""
    document = read_document(text, "profile", PROFILE_VERSION, source, ProfileError, "delete it and calibrate again")
    for field, want in (("device_kind", device_kind), ("jax_version", jax_version)):
        if document.get(field) != want:
            raise ProfileError(f"{source} is for {field} {document.get(field)!r}, not {want!r}; "
                               f"calibrate on this machine")
    try:
        entries = {key: OpCost(float(v["forward_ms"]), float(v["backward_ms"]), float(v["update_ms"]))
                   for key, v in document["entries"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ProfileError(f"{source} has a malformed entry ({error!r}); delete it and calibrate again")
    return TableCostModel(device_kind, jax_version, entries, source)
