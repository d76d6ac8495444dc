"""Epoch training: every strategy learns the same from the same batches; the benchmark's whole path."""

import json
import subprocess
import sys

import numpy as np
import pytest

from models.data import open_dataset
from models.zoo import FamilyOptions, build_graph
from benchmarks.epochs import same_as_baseline, summarize
from soap.baselines import data_parallel, megatron, owt, random_strategy, single
from soap.epochs import EpochConfig, train_epochs
from soap.strategy import strategy_to_json
from tests.fakedata import write_tiny_imagenet

BATCH = 4
GPT_FLAGS = ["--model", "gpt2", "--depth", "1", "--width", "32", "--heads", "2", "--vocab", "64", "--seq-len", "16",
             "--batch-size", str(BATCH)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_imagenet(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tiny_gpt():
    """GPT-2 of one block, width 32, 2 heads, vocabulary 64, 16 tokens a sample, 4 samples a batch."""
    return build_graph("gpt2", "tokens", BATCH, FamilyOptions(depth=1, width=32, heads=2, vocab=64, seq_len=16))


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    """train.bin: 300 random ids below 64 (18 windows of 16 + 1: 4 steps of 4); val.bin: 100 (6 windows)."""
    folder = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    rng.integers(0, 64, 300).astype(np.uint16).tofile(folder / "train.bin")
    rng.integers(0, 64, 100).astype(np.uint16).tofile(folder / "val.bin")
    return folder


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


def test_a_tiny_gpt_trains_the_same_from_the_same_seed_and_is_evaluated(tiny_gpt, token_dir):
    train = open_dataset("tokens", token_dir, "train", 0, tiny_gpt)
    val = open_dataset("tokens", token_dir, "val", 0, tiny_gpt)
    config = EpochConfig(epochs=2, optimizer="adamw")
    first, again = (train_epochs(tiny_gpt, megatron(tiny_gpt, 2), train, config, evaluation_data=val)
                    for _ in range(2))
    losses = [e.loss for e in first.epochs]
    assert [e.steps for e in first.epochs] == [4, 4] and losses[1] < losses[0]  # it trains
    assert [e.loss for e in again.epochs] == losses and again.evaluation == first.evaluation  # dropout keys: seeded
    assert first.evaluation.batches == 1 and 0 <= first.evaluation.accuracy <= 1
    assert np.isfinite(first.evaluation.loss)


def test_token_throughput_is_tokens_an_epoch_over_its_mean_time():
    records = [{"strategy": "megatron", "epoch": k, "seconds": seconds, "loss": 4.0, "steps": 4}
               for k, seconds in ((1, 2.0), (2, 6.0))]
    records.append({"strategy": "megatron", "compile_s": 3.0, "eval_loss": 4.1, "eval_accuracy": 0.02,
                    "eval_batches": 1})
    summary = summarize(records, ["megatron"], "tokens", per_step=BATCH * 16)["megatron"]
    assert summary["tokens_per_s"] == 4 * BATCH * 16 / 4.0  # 4 steps of 4 x 16 tokens, mean epoch 4 s
    assert (summary["eval_loss"], summary["eval_accuracy"], summary["eval_batches"]) == (4.1, 0.02, 1)


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


def test_the_benchmark_trains_a_tiny_gpt_on_two_workers(token_dir, tmp_path):
    out = tmp_path / "epochs.json"
    done = _benchmark(*GPT_FLAGS, "--data-dir", str(token_dir), "--strategy", "megatron", "--strategy",
                      "data_parallel", "--epochs", "1", "--json", str(out), "--plot", str(tmp_path / "epochs.png"))
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert (document["optimizer"], document["searched_strategy"]) == ("adamw", None)
    strategies = document["strategies"]
    assert list(strategies) == ["data_parallel", "megatron"]  # the baselines' order
    for summary in strategies.values():
        assert summary["steps_per_epoch"] == 4 and summary["tokens_per_s"] > 0 and summary["eval_batches"] == 1
    np.testing.assert_allclose(strategies["megatron"]["losses"], strategies["data_parallel"]["losses"], rtol=1e-5)
    np.testing.assert_allclose(strategies["megatron"]["eval_loss"], strategies["data_parallel"]["eval_loss"],
                               rtol=1e-5)
    assert "tokens/s" in done.stdout and "val split after the last epoch" in done.stdout


def test_a_searched_strategy_is_trained_once_only_when_it_is_a_baseline():
    graph = build_graph("alexnet", "tiny-imagenet", BATCH)
    baselines = {"single": single(graph, 2), "data_parallel": data_parallel(graph, 2), "owt": owt(graph, 2)}
    assert same_as_baseline({**baselines, "searched": owt(graph, 2)}) == "owt"
    found = random_strategy(graph, 2, np.random.default_rng(0))
    assert found not in baselines.values() and same_as_baseline({**baselines, "searched": found}) is None
