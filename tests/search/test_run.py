"""Measured runs: rounds interleaved, the fastest run counts, a strategy that cannot run is marked (and
makes search.optimize exit 1), never hidden. The runs here are fakes of one cluster job each."""

import dataclasses
import re

import pytest

from models.zoo import build_graph
from search import run as run_module
from search.run import measure_strategies
from soap.baselines import data_parallel, owt, single
from soap.devices import ClusterError
from soap.timing import StepTime

GRAPH = build_graph("alexnet", "tiny-imagenet", 8)
STRATEGIES = {"single": single(GRAPH, 2), "data_parallel": data_parallel(GRAPH, 2), "owt": owt(GRAPH, 2)}


class FakeCluster:
    """Step times by strategy and round; data_parallel's worker fails in round 2."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, graph, strategy, num_devices, config, *rest):
        name = next((n for n, s in STRATEGIES.items() if s == strategy), f"other {strategy.describe(graph)}")
        round_number = sum(call == name for call in self.calls)
        self.calls.append(name)
        if name == "data_parallel" and round_number == 1:
            raise ClusterError("worker 1 of 2 exited with code 1: JaxRuntimeError: RESOURCE_EXHAUSTED")
        median = {"single": (300.0, 280.0), "owt": (200.0, 210.0)}.get(name, (150.0, 150.0))[round_number]
        return StepTime(median, median - 5, median + 5, median - 9, median + 9, 10), None, 2.5


def test_rounds_interleave_the_fastest_counts_and_a_failure_is_marked(monkeypatch):
    fake = FakeCluster()
    monkeypatch.setattr(run_module, "_run_on_cluster", fake)
    measured = measure_strategies(GRAPH, STRATEGIES, 2, timed_steps=10, rounds=2)
    assert fake.calls == ["single", "data_parallel", "owt", "single", "data_parallel", "owt"]
    assert measured["single"].step_ms == 280.0 and "slowest of 2 runs 300 ms" in measured["single"].note
    assert measured["owt"].step_ms == 200.0 and measured["owt"].first_step_loss == 2.5
    failed = measured["data_parallel"]
    assert failed.step_ms is None and failed.note.startswith("not run: worker 1 of 2 exited with code 1")


def test_a_bug_is_not_turned_into_a_note(monkeypatch):
    def broken(*args):
        raise TypeError("a bug in SOAP")

    monkeypatch.setattr(run_module, "_run_on_cluster", broken)
    with pytest.raises(TypeError, match="a bug in SOAP"):
        measure_strategies(GRAPH, {"single": STRATEGIES["single"]}, 2, timed_steps=10)


def test_optimize_exits_1_and_marks_the_row_when_a_strategy_cannot_run(monkeypatch, tmp_path, capsys):
    # The local machine's path with a datasheet machine in its place: search, run (faked), table, files.
    from search import optimize
    from simulator.cost import RooflineCostModel
    from simulator.machine import machine_preset

    local = dataclasses.replace(machine_preset("p100x2-pcie", 2), name="local")
    monkeypatch.setattr(optimize, "calibrate_local",
                        lambda options, graph: (local, RooflineCostModel(local.device), "costs: fake", None))
    fake = FakeCluster()
    monkeypatch.setattr(run_module, "_run_on_cluster", fake)
    code = optimize.main(["--model", "alexnet", "--gpus", "2", "--batch-size", "8", "--iterations", "50",
                          "--rounds", "2", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "error: data_parallel" in captured.err and "could not run (see the table's notes)" in captured.err
    row = next(line for line in captured.out.splitlines() if line.startswith("data_parallel"))
    assert "not run: worker 1 of 2 exited with code 1" in row
    assert (tmp_path / "report.json").exists() and (tmp_path / "strategy.json").exists()


def test_optimize_says_before_measured_runs_that_take_minutes(monkeypatch, tmp_path, capsys):
    from search import optimize
    from simulator.cost import RooflineCostModel
    from simulator.machine import machine_preset

    local = dataclasses.replace(machine_preset("p100x2-pcie", 2), name="local")
    monkeypatch.setattr(optimize, "calibrate_local",
                        lambda options, graph: (local, RooflineCostModel(local.device), "costs: fake", None))
    monkeypatch.setattr(run_module, "_run_on_cluster", lambda *args: (StepTime(1.0, 1, 1, 1, 1, 10), None, 2.5))
    argv = ["--model", "alexnet", "--gpus", "2", "--batch-size", "8", "--iterations", "50", "--rounds", "1",
            "--out", str(tmp_path)]
    assert optimize.main(argv + ["--steps", "10"]) == 0
    assert "note: the measured runs take" not in capsys.readouterr().err
    assert optimize.main(argv + ["--steps", "100000"]) == 0
    assert re.search(r"note: the measured runs take about \d+ min or more: \d strategies, each run 1x for 100002 steps",
                     capsys.readouterr().err)


@pytest.mark.parametrize("took_s, failed, done, expected", [
    pytest.param({}, {}, 0, "", id="nothing-run-yet"),
    pytest.param({"single": 10.0}, {}, 1, "; about 50 s left", id="others-at-the-mean"),
    pytest.param({"single": 10.0, "owt": 30.0}, {"owt": "not run"}, 3, "; about 30 s left", id="failed-skipped"),
    pytest.param({"single": 100.0, "owt": 20.0}, {}, 2, "; about 3 min left", id="minutes"),
])
def test_time_left_prices_each_run_at_its_strategy_s_last(took_s, failed, done, expected):
    strategies = dict.fromkeys(["single", "data_parallel", "owt"])
    assert run_module._time_left(took_s, strategies, failed, 2, done) == expected
