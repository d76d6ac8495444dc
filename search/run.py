"""Run strategies for real on the devices at hand and measure their step times.

    python -m search.optimize --model alexnet --gpus 2          # fills the table's measured column

Without GPUs the devices at hand are a local cluster of pinned worker processes (soap.devices); each
strategy runs in its own cluster job, so that one strategy that cannot run is marked, not fatal.
"""

from __future__ import annotations

import sys

from models.errors import SoapError
from models.graph import OpGraph
from soap.devices import ClusterJob, run_on_cluster
from soap.runner import RunConfig
from soap.strategy import Strategy


def measure_strategies(graph: OpGraph, strategies: dict[str, Strategy], num_devices: int,
                       timed_steps: int) -> dict[str, tuple[float | None, str]]:
    """Each strategy run for real on a local cluster of pinned workers: (median step ms, note)."""
    measured = {}
    for name, strategy in strategies.items():
        print(f"running {name} on {num_devices} local workers ...", file=sys.stderr, flush=True)
        job = ClusterJob.for_strategies(graph, [strategy], RunConfig(warmup_steps=2, timed_steps=timed_steps))
        try:
            report = run_on_cluster(job, num_devices, timeout_s=900)
        except SoapError as error:
            measured[name] = (None, f"not run: {error}")
            continue
        step = report.results[0].step_time
        note = f"IQR {step.q1_ms:.0f}-{step.q3_ms:.0f} ms" + (f"; {report.warning}" if report.warning else "")
        measured[name] = (step.median_ms, note)
    return measured
