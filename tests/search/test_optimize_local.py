"""README's main path, end to end, on the devices at hand: a fresh calibration cache, the search, every
strategy run for real on a 2-worker local cluster, every output file; and Ctrl-C during calibration and
during the measured runs (exit 130, no worker left, the cache whole).

The model is AlexNet at batch 8 (tiny-imagenet shapes), the smallest zoo run that takes every step of
`python -m search.optimize --model alexnet --gpus 2`; each process gets its own TMPDIR, so that the
cluster's job folders and its workers (whose command lines name those folders) can be checked for.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from search.report import LOSS_RTOL
from simulator.cost import profile_from_json
from tests.search.test_optimize import check_outputs

ROOT = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "search.optimize", "--model", "alexnet", "--gpus", "2", "--batch-size", "8",
           "--budget", "2", "--steps", "2", "--rounds", "1"]


class Run:
    """search.optimize started as a user starts it, its output lines collected as they come."""

    def __init__(self, cache: Path, tmp: Path, out: Path):
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        env = {**os.environ, "SOAP_CACHE": str(cache), "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
        env.pop("XLA_FLAGS", None)  # as in a user's shell: this test process forces 8 CPU devices
        # Ctrl-C as in a terminal: a shell's background job (a CI runner's) inherits SIGINT ignored.
        self.process = subprocess.Popen([*COMMAND, "--out", str(out)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.seen):
            try:
                self.seen.append(self.lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                pytest.fail(f"no {text!r} within {timeout_s} s; output so far:\n{''.join(self.seen)[-3000:]}")

    def finish(self, timeout_s: float) -> str:
        self.process.wait(timeout=timeout_s)
        time.sleep(0.2)  # the reader thread drains the pipe
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)

    def leftover_processes(self) -> list[str]:
        """Processes whose command line names this run's TMPDIR: its cluster workers."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, UnicodeDecodeError):
                continue
            if entry.name.isdigit() and str(self.tmp) in cmdline:
                found.append(cmdline)
        return found


def assert_cache_whole(cache: Path) -> None:
    """Every file of the cache is complete: no partial write, and every profile reads back."""
    assert not [p.name for p in cache.glob("*partial*")]
    for path in cache.glob("profile-*.json"):
        document = json.loads(path.read_text())
        profile_from_json(path.read_text(), document["device_kind"], document["jax_version"], source=str(path))


@pytest.fixture(scope="module")
def main_path(tmp_path_factory):
    """The README's main command, run once in a fresh cache: (output, exit code, out folder, cache)."""
    root = tmp_path_factory.mktemp("main-path")
    run = Run(root / "cache", root / "tmp", root / "out")
    output = run.finish(timeout_s=900)
    return output, run.process.returncode, root / "out", root / "cache", run


def test_main_command_calibrates_searches_runs_and_writes_every_file(main_path):
    output, code, out, cache, run = main_path
    assert code == 0, output[-3000:]
    assert "calibrating" in output and "costs: measured on this machine" in output
    report, _ = check_outputs(out)
    assert report["machine"] == "local"
    for row in report["strategies"]:
        assert row["measured_step_ms"] > 0, row
        assert abs(row["first_step_loss"] - report["reference_loss"]) <= LOSS_RTOL * abs(report["reference_loss"])
    assert_cache_whole(cache)
    assert run.leftover_processes() == [] and list((run.tmp).glob("soap-cluster-*")) == []


def test_ctrl_c_during_the_measured_runs_exits_130_and_keeps_the_search(main_path, tmp_path):
    *_, cache, _ = main_path  # calibrated: this run goes straight to the search and the runs
    run = Run(cache, tmp_path / "tmp", tmp_path / "out")
    run.wait_for("running single on 2 local devices", timeout_s=300)
    time.sleep(3.0)  # inside the first cluster job
    run.process.send_signal(signal.SIGINT)
    output = run.finish(timeout_s=120)
    assert run.process.returncode == 130, output[-3000:]
    assert "Traceback" not in output and "measured: not run (interrupted by Ctrl-C)" in output
    report, _ = check_outputs(tmp_path / "out")
    assert all(row["measured_step_ms"] is None for row in report["strategies"])
    assert run.leftover_processes() == [] and list(run.tmp.glob("soap-cluster-*")) == []
    assert_cache_whole(cache)


def test_ctrl_c_during_calibration_exits_130_and_keeps_what_was_measured(tmp_path):
    cache = tmp_path / "cache"
    run = Run(cache, tmp_path / "tmp", tmp_path / "out")
    run.wait_for("calibrating", timeout_s=300)
    time.sleep(8.0)  # the workers have joined and are timing ops
    run.process.send_signal(signal.SIGINT)
    output = run.finish(timeout_s=120)
    assert run.process.returncode == 130, output[-3000:]
    assert "Traceback" not in output and "interrupted: kept the" in output
    assert run.leftover_processes() == [] and list(run.tmp.glob("soap-cluster-*")) == []
    assert not (tmp_path / "out").exists()  # nothing written before the search
    assert_cache_whole(cache)
