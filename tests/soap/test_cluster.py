"""Several hosts, tried on one: workers started by hand from a folder `python -m soap.cluster` wrote, with
no parent process, train as the cluster SOAP starts itself; a worker killed mid-run ends the others."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from soap.cluster import main
from soap.devices import ClusterJob, _free_port, read_run_results, run_on_cluster
from soap.join import HEARTBEAT_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]


def prepare(folder: Path, strategy: str, steps: int, timed_steps: int) -> None:
    assert main([str(folder), "--model", "alexnet", "--batch-size", "8", "--workers", "2", "--coordinator",
                 f"127.0.0.1:{_free_port()}", "--strategy", strategy, "--steps", str(steps),
                 "--timed-steps", str(timed_steps), "--pin"]) == 0


def start_worker(folder: Path, process_id: int) -> subprocess.Popen:
    """One worker as README tells a user to start it on host `process_id`: its own command, nothing else."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    log = open(folder / f"hand{process_id}.log", "wb")
    with log:
        return subprocess.Popen([sys.executable, "-m", "soap.worker", str(folder), str(process_id)], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def test_workers_started_by_hand_train_as_the_cluster_soap_starts(tmp_path, capsys):
    prepare(tmp_path, "owt", steps=2, timed_steps=1)
    assert "start `python -m soap.worker" in capsys.readouterr().out
    workers = [start_worker(tmp_path, i) for i in range(2)]
    codes = [worker.wait(timeout=600) for worker in workers]
    assert codes == [0, 0], (tmp_path / "hand0.log").read_text()[-2000:]
    assert "strategy 0: losses" in (tmp_path / "hand0.log").read_text()
    by_hand = read_run_results(tmp_path, 1)[0]
    started_by_soap = run_on_cluster(ClusterJob.from_json((tmp_path / "job.json").read_text()), 2).results[0]
    np.testing.assert_allclose(by_hand.losses, started_by_soap.losses, rtol=1e-6)
    assert len(by_hand.losses) == 2 and by_hand.step_time is not None


def test_a_worker_killed_mid_run_ends_the_others_within_the_heartbeat_timeout(tmp_path):
    prepare(tmp_path, "data_parallel", steps=1, timed_steps=100_000)
    workers = [start_worker(tmp_path, i) for i in range(2)]
    try:
        deadline = time.monotonic() + 300
        while "Rank 1 is connected" not in (tmp_path / "hand1.log").read_text(errors="replace"):
            assert time.monotonic() < deadline and workers[1].poll() is None, (tmp_path / "hand1.log").read_text()
            time.sleep(0.2)
        time.sleep(5.0)  # compiled and stepping: all-reduces in flight
        workers[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        code = workers[0].wait(timeout=HEARTBEAT_TIMEOUT_S + 30)
        assert code != 0 and time.monotonic() - killed_at < HEARTBEAT_TIMEOUT_S + 30
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
