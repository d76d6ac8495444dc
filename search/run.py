"""Run strategies for real on the devices at hand and measure their step times.

    python -m search.optimize --model alexnet --gpus 2          # fills the table's measured column

Without GPUs the devices at hand are a local cluster of pinned worker processes (soap.devices); each
strategy runs in its own cluster job, so that one strategy that cannot run is marked with its reason
(a worker's error line) while the others run; the command then exits non-zero. With
GPUs (JAX's backend is not the CPU) this process drives the first N devices (soap.runner).

Other work on the machine slows a whole run, not single steps: on this 2-core machine, the same data
parallel strategy ran at 469-538 ms a step in quiet runs and at 700-750 ms in runs beside another busy
process (benchmarks.op_breakdown showed every op of such a run 30-70% slower). So each strategy runs
`rounds` times, the rounds interleaved over the strategies, and the run with the fastest median step
counts; the slowest run's median is kept beside it, to show how noisy the machine was.
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple

from models.errors import SoapError
from models.graph import OpGraph
from soap.devices import ClusterJob, run_on_cluster
from soap.optimizer import Optimizer
from soap.runner import InitialValues, RunConfig
from soap.strategy import Strategy
from soap.timing import OtherLoad


WARMUP_STEPS = 2  # compiled and run before the timed steps of each measured run


class Measured(NamedTuple):
    """One strategy's measured step: the fastest run's median (ms) and how it varied, or why not run; and
    the loss of its first step (on the initial parameters and the first batch)."""

    step_ms: float | None
    note: str
    first_step_loss: float | None = None


def measure_strategies(graph: OpGraph, strategies: dict[str, Strategy], num_devices: int, timed_steps: int,
                       rounds: int = 1, initial: InitialValues | None = None,
                       optimizer: Optimizer = Optimizer.SGD) -> dict[str, Measured]:
    """Each strategy run for real `rounds` times (interleaved) with `optimizer`: on a local cluster of
    pinned workers, or on this process's first `num_devices` devices when they are not CPUs; from `initial`
    (a user's module's own parameters and state) where given, else from the graph's seeded ones."""
    import jax

    run = _run_here if jax.default_backend() != "cpu" else _run_on_cluster
    runs: dict[str, list] = {name: [] for name in strategies}
    failed: dict[str, str] = {}
    took_s: dict[str, float] = {}  # each strategy's last run, compilation included: what its next one takes
    total = rounds * len(strategies)
    with OtherLoad() as load:
        for round_number in range(rounds):
            for position, (name, strategy) in enumerate(strategies.items()):
                if name in failed:
                    continue
                done = round_number * len(strategies) + position
                print(f"running {name} on {num_devices} local devices (run {done + 1} of {total}, round "
                      f"{round_number + 1} of {rounds}){_time_left(took_s, strategies, failed, rounds, done)} ...",
                      file=sys.stderr, flush=True)
                began = time.perf_counter()
                try:
                    runs[name].append(run(graph, strategy, num_devices,
                                          RunConfig(warmup_steps=WARMUP_STEPS, timed_steps=timed_steps,
                                                    optimizer=optimizer.value), initial))
                except SoapError as error:
                    failed[name] = f"not run: {error}"
                took_s[name] = time.perf_counter() - began
    if note := load.busy_note("the measured runs"):
        print(note, file=sys.stderr, flush=True)
    return {name: Measured(None, failed[name]) if name in failed else _fastest(runs[name]) for name in strategies}


def _time_left(took_s: dict[str, float], strategies: dict, failed: dict, rounds: int, done: int) -> str:
    """"; about N s left" for the runs from number `done` on, each priced at its strategy's last run (one not
    run yet at the mean of those that have); "" before any run has ended."""
    if not took_s:
        return ""
    mean_s = sum(took_s.values()) / len(took_s)
    names = [name for _ in range(rounds) for name in strategies][done:]
    left_s = sum(took_s.get(name, mean_s) for name in names if name not in failed)
    return f"; about {left_s / 60:.0f} min left" if left_s >= 90 else f"; about {left_s:.0f} s left"


def _run_on_cluster(graph: OpGraph, strategy: Strategy, num_devices: int, config: RunConfig,
                    initial: InitialValues | None):
    report = run_on_cluster(ClusterJob.for_strategies(graph, [strategy], config, initial), num_devices, timeout_s=900)
    return report.results[0].step_time, report.warning, report.results[0].losses[0]


def _run_here(graph: OpGraph, strategy: Strategy, num_devices: int, config: RunConfig,
              initial: InitialValues | None):
    import jax

    from soap.runner import run_strategy

    if jax.device_count() < num_devices:
        raise SoapError(f"the strategy is for {num_devices} devices but this process has {jax.device_count()}")
    try:
        result = run_strategy(graph, strategy, config, jax.devices()[:num_devices], initial)
        return result.step_time, None, result.losses[0]
    except jax.errors.JaxRuntimeError as error:  # e.g. out of memory: marked, the others run; a bug raises
        raise SoapError(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from error


def _fastest(runs: list) -> Measured:
    (best, warning, loss), slowest = min(runs, key=lambda run: run[0].median_ms), max(run[0].median_ms for run in runs)
    note = f"IQR {best.q1_ms:.0f}-{best.q3_ms:.0f} ms"
    if len(runs) > 1:
        note += f", slowest of {len(runs)} runs {slowest:.0f} ms"
    return Measured(best.median_ms, note + (f"; {warning}" if warning else ""), loss)
