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


class FakeClock:
    """A clock that a fake call advances by the call's duration (seconds), read in `tick_s` steps."""

    def __init__(self, tick_s: float = 0.0):
        self.now_s, self.tick_s = 0.0, tick_s

    def __call__(self) -> float:
        return self.now_s - self.now_s % self.tick_s if self.tick_s else self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def _noisy_call(clock: FakeClock, truth_ms: float, seed: int):
    """A call of `truth_ms` as a shared machine runs it: never faster, usually up to 4% slower, one call in
    ten 2-5x slower (another process's turn), and slowing by 0.05% a call (a drift)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    calls = []

    def call():
        calls.append(None)
        slower = rng.uniform(0, 0.04) + (rng.uniform(1, 4) if rng.random() < 0.1 else 0.0)
        clock.advance(truth_ms / 1e3 * (1 + slower) * (1 + 0.0005 * len(calls)))

    return call, calls


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_the_policy_recovers_a_known_cost_through_noise_outliers_and_drift(seed):
    from soap.timing import TimingPolicy, time_until_stable

    clock = FakeClock()
    call, calls = _noisy_call(clock, 10.0, seed)
    policy = TimingPolicy()
    estimate = time_until_stable(call, policy, clock=clock)
    # The first quartile of calls never faster than the truth and mostly within 4% of it (plus the drift
    # over a few dozen calls): within the policy's +-3% of 10 ms, 1.5% over it on average.
    assert 10.0 <= estimate.ms <= 10.0 * (1 + policy.tolerance + 0.02)
    assert policy.min_repeats <= estimate.repeats <= policy.max_repeats
    assert len(calls) == policy.warmup + estimate.repeats  # 10 ms calls: one call a sample
    assert estimate.spread <= policy.tolerance  # stable before the cap: the outliers are out of the interval


def test_the_policy_stops_at_its_time_cap_on_a_machine_too_noisy_to_settle():
    import numpy as np

    from soap.timing import TimingPolicy, time_until_stable

    clock = FakeClock()
    rng = np.random.default_rng(0)
    policy = TimingPolicy(max_s=1.0)
    estimate = time_until_stable(lambda: clock.advance(rng.uniform(0.05, 0.15)), policy, clock=clock)
    # Samples of 50-150 ms never give a +-3% interval: about 1 s of them (10), then it stops, and says so.
    assert 8 <= estimate.repeats <= 12 and estimate.spread > policy.tolerance
    assert 0.05 * 1e3 <= estimate.ms <= 0.15 * 1e3


@pytest.mark.parametrize("truth_ms", [0.0003, 0.02, 0.5])
def test_a_positive_cost_under_the_clocks_tick_is_never_0(truth_ms):
    # A clock read in 1 us steps: a 0.3 us call reads 0 us alone; samples of many calls time it.
    from soap.timing import TimingPolicy, time_until_stable

    clock = FakeClock(tick_s=1e-6)
    estimate = time_until_stable(lambda: clock.advance(truth_ms / 1e3), TimingPolicy(), clock=clock)
    assert estimate.ms == pytest.approx(truth_ms, rel=0.01)


def test_estimate_of_known_samples():
    from soap.timing import Estimate

    # First quartile of 1..10 (numpy's linear rule): 3.25; its interval runs from the 1st to the 7th value
    # (0-based ranks 2.5 -+ 1.96 * sqrt(10 * 0.25 * 0.75) = 2.5 -+ 2.68, floored and ceiled: 0 and 6):
    # (7 - 1) / (2 * 3.25).
    estimate = Estimate.of([float(v) for v in range(10, 0, -1)], 0.25)
    assert (estimate.ms, estimate.repeats) == (3.25, 10)
    assert estimate.spread == pytest.approx(6 / 6.5)


def test_a_bad_policy_is_refused_with_its_rule():
    from soap.timing import TimingPolicy

    with pytest.raises(SoapError, match=r"timing policy .* is invalid: needs 0 <= quantile <= 0.5"):
        TimingPolicy(min_repeats=50, max_repeats=10)
