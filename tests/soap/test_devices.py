"""The local cluster: pinned workers joined by jax.distributed give one device's step; failures end it fast."""

import os
import shutil
import signal
import time

import pytest

from models.zoo import build_graph
from soap.baselines import data_parallel, model_parallel, owt
from soap.devices import ClusterError, ClusterJob, ClusterRun, plan_cores, read_run_results, run_on_cluster
from soap.runner import RunConfig

GRAPH = build_graph("alexnet", "tiny-imagenet", 8)


def test_workers_are_pinned_one_per_core_while_cores_last():
    assert plan_cores(2, available=[0, 1, 2]).cores == (0, 1)
    assert plan_cores(2, available=[0, 1]).warning is None
    plan = plan_cores(3, available=[4, 5])
    assert plan.cores == (None, None, None)
    assert plan.warning == ("3 workers share 2 cores, so they are not pinned and cannot all run at once: measured "
                            "step times are not those of 3 parallel devices; use at most 2 workers here")


def test_a_job_round_trips_through_json():
    job = ClusterJob.for_strategies(GRAPH, [owt(GRAPH, 2), data_parallel(GRAPH, 2)], RunConfig(timed_steps=3))
    assert ClusterJob.from_json(job.to_json()) == job


def test_two_pinned_workers_give_the_one_device_step(reference):
    # One launch for all three (each launch costs seconds of JAX start-up per worker): two single-stage
    # strategies, and model_parallel, whose four stages pass activations and cotangents between the
    # processes ({0,1} -> {1} -> {0,1} -> {1}) and whose loss lives on process 1.
    strategies = [data_parallel(GRAPH, 2), owt(GRAPH, 2), model_parallel(GRAPH, 2)]
    job = ClusterJob.for_strategies(GRAPH, strategies, RunConfig(fetch_params=True, warmup_steps=1, timed_steps=2))
    report = run_on_cluster(job, num_workers=2, timeout_s=300)
    assert [result.num_stages for result in report.results] == [1, 1, 4]
    for result in report.results:
        reference.assert_matches(result)
        assert result.step_time.steps == 2 and 0 < result.step_time.min_ms <= result.step_time.max_ms
    assert report.warning == plan_cores(2).warning  # None where this machine has 2 cores or more


def _gone(pid):
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_worker_error_is_reported_in_one_line():
    run = _run(owt(GRAPH, 4))
    with pytest.raises(ClusterError, match=r"worker \d of 2 exited with code 2: error: strategy 0 of the job is for "
                                           r"num_devices 4 but this run has num_devices 2; .* \(all workers killed; "
                                           r"log: .*worker\d.log\)$"):
        run.result(timeout_s=120)
    assert all(_gone(pid) for pid in run.pids)
    shutil.rmtree(run.folder)  # kept for the user on failure; a test has read what it needs


@pytest.mark.parametrize("how, message", [
    pytest.param(signal.SIGKILL, r"worker 1 of 2 was killed by SIGKILL", id="killed"),
    pytest.param(signal.SIGSTOP, r"the cluster did not finish within 3 s \(workers \[0, 1\] still running, now "
                                 r"killed\)", id="hung"),
])
def test_a_dead_or_hung_worker_ends_the_run_in_bounded_time(how, message):
    run = _run(owt(GRAPH, 2))
    time.sleep(1.5)  # the workers are importing JAX or joining the cluster by now
    os.kill(run.pids[1], how)
    start = time.monotonic()
    with pytest.raises(ClusterError, match=message):
        run.result(timeout_s=3)
    assert time.monotonic() - start < 8
    assert all(_gone(pid) for pid in run.pids)
    shutil.rmtree(run.folder)


def _run(strategy) -> ClusterRun:
    job = ClusterJob.for_strategies(GRAPH, [strategy], RunConfig())
    return ClusterRun(job.to_json(), 2, lambda folder: read_run_results(folder, 1))
