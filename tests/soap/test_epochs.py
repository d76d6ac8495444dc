"""Epoch training: every strategy learns the same from the same batches; the benchmark's whole path."""

import json
import subprocess
import sys

import numpy as np
import pytest

from models.data import open_dataset
from models.zoo import build_graph
from benchmarks.epochs import same_as_baseline
from soap.baselines import data_parallel, owt, random_strategy, single
from soap.epochs import EpochConfig, train_epochs
from soap.strategy import strategy_to_json
from tests.fakedata import write_tiny_imagenet

BATCH = 4


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_imagenet(tmp_path_factory.mktemp("data"))


def test_strategies_learn_the_same_over_epochs_of_real_files(tiny_dir):
    graph = build_graph("alexnet", "tiny-imagenet", BATCH)
    dataset = open_dataset("tiny-imagenet", tiny_dir)  # 12 readable images: 3 steps an epoch
    config = EpochConfig(epochs=2, steps_per_epoch=2)
    heard = []
    results = {build.__name__: train_epochs(graph, build(graph, 2), dataset, config, on_epoch=heard.append)
               for build in (single, data_parallel, owt)}
    assert [r.epoch for r in heard] == [1, 2] * 3 and all(r.steps == 2 and r.seconds > 0 for r in heard)
    losses = {name: [e.loss for e in result.epochs] for name, result in results.items()}
    assert losses["single"][1] != losses["single"][0]  # it trains
    for name in ("data_parallel", "owt"):
        np.testing.assert_allclose(losses[name], losses["single"], rtol=1e-5)
    assert all(result.compile_s > 0 for result in results.values())


def _benchmark(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks.epochs", *args], capture_output=True, text=True,
                          timeout=600)


def test_the_benchmark_trains_every_strategy_on_two_workers(tiny_dir, tmp_path):
    graph = build_graph("alexnet", "tiny-imagenet", BATCH)
    strategy_file = tmp_path / "strategy.json"
    strategy_file.write_text(strategy_to_json(owt(graph, 2), graph))
    out = tmp_path / "epochs.json"
    done = _benchmark("--data-dir", str(tiny_dir), "--batch-size", str(BATCH), "--epochs", "2",
                      "--steps-per-epoch", "1", "--strategy-file", str(strategy_file), "--json", str(out),
                      "--plot", str(tmp_path / "epochs.png"))
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert not document["synthetic"] and "1 unreadable skipped" in document["data"]
    strategies = document["strategies"]
    assert list(strategies) == ["single", "data_parallel", "model_parallel", "owt", "searched"]
    # The strategy file holds OWT: trained once, shown in both rows.
    assert strategies["searched"] == {**strategies["owt"], "same_as": "owt"} and "searched (= owt)" in done.stdout
    for summary in strategies.values():
        assert len(summary["epoch_seconds"]) == 2 and summary["compile_s"] > 0
        np.testing.assert_allclose(summary["losses"], strategies["single"]["losses"], rtol=1e-5)
    assert "largest loss difference from single" in done.stdout and (tmp_path / "epochs.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--data-dir", "/no/such/folder"], "data dir /no/such/folder does not exist"),
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["--dataset", "mnist"], "invalid choice: 'mnist'"),
    (["--strategy-file", "/no/such.json"], "--strategy-file '/no/such.json' cannot be read"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    done = _benchmark(*args)
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_searched_strategy_is_trained_once_only_when_it_is_a_baseline():
    graph = build_graph("alexnet", "tiny-imagenet", BATCH)
    baselines = {"single": single(graph, 2), "data_parallel": data_parallel(graph, 2), "owt": owt(graph, 2)}
    assert same_as_baseline({**baselines, "searched": owt(graph, 2)}) == "owt"
    found = random_strategy(graph, 2, np.random.default_rng(0))
    assert found not in baselines.values() and same_as_baseline({**baselines, "searched": found}) is None
