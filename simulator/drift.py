"""Drift caught before a measured comparison: sentinel ops and one link point timed again against the profile.

    python -m search.optimize --model alexnet --gpus 2              # checks before running the strategies
    python -m benchmarks.accuracy --gpus 2 --recalibrate            # measures every op and link again instead

A profile is only as good as the machine's speed when it was measured, and this shared machine's speed
drifts (a plain-JAX AlexNet step went from 615 to 831 ms in one afternoon; an hour-old profile priced every
2-worker strategy 25-40% under its measured step). So before a measured run, calibrated_for_run re-times
on the devices calibration used (the same worker job, the same timing policy):
- sentinels: the LARGEST_SENTINELS local ops of the graph with the largest forward + backward + update in
  the profile, which carry most of a step's time, so their drift is the step's; plus the op at the median,
  a small one, whose time is dominated by per-call overhead and memory rather than arithmetic, which
  drift differently from a large op's compute;
- one link point: an all-reduce of LINK_PROBE_BYTES on every device, against the price the simulator gives
  it (the machine's measured all-reduce curve), on more than one device.
Drift is fresh / profile - 1. When the largest |drift| of the sentinels exceeds DRIFT_LIMIT, every op of
the graph is measured again, not only the sentinels: the drift seen here is the whole machine's (other
load, clock, memory), so a sentinel is a sample of what moved, and a profile of old and new speeds mixed
would misprice the strategies against each other; it costs one calibration of the graph (about 3 minutes
for ResNet-18 on 2 cores), against about half a minute for the check. Likewise the links when the link point
drifted. The check, with the profile's age (the oldest measured_at of the graph's entries), goes in
report.json and one line is said. A preset or file machine is never checked (nothing was measured here),
nor a profile and links that this run's calibration has just measured (from an empty cache: nothing to
drift from yet).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.graph import OpGraph
from models.graph_file import graph_to_json
from models.op import Op
from simulator.calibrate import (DEFAULT_CACHE, CachePaths, calibrate, measures_in_process, read_ops_log,
                                 run_calibration_job)
from simulator.calibration_plan import needed_local_ops
from simulator.cost import ProfileEntry, TableCostModel
from simulator.machine import Machine

DRIFT_LIMIT = 0.10  # the simulator's accuracy target: a profile off by more misleads the comparison
LARGEST_SENTINELS = 4
LINK_PROBE_BYTES = 4 * 2**20  # mid-range: a step moves mostly 0.1 - 16 MB (simulator.machine.Link)


@dataclass(frozen=True)
class Sentinel:
    """One op's forward + backward + update: as the profile has it, and timed now."""

    key: str  # the local op's cost key
    profile_ms: float
    fresh_ms: float

    @property
    def drift(self) -> float:
        return self.fresh_ms / self.profile_ms - 1


@dataclass(frozen=True)
class LinkPoint:
    """An all-reduce of `num_bytes` on every device: as the machine prices it, and timed now."""

    num_bytes: int
    priced_ms: float
    fresh_ms: float

    @property
    def drift(self) -> float:
        return self.fresh_ms / self.priced_ms - 1


@dataclass(frozen=True)
class Probe:
    """What the devices measured now: the sentinels' entries by cost key, the link point's time."""

    entries: dict[str, ProfileEntry]
    allreduce_ms: float | None


# probe(graph, num_devices, sentinel ops, link point bytes or None, optimizer) -> Probe
ProbeFn = Callable[[OpGraph, int, list[Op], int | None, str], Probe]


@dataclass(frozen=True)
class DriftCheck:
    """The check before a measured run: the sentinels, the link point (None on one device), the age of the
    profile checked (None: an entry without measured_at), and what was measured again because of it;
    `recalibrated` when --recalibrate measured everything instead of checking; `fresh` when this run's
    calibration had just measured everything (nothing to drift from: no check)."""

    sentinels: tuple[Sentinel, ...]
    link: LinkPoint | None
    profile_age_s: float | None
    recalibrated: bool = False
    fresh: bool = False

    @property
    def ops_drift(self) -> float:
        """The sentinels' drift weighted by their times (their sum now against the profile's): what a step
        made of them would be off by. One small op off by a fifth on a busy machine (a 2.3 ms op +22%
        three minutes after calibration, while its large neighbours moved 1-15%) is not a slower machine."""
        return sum(s.fresh_ms for s in self.sentinels) / sum(s.profile_ms for s in self.sentinels) - 1

    @property
    def ops_drifted(self) -> bool:
        return bool(self.sentinels) and abs(self.ops_drift) > DRIFT_LIMIT

    @property
    def link_drifted(self) -> bool:
        return self.link is not None and abs(self.link.drift) > DRIFT_LIMIT

    @property
    def remeasured(self) -> tuple[str, ...]:
        if self.recalibrated:
            return ("ops", "links")
        return (("ops",) if self.ops_drifted else ()) + (("links",) if self.link_drifted else ())

    def line(self) -> str:
        """One line for the user, e.g. "profile 2 h old; sentinels drifted -3% to +6%, link +2%: within 10%, kept"."""
        if self.recalibrated:
            return "--recalibrate: every op shape of the model and the links measured again"
        if self.fresh:
            return "profile and links measured just now: no drift check"
        drifts = [s.drift for s in self.sentinels]
        link = f", link {self.link.drift:+.0%}" if self.link else ""
        found = (f"{_age_text(self.profile_age_s)}; sentinels drifted {min(drifts):+.0%} to {max(drifts):+.0%} "
                 f"({self.ops_drift:+.0%} weighted by time){link}")
        if not self.remeasured:
            return f"{found}: within {DRIFT_LIMIT:.0%}, kept"
        return f"{found}: beyond {DRIFT_LIMIT:.0%}, measuring the {' and the '.join(self.remeasured)} again"

    def to_json(self) -> dict:
        return {"profile_age_s": self.profile_age_s, "recalibrated": self.recalibrated, "fresh": self.fresh,
                "limit": DRIFT_LIMIT,
                "ops_drift": self.ops_drift if self.sentinels else None,
                "sentinels": [{"key": s.key, "profile_ms": s.profile_ms, "fresh_ms": s.fresh_ms, "drift": s.drift}
                              for s in self.sentinels],
                "link": None if self.link is None else {
                    "num_bytes": self.link.num_bytes, "priced_ms": self.link.priced_ms, "fresh_ms": self.link.fresh_ms,
                    "drift": self.link.drift},
                "remeasured": list(self.remeasured)}


def _age_text(age_s: float | None) -> str:
    if age_s is None:
        return "profile of unknown age (entries written before profiles recorded measured_at)"
    for unit_s, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if age_s >= unit_s:
            return f"profile {age_s / unit_s:.0f} {unit} old"
    return f"profile {age_s:.0f} s old"


def _step_share_ms(entry: ProfileEntry, optimizer: str) -> float:
    cost = entry.cost(optimizer)
    return cost.forward_ms + cost.backward_ms + cost.update_ms


def sentinel_ops(graph: OpGraph, num_devices: int, profile: TableCostModel) -> list[Op]:
    """The LARGEST_SENTINELS ops with the largest step share in the profile, then the median op (module
    docstring)."""
    ops = sorted(needed_local_ops(graph, num_devices),
                 key=lambda op: _step_share_ms(profile.entries[op.cost_key], profile.optimizer), reverse=True)
    chosen = ops[:LARGEST_SENTINELS]
    median = ops[len(ops) // 2]
    return chosen + ([median] if median not in chosen else [])


def profile_age_s(graph: OpGraph, num_devices: int, profile: TableCostModel, now_s: float) -> float | None:
    """Seconds since the oldest of the graph's entries was measured; None if one has no measured_at."""
    stamps = [profile.entries[op.cost_key].measured_at_s for op in needed_local_ops(graph, num_devices)]
    return None if None in stamps else now_s - min(stamps)


def check_drift(graph: OpGraph, num_devices: int, machine: Machine, profile: TableCostModel, probe: ProbeFn,
                now_s: float) -> DriftCheck:
    """The sentinels and the link point timed now by `probe`, against `profile` and `machine`."""
    ops = sentinel_ops(graph, num_devices, profile)
    link_bytes = LINK_PROBE_BYTES if machine.allreduce is not None else None
    fresh = probe(graph, num_devices, ops, link_bytes, profile.optimizer)
    sentinels = tuple(Sentinel(op.cost_key, _step_share_ms(profile.entries[op.cost_key], profile.optimizer),
                               _step_share_ms(fresh.entries[op.cost_key], profile.optimizer)) for op in ops)
    link = None
    if link_bytes is not None:
        ring_bytes = 2 * (num_devices - 1) / num_devices * link_bytes  # as simulator.taskgraph prices it
        link = LinkPoint(link_bytes, machine.allreduce.transfer_ms(ring_bytes), fresh.allreduce_ms)
    return DriftCheck(sentinels, link, profile_age_s(graph, num_devices, profile, now_s))


def probe_devices(graph: OpGraph, num_devices: int, ops: list[Op], link_bytes: int | None, optimizer: str,
                  say=print, timeout_s: float = 3600) -> Probe:
    """`ops` and the link point timed as calibration times them: the same worker job (every worker times
    the ops at once), the same timing policy (simulator.measure)."""
    keys = {op.cost_key for op in ops}
    skip = sorted(op.cost_key for op in needed_local_ops(graph, num_devices) if op.cost_key not in keys)
    job = {"graph": graph_to_json(graph), "num_devices": num_devices, "skip": skip, "optimizers": [optimizer],
           "ops": True, "links": False, "link_probe_bytes": link_bytes}

    def read(folder: Path) -> Probe:
        point = folder / "link_probe.json"
        return Probe(read_ops_log(folder), json.loads(point.read_text())["allreduce_ms"] if point.exists() else None)

    probe, _ = run_calibration_job(job, read, timeout_s, measures_in_process(), say, what="the drift check")
    return probe


@dataclass(frozen=True)
class Calibration:
    """The machine and profile a measured run is simulated with, and the check that let them through."""

    machine: Machine
    profile: TableCostModel
    check: DriftCheck


def calibrated_for_run(graph: OpGraph, num_devices: int, recalibrate: bool = False, say=print,
                       cache_dir: Path = DEFAULT_CACHE, calibrate=calibrate, probe: ProbeFn | None = None,
                       now_s: Callable[[], float] = time.time, optimizer: str = "sgd") -> Calibration:
    """The `local` machine and profile for a measured run: calibrated (or loaded), checked for drift, and
    measured again where they drifted; with `recalibrate`, measured again whole, unchecked. `calibrate` and
    `probe` (default: probe_devices) are simulator.calibrate.calibrate's and the devices' unless injected;
    `optimizer` the update the profile prices."""
    probe = probe or (lambda *args: probe_devices(*args, say=say))
    started_s = now_s()
    if recalibrate:
        say(DriftCheck((), None, None, recalibrated=True).line())
        machine, profile = calibrate(graph, num_devices, cache_dir, say=say, remeasure_ops=True, remeasure_links=True,
                                     optimizer=optimizer)
        return Calibration(machine, profile, DriftCheck((), None, profile_age_s(graph, num_devices, profile, now_s()),
                                                        recalibrated=True))
    machine, profile = calibrate(graph, num_devices, cache_dir, say=say, optimizer=optimizer)
    if _measured_since(graph, num_devices, profile, cache_dir, started_s):
        check = DriftCheck((), None, profile_age_s(graph, num_devices, profile, now_s()), fresh=True)
        say(check.line())
        return Calibration(machine, profile, check)
    check = check_drift(graph, num_devices, machine, profile, probe, now_s())
    say(check.line())
    if check.remeasured:
        machine, profile = calibrate(graph, num_devices, cache_dir, say=say, optimizer=optimizer,
                                     remeasure_ops=check.ops_drifted, remeasure_links=check.link_drifted)
    return Calibration(machine, profile, check)


def _measured_since(graph: OpGraph, num_devices: int, profile: TableCostModel, cache_dir: Path,
                    started_s: float) -> bool:
    """Whether every entry of the graph, and the links on more than one device, were measured after
    `started_s` (by the calibration of this run): a profile seconds old has nothing to drift from, and
    checking it only times noise (the check found a 1-minute-old profile off by 16% on a quiet machine and
    measured it again, 2026-12-07)."""
    stamps = [profile.entries[op.cost_key].measured_at_s for op in needed_local_ops(graph, num_devices)]
    if None in stamps or min(stamps) < started_s:
        return False
    if num_devices == 1:
        return True
    links = CachePaths.of(cache_dir, profile.device_kind, profile.jax_version, num_devices).machine
    return links.exists() and links.stat().st_mtime >= started_s

