"""The optimize command end to end: the table, the files, bad input, Ctrl-C."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from models.zoo import build_graph
from search.optimize import main
from soap.baselines import BASELINES, owt
from soap.strategy import strategy_from_json, strategy_to_json

REPORT_KEYS = {"model", "dataset", "gpus", "batch_size", "machine", "search", "strategies", "strategy_file",
               "reference_loss", "calibration", "data"}
SEARCH_KEYS = {"seconds", "iterations", "simulations_per_second", "best_found_at_seconds", "seed", "kept_start"}


def check_outputs(out, gpus=2):
    report = json.loads((out / "report.json").read_text())
    assert set(report) == REPORT_KEYS and set(report["search"]) == SEARCH_KEYS
    assert [s["name"] for s in report["strategies"]] == ["single", "data_parallel", "model_parallel", "owt", "searched"]
    for row in report["strategies"]:
        assert set(row) == {"name", "simulated_step_ms", "measured_step_ms", "peak_memory_bytes", "first_step_loss",
                            "tokens_per_s", "mfu"}
        assert isinstance(row["simulated_step_ms"], float) and isinstance(row["peak_memory_bytes"], int)
    graph = build_graph(report["model"], report["dataset"], report["batch_size"])
    strategy = strategy_from_json((out / "strategy.json").read_text(), graph, gpus)
    trace = json.loads((out / "trace.json").read_text())
    assert any(event["ph"] == "X" for event in trace["traceEvents"])
    assert (out / "search.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "strategy.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (out / "strategy.svg").read_bytes()[:1000]
    return report, strategy


def test_optimize_writes_the_table_and_files(tmp_path, capsys):
    code = main(["--model", "alexnet", "--gpus", "2", "--machine", "p100x2-pcie", "--iterations", "400",
                 "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    for name in ("single", "data_parallel", "model_parallel", "owt", "searched"):
        assert name in out
    assert "conv1 " in out
    report, _ = check_outputs(tmp_path)
    simulated = {row["name"]: row["simulated_step_ms"] for row in report["strategies"]}
    assert simulated["searched"] <= min(simulated["data_parallel"], simulated["model_parallel"], simulated["owt"])
    assert report["search"]["iterations"] == 400
    assert "measured: not run (machine p100x2-pcie is not the devices at hand; --machine local runs them)" in out


def test_a_search_gain_under_min_gain_keeps_the_best_baseline(tmp_path, capsys):
    # No found strategy on 2 P100s is 90% faster than the best baseline: the best baseline is recommended.
    assert main(["--model", "alexnet", "--gpus", "2", "--machine", "p100x2-pcie", "--iterations", "200",
                 "--min-gain", "90%", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    report, strategy = check_outputs(tmp_path)
    simulated = {row["name"]: row["simulated_step_ms"] for row in report["strategies"]}
    kept = report["search"]["kept_start"]
    assert kept == min(("data_parallel", "model_parallel", "owt"), key=simulated.get)
    assert simulated["searched"] == simulated[kept]
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    assert strategy == BASELINES[kept](graph, 2)
    assert f"kept {kept}: the best strategy found" in out and f"= {kept}" in out


def test_token_data_is_checked_and_named_in_the_output_and_report(tmp_path, capsys):
    np.arange(200, dtype=np.uint16).tofile(tmp_path / "train.bin")  # ids under --vocab 256
    assert main(["--model", "gpt2", "--depth", "1", "--width", "32", "--heads", "2", "--vocab", "256", "--seq-len",
                 "16", "--batch-size", "4", "--gpus", "2", "--machine", "h100x8", "--iterations", "20",
                 "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    description = f"tokens train ({tmp_path / 'train.bin'}, 200 tokens, 12 windows of 16 + 1)"
    out = capsys.readouterr().out
    assert f"data: {description}\n" in out and "tokens/s    MFU" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["data"] == description
    for row in report["strategies"]:  # 4 x 16 tokens a step
        assert row["tokens_per_s"] == pytest.approx(64 / (row["simulated_step_ms"] / 1e3)) and 0 < row["mfu"] < 1


def test_same_seed_same_strategy(tmp_path):
    for name in ("a", "b"):
        assert main(["--model", "alexnet", "--gpus", "2", "--machine", "p100x2-pcie", "--iterations", "300",
                     "--seed", "5", "--out", str(tmp_path / name)]) == 0
    assert (tmp_path / "a" / "strategy.json").read_text() == (tmp_path / "b" / "strategy.json").read_text()


def test_descents_are_said_and_counted_and_repeat_with_the_seed(tmp_path, capsys):
    for name in ("a", "b"):
        assert main(["--model", "alexnet", "--gpus", "8", "--machine", "p100-4x4", "--iterations", "1200",
                     "--seed", "1", "--descent", "--out", str(tmp_path / name)]) == 0
    out = capsys.readouterr().out
    counted = re.findall(r"1200 iterations \((\d+) simulations in descents\)", out)
    assert len(counted) == 2 and counted[0] == counted[1] and int(counted[0]) > 0
    assert (tmp_path / "a" / "strategy.json").read_text() == (tmp_path / "b" / "strategy.json").read_text()
    search = json.loads((tmp_path / "a" / "report.json").read_text())["search"]
    assert search["simulations_per_second"] > search["iterations"] / search["seconds"]


def test_init_strategy_is_a_start(tmp_path, capsys):
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    init = tmp_path / "init.json"
    init.write_text(strategy_to_json(owt(graph, 2), graph))
    assert main(["--model", "alexnet", "--gpus", "2", "--machine", "p100x2-pcie", "--iterations", "100",
                 "--init", str(init), "--out", str(tmp_path / "o")]) == 0
    assert "searching from init, data_parallel" in capsys.readouterr().err


def test_init_for_another_device_count_is_refused(tmp_path, capsys):
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    init = tmp_path / "init.json"
    init.write_text(strategy_to_json(owt(graph, 4), graph))
    assert main(["--model", "alexnet", "--gpus", "2", "--init", str(init), "--out", str(tmp_path)]) == 2
    assert "is for num_devices 4 but this run has num_devices 2" in capsys.readouterr().err


def test_ctrl_c_keeps_the_best_and_writes_every_file(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "search.optimize", "--model", "alexnet", "--gpus", "16", "--machine", "p100-4x4",
         "--budget", "120", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert "searching from" in process.stderr.readline()
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted: kept the best strategy found so far" in err
    assert "searched" in out
    check_outputs(tmp_path, gpus=16)
