"""Cost models: the time of one task's computation on a device kind, behind one narrow protocol.

A task's computation is its local op (models.op.local_op: the shard's shapes, name-less), so a cost
is keyed by value, (local_op.cost_key, device kind), never by device id or object identity.

- RooflineCostModel: time = max(FLOPs / (eff * peak FLOP/s), bytes / (eff * memory bandwidth)),
  regime: compute-bound convs and dense layers, memory-bound pools and updates; eff defaults to 0.6
  (achievable rates sit at 50-70% of peak, shared/REFERENCE.md). Worked number: AlexNet conv1 at
  64x64, batch 128, on a P100-PCIe (9.3 TFLOP/s): 1.52 GFLOP / (0.6 * 9.3e12) = 0.273 ms forward.
  Backward FLOPs and bytes are twice forward's for conv and dense (input and weight gradients).
- TableCostModel: a measured profile (written by calibration), versioned JSON; each component an estimate
  (soap.timing.Estimate: the time, the relative half-width of its confidence interval, the samples taken),
  the update per optimizer, and the checks an entry still failed after calibration's tries (flags):
    {"format": "soap-profile", "version": 3, "device_kind": "cpu-core", "jax_version": "0.10.2",
     "entries": {"<local op cost_key>": {"forward": {"ms": 1.2, "spread": 0.01, "repeats": 5},
                                         "backward": {...}, "update": {"sgd": {...}, "adamw": {...}},
                                         "flags": [], "measured_at": 1796000000.0}, ...}}
  "measured_at" is when calibration measured the entry (Unix time, seconds), so that a measured run can say
  how old the timings it stands on are (simulator.drift); an entry written without it has unknown age.
  The simulator reads the update of the run's optimizer (TableCostModel.optimizer, SGD by default).
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
from soap.timing import Estimate

PROFILE_FORMAT = "soap-profile"
PROFILE_VERSION = 3  # 3: every component timed on its own, with its spread and repeats; updates per optimizer
OPTIMIZERS = tuple(optimizer.value for optimizer in Optimizer)  # soap.optimizer
MAX_SPREAD = 0.20  # an entry whose interval is wider than +-20% fails its checks (calibration measures it again)
MEASUREMENTS = 3  # an entry that fails its checks is measured at most this many times in all, then flagged


@dataclass(frozen=True)
class OpCost:
    forward_ms: float
    backward_ms: float
    update_ms: float = 0.0  # the optimizer update of the op's parameter slice (0 without parameters)
    # The forward where a dense reads the output, which the step then also writes transposed
    # (simulator.calibration_plan.read_transposed); None: as forward_ms.
    forward_read_transposed_ms: float | None = None


@dataclass(frozen=True)
class ProfileEntry:
    """One local op's measured components: forward, backward and, for an op with parameters, the update of
    each calibrated optimizer (name, estimate); `flags`, the checks (problems) it still failed when
    calibration stopped re-measuring it; `measured_at_s`, when it was measured (Unix time; None: unknown);
    `forward_transposed`, the forward that also writes its output transposed, measured for an op a dense
    reads (simulator.calibration_plan.read_transposed; None where not measured)."""

    forward: Estimate
    backward: Estimate
    updates: tuple[tuple[str, Estimate], ...] = ()
    flags: tuple[str, ...] = ()
    measured_at_s: float | None = None
    forward_transposed: Estimate | None = None

    def update(self, optimizer: str) -> Estimate | None:
        return dict(self.updates).get(optimizer)

    def cost(self, optimizer: str) -> OpCost:
        update = self.update(optimizer)
        return OpCost(self.forward.ms, self.backward.ms, update.ms if update else 0.0,
                      self.forward_transposed.ms if self.forward_transposed else None)

    def problems(self, has_params: bool, optimizers: tuple[str, ...]) -> tuple[str, ...]:
        """What makes this entry untrustworthy: a component not above 0 ms, a missing update of an op with
        parameters, an interval wider than MAX_SPREAD."""
        components = [("forward", self.forward), ("backward", self.backward)]
        if self.forward_transposed is not None:
            components.append(("forward transposed", self.forward_transposed))
        if has_params:
            components += [(f"{name} update", self.update(name)) for name in optimizers]
        found = []
        for name, estimate in components:
            if estimate is None:
                found.append(f"{name} not measured")
            elif not estimate.ms > 0:
                found.append(f"{name} {estimate.ms} ms")
            elif estimate.spread > MAX_SPREAD:
                found.append(f"{name} spread +-{estimate.spread:.0%} over {estimate.repeats} samples "
                             f"(limit +-{MAX_SPREAD:.0%})")
        return tuple(found)


def entry_to_json(entry: ProfileEntry) -> dict:
    def timing(estimate: Estimate) -> dict:
        return {"ms": estimate.ms, "spread": estimate.spread, "repeats": estimate.repeats}

    record = {"forward": timing(entry.forward), "backward": timing(entry.backward),
              "update": {name: timing(estimate) for name, estimate in entry.updates}, "flags": list(entry.flags),
              "measured_at": entry.measured_at_s}
    if entry.forward_transposed is not None:
        record["forward_transposed"] = timing(entry.forward_transposed)
    return record


def entry_from_json(record: dict) -> ProfileEntry:
    """The entry of entry_to_json's record; KeyError, TypeError or ValueError if malformed."""
    def timing(fields: dict) -> Estimate:
        return Estimate(float(fields["ms"]), float(fields["spread"]), int(fields["repeats"]))

    return ProfileEntry(timing(record["forward"]), timing(record["backward"]),
                        tuple((str(name), timing(fields)) for name, fields in sorted(record["update"].items())),
                        tuple(str(flag) for flag in record["flags"]),
                        None if record.get("measured_at") is None else float(record["measured_at"]),
                        timing(record["forward_transposed"]) if "forward_transposed" in record else None)


class CostModel(Protocol):
    """May have an `optimizer` attribute: the optimizer whose update `op_cost` prices (`optimizer_of`)."""

    def op_cost(self, op: Op, device_kind: str) -> OpCost:
        """Forward, backward and update time of the local op `op` (a task's computation) on `device_kind`."""


def optimizer_of(cost: CostModel) -> Optimizer:
    """The optimizer a cost model prices updates of (SGD with momentum for one that does not say): the
    simulator keeps its states in memory."""
    return Optimizer(getattr(cost, "optimizer", Optimizer.SGD))


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
    """Measured costs: ProfileEntry values keyed by local op cost_key, for one device kind and JAX version;
    an op's update is that of `optimizer`."""

    device_kind: str
    jax_version: str
    entries: dict
    source: str = "profile"
    optimizer: str = "sgd"

    def op_cost(self, op: Op, device_kind: str) -> OpCost:
        if device_kind != self.device_kind:
            raise ProfileError(f"{self.source} was measured on {self.device_kind!r} but the machine's devices are "
                               f"{device_kind!r}; calibrate on this device kind")
        entry = self.entries.get(op.cost_key)
        if entry is None:
            raise ProfileError(f"{self.source} has no entry for [{op.cost_key}]; calibrate the shard shapes of "
                               f"this model and device count (python -m simulator.calibrate)")
        if op.param_bytes and entry.update(self.optimizer) is None:
            raise ProfileError(f"{self.source} has no {self.optimizer} update for [{op.cost_key}]; calibrate with "
                               f"this optimizer (python -m simulator.calibrate --optimizer {self.optimizer})")
        return entry.cost(self.optimizer)

    def to_json(self) -> str:
        entries = {key: entry_to_json(entry) for key, entry in sorted(self.entries.items())}
        return json.dumps({"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "device_kind": self.device_kind,
                           "jax_version": self.jax_version, "entries": entries}, indent=1)


def profile_from_json(text: str, device_kind: str, jax_version: str, source: str = "profile") -> TableCostModel:
    """Read a measured profile; ProfileError if malformed or for another device kind or JAX version."""
    document = read_document(text, "profile", PROFILE_VERSION, source, ProfileError,
                             "calibration sets it aside and measures again")
    for field, want in (("device_kind", device_kind), ("jax_version", jax_version)):
        if document.get(field) != want:
            raise ProfileError(f"{source} is for {field} {document.get(field)!r}, not {want!r}; "
                               f"calibrate on this machine")
    try:
        entries = {key: entry_from_json(record) for key, record in document["entries"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ProfileError(f"{source} has a malformed entry ({error!r}); calibration sets it aside and "
                           f"measures again")
    return TableCostModel(device_kind, jax_version, entries, source)
