"""Measured time of a call: a fixed count for whole steps, repeats until stable for calibration.

    time_steps(lambda: step(...), warmup_steps=2, timed_steps=10).median_ms     # a strategy's measured step
    time_until_stable(lambda: op(...)).ms                                       # one op's calibrated cost

The first calls compile and warm up (caches, allocator) and are not timed; each timed call is waited
for with `jax.block_until_ready`, so that JAX's asynchronous dispatch cannot hide its work.

Timings are only right on a quiet machine: `with OtherLoad() as load:` measures how many cores other
processes kept busy meanwhile (load.cores), so that calibration and measured runs can say so.
"""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class TimingPolicy:
    """When calibration stops repeating a call: once the confidence interval of the chosen statistic is
    within `tolerance` of it (relative half-width), after `min_repeats` samples; or at `max_repeats`
    samples, or after `max_s` seconds of samples (the cap per call on a noisy machine: a 100 ms op
    takes 5-10 samples), whichever is first.

    The statistic is the `quantile` of the samples: the first quartile, which predicted a whole step best.
    Measured on one pinned core (2026-12-07, AlexNet tiny-imagenet batch 128): each local op of the
    single-device step timed 15 times per component (simulator.measure's programs), the statistic summed
    over every component of every op, against the median of 10 measured steps, two rounds:
        statistic     sum of ops (ms)    step (ms)    off by
        minimum       436.9 / 440.8      452.3 / 438.0   -3.4% / +0.6%
        first quartile 451.6 / 449.2                     -0.2% / +2.6%
        median        478.4 / 455.6                      +5.8% / +4.0%
    (The median carries each op's share of the machine's noise into the sum; the minimum, each op's
    luckiest call.)
    A sample lasts at least `min_sample_ms`: a call shorter than that is repeated inside the sample
    (2, 4, ... calls, their mean), so that a coarse clock never makes a positive cost read 0."""

    quantile: float = 0.25
    tolerance: float = 0.03
    min_repeats: int = 5
    max_repeats: int = 40
    max_s: float = 1.0
    warmup: int = 2
    min_sample_ms: float = 1.0

    def __post_init__(self) -> None:
        if not (0 <= self.quantile <= 0.5 and self.tolerance > 0 and 3 <= self.min_repeats <= self.max_repeats
                and self.max_s > 0 and self.warmup >= 1 and self.min_sample_ms > 0):
            raise SoapError(f"timing policy {self} is invalid: needs 0 <= quantile <= 0.5, tolerance > 0, "
                            f"3 <= min_repeats <= max_repeats, max_s > 0, warmup >= 1, min_sample_ms > 0")


@dataclass(frozen=True)
class Estimate:
    """A calibrated time: the policy's statistic of `repeats` samples, and `spread`, the half-width of its
    ~95% confidence interval relative to it (0.03: the true value within +-3%, if the machine held still)."""

    ms: float
    spread: float
    repeats: int

    @classmethod
    def of(cls, samples_ms: list[float], quantile: float) -> Estimate:
        """The `quantile` of the samples, its interval between the order statistics whose ranks a binomial
        (normal approximation, z = 1.96) gives: distribution-free, as the noise of a shared machine is
        (long tails, never below the true time)."""
        ordered = sorted(samples_ms)
        n = len(ordered)
        value = float(np.quantile(ordered, quantile))
        half_ranks = 1.96 * math.sqrt(n * quantile * (1 - quantile))
        low = ordered[max(math.floor(n * quantile - half_ranks), 0)]
        high = ordered[min(math.ceil(n * quantile + half_ranks), n - 1)]
        spread = (high - low) / (2 * value) if value > 0 else math.inf
        return cls(value, spread, n)


MAX_CALLS_PER_SAMPLE = 2**20  # a call this short (or a clock this coarse) is beyond timing


def time_until_stable(call: Callable[[], Any], policy: TimingPolicy = TimingPolicy(), keep_outputs: bool = False,
                      clock: Callable[[], float] = time.perf_counter) -> Estimate:
    """The time of `call()` (waited for) under `policy`; `clock` returns seconds (injectable for tests).

    `keep_outputs` as in time_steps: every timed call writes fresh memory."""
    for _ in range(policy.warmup):
        jax.block_until_ready(call())
    samples_ms, kept, calls = [], [], 1
    started = clock()
    while True:
        sample_start = clock()
        for _ in range(calls):
            outputs = jax.block_until_ready(call())
            if keep_outputs:
                kept.append(outputs)
        sample_ms = (clock() - sample_start) * 1e3
        if not samples_ms and sample_ms < policy.min_sample_ms and calls < MAX_CALLS_PER_SAMPLE:
            calls *= 2  # too short to time well: each sample is the mean of more calls
            continue
        samples_ms.append(sample_ms / calls)
        estimate = Estimate.of(samples_ms, policy.quantile)
        enough = estimate.repeats >= policy.min_repeats and (
            estimate.spread <= policy.tolerance or clock() - started >= policy.max_s)
        if enough or estimate.repeats >= policy.max_repeats:
            return estimate
