"""Simulated against measured step times on the local machine, for at least 9 strategies.

    python -m benchmarks.accuracy --gpus 2 [--model alexnet] [--dataset D] [--batch-size 128] [--json PATH]
                                  [--plot PATH] [--steps 10] [--rounds 3]
    python -m benchmarks.accuracy --gpus 2 --model gpt2 --depth 4 --width 256 --heads 4 --vocab 4096 \
                                  --seq-len 128 --batch-size 16

A zoo model (AlexNet by default; its dataset: tiny-imagenet, or imagenet-299 for Inception-v3; tokens for
a transformer family, sized by --depth/--width/--heads/--vocab/--seq-len), on the `local` machine
(calibrated on first use: per-op timings on a pinned core, link fits between the pinned workers), trained
with --optimizer (default: sgd, adamw for token models). Strategies: single, data_parallel,
model_parallel, owt, megatron and megatron_sp for a graph with attention heads, the searched one, and
random valid strategies (benchmarks.accuracy.random_strategies: one with a spatial split (an image
model) or one splitting the vocabulary and one the sequence (a token model), one on a device subset, and
for a graph with adds or concats one splitting a join spatially and one with its branches on different
devices). Each runs on the local cluster (median of --steps timed steps after 2 warm-up steps) --rounds
times, interleaved, and the fastest run counts (search.run). Reported: simulated and measured ms,
relative error, mean absolute relative error, Kendall tau of the two orderings; a scatter plot with the
y = x line. Before the runs the profile is checked for drift (simulator.drift; --recalibrate measures it
again). Targets: mean absolute error <= 10%, Kendall tau >= 0.8 (FlexFlow: within 30%).
"""

from __future__ import annotations

import json

import numpy as np
from scipy import stats

from models.cli import (EXIT_FAILED, CommandFailed, OneLineParser, check_writable, int_at_least, natural_int,
                        positive_float, positive_int, run_command, write_atomic, write_figure)
from models.labels import Role
from models.zoo import MODELS, TOKEN_MODELS, add_family_flags, build_graph, default_dataset, family_options
from search.mcmc import Budget
from search.run import measure_strategies
from search.strategy_search import search_starts, search_strategy
from simulator.drift import calibrated_for_run
from simulator.simulate import Simulator
from soap.baselines import baselines_for, random_strategy, whole_ops
from soap.optimizer import Optimizer
from soap.strategy import Strategy, strategy_to_json


def _splits(graph, role: Role):
    """Whether a strategy splits a label of `role` (the vocabulary, the sequence) in some op."""
    def splits(strategy: Strategy) -> bool:
        return any(degree > 1 and label.role is role for op in graph.ops
                   for label, degree in zip(op.config_labels, strategy[op.name].degrees))
    return splits


def _spatial(graph):
    """Whether a strategy splits a height or a width in some op."""
    height, width = _splits(graph, Role.HEIGHT), _splits(graph, Role.WIDTH)
    return lambda strategy: height(strategy) or width(strategy)


def _uses_a_device_subset(strategy: Strategy) -> bool:
    return any(len(c.devices) < strategy.num_devices for c in strategy.values())


def _joins(graph) -> list:
    return [op for op in graph.ops if len(op.input_shapes) > 1]


def _splits_a_join_spatially(graph):
    joins = _joins(graph)
    return lambda strategy: any(max(strategy[op.name].degrees[1:3]) > 1 for op in joins if len(op.output_shape) == 4)


def branches_apart(graph, num_devices: int, rng: np.random.Generator) -> Strategy:
    """Every op whole on a device drawn at random: the branches of a join run on different devices."""
    return whole_ops(graph, num_devices, lambda op: int(rng.integers(num_devices)))


def random_strategies(graph, num_devices: int, count: int, seed: int) -> dict[str, Strategy]:
    """`count` random strategies: one with a spatial split (an image model) or one splitting the vocabulary
    and one the sequence (a token model), one on a device subset, and for a graph with adds or concats one
    splitting a join on height or width and one with every op whole on a random device (branches apart);
    the rest drawn freely."""
    rng = np.random.default_rng(seed)
    tokens = any(label.role is Role.VOCAB for op in graph.ops for label in op.config_labels)
    splits = [_splits(graph, Role.VOCAB), _splits(graph, Role.SEQUENCE)] if tokens else [_spatial(graph)]
    wanted = [*splits, _uses_a_device_subset]
    if _joins(graph) and not tokens:
        wanted.append(_splits_a_join_spatially(graph))
    wanted += [lambda s: True] * (count - len(wanted) - (1 if _joins(graph) else 0))
    chosen = {}
    for k, want in enumerate(wanted):
        strategy = random_strategy(graph, num_devices, rng)
        while not want(strategy):
            strategy = random_strategy(graph, num_devices, rng)
        chosen[f"random{k + 1}"] = strategy
    if _joins(graph):
        chosen["branches-apart"] = branches_apart(graph, num_devices, rng)
    return chosen


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=positive_int("--gpus"), default=2)
    parser.add_argument("--model", default="alexnet", help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), help="default: 128, 16 for a token model")
    parser.add_argument("--dataset", help="default: tiny-imagenet, or imagenet-299 for a model that needs more; "
                                          "tokens for a token model")
    add_family_flags(parser)
    parser.add_argument("--optimizer", choices=[o.value for o in Optimizer], help="default: sgd, adamw for a token model")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--plot", metavar="PATH", default="accuracy.png")
    parser.add_argument("--steps", type=positive_int("--steps"), default=10)
    parser.add_argument("--budget", type=positive_float("--budget"), default=20.0)
    parser.add_argument("--random", type=int_at_least("--random", 3), default=4, help="random strategies (at least 3)")
    parser.add_argument("--seed", type=natural_int("--seed"), default=0)
    parser.add_argument("--rounds", type=positive_int("--rounds"), default=3,
                        help="runs per strategy, interleaved; the fastest counts (search.run explains why)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="measure every op and the links again, though cached (without it, the run first "
                             "re-times a few ops and a link point and measures again only beyond 10%% drift)")
    args = parser.parse_args(argv)
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_writable(flag, path)
    tokens = args.model in TOKEN_MODELS
    options = family_options(args)
    graph = build_graph(args.model, args.dataset or default_dataset(args.model),
                        args.batch_size or (16 if tokens else 128), options)
    optimizer = Optimizer(args.optimizer or ("adamw" if tokens else "sgd"))
    calibrated = calibrated_for_run(graph, args.gpus, args.recalibrate, optimizer=optimizer.value)
    machine, profile = calibrated.machine, calibrated.profile
    strategies = {name: build(graph, args.gpus) for name, build in baselines_for(graph).items()}
    starts = search_starts(graph, args.gpus, strategies, args.seed)
    found = search_strategy(graph, machine, profile, starts, Budget(seconds=args.budget), args.seed)
    strategies["searched"] = found.best
    strategies.update(random_strategies(graph, args.gpus, args.random, args.seed))
    simulator = Simulator(graph, machine, profile)
    simulated = {name: simulator.full(strategy).step_ms for name, strategy in strategies.items()}
    measured = measure_strategies(graph, strategies, args.gpus, args.steps, args.rounds, optimizer=optimizer)
    rows = [{"name": name, "simulated_ms": simulated[name], "measured_ms": measured[name].step_ms,
             "relative_error": (simulated[name] - measured[name].step_ms) / measured[name].step_ms
             if measured[name].step_ms else None, "note": measured[name].note} for name in strategies]
    ran = [row for row in rows if row["measured_ms"] is not None]
    mae = float(np.mean([abs(row["relative_error"]) for row in ran]))
    tau = float(stats.kendalltau([r["simulated_ms"] for r in ran], [r["measured_ms"] for r in ran]).statistic)
    print(f"{graph.model} {graph.dataset} batch {graph.batch_size} on {args.gpus} local workers ({machine.device.kind}); "
          f"{optimizer.value}, {args.steps} timed steps a run, fastest of {args.rounds} runs")
    print(f"{'strategy':<15} {'simulated ms':>12} {'measured ms':>12} {'error':>8}")
    for row in rows:
        measured_text = f"{row['measured_ms']:>12.1f}" if row["measured_ms"] is not None else f"{'not run':>12}"
        error_text = f"{row['relative_error']:>+7.1%}" if row["relative_error"] is not None else ""
        print(f"{row['name']:<15} {row['simulated_ms']:>12.1f} {measured_text} {error_text:>8}  {row['note']}")
    print(f"mean absolute relative error {mae:.1%}, Kendall tau {tau:.2f} over {len(ran)} strategies")
    _plot(args.plot, ran, f"{graph.model}, {args.gpus} local workers: MAE {mae:.1%}, Kendall tau {tau:.2f}")
    if not ran:
        raise CommandFailed("no strategy could run (see the notes above); nothing to compare")
    if args.json:
        document = {"benchmark": "accuracy", "model": graph.model, "gpus": args.gpus, "batch_size": graph.batch_size,
                    "family": options.given(), "optimizer": optimizer.value, "device_kind": machine.device.kind,
                    "rows": rows, "mean_absolute_relative_error": mae, "kendall_tau": tau,
                    "calibration": calibrated.check.to_json(),
                    "strategies": {name: json.loads(strategy_to_json(s, graph)) for name, s in strategies.items()}}
        write_atomic(args.json, json.dumps(document, indent=1))
    return EXIT_FAILED if len(ran) < len(rows) else 0


def _plot(path: str, rows: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 5))
    xs, ys = [r["measured_ms"] for r in rows], [r["simulated_ms"] for r in rows]
    axes.scatter(xs, ys)
    for row in rows:
        axes.annotate(row["name"], (row["measured_ms"], row["simulated_ms"]), fontsize=8)
    top = max(xs + ys) * 1.1
    axes.plot([0, top], [0, top], "k--", linewidth=1, label="y = x")
    axes.set_xlim(0, top)
    axes.set_ylim(0, top)
    axes.set_xlabel("measured step time (ms)")
    axes.set_ylabel("simulated step time (ms)")
    axes.set_title(title, fontsize=9)
    axes.legend()
    figure.tight_layout()
    write_figure(path, figure)
    plt.close(figure)


if __name__ == "__main__":
    raise SystemExit(main())
