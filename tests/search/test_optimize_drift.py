"""search.optimize records the local machine's drift check in report.json (simulator.drift), with a fake
calibration: no cluster, no device."""

import json
from dataclasses import dataclass

import pytest

import search.optimize
from search.optimize import main
from simulator.cost import ConstantCostModel
from simulator.drift import Calibration, DriftCheck, LinkPoint, Sentinel
from tests.simulator.fakes import fake_machine

CHECK = DriftCheck((Sentinel("conv big", 100.0, 120.0), Sentinel("pool small", 2.0, 2.1)),
                   LinkPoint(4 * 2**20, 10.0, 10.5), profile_age_s=7200.0)
RUN = ["--model", "alexnet", "--gpus", "2", "--batch-size", "8", "--iterations", "40"]


@dataclass(frozen=True)
class FakeProfile(ConstantCostModel):
    source: str = "fake profile"


def _fake_calibration(calls: list):
    def calibrated_for_run(graph, num_devices, recalibrate=False, **kwargs):
        calls.append(recalibrate)
        return Calibration(fake_machine(num_devices), FakeProfile(), CHECK)
    return calibrated_for_run


def test_report_json_carries_the_drift_check_and_the_profiles_age(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(search.optimize, "calibrated_for_run", _fake_calibration(calls))
    assert main([*RUN, "--no-run", "--recalibrate", "--out", str(tmp_path)]) == 0
    assert calls == [True]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["calibration"] == CHECK.to_json()
    assert report["calibration"]["profile_age_s"] == 7200.0
    assert [s["drift"] for s in report["calibration"]["sentinels"]] == pytest.approx([0.2, 0.05])
    assert report["calibration"]["remeasured"] == ["ops"]


def test_a_preset_machine_is_not_checked(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(search.optimize, "calibrated_for_run", _fake_calibration(calls))
    assert main([*RUN, "--machine", "p100x2-pcie", "--out", str(tmp_path)]) == 0
    assert calls == [] and json.loads((tmp_path / "report.json").read_text())["calibration"] is None
