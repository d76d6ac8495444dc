"""The seed's experiment: train AlexNet for whole epochs per strategy and print its epoch-time tables.

    python -m benchmarks.epochs --dataset tiny-imagenet --gpus 2 --epochs 20 [--steps-per-epoch K]
        [--data-dir DIR] [--batch-size 128] [--budget 20] [--min-gain 2] [--strategy-file STRATEGY.json]
        [--json PATH] [--recalibrate]
    python -m benchmarks.epochs --model gpt2 --depth 2 --width 64 --heads 2 --vocab 256 --seq-len 32 \
        --batch-size 8 --dataset tokens [--data-dir data/shakespeare_char] --strategy megatron --epochs 1

Trains single, data_parallel, model_parallel, owt, megatron and megatron_sp (for a model with attention
heads) and the searched strategy, or only those --strategy names. The searched one is searched here on the
calibrated `local` machine, checked for drift first as simulator.drift says, and recommended as
search.optimize does, or read from --strategy-file; a searched strategy that IS a baseline is trained
once and shown in both rows, marked "= name". Each trains on a local cluster of N pinned workers for --epochs
epochs of --steps-per-epoch steps (default: the whole dataset), from the same initial weights over the same batches. Prints, per strategy, every epoch's
time and min / Q1 / median / mean / Q3 / max as the seed's appendix B does; then the average epoch time
per strategy and its speedup over single, the first step's compile time apart, and the training loss per epoch (the strategies learn the
same weights: the loss columns agree within float tolerance). Without --data-dir the data is synthetic
(same shapes and class count) and every output says so. Writes JSON (--json) and a plot of epoch time
per strategy (--plot). Ctrl-C stops, prints and writes the epochs finished so far, exits 130.
Training throughput is samples an epoch over its mean time: images/s, or tokens/s for a token model.
A token model (a transformer family, sized by --depth/--width/--heads/--vocab/--seq-len) reads the
tokens dataset (models.token_data: nanoGPT's train.bin/val.bin, a .txt file as bytes, or synthetic ids),
trains with --optimizer (default: sgd with momentum 0.9 at 0.01, the seed's; adamw for a token model)
and, where the data has a val split (a folder with val.bin, or synthetic), is evaluated after its last
epoch: mean next-token loss and argmax accuracy over --eval-batches val batches (soap.evaluate).
The seed measured on 2 GPUs (speedup over one GPU): data parallel 0.92x (Tiny ImageNet) / 0.85x (Dogs
vs Cats), model parallel 0.98x / 0.83x, OWT 0.95x / 1.27x.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from models.cli import (EXIT_FAILED, EXIT_INTERRUPTED, OneLineParser, check_writable, natural_int, percent,
                        positive_float, positive_int, read_text, run_command, UsageError, write_atomic,
                        write_figure)
from models.data import Dataset, measure_throughput, open_dataset
from models.errors import SoapError
from models.graph_file import graph_to_json
from models.token_data import TokenDataset, has_split
from models.zoo import DEFAULT_BATCH_SIZE, MODELS, TOKEN_MODELS, add_family_flags, build_graph, family_options
from search.strategy_search import MIN_GAIN
from soap.baselines import BASELINES, TENSOR_PARALLEL, baselines_for
from soap.epochs import EpochConfig, steps_per_epoch
from soap.optimizer import Optimizer
from soap.strategy import Strategy, strategy_from_json, strategy_to_json

DATASETS = ("tiny-imagenet", "dogs-vs-cats", "tokens")
TOKEN_BATCH_SIZE = 16  # the other commands' default for a token model
SEARCHED = "searched"
SEED_SPEEDUPS = {"tiny-imagenet": {"data_parallel": 0.92, "model_parallel": 0.98, "owt": 0.95},
                 "dogs-vs-cats": {"data_parallel": 0.85, "model_parallel": 0.83, "owt": 1.27}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m benchmarks.epochs", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet", help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("--dataset", choices=DATASETS, help="default: tiny-imagenet; tokens for a token model")
    add_family_flags(parser)
    parser.add_argument("--gpus", type=positive_int("--gpus"), default=2, help="local pinned workers")
    parser.add_argument("--epochs", type=positive_int("--epochs"), default=20)
    parser.add_argument("--steps-per-epoch", type=positive_int("--steps-per-epoch"), help="default: the whole dataset per epoch")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"),
                        help=f"default: {DEFAULT_BATCH_SIZE}, {TOKEN_BATCH_SIZE} for a token model")
    parser.add_argument("--data-dir", help="the dataset's folder (or token file) in its real format; default: "
                                           "synthetic data")
    parser.add_argument("--strategy", action="append", metavar="NAME",
                        help=f"train only this strategy (repeatable): a baseline "
                             f"({', '.join({**BASELINES, **TENSOR_PARALLEL})}; the last two for a model with "
                             f"attention heads) or {SEARCHED}; default: every baseline of the model and {SEARCHED}")
    parser.add_argument("--optimizer", choices=[o.value for o in Optimizer], help="default: sgd, adamw for a token model")
    parser.add_argument("--eval-batches", type=positive_int("--eval-batches"),
                        help="val batches a token model is evaluated on after training; default: the whole split")
    parser.add_argument("--budget", type=positive_float("--budget"), default=20.0, help="search seconds (ignored with --strategy-file)")
    parser.add_argument("--min-gain", type=percent("--min-gain"), default=MIN_GAIN, metavar="PERCENT",
                        help=f"as search.optimize's: recommend the searched strategy only if simulated at least this "
                             f"much faster than the best baseline (default {MIN_GAIN * 100:g})")
    parser.add_argument("--strategy-file", help="the searched strategy (a strategy.json of search.optimize)")
    parser.add_argument("--seed", type=natural_int("--seed"), default=0)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--plot", metavar="PATH", default="epochs.png")
    parser.add_argument("--recalibrate", action="store_true",
                        help="measure every op and the links again before the search, though cached (without it, "
                             "a few ops and a link point are re-timed first and measured again only beyond 10%% "
                             "drift)")
    args = parser.parse_args(argv)
    if args.recalibrate and args.strategy_file:
        raise UsageError("--recalibrate measures the local machine for the search, but --strategy-file skips the "
                         "search; drop one of them")
    if args.strategy and SEARCHED not in args.strategy:
        for flag, given in (("--strategy-file", args.strategy_file), ("--recalibrate", args.recalibrate)):
            if given:
                raise UsageError(f"{flag} is for the {SEARCHED} strategy, but --strategy {' '.join(args.strategy)} "
                                 f"leaves it out; add --strategy {SEARCHED} or drop {flag}")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_writable(flag, path)
    return args


def chosen_strategies(graph, args) -> dict[str, Strategy]:
    """The baselines --strategy names (default: every baseline of the model), in the baselines' order."""
    baselines = baselines_for(graph)
    wanted = args.strategy or [*baselines, SEARCHED]
    unknown = [name for name in wanted if name not in baselines and name != SEARCHED]
    if unknown:
        raise UsageError(f"--strategy {unknown[0]!r} is not a baseline of {graph.model}; use one of "
                         f"{', '.join(baselines)} or {SEARCHED}")
    return {name: build(graph, args.gpus) for name, build in baselines.items() if name in wanted}


def searched_strategy(graph, args, optimizer: Optimizer) -> tuple[Strategy, str, dict | None]:
    """The strategy file's, or one searched now on the local machine, calibrated and checked for drift:
    (strategy, how, the drift check's JSON or None)."""
    if args.strategy_file:
        text = read_text("--strategy-file", args.strategy_file, "a strategy.json written by search.optimize")
        return (strategy_from_json(text, graph, args.gpus, source=args.strategy_file), f"from {args.strategy_file}",
                None)
    from search.mcmc import Budget
    from search.strategy_search import baseline_strategies, recommend, search_starts, search_strategy
    from simulator.drift import calibrated_for_run

    calibrated = calibrated_for_run(graph, args.gpus, args.recalibrate, say=lambda line: print(line, file=sys.stderr),
                                    optimizer=optimizer.value)
    baselines, _ = baseline_strategies(graph, args.gpus)
    result = search_strategy(graph, calibrated.machine, calibrated.profile,
                             search_starts(graph, args.gpus, baselines, args.seed), Budget(seconds=args.budget), args.seed)
    chosen = recommend(result, args.min_gain)
    return chosen.strategy, (f"searched {result.seconds:.1f} s on the local machine: {chosen.note}; simulated "
                             f"{chosen.step_ms:.1f} ms/step"), calibrated.check.to_json()


def run(graph, dataset_name: str, data_dir, strategies: dict[str, Strategy], num_workers: int,
        config: EpochConfig, evaluate: bool, records: list[dict]) -> None:
    """Train every strategy on a local cluster (then evaluate it on the val split if `evaluate`); `records`
    fills with the workers' events as they come."""
    from tqdm import tqdm

    from soap.devices import run_worker_job

    job = {"graph": graph_to_json(graph), "dataset": dataset_name, "data_dir": data_dir, "evaluate": evaluate,
           "strategies": {name: strategy_to_json(s, graph) for name, s in strategies.items()},
           "config": asdict(config)}
    with tqdm(total=len(strategies) * config.epochs, desc="epochs", unit=" epoch", file=sys.stderr) as bar:
        def poll(folder: Path) -> None:
            path = folder / "epochs.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            for line in lines[len(records):]:
                records.append(json.loads(line))
                if "epoch" in records[-1]:
                    bar.update(1)
                    bar.set_postfix_str(f"{records[-1]['strategy']} epoch {records[-1]['epoch']}: "
                                        f"{records[-1]['seconds']:.1f} s", refresh=False)
        run_worker_job(json.dumps(job), num_workers, poll, "soap.epoch_worker", timeout_s=24 * 3600, on_poll=poll)


def throughput_unit(dataset: Dataset | TokenDataset) -> tuple[str, int]:
    """What training throughput counts, and how many of it a sample holds: images (1), or tokens (the
    sequence length) for token data."""
    return ("tokens", dataset.sequence_tokens) if isinstance(dataset, TokenDataset) else ("images", 1)


def summarize(records: list[dict], names: list[str], unit: str, per_step: int) -> dict[str, dict]:
    """Per strategy: epoch times and losses, their statistics, compile time (finished epochs only), the
    training throughput `<unit>_per_s` (`per_step` units a step over the mean epoch time) and the val
    split's loss and accuracy where evaluated."""
    summary = {}
    for name in names:
        epochs = [r for r in records if r["strategy"] == name and "epoch" in r]
        if not epochs:
            continue
        seconds = np.array([r["seconds"] for r in epochs])
        q1, median, q3 = np.percentile(seconds, [25, 50, 75])
        ended = next((r for r in records if r["strategy"] == name and "compile_s" in r), {})
        summary[name] = {"epoch_seconds": seconds.tolist(), "losses": [r["loss"] for r in epochs],
                         "min": float(seconds.min()), "q1": float(q1), "median": float(median),
                         "mean": float(seconds.mean()), "q3": float(q3), "max": float(seconds.max()),
                         "compile_s": ended.get("compile_s"), "steps_per_epoch": epochs[0]["steps"],
                         f"{unit}_per_s": epochs[0]["steps"] * per_step / float(seconds.mean()),
                         **{k: v for k, v in ended.items() if k.startswith("eval_")}}
    return summary


def format_tables(summary: dict[str, dict], dataset_name: str, unit: str) -> str:
    lines = []
    for name, s in summary.items():
        lines.append(f"\n{_label(name, s)}")
        times = s["epoch_seconds"]
        for first in range(0, len(times), 10):
            chunk = range(first, min(first + 10, len(times)))
            lines.append("Epochs  " + "".join(f"{k + 1:>8}" for k in chunk))
            lines.append("Times   " + "".join(f"{times[k]:>8.2f}" for k in chunk))
        lines.append("        " + "".join(f"{h:>8}" for h in ("Min", "Q1", "Median", "Mean", "Q3", "Max")))
        lines.append("        " + "".join(f"{s[k]:>8.2f}" for k in ("min", "q1", "median", "mean", "q3", "max")))
    single = summary.get("single")
    seed = SEED_SPEEDUPS.get(dataset_name, {})
    lines.append(f"\n{'strategy':<15} {'mean epoch s':>12} {unit + '/s':>10} {'speedup':>8} {'seed (2 GPUs)':>14} "
                 f"{'compile s':>10}")
    for name, s in summary.items():
        speedup = f"{single['mean'] / s['mean']:>7.2f}x" if single else f"{'-':>8}"
        theirs = f"{seed[name]:.2f}x" if name in seed else "-"
        compile_s = f"{s['compile_s']:>10.1f}" if s["compile_s"] is not None else f"{'-':>10}"
        lines.append(f"{_label(name, s):<15} {s['mean']:>12.2f} {s[unit + '_per_s']:>10.0f} {speedup} {theirs:>14} "
                     f"{compile_s}")
    epochs = max(len(s["losses"]) for s in summary.values())
    lines.append("\ntraining loss per epoch")
    lines.append(f"{'epoch':>5} " + "".join(f"{name:>15}" for name in summary))
    for k in range(epochs):
        lines.append(f"{k + 1:>5} " + "".join(f"{s['losses'][k]:>15.6f}" if k < len(s["losses"]) else f"{'-':>15}"
                                              for s in summary.values()))
    if single:
        spread = max(abs(a - b) for s in summary.values() for a, b in zip(s["losses"], single["losses"]))
        lines.append(f"largest loss difference from single: {spread:.2e}")
    evaluated = {name: s for name, s in summary.items() if "eval_loss" in s}
    if evaluated:
        lines.append(f"\nval split after the last epoch\n{'strategy':<15} {'loss':>10} {'accuracy':>9} {'batches':>8}")
        for name, s in evaluated.items():
            lines.append(f"{_label(name, s):<15} {s['eval_loss']:>10.4f} {s['eval_accuracy']:>9.2%} "
                         f"{s['eval_batches']:>8}")
    return "\n".join(lines)


def _label(name: str, s: dict) -> str:
    return f"{name} (= {s['same_as']})" if s.get("same_as") else name


def same_as_baseline(strategies: dict[str, Strategy]) -> str | None:
    """The baseline the searched strategy is (it is trained once, under that name), or None."""
    return next((name for name, s in strategies.items() if name != "searched" and s == strategies["searched"]), None)


def plot(summary: dict[str, dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, s in summary.items():
        axes.plot(range(1, len(s["epoch_seconds"]) + 1), s["epoch_seconds"], marker="o", markersize=3,
                  label=_label(name, s))
    axes.set_xlabel("epoch")
    axes.set_ylabel("epoch time (s)")
    axes.set_title(title, fontsize=9)
    axes.legend()
    figure.tight_layout()
    write_figure(path, figure)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    tokens = args.model in TOKEN_MODELS
    dataset_name = args.dataset or ("tokens" if tokens else "tiny-imagenet")
    batch_size = args.batch_size or (TOKEN_BATCH_SIZE if tokens else DEFAULT_BATCH_SIZE)
    graph = build_graph(args.model, dataset_name, batch_size, family_options(args))
    dataset = open_dataset(dataset_name, args.data_dir, "train", args.seed, graph)
    evaluate = isinstance(dataset, TokenDataset) and has_split(args.data_dir, "val")
    if evaluate:
        open_dataset(dataset_name, args.data_dir, "val", args.seed, graph)  # checked here, before any training
    optimizer = Optimizer(args.optimizer or ("adamw" if tokens else "sgd"))
    config = EpochConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
                         optimizer=optimizer.value, eval_batches=args.eval_batches)
    steps = steps_per_epoch(dataset, batch_size, config)
    strategies = chosen_strategies(graph, args)
    how, calibration = None, None
    if args.strategy is None or SEARCHED in args.strategy:
        strategies[SEARCHED], how, calibration = searched_strategy(graph, args, optimizer)
    unit, per_sample = throughput_unit(dataset)
    input_per_s = measure_throughput(dataset, batch_size, batches=3) * per_sample
    title = (f"{graph.model}, {dataset.description}, batch {batch_size}, {optimizer.value}, {args.gpus} pinned "
             f"workers, {args.epochs} epochs of {steps} steps")
    print(title)
    print(f"input pipeline alone: {input_per_s:.0f} {unit}/s (one process reading whole batches)"
          + (f"; searched: {how}" if how else ""))
    records: list[dict] = []
    status = 0
    same_as = same_as_baseline(strategies) if SEARCHED in strategies else None
    to_train = {name: s for name, s in strategies.items() if not (same_as and name == SEARCHED)}
    try:
        run(graph, dataset_name, args.data_dir, to_train, args.gpus, config, evaluate, records)
    except KeyboardInterrupt:
        print("interrupted: the epochs finished so far follow", file=sys.stderr)
        status = EXIT_INTERRUPTED
    except SoapError as error:
        print(f"error: {error}", file=sys.stderr)
        status = EXIT_FAILED
    summary = summarize(records, list(to_train), unit, batch_size * per_sample)
    if same_as in summary:
        summary[SEARCHED] = {**summary[same_as], "same_as": same_as}
    if summary:
        print(format_tables(summary, dataset_name, unit))
        plot(summary, args.plot, title)
    if args.json:
        searched = strategy_to_json(strategies[SEARCHED], graph) if SEARCHED in strategies else None
        document = {"benchmark": "epochs", "model": graph.model, "dataset": dataset_name,
                    "family": family_options(args).given(), "optimizer": optimizer.value,
                    "synthetic": dataset.synthetic, "data": dataset.description, "gpus": args.gpus,
                    "batch_size": batch_size, "epochs": args.epochs, "steps_per_epoch": steps,
                    f"input_{unit}_per_s": input_per_s, "searched": how, "searched_strategy": searched,
                    "strategies": summary, "calibration": calibration}
        write_atomic(args.json, json.dumps(document, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
