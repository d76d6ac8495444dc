"""Measured step time: `time_steps(lambda: step(...), warmup_steps=2, timed_steps=10).median_ms`.

The first calls compile and warm up (caches, allocator) and are not timed; each timed call is waited
for with `jax.block_until_ready`, so that JAX's asynchronous dispatch cannot hide its work.

Timings are only right on a quiet machine: `with OtherLoad() as load:` measures how many cores other
processes kept busy meanwhile (load.cores), so that calibration and measured runs can say so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from models.errors import SoapError


@dataclass(frozen=True)
class StepTime:
    """Wall time of one training step over `steps` timed steps: median, quartiles and extremes."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    steps: int

    @classmethod
    def of(cls, times_ms: list[float]) -> StepTime:
        q1, median, q3 = np.percentile(times_ms, [25, 50, 75])
        return cls(float(median), float(q1), float(q3), float(min(times_ms)), float(max(times_ms)), len(times_ms))

    def describe(self) -> str:
        return (f"{self.median_ms:.1f} ms (IQR {self.q1_ms:.1f}-{self.q3_ms:.1f}, min {self.min_ms:.1f}, "
                f"max {self.max_ms:.1f}, {self.steps} steps)")


BUSY_CORES = 0.1  # other processes' load above which timings are reported as taken on a busy machine


class OtherLoad:
    """The cores that processes other than this one and its children (waited for) kept busy during the
    `with` block, on average: the machine's busy CPU time (/proc/stat) minus ours (os.times), over the
    wall time. None where /proc/stat is missing. On this 2-core machine a nice-19 process beside two
    pinned calibration workers put some ops 2x over their quiet times (2026-11-30)."""

    cores: float | None = None

    def __enter__(self) -> OtherLoad:
        self._start = (_machine_busy_s(), _own_busy_s(), time.perf_counter())
        return self

    def __exit__(self, *exc_info) -> None:
        machine_s, own_s, wall_s = (_machine_busy_s(), _own_busy_s(), time.perf_counter())
        if machine_s is not None and self._start[0] is not None and wall_s > self._start[2]:
            other_s = (machine_s - self._start[0]) - (own_s - self._start[1])
            self.cores = max(other_s, 0.0) / (wall_s - self._start[2])

    def busy_note(self, what: str) -> str | None:
        """A line saying `what` ran on a busy machine, or None if it was quiet (or cannot be told)."""
        if self.cores is None or self.cores <= BUSY_CORES:
            return None
        return (f"note: other processes kept {self.cores:.1f} cores busy during {what}; its timings may be far "
                f"off (up to 2x): stop them and measure again")


def _machine_busy_s() -> float | None:
    """CPU seconds every core spent busy since boot: /proc/stat's first line, less idle and iowait."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_busy_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def time_steps(step: Callable[[], Any], warmup_steps: int = 2, timed_steps: int = 10,
               keep_outputs: bool = False) -> StepTime:
    """Time `step()` (which runs one training step and returns its outputs) after `warmup_steps` calls.

    `keep_outputs` holds every timed call's outputs until the timing ends, so that each call writes into
    fresh memory, as an op inside a training step does (its output is kept for the backward): XLA:CPU
    reuses a freed buffer at once, and a 16.8 MB element-wise op took 1.4 ms that way against 8.5 ms
    writing fresh memory (one core, 2026-11-30)."""
    if warmup_steps < 1 or timed_steps < 1:
        raise SoapError(f"timing needs warmup_steps >= 1 (the first step compiles) and timed_steps >= 1, got "
                        f"{warmup_steps} and {timed_steps}; pass positive counts")
    for _ in range(warmup_steps):
        jax.block_until_ready(step())
    times_ms, kept = [], []
    for _ in range(timed_steps):
        start = time.perf_counter()
        outputs = jax.block_until_ready(step())
        times_ms.append((time.perf_counter() - start) * 1e3)
        if keep_outputs:
            kept.append(outputs)
    return StepTime.of(times_ms)
