"""Every command, run with bad input: exit 2, exactly one line on stderr ("error: ..."), no traceback.

Each case names a command's module, its arguments and a piece of the message (the rule or the value it
must name). Paths in the arguments may use {tmp} (a fresh folder), {binary} (a file of non-UTF-8
bytes), {text} (a text file that is not JSON), {file} (a plain file, to put a path under), {dir} (a
folder), {models} (a file of user models: Linear, a flax module; Sorted, one that sorts its logits;
NUMBER, not a module) and {broken} (a Python file that raises as it imports). The commands run in this process through their `main(argv)`, which is what `python -m`
calls; a few run as real subprocesses too, to check the interpreter's own exit.
"""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
A2 = ["--model", "alexnet", "--gpus", "2"]
SIM = [*A2, "--machine", "p100x2-pcie", "--iterations", "10"]
GPT2_TINY = ["--model", "gpt2", "--depth", "1", "--width", "32", "--heads", "2", "--vocab", "64", "--seq-len", "16",
             "--batch-size", "4", "--gpus", "2", "--dataset", "tokens"]
EPOCHS_GPT2_TINY = GPT2_TINY[:GPT2_TINY.index("--gpus")]  # the model's flags alone: no --gpus, no --dataset
POSITIVE = "must be a positive integer"
SECONDS = "must be a number of seconds > 0"


def case(module: str, args: list[str], message: str, id: str):
    return pytest.param(module, args, message, id=id)


CASES = [
    # search.optimize
    case("search.optimize", ["--model", "alexnet", "--gpus", "0"], f"--gpus {POSITIVE}, got 0", "optimize-gpus-0"),
    case("search.optimize", ["--model", "alexnet", "--gpus", "-2"], f"--gpus {POSITIVE}, got -2", "optimize-gpus-neg"),
    case("search.optimize", ["--model", "alexnet", "--gpus", "two"], f"--gpus {POSITIVE}, got 'two'", "optimize-gpus-nan"),
    case("search.optimize", ["--model", "alexnet"], "the following arguments are required: --gpus", "optimize-no-gpus"),
    case("search.optimize", ["--model", "alexnet", "--gpus", "2", "--fast"], "unrecognized arguments", "optimize-unknown-flag"),
    case("search.optimize", ["--model", "alexnet", "--gpus", "4", "--machine", "p100x2-pcie"],
         "machine 'p100x2-pcie' has at most 2 devices, 4 were asked for", "optimize-gpus-too-many"),
    case("search.optimize", ["--model", "vgg", "--gpus", "2"], "unknown model 'vgg'; known models: alexnet",
         "optimize-model"),
    case("search.optimize", ["--model", "gpt2", "--gpus", "2", "--machine", "h100x8", "--optimizer", "adam"],
         "argument --optimizer: invalid choice: 'adam' (choose from 'sgd', 'adamw')", "optimize-optimizer"),
    case("search.optimize", ["--model", "gpt2", "--gpus", "2", "--machine", "h100x8", "--seq-len", "4096"],
         "gpt2: --seq-len 4096 is over the model's context of 1024 tokens", "optimize-seq-len"),
    case("search.optimize", ["--model", "alexnet", "--gpus", "2", "--machine", "h100x8", "--heads", "4"],
         "--heads sizes the transformer families", "optimize-family-flag-on-a-cnn"),
    case("search.optimize", [*A2, "--dataset", "mnist"], "unknown dataset 'mnist'", "optimize-dataset"),
    case("search.optimize", [*GPT2_TINY, "--data-dir", "{tmp}/none"],
         "token data {tmp}/none does not exist: expected a folder with train.bin", "optimize-token-data-missing"),
    case("search.optimize", [*GPT2_TINY, "--machine", "h100x8", "--data-dir", "{dir}"], "no train.bin in {dir}",
         "optimize-token-data-no-train-bin"),
    case("search.optimize", [*GPT2_TINY, "--machine", "h100x8", "--data-dir", "{text}"],
         "is neither a .bin nor a .txt file", "optimize-token-data-extension"),
    case("search.optimize", ["--model", "inception_v3", "--gpus", "2", "--dataset", "tiny-imagenet"],
         "at least 75x75", "optimize-image-too-small"),
    case("search.optimize", [*A2, "--machine", "tpu"], "unknown machine 'tpu'; presets:", "optimize-machine"),
    case("search.optimize", [*A2, "--machine", "{binary}"], "is not a text file (not UTF-8)", "optimize-machine-binary"),
    case("search.optimize", [*A2, "--machine", "{tmp}/none.json"], "cannot read machine file", "optimize-machine-missing"),
    case("search.optimize", [*A2, "--machine", "{text}"], "is not valid JSON", "optimize-machine-not-json"),
    case("search.optimize", [*A2, "--budget", "0"], f"--budget {SECONDS}, got 0.0", "optimize-budget-0"),
    case("search.optimize", [*A2, "--budget", "nan"], f"--budget {SECONDS}, got nan", "optimize-budget-nan"),
    case("search.optimize", [*A2, "--iterations", "0"], f"--iterations {POSITIVE}, got 0", "optimize-iterations"),
    case("search.optimize", [*A2, "--seed", "-1"], "--seed must be an integer >= 0, got -1", "optimize-seed"),
    case("search.optimize", [*A2, "--batch-size", "0"], f"--batch-size {POSITIVE}, got 0", "optimize-batch"),
    case("search.optimize", [*A2, "--steps", "0"], f"--steps {POSITIVE}, got 0", "optimize-steps"),
    case("search.optimize", [*A2, "--rounds", "x"], f"--rounds {POSITIVE}, got 'x'", "optimize-rounds"),
    case("search.optimize", [*A2, "--min-gain", "100"], "--min-gain must be a percentage from 0 to below 100, got 100",
         "optimize-min-gain"),
    case("search.optimize", [*SIM, "--out", "{file}/run"], "is a file, not a folder", "optimize-out-under-file"),
    case("search.optimize", [*A2, "--init", "{tmp}/none.json"], "--init '{tmp}/none.json' cannot be read",
         "optimize-init-missing"),
    case("search.optimize", [*A2, "--init", "{binary}"], "is not a text file (not UTF-8)", "optimize-init-binary"),
    case("search.optimize", [*A2, "--init", "{text}"], "is not valid JSON", "optimize-init-not-json"),
    case("search.optimize", [*A2, "--init", "{dir}"], "cannot be read (Is a directory)", "optimize-init-folder"),
    case("search.optimize", [*SIM, "--recalibrate"], "--recalibrate measures the local machine again, but --machine "
         "p100x2-pcie is not measured here; drop --recalibrate or use --machine local", "optimize-recalibrate-preset"),
    # python -m models
    case("models", ["vgg"], "unknown model 'vgg'", "models-model"),
    case("models", [], "the following arguments are required: model", "models-no-model"),
    case("models", ["alexnet", "--batch-size", "0"], f"--batch-size {POSITIVE}, got 0", "models-batch"),
    case("models", ["alexnet", "--dataset", "mnist"], "unknown dataset 'mnist'", "models-dataset"),
    case("models", ["alexnet", "--json", "{tmp}/missing/g.json"], "does not exist; create it", "models-json-folder"),
    case("models", ["alexnet", "--json", "{dir}"], "is a folder; pass a file path", "models-json-is-folder"),
    case("models", ["gpt2", "--seq-len", "2048"], "gpt2: --seq-len 2048 is over the model's context of 1024 tokens; "
         "use --seq-len 1024 or less", "models-seq-len-over-context"),
    case("models", ["gpt2", "--width", "256", "--heads", "5"], "gpt2: --heads 5 does not divide the width 256; use a "
         "number of heads that divides 256", "models-heads"),
    case("models", ["alexnet", "--depth", "4"], "--depth sizes the transformer families (gpt2, gpt2_medium, "
         "gpt2_large, gpt2_xl, bert_base, vit_b16), not alexnet; drop --depth", "models-family-flag-on-cnn"),
    case("models", ["vit_b16", "--vocab", "512"], "--vocab does not size vit_b16 (an image model: --depth, --width, "
         "--heads do); drop --vocab", "models-vocab-on-vit"),
    case("models", ["vit_b16", "--width", "100"], "vit_b16: --heads 12 does not divide the width 100", "models-vit-heads"),
    case("models", ["gpt2", "--vocab", "0"], f"--vocab {POSITIVE}, got 0", "models-vocab"),
    case("models", ["gpt2", "--dataset", "imagenet"], "gpt2 reads token ids, not images (imagenet); use --dataset "
         "tokens", "models-gpt2-images"),
    case("models", ["alexnet", "--dataset", "tokens"], "alexnet reads images, not token ids (tokens); pick an image "
         "dataset", "models-cnn-tokens"),
    # simulator.calibrate
    case("simulator.calibrate", ["--model", "alexnet", "--gpus", "0"], f"--gpus {POSITIVE}, got 0", "calibrate-gpus"),
    case("simulator.calibrate", ["--gpus", "2"], "the following arguments are required: --model", "calibrate-no-model"),
    case("simulator.calibrate", ["--model", "lenet", "--gpus", "2"], "unknown model 'lenet'", "calibrate-model"),
    case("simulator.calibrate", [*A2, "--batch-size", "x"], f"--batch-size {POSITIVE}, got 'x'", "calibrate-batch"),
    case("simulator.calibrate", [*A2, "--cache-dir", "{file}/cache"], "cannot be written (Not a directory); set "
         "SOAP_CACHE (or --cache-dir) to a writable folder", "calibrate-cache-unwritable"),
    # benchmarks
    case("benchmarks.accuracy", ["--gpus", "0"], f"--gpus {POSITIVE}, got 0", "accuracy-gpus"),
    case("benchmarks.accuracy", ["--random", "2"], "--random must be an integer >= 3, got 2", "accuracy-random"),
    case("benchmarks.accuracy", ["--model", "lenet"], "unknown model 'lenet'", "accuracy-model"),
    case("benchmarks.accuracy", ["--plot", "{tmp}/missing/a.png"], "does not exist; create it", "accuracy-plot"),
    case("benchmarks.accuracy", ["--model", "alexnet", "--depth", "4"], "--depth sizes the transformer families",
         "accuracy-family-flag-on-a-cnn"),
    # ViT is a family: its sizes reach its own checks.
    case("benchmarks.accuracy", ["--model", "vit_b16", "--depth", "2", "--heads", "5"],
         "vit_b16: --heads 5 does not divide the width 768", "accuracy-vit-heads"),
    case("benchmarks.concurrency", ["--batch-size", "0"], f"--batch-size {POSITIVE}, got 0", "concurrency-batch"),
    case("benchmarks.concurrency", ["--json", "{dir}"], "is a folder; pass a file path", "concurrency-json"),
    case("benchmarks.epochs", ["--dataset", "mnist"], "argument --dataset: invalid choice: 'mnist'", "epochs-dataset"),
    case("benchmarks.epochs", ["--seed", "-3"], "--seed must be an integer >= 0, got -3", "epochs-seed"),
    case("benchmarks.epochs", ["--strategy-file", "{tmp}/none.json"], "--strategy-file '{tmp}/none.json' cannot be read",
         "epochs-strategy-file"),
    case("benchmarks.epochs", ["--data-dir", "{tmp}/no-data"], "data dir {tmp}/no-data does not exist", "epochs-data-dir"),
    case("benchmarks.epochs", ["--recalibrate", "--strategy-file", "{tmp}/s.json"], "--strategy-file skips the search",
         "epochs-recalibrate-strategy-file"),
    case("benchmarks.epochs", ["--epochs", "0"], f"--epochs {POSITIVE}, got 0", "epochs-epochs-0"),
    case("benchmarks.epochs", ["--strategy", "megatron"], "--strategy 'megatron' is not a baseline of alexnet",
         "epochs-strategy-not-a-baseline"),
    case("benchmarks.epochs", ["--strategy", "owt", "--strategy-file", "{tmp}/s.json"],
         "--strategy-file is for the searched strategy", "epochs-strategy-and-strategy-file"),
    case("benchmarks.epochs", [*EPOCHS_GPT2_TINY, "--dataset", "tiny-imagenet"], "gpt2 reads token ids, not images",
         "epochs-gpt2-on-images"),
    case("benchmarks.epochs", [*EPOCHS_GPT2_TINY, "--data-dir", "{tmp}/no-tokens"],
         "token data {tmp}/no-tokens does not exist", "epochs-token-data-missing"),
    case("benchmarks.op_breakdown", ["--dataset", "mnist"], "unknown dataset 'mnist'", "op-breakdown-dataset"),
    case("benchmarks.op_breakdown", ["--strategy", "best"], "--strategy 'best' is not a baseline", "op-breakdown-strategy"),
    case("benchmarks.op_breakdown", ["--strategy-file", "{binary}"], "is not a text file", "op-breakdown-binary"),
    case("benchmarks.owt_table", ["--budget", "-1"], f"--budget {SECONDS}, got -1.0", "owt-table-budget"),
    case("benchmarks.owt_table", ["--json", "{tmp}/missing/o.json"], "does not exist; create it", "owt-table-json"),
    case("benchmarks.zoo_table", ["--models", "lenet"], "--models: unknown model 'lenet'", "zoo-table-models"),
    case("benchmarks.zoo_table", ["--budget", "0"], f"--budget {SECONDS}, got 0.0", "zoo-table-budget"),
    case("benchmarks.search_time", ["--model", "lenet"], "unknown model 'lenet'", "search-time-model"),
    case("benchmarks.search_time", ["--sizes", "4", "0"], f"--sizes {POSITIVE}, got 0", "search-time-sizes"),
    case("benchmarks.search_time", ["--machine", "tpu"], "--machine 'tpu' is not a preset", "search-time-machine"),
    case("benchmarks.search_time", ["--seeds", "0", "-1"], "--seeds must be an integer >= 0, got -1", "search-time-seeds"),
    case("benchmarks.search_time", ["--sizes", "4", "8", "--reference-ms", "2.7"],
         "--reference-ms takes one step time per --sizes entry (--sizes lists 2, --reference-ms 1)",
         "search-time-reference"),
    case("benchmarks.search_time", ["--reference-ms", "-1"], "--reference-ms must be a step time in ms > 0, got -1.0",
         "search-time-reference-value"),
    case("benchmarks.search_profile", ["--start", "best", "--sizes", "4"],
         "--start best does not exist for alexnet on 4 devices", "search-profile-start"),
    case("benchmarks.simulator_speed", ["--moves", "0"], f"--moves {POSITIVE}, got 0", "simulator-speed-moves"),
    case("benchmarks.simulator_speed", ["--json", "{dir}"], "is a folder; pass a file path", "simulator-speed-json"),
    case("benchmarks.simulator_speed", ["--batch-size", "-8"], f"--batch-size {POSITIVE}, got -8",
         "simulator-speed-batch"),
    # the cluster: a job folder for workers started by hand, and the workers
    case("soap.cluster", ["{tmp}/job", "--model", "alexnet", "--workers", "2", "--coordinator", "host0",
                          "--strategy", "owt"], "--coordinator must be HOST:PORT", "cluster-coordinator"),
    case("soap.cluster", ["{tmp}/job", "--model", "alexnet", "--workers", "2", "--coordinator", "h:1",
                          "--strategy", "{tmp}/none.json"], "--strategy '{tmp}/none.json' cannot be read",
         "cluster-strategy"),
    case("soap.cluster", ["{file}/job", "--model", "alexnet", "--workers", "1", "--coordinator", "h:1",
                          "--strategy", "single"], "cannot be written", "cluster-folder"),
    case("soap.worker", [], "the following arguments are required: folder, process_id", "worker-no-args"),
    case("soap.worker", ["{tmp}", "0"], "cluster.json does not exist", "worker-no-job"),
    case("simulator.calibrate_worker", ["{tmp}", "x"], "PROCESS_ID must be an integer >= 0, got 'x'",
         "calibrate-worker-id"),
    case("benchmarks.op_breakdown_worker", ["{tmp}"], "required: process_id", "op-breakdown-worker-args"),
    case("soap.epoch_worker", ["{tmp}", "-1"], "PROCESS_ID must be an integer >= 0, got -1", "epoch-worker-id"),
    # a user's flax model as path/to/file.py:NAME (models.resolve)
    case("search.optimize", ["--model", "{tmp}/none.py:Net", "--gpus", "2"],
         "model file '{tmp}/none.py' does not exist; pass path/to/file.py:NAME", "optimize-user-file-missing"),
    case("search.optimize", ["--model", "{broken}:Net", "--gpus", "2"],
         "model file '{broken}' does not import (line 2: RuntimeError: no GPU here); fix the file",
         "optimize-user-file-does-not-import"),
    case("search.optimize", ["--model", "{models}:Net", "--gpus", "2"],
         "{models} has no 'Net'; the nnx.Module classes it defines: Linear, Sorted", "optimize-user-no-name"),
    case("search.optimize", ["--model", "{models}:NUMBER", "--gpus", "2"],
         "'NUMBER' in {models} is not an nnx.Module subclass or a function returning one (its type: int)",
         "optimize-user-not-a-module"),
    case("search.optimize", ["--model", "{models}:Sorted", "--gpus", "2"],
         "{models}:15: cannot import the root module (Sorted): it computes 'sort'. SOAP imports nnx.Conv",
         "optimize-user-unsupported-primitive"),
    case("models", ["{tmp}/none.py:Net"], "model file '{tmp}/none.py' does not exist", "models-user-file-missing"),
    case("models", ["{broken}:Net"], "does not import (line 2: RuntimeError: no GPU here)", "models-user-broken"),
    case("models", ["{models}:NUMBER"], "is not an nnx.Module subclass", "models-user-not-a-module"),
    case("models", ["{models}:Sorted"], "it computes 'sort'", "models-user-unsupported"),
    case("models", ["{models}:Linear", "--dataset", "dogs-vs-cats"], "calling Linear on a 128x224x224x3 float32 image "
         "batch (dogs-vs-cats) failed: TypeError: dot_general requires", "models-user-wrong-images"),
]
USER_MODELS = """from flax import nnx
import jax.numpy as jnp


class Linear(nnx.Module):
    def __init__(self, rngs):
        self.fc = nnx.Linear(64 * 64 * 3, 200, rngs=rngs)

    def __call__(self, x):
        return self.fc(x.reshape(x.shape[0], -1))


class Sorted(Linear):
    def __call__(self, x):
        return jnp.sort(super().__call__(x), axis=-1)


NUMBER = 3
"""
WORKERS = {"soap.worker", "simulator.calibrate_worker", "benchmarks.op_breakdown_worker", "soap.epoch_worker"}


@pytest.fixture
def paths(tmp_path) -> dict[str, str]:
    (tmp_path / "binary.json").write_bytes(bytes(range(128, 256)))
    (tmp_path / "text.json").write_text("these are words, not JSON\n")
    (tmp_path / "plain").write_text("a file\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "user_models.py").write_text(USER_MODELS)
    (tmp_path / "broken.py").write_text("import math\nraise RuntimeError('no GPU here')\n")
    return {"tmp": str(tmp_path), "binary": str(tmp_path / "binary.json"), "text": str(tmp_path / "text.json"),
            "file": str(tmp_path / "plain"), "dir": str(tmp_path / "folder"), "models": str(tmp_path / "user_models.py"),
            "broken": str(tmp_path / "broken.py")}


def run_in_process(module: str, args: list[str]) -> int:
    if module in WORKERS:
        from soap.join import worker_main

        return worker_main(f"python -m {module}", importlib.import_module(module).main, args)
    if module == "models":
        return importlib.import_module("models.__main__").main(args)
    return importlib.import_module(module).main(args)


def assert_one_error_line(err: str, message: str) -> None:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], err


@pytest.mark.parametrize("module, args, message", CASES)
def test_bad_invocation_is_one_line_and_exit_2(module, args, message, paths, capsys):
    args = [arg.format(**paths) for arg in args]
    assert run_in_process(module, args) == 2
    assert_one_error_line(capsys.readouterr().err, message.format(**paths))


def test_there_are_at_least_40_bad_invocations_over_every_command():
    modules = {param.values[0] for param in CASES}
    assert len(CASES) >= 40
    assert modules >= {"search.optimize", "models", "simulator.calibrate", "benchmarks.accuracy",
                       "benchmarks.concurrency", "benchmarks.epochs", "benchmarks.op_breakdown", "benchmarks.owt_table",
                       "benchmarks.zoo_table", "benchmarks.search_time", "benchmarks.search_profile",
                       "benchmarks.simulator_speed", "soap.cluster"} | WORKERS


@pytest.mark.parametrize("args, env, message", [
    pytest.param(["search.optimize", *A2, "--seed", "-1"], {}, "--seed must be an integer >= 0, got -1", id="seed"),
    pytest.param(["search.optimize", *A2, "--no-run"], {"SOAP_CACHE": "{file}/cache"},
                 "set SOAP_CACHE (or --cache-dir) to a writable folder", id="soap-cache-unwritable"),
    pytest.param(["soap.worker", "{tmp}", "0"], {}, "cluster.json does not exist", id="worker"),
    pytest.param(["search.optimize", *GPT2_TINY, "--data-dir", "{binary}"], {}, "is neither a .bin nor a .txt file",
                 id="token-data"),
])
def test_bad_invocation_as_a_process(args, env, message, paths):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **{k: v.format(**paths) for k, v in env.items()}}
    process = subprocess.run([sys.executable, "-m", *[arg.format(**paths) for arg in args]], capture_output=True,
                             text=True, env=env, cwd=ROOT, timeout=300)
    assert process.returncode == 2, process.stderr
    assert_one_error_line(process.stderr, message.format(**paths))
