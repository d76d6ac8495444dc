"""The drift check on a fake profile and fake timings: no cluster, no device."""

from dataclasses import replace

import pytest

from simulator.calibration_plan import needed_local_ops
from simulator.cost import ProfileEntry, TableCostModel
from simulator.drift import (DRIFT_LIMIT, LARGEST_SENTINELS, LINK_PROBE_BYTES, Probe, calibrated_for_run, check_drift,
                             sentinel_ops)
from simulator.machine import Link
from soap.timing import Estimate
from tests.simulator.fakes import branchy_cnn, fake_machine

GRAPH = branchy_cnn(4)
NOW_S = 1_800_000_000.0
ALLREDUCE = Link(1e9, 1e-4, measured=((1e3, 1e-3), (1e7, 11e-3)))  # 1 ms + 1 ms per MB
PRICED_MS = ALLREDUCE.transfer_ms(LINK_PROBE_BYTES)  # on 2 devices the ring moves the message's bytes


def _profile(scale: float = 1.0, measured_at_s: float | None = NOW_S - 7200) -> TableCostModel:
    """An entry per local op of GRAPH on 2 devices, each a distinct time (k + 1 ms forward, twice that backward)."""
    entries = {}
    for k, op in enumerate(needed_local_ops(GRAPH, 2)):
        updates = (("sgd", Estimate(0.1 * scale, 0.01, 5)),) if op.param_bytes else ()
        entries[op.cost_key] = ProfileEntry(Estimate((k + 1) * scale, 0.01, 5), Estimate(2 * (k + 1) * scale, 0.01, 5),
                                            updates, (), measured_at_s)
    return TableCostModel("fake", "0", entries)


MACHINE = replace(fake_machine(2), allreduce=ALLREDUCE)


def _probe(op_scale: float, link_scale: float = 1.0, calls: list | None = None):
    """Timings `op_scale` times the profile's and `link_scale` times the priced link point."""
    fresh = _profile(op_scale)

    def probe(graph, num_devices, ops, link_bytes, optimizer) -> Probe:
        if calls is not None:
            calls.append([op.cost_key for op in ops])
        return Probe({op.cost_key: fresh.entries[op.cost_key] for op in ops},
                     None if link_bytes is None else PRICED_MS * link_scale)
    return probe


def test_sentinels_are_the_largest_ops_and_the_median_one():
    profile = _profile()
    ops = sentinel_ops(GRAPH, 2, profile)
    by_time = sorted(needed_local_ops(GRAPH, 2), key=lambda op: profile.entries[op.cost_key].forward.ms, reverse=True)
    assert ops == by_time[:LARGEST_SENTINELS] + [by_time[len(by_time) // 2]]


@pytest.mark.parametrize("op_scale, link_scale, remeasured", [
    pytest.param(1.05, 0.97, (), id="within-10%"),
    pytest.param(1.20, 1.0, ("ops",), id="ops-20%-slower"),
    pytest.param(0.80, 1.0, ("ops",), id="ops-20%-faster"),
    pytest.param(1.0, 1.25, ("links",), id="link-25%-slower"),
])
def test_drift_beyond_10_percent_is_measured_again(op_scale, link_scale, remeasured):
    check = check_drift(GRAPH, 2, MACHINE, _profile(), _probe(op_scale, link_scale), NOW_S)
    assert [s.drift for s in check.sentinels] == pytest.approx([op_scale - 1] * len(check.sentinels))
    assert check.link.drift == pytest.approx(link_scale - 1) and check.link.num_bytes == LINK_PROBE_BYTES
    assert check.profile_age_s == pytest.approx(7200)
    assert check.remeasured == remeasured
    kept = f"within {DRIFT_LIMIT:.0%}, kept"
    assert check.line().startswith("profile 2 h old; sentinels drifted")
    assert check.line().endswith(kept) == (not remeasured)


def test_the_line_says_the_range_and_the_decision():
    check = check_drift(GRAPH, 2, MACHINE, _profile(), _probe(1.2), NOW_S)
    assert check.line() == ("profile 2 h old; sentinels drifted +20% to +20% (+20% weighted by time), link +0%: "
                            "beyond 10%, measuring the ops again")


def test_one_small_sentinel_off_does_not_measure_again_when_the_step_would_not_be():
    # The median sentinel 30% slower, the largest ones as profiled: the sentinels' time moves under 10%.
    profile = _profile()
    small = sentinel_ops(GRAPH, 2, profile)[-1].cost_key
    fresh = {**profile.entries, small: _profile(1.3).entries[small]}

    def probe(graph, num_devices, ops, link_bytes, optimizer) -> Probe:
        return Probe({op.cost_key: fresh[op.cost_key] for op in ops}, PRICED_MS)

    check = check_drift(GRAPH, 2, MACHINE, profile, probe, NOW_S)
    assert max(s.drift for s in check.sentinels) == pytest.approx(0.3, rel=1e-3)
    assert abs(check.ops_drift) < DRIFT_LIMIT and check.remeasured == ()


def test_one_device_has_no_link_point_and_an_old_profile_no_age():
    machine = fake_machine(1)
    check = check_drift(GRAPH, 1, machine, _profile(measured_at_s=None), _probe(1.0), NOW_S)
    assert check.link is None and check.profile_age_s is None
    assert check.line().startswith("profile of unknown age")
    assert check.to_json()["link"] is None and check.to_json()["profile_age_s"] is None


class FakeCalibrate:
    """simulator.calibrate.calibrate's signature: records each call's re-measure flags; the profile it returns
    is re-measured (scale 1.2, now) when asked to, as the fake probe times it."""

    def __init__(self, profile: TableCostModel):
        self.profile, self.calls = profile, []

    def __call__(self, graph, num_devices, cache_dir, say, remeasure_ops=False, remeasure_links=False, optimizer="sgd"):
        self.calls.append((remeasure_ops, remeasure_links))
        if remeasure_ops:
            self.profile = _profile(1.2, NOW_S)
        return MACHINE, self.profile


def test_a_profile_off_by_20_percent_is_measured_again_before_the_run():
    fake, said, probed = FakeCalibrate(_profile()), [], []
    result = calibrated_for_run(GRAPH, 2, say=said.append, calibrate=fake, probe=_probe(1.2, calls=probed),
                                now_s=lambda: NOW_S)
    assert fake.calls == [(False, False), (True, False)]
    assert len(probed) == 1 and len(probed[0]) == LARGEST_SENTINELS + 1
    assert result.profile is fake.profile and result.check.remeasured == ("ops",)
    assert said == [result.check.line()] and "measuring the ops again" in said[0]


def test_a_profile_within_10_percent_is_kept():
    fake = FakeCalibrate(_profile())
    result = calibrated_for_run(GRAPH, 2, say=lambda line: None, calibrate=fake, probe=_probe(1.08),
                                now_s=lambda: NOW_S)
    assert fake.calls == [(False, False)] and result.check.remeasured == ()
    assert result.check.to_json()["sentinels"][0]["drift"] == pytest.approx(0.08)


def test_recalibrate_measures_everything_again_and_checks_nothing():
    fake, probed = FakeCalibrate(_profile()), []
    result = calibrated_for_run(GRAPH, 2, recalibrate=True, say=lambda line: None, calibrate=fake,
                                probe=_probe(1.0, calls=probed), now_s=lambda: NOW_S)
    assert fake.calls == [(True, True)] and probed == []
    assert result.check.recalibrated and result.check.remeasured == ("ops", "links")
    assert result.check.profile_age_s == 0.0


def test_a_profile_and_links_this_run_just_measured_are_not_checked(tmp_path):
    # Calibration from an empty cache measured every entry and the links after the run began: nothing to
    # drift from, so no probe (it would only time noise). Old links beside fresh entries are checked.
    import os

    from simulator.calibrate import CachePaths

    fresh = _profile(1.0, NOW_S + 1)
    links = CachePaths.of(tmp_path, fresh.device_kind, fresh.jax_version, 2).machine
    links.write_text("{}")
    os.utime(links, (NOW_S + 2, NOW_S + 2))
    said, probed = [], []
    result = calibrated_for_run(GRAPH, 2, say=said.append, cache_dir=tmp_path, calibrate=FakeCalibrate(fresh),
                                probe=_probe(1.5, calls=probed), now_s=lambda: NOW_S)
    assert probed == [] and result.check.fresh and result.check.remeasured == ()
    assert said == ["profile and links measured just now: no drift check"]
    assert result.check.to_json()["fresh"] is True and result.check.to_json()["ops_drift"] is None
    os.utime(links, (NOW_S - 60, NOW_S - 60))
    result = calibrated_for_run(GRAPH, 2, say=lambda line: None, cache_dir=tmp_path, calibrate=FakeCalibrate(fresh),
                                probe=_probe(1.0, calls=probed), now_s=lambda: NOW_S)
    assert len(probed) == 1 and not result.check.fresh
