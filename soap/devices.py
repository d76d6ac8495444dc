"""A local cluster: N worker processes, each pinned to its own core, joined by jax.distributed with gloo.

    report = run_on_cluster(ClusterJob.for_strategies(graph, [owt(graph, 2)], RunConfig(timed_steps=10)), 2)
    report.results[0].step_time.median_ms, report.warning

Without GPUs, N CPU devices in one process share the cores and cannot run in parallel; N processes
pinned to N cores can (the honest CPU testbed), and the same code is the multi-host path of a real
cluster. Each worker (`python -m soap.worker`) has one CPU device; strategy device id i is process i's
device, and the stages of a multi-stage strategy pass activations between processes with
soap.transfer (a small ppermute program over gloo). The parent writes the job into a temporary
folder, starts the workers (each in its own process group), waits for all of them, and reads process
0's results back. A worker that fails, dies or hangs ends the whole run with a ClusterError within
`timeout_s`, and every worker's process group is killed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import SoapError
from models.graph import OpGraph
from models.graph_file import graph_to_json
from soap.runner import InitialValues, RunConfig, RunResult
from soap.timing import StepTime
from soap.strategy import Strategy, strategy_to_json

_POLL_S = 0.05
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


class ClusterError(SoapError):
    """A local cluster that could not start, or a worker that failed, died or hung."""


# Beside job.json: a job's initial parameters and state, where it carries them.
INITIAL_FILES = {"params": "initial_params.npz", "model_state": "initial_state.npz"}


@dataclass(frozen=True)
class ClusterJob:
    """What every worker runs: the graph (models.graph_file JSON: the workers rebuild exactly the parent's
    graph, a zoo model or not), strategies (as strategy JSON) and how to run them; and, for a user's
    imported model, the module's own initial parameters and state (`initial`), which travel as
    INITIAL_FILES beside job.json (`files()`) rather than inside the JSON."""

    graph: str
    strategies: tuple[str, ...]
    run: RunConfig
    initial: InitialValues | None = None

    @classmethod
    def for_strategies(cls, graph: OpGraph, strategies: Sequence[Strategy], run: RunConfig,
                       initial: InitialValues | None = None) -> ClusterJob:
        texts = tuple(strategy_to_json(strategy, graph) for strategy in strategies)
        return cls(graph_to_json(graph), texts, run, initial)

    def to_json(self) -> str:
        return json.dumps({"graph": self.graph, "strategies": list(self.strategies),
                           "run": dataclasses.asdict(self.run), "initial": INITIAL_FILES if self.initial else None})

    def files(self) -> dict[str, bytes]:
        """The files the workers read beside job.json: the initial values, if the job carries them."""
        if self.initial is None:
            return {}
        return {name: _npz_bytes(getattr(self.initial, field)) for field, name in INITIAL_FILES.items()}

    @classmethod
    def from_json(cls, text: str, folder: Path | None = None) -> ClusterJob:
        """The job of job.json; its initial values are read from `folder` (the job folder) if it names them."""
        document = json.loads(text)
        initial = None
        if document.get("initial"):
            assert folder is not None, "a job carrying initial values is read from its folder"
            initial = InitialValues(**{field: _read_arrays(folder / name) for field, name in document["initial"].items()})
        return cls(document["graph"], tuple(document["strategies"]), RunConfig(**document["run"]), initial)


def _npz_bytes(tree: dict[str, dict[str, np.ndarray]]) -> bytes:
    """The npz file `_write_arrays` writes, as bytes."""
    buffer = io.BytesIO()
    _write_arrays(buffer, tree)
    return buffer.getvalue()


@dataclass(frozen=True)
class CorePlan:
    """The core each worker is pinned to (None: not pinned), and why not, when the cores are too few."""

    cores: tuple[int | None, ...]
    warning: str | None


def plan_cores(num_workers: int, available: Sequence[int] | None = None) -> CorePlan:
    cores = sorted(os.sched_getaffinity(0) if available is None else available)
    if num_workers <= len(cores):
        return CorePlan(tuple(cores[:num_workers]), None)
    warning = (f"{num_workers} workers share {len(cores)} cores, so they are not pinned and cannot all run at "
               f"once: measured step times are not those of {num_workers} parallel devices; use at most "
               f"{len(cores)} workers here")
    return CorePlan((None,) * num_workers, warning)


@dataclass(frozen=True)
class ClusterReport:
    results: tuple[RunResult, ...]  # one per strategy of the job, as process 0 measured it
    warning: str | None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker_env() -> dict[str, str]:
    """The parent's environment with one CPU device per worker (a forced device count is dropped)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SOURCE_ROOT), env.get("PYTHONPATH")) if p)
    return env


def _error_line(log: str) -> str | None:
    """The line of a worker's log that says what went wrong: its one-line SoapError, else the exception."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"(error: |[\w.]+(Error|Exception)\b)", line):
            return line
    return lines[-1] if lines else None


def write_job_folder(folder: Path, job_json: str, coordinator: str, cores: Sequence[int | None],
                     files: Mapping[str, bytes] | None = None) -> None:
    """What every worker reads (soap.join): FOLDER/cluster.json (the coordinator's host:port, the worker
    count, each worker's core or None), FOLDER/job.json and the job's other `files` (name -> bytes)."""
    (folder / "job.json").write_text(job_json)
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
    spec = {"coordinator": coordinator, "num_workers": len(cores), "cores": list(cores)}
    (folder / "cluster.json").write_text(json.dumps(spec))


class ClusterRun:
    """Running workers: `result()` waits for them; any failure kills them all and raises ClusterError.

    Each worker runs `python -m WORKER_MODULE FOLDER PROCESS_ID` (soap.worker runs strategies; the
    simulator's calibration has its own), joins with soap.join.join_cluster, reads the job, and as
    process 0 leaves its results in FOLDER, which `read_results(folder)` turns into the result.
    """

    def __init__(self, job_json: str, num_workers: int, read_results: Callable[[Path], Any],
                 worker_module: str = "soap.worker", files: Mapping[str, bytes] | None = None):
        if num_workers < 1:
            raise ClusterError(f"a cluster needs at least 1 worker, got {num_workers}")
        self.plan = plan_cores(num_workers)
        self.folder = Path(tempfile.mkdtemp(prefix="soap-cluster-"))
        write_job_folder(self.folder, job_json, f"127.0.0.1:{_free_port()}", self.plan.cores, files)
        self.worker_module = worker_module
        self.read_results = read_results
        self.workers = [self._start(i) for i in range(num_workers)]

    def _start(self, process_id: int) -> subprocess.Popen:
        log = open(self.folder / f"worker{process_id}.log", "wb")
        with log:
            # A session of its own makes the worker a process group that can be killed as a whole.
            return subprocess.Popen([sys.executable, "-m", self.worker_module, str(self.folder), str(process_id)],
                                    stdout=log, stderr=subprocess.STDOUT, env=_worker_env(), start_new_session=True)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(worker.pid for worker in self.workers)

    def kill(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                try:
                    os.killpg(worker.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            worker.wait()

    def result(self, timeout_s: float, on_poll: Callable[[Path], None] | None = None) -> ClusterReport:
        """Wait for the workers; `on_poll(folder)` runs at every poll (e.g. to show a worker's progress)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if on_poll is not None:
                on_poll(self.folder)
            codes = [worker.poll() for worker in self.workers]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                self.kill()
                raise ClusterError(self._failure(failed[0], codes[failed[0]]))
            if all(code == 0 for code in codes):
                report = ClusterReport(self.read_results(self.folder), self.plan.warning)
                shutil.rmtree(self.folder)
                return report
            time.sleep(_POLL_S)
        running = [i for i, worker in enumerate(self.workers) if worker.poll() is None]
        self.kill()
        raise ClusterError(f"the cluster did not finish within {timeout_s:g} s (workers {running} still running, "
                           f"now killed); raise timeout_s or read the logs in {self.folder}")

    def _failure(self, process_id: int, code: int) -> str:
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        log = (self.folder / f"worker{process_id}.log").read_text(errors="replace")
        last = f": {line}" if (line := _error_line(log)) else ""
        return (f"worker {process_id} of {len(self.workers)} {how}{last} (all workers killed; log: "
                f"{self.folder / f'worker{process_id}.log'})")



def read_run_results(folder: Path, num_strategies: int) -> tuple[RunResult, ...]:
    """What soap.worker's process 0 wrote (`write_results`): one RunResult per strategy of the job."""
    document = json.loads((folder / "results.json").read_text())
    results = []
    for k, entry in enumerate(document["results"]):
        params = _read_arrays(folder / f"params{k}.npz") if entry["has_params"] else None
        model_state = _read_arrays(folder / f"state{k}.npz") if entry["has_params"] else None
        step_time = StepTime(**entry["step_time"]) if entry["step_time"] else None
        results.append(RunResult(tuple(entry["losses"]), params, model_state, step_time, entry["num_stages"]))
    assert len(results) == num_strategies, (len(results), num_strategies)
    return tuple(results)


def _read_arrays(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """op name -> {array name -> array}, from an npz whose keys are "op/name"."""
    tree: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as arrays:
        for key in arrays.files:
            op, name = key.rsplit("/", 1)
            tree.setdefault(op, {})[name] = arrays[key]
    return tree


def _write_arrays(path: Path | io.BytesIO, tree: dict[str, dict[str, np.ndarray]]) -> None:
    np.savez(path, **{f"{op}/{name}": value for op, entry in tree.items() for name, value in entry.items()})


def write_results(folder: Path, results: Sequence[RunResult]) -> None:
    """Process 0's side of `read_run_results`: losses and times as JSON, parameters and state as npz."""
    entries = []
    for k, result in enumerate(results):
        if result.params is not None:
            _write_arrays(folder / f"params{k}.npz", result.params)
            _write_arrays(folder / f"state{k}.npz", result.model_state or {})
        entries.append({"losses": list(result.losses), "has_params": result.params is not None,
                        "step_time": dataclasses.asdict(result.step_time) if result.step_time else None,
                        "num_stages": result.num_stages})
    (folder / "results.json").write_text(json.dumps({"results": entries}))


def run_on_cluster(job: ClusterJob, num_workers: int, timeout_s: float = 300) -> ClusterReport:
    """Run `job` on a local cluster of `num_workers` pinned workers; ClusterError if any fails or hangs."""
    return run_worker_job(job.to_json(), num_workers, lambda folder: read_run_results(folder, len(job.strategies)),
                          "soap.worker", timeout_s, files=job.files())


def run_worker_job(job_json: str, num_workers: int, read_results: Callable[[Path], Any], worker_module: str,
                   timeout_s: float = 300, on_poll: Callable[[Path], None] | None = None,
                   files: Mapping[str, bytes] | None = None) -> ClusterReport:
    """Run any worker module's job on a local cluster; its process 0's results, read by `read_results`.
    `files` (name -> bytes) are written beside job.json."""
    run = ClusterRun(job_json, num_workers, read_results, worker_module, files)
    try:
        return run.result(timeout_s, on_poll)
    except KeyboardInterrupt:  # stopped by the user: no worker and no job folder is left behind
        run.kill()
        shutil.rmtree(run.folder, ignore_errors=True)
        raise
    finally:
        run.kill()

