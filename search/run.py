"""Run strategies for real on the devices at hand and measure their step times.

    python -m search.optimize --model alexnet --gpus 2          # fills the table's measured column

Without GPUs the devices at hand are a local cluster of pinned worker processes (soap.devices); each
strategy runs in its own cluster job, so that one strategy that cannot run is marked, not fatal.

Other work on the machine slows a whole run, not single steps: on this 2-core machine, the same data
parallel strategy ran at 469-538 ms a step in quiet runs and at 700-750 ms in runs beside another busy
process (benchmarks.op_breakdown showed every op of such a run 30-70% slower). So each strategy runs
`rounds` times, the rounds interleaved over the strategies, and the run with the fastest median step
counts; the slowest run's median is kept beside it, to show how noisy the machine was.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

from models.errors import SoapError
from models.graph import OpGraph
from soap.devices import ClusterJob, run_on_cluster
from soap.runner import RunConfig
from soap.strategy import Strategy


class Measured(NamedTuple):
    """One strategy's measured step: the fastest run's median (ms) and how it varied, or why not run."""

    step_ms: float | None
    note: str


def measure_strategies(graph: OpGraph, strategies: dict[str, Strategy], num_devices: int, timed_steps: int,
                       rounds: int = 1) -> dict[str, Measured]:
    """Each strategy run for real `rounds` times on a local cluster of pinned workers (interleaved)."""
    runs: dict[str, list] = {name: [] for name in strategies}
    failed: dict[str, str] = {}
    for round_number in range(rounds):
        for name, strategy in strategies.items():
            if name in failed:
                continue
            print(f"running {name} on {num_devices} local workers (round {round_number + 1} of {rounds}) ...",
                  file=sys.stderr, flush=True)
            job = ClusterJob.for_strategies(graph, [strategy], RunConfig(warmup_steps=2, timed_steps=timed_steps))
            try:
                report = run_on_cluster(job, num_devices, timeout_s=900)
            except SoapError as error:
                failed[name] = f"not run: {error}"
                continue
            runs[name].append((report.results[0].step_time, report.warning))
    return {name: Measured(None, failed[name]) if name in failed else _fastest(runs[name]) for name in strategies}


def _fastest(runs: list) -> Measured:
    (best, warning), slowest = min(runs, key=lambda run: run[0].median_ms), max(run[0].median_ms for run in runs)
    note = f"IQR {best.q1_ms:.0f}-{best.q3_ms:.0f} ms"
    if len(runs) > 1:
        note += f", slowest of {len(runs)} runs {slowest:.0f} ms"
    return Measured(best.median_ms, note + (f"; {warning}" if warning else ""))
