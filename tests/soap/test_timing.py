"""Step timing: warm-up calls are not timed, the spread is reported, bad counts are refused."""

import time

import pytest

from models.errors import SoapError
from soap.timing import StepTime, time_steps


def test_warm_up_is_excluded_and_quartiles_are_ordered():
    calls = []

    def step():
        calls.append(None)
        time.sleep(0.2 if len(calls) == 1 else 0.002)  # the first call "compiles"

    timing = time_steps(step, warmup_steps=1, timed_steps=5)
    assert len(calls) == 6 and timing.steps == 5
    assert timing.max_ms < 100
    assert timing.min_ms <= timing.q1_ms <= timing.median_ms <= timing.q3_ms <= timing.max_ms
    assert timing.min_ms >= 2


def test_step_time_of_known_times():
    timing = StepTime.of([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (timing.median_ms, timing.q1_ms, timing.q3_ms, timing.min_ms, timing.max_ms) == (3.0, 2.0, 4.0, 1.0, 5.0)
    assert timing.describe() == "3.0 ms (IQR 2.0-4.0, min 1.0, max 5.0, 5 steps)"


def test_counts_must_be_positive():
    with pytest.raises(SoapError, match=r"timing needs warmup_steps >= 1 \(the first step compiles\) and "
                                        r"timed_steps >= 1, got 0 and 5"):
        time_steps(lambda: None, warmup_steps=0, timed_steps=5)


def test_other_load_counts_a_process_that_is_not_ours_and_not_waited_for():
    import subprocess
    import sys
    import time

    from soap.timing import OtherLoad

    with OtherLoad() as load:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.5)
        spinner.kill()
    spinner.wait()
    assert load.cores is not None and load.cores > 0.5  # one core kept busy for most of the block
    note = load.busy_note("the calibration of the ops")
    assert note.startswith("note: other processes kept ") and "busy during the calibration of the ops;" in note


def test_other_load_is_silent_when_quiet_or_unknown():
    from soap.timing import OtherLoad

    load = OtherLoad()
    assert load.busy_note("x") is None  # unknown (no /proc/stat): nothing said
    load.cores = 0.05
    assert load.busy_note("x") is None
