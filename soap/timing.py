"""Measured step time: `time_steps(lambda: step(...), warmup_steps=2, timed_steps=10).median_ms`.

The first calls compile and warm up (caches, allocator) and are not timed; each timed call is waited
for with `jax.block_until_ready`, so that JAX's asynchronous dispatch cannot hide its work.
"""

from __future__ import annotations

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
