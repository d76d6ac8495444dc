"""Search the best parallelization strategy for a model on N devices, and compare it with the baselines.

    python -m search.optimize --model alexnet --gpus 2          # calibrates, searches, runs on 2 workers
    python -m search.optimize --model alexnet --gpus 16 --machine p100-4x4 --budget 60 --out runs/p100
    python -m search.optimize --model alexnet --gpus 2 --init runs/previous/strategy.json
    python -m search.optimize --model path/to/file.py:NAME --gpus 2    # your own flax nnx model (models.resolve)
    python -m search.optimize --model gpt2 --gpus 8 --machine h100x8 --data-dir data/openwebtext  # checks train.bin

Prints one table (simulated and measured step time, speedup over one device, peak memory per device)
for single, data_parallel, model_parallel, owt and the searched strategy (the search's best, or the best
baseline when nothing found is at least --min-gain faster: search.strategy_search.recommend), then the
searched strategy op by op; writes strategy.json, report.json, trace.json (Perfetto), search.png and
strategy.png / strategy.svg (search.picture: one panel per row of the table) to --out. Ctrl-C stops the
search, keeps the best so far, writes every file and exits 130. Bad input: one line, exit 2.
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

from models.data import open_dataset
from models.datasets import DATASETS, TOKEN_DATASETS
from models.graph import OpGraph
from models.resolve import MODEL_HELP, ResolvedModel, resolve_model
from models.zoo import DEFAULT_BATCH_SIZE, TOKEN_MODELS, FamilyOptions, add_family_flags, family_options
from search.mcmc import Budget
from search.run import WARMUP_STEPS, measure_strategies
from search.picture import draw_strategies
from search.report import StrategyRow, format_table, plot_search, report_document, strategy_rows, write_report
from search.strategy_search import (MIN_GAIN, Recommendation, SearchResult, baseline_strategies, recommend,
                                    search_starts, search_strategy)
from simulator.calibrate import calibrate
from simulator.cost import CostModel, RooflineCostModel
from simulator.drift import DriftCheck, calibrated_for_run
from simulator.machine import PRESETS, Machine, load_machine
from simulator.simulate import Simulator
from models.cli import (EXIT_FAILED, EXIT_INTERRUPTED, OneLineParser, UsageError, natural_int, percent,
                        positive_float, positive_int, read_text, run_command, write_atomic)
from soap.optimizer import Optimizer
from soap.runner import InitialValues, module_loss, reference_loss
from soap.strategy import Strategy, strategy_from_json, strategy_to_json


@dataclass(frozen=True)
class Options:
    model: str
    dataset: str
    gpus: int
    batch_size: int
    machine: str | None
    budget_s: float | None  # None, and no iterations: the adaptive default (search.strategy_search.adaptive_budget)
    iterations: int | None
    seed: int
    out: str | None
    init: str | None
    no_run: bool
    timed_steps: int
    rounds: int
    min_gain: float  # a fraction
    descent: bool = False  # search.strategy_search.search_strategy(descent=...)
    recalibrate: bool = False  # measure the local machine again (simulator.drift.calibrated_for_run)
    family: FamilyOptions = FamilyOptions()  # a transformer family's member (--depth, --width, ...)
    optimizer: Optimizer = Optimizer.SGD
    data_dir: str | None = None  # checked against the model (models.data.open_dataset); None: none read


def parse_args(argv: list[str] | None) -> Options:
    parser = OneLineParser(prog="python -m search.optimize", description=__doc__.splitlines()[0],
                           epilog="Writes strategy.json, report.json, trace.json, search.png and strategy.png "
                                  "(with strategy.svg) to --out. Bad input is one line and exit 2; Ctrl-C keeps the "
                                  "best found so far and exits 130.")
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--gpus", required=True, type=positive_int("--gpus"), metavar="N",
                        help="how many devices to split the model over (without GPUs: N worker processes, one "
                             "pinned core each)")
    parser.add_argument("--dataset",
                        help=f"the inputs' shape: images and classes, one of {', '.join(DATASETS)} (default "
                             f"tiny-imagenet, 64x64), or {', '.join(TOKEN_DATASETS)} for {', '.join(TOKEN_MODELS)} "
                             f"(the default there)")
    parser.add_argument("--data-dir", metavar="PATH",
                        help="the dataset's data, checked against the model before anything is measured and named "
                             "in the output: for tokens a folder with nanoGPT's train.bin (uint16 ids), one .bin "
                             "file, or a .txt file read as bytes (vocabulary 256); for images the dataset's folder. "
                             "Step times do not depend on its values: the measured runs train on synthetic batches "
                             "of its shapes (default: no data read)")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=DEFAULT_BATCH_SIZE,
                        help=f"images or sequences per step, over all devices (default {DEFAULT_BATCH_SIZE})")
    add_family_flags(parser)
    parser.add_argument("--optimizer", choices=[optimizer.value for optimizer in Optimizer], default="sgd",
                        help="the training step's optimizer, whose states the memory and whose update the step "
                             "time include: sgd (momentum 0.9, default) or adamw")
    parser.add_argument("--machine", default="local",
                        help=f"what to price strategies on: local (default: the devices at hand, timed on first "
                             f"use and cached), a datasheet preset ({', '.join(PRESETS)}; simulation only), or a "
                             f"machine JSON file")
    parser.add_argument("--budget", type=positive_float("--budget"), metavar="SECONDS",
                        help="stop the search after this many seconds (default: adapted to the model and the device "
                             "count, and said when the search begins); a search also stops once it stops improving")
    parser.add_argument("--iterations", type=positive_int("--iterations"),
                        help="stop the search after this many proposals in all, shared equally among its starts")
    parser.add_argument("--seed", type=natural_int("--seed"), default=0,
                        help="random seed of the search: the same seed finds the same strategy (default 0)")
    parser.add_argument("--out", metavar="FOLDER",
                        help="where to write the files (default: a new folder ./runs/<time>-<model>-<dataset>-<N>gpu)")
    parser.add_argument("--init", metavar="STRATEGY.json",
                        help="also start the search from this strategy (a strategy.json an earlier run wrote)")
    parser.add_argument("--no-run", action="store_true",
                        help="simulate only: do not run the strategies on the devices")
    parser.add_argument("--steps", type=positive_int("--steps"), default=10,
                        help="training steps timed in each measured run (default 10)")
    parser.add_argument("--rounds", type=positive_int("--rounds"), default=2,
                        help="measured runs per strategy, taken in turns; the fastest counts (default 2)")
    parser.add_argument("--min-gain", type=percent("--min-gain"), default=MIN_GAIN, metavar="PERCENT",
                        help=f"recommend the strategy found only if it is simulated at least this much faster than "
                             f"the best baseline, else recommend that baseline (default {MIN_GAIN * 100:g})")
    parser.add_argument("--descent", action="store_true",
                        help="also try greedy descents during the search (search.descent): can find faster "
                             "strategies, at hundreds to thousands of simulations each")
    parser.add_argument("--recalibrate", action="store_true",
                        help="measure every op and the links of the local machine again, though cached (without "
                             "it, a run first re-times a few ops and a link point and measures again only beyond "
                             "10%% drift)")
    args = parser.parse_args(argv)
    dataset = args.dataset or (TOKEN_DATASETS[0] if args.model in TOKEN_MODELS else "tiny-imagenet")
    return Options(args.model, dataset, args.gpus, args.batch_size, args.machine, args.budget, args.iterations,
                   args.seed, args.out, args.init, args.no_run, args.steps, args.rounds, args.min_gain,
                   args.descent, args.recalibrate, family_options(args), Optimizer(args.optimizer), args.data_dir)


def resolve_machine(options: Options) -> tuple[Machine, CostModel, str] | None:
    """A datasheet or file machine with its roofline cost model; None for `local` (see `calibrate_local`)."""
    if options.machine == "local":
        return None
    if options.recalibrate:
        raise UsageError(f"--recalibrate measures the local machine again, but --machine {options.machine} is not "
                         f"measured here; drop --recalibrate or use --machine local")
    machine = load_machine(options.machine, options.gpus)
    return (machine, RooflineCostModel(machine.device, optimizer=options.optimizer),
            f"costs: roofline from the datasheet, {options.optimizer.value}")


def calibrate_local(options: Options, graph: OpGraph) -> tuple[Machine, CostModel, str, DriftCheck | None]:
    """The local machine and profile; checked for drift before measured runs (simulator.drift), not for
    --no-run, which only simulates."""
    optimizer = options.optimizer.value
    if options.no_run and not options.recalibrate:
        machine, profile = calibrate(graph, options.gpus, optimizer=optimizer)
        return machine, profile, f"costs: measured on this machine ({profile.source})", None
    calibrated = calibrated_for_run(graph, options.gpus, options.recalibrate, optimizer=optimizer)
    return (calibrated.machine, calibrated.profile, f"costs: measured on this machine ({calibrated.profile.source})",
            calibrated.check)


def out_dir(options: Options) -> str:
    """The output folder (not created yet); UsageError now if it could not be created and written later."""
    model = options.model.replace(os.sep, "_").replace(":", "-")  # a user's path/to/file.py:NAME as one name
    out = options.out or os.path.join(
        "runs", f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{model}-{options.dataset}-{options.gpus}gpu")
    existing = out
    while existing and not os.path.exists(existing):
        existing = os.path.dirname(existing)
    existing = existing or "."
    if not os.path.isdir(existing):
        raise UsageError(f"--out {out!r}: {existing!r} is a file, not a folder; pass a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out!r}: folder {existing!r} is not writable; pass a writable folder")
    return out


def load_init(path: str, graph: OpGraph, num_devices: int) -> Strategy:
    text = read_text("--init", path, "a strategy.json written by search.optimize")
    return strategy_from_json(text, graph, num_devices, source=f"--init {path}")


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    options = parse_args(argv)
    model = resolve_model(options.model, options.dataset, options.batch_size, options.family)
    graph = model.graph
    data = open_dataset(options.dataset, options.data_dir, "train", options.seed, graph) if options.data_dir else None
    init = load_init(options.init, graph, options.gpus) if options.init else None
    resolved = resolve_machine(options)  # a bad machine is said before anything is measured or written
    out = out_dir(options)
    machine, cost_model, costs, drift = (*resolved, None) if resolved else calibrate_local(options, graph)
    print(f"{graph.model} / {graph.dataset}, batch {graph.batch_size}, {options.gpus} devices of machine "
          f"{machine.name} ({machine.device.kind}); {costs}")
    if data is not None:
        print(f"data: {data.description}")
    baselines, notes = baseline_strategies(graph, options.gpus, machine.devices_per_node)
    for note in notes:
        print(f"note: {note}")
    starts = search_starts(graph, options.gpus, baselines, options.seed, init)
    result = _search(graph, machine, cost_model, starts, options)
    chosen = recommend(result, options.min_gain)
    strategies = {**baselines, "searched": chosen.strategy}
    measured, why_not, reference, interrupted = {}, "--no-run", None, result.interrupted
    if machine.name != "local":
        why_not = f"machine {machine.name} is not the devices at hand; --machine local runs them"
    elif not options.no_run and not interrupted:
        try:
            measured = _measure(graph, strategies, chosen, baselines, options, _initial(model),
                                Simulator(graph, machine, cost_model))
            reference = reference_loss(graph, options.seed) if model.module is None else module_loss(model.module, graph)
            why_not = ""
        except KeyboardInterrupt:  # the search's result is still worth its files
            why_not, interrupted = "interrupted by Ctrl-C", True
    rows = strategy_rows(graph, machine, cost_model, strategies, measured, chosen, reference)
    os.makedirs(out, exist_ok=True)
    strategy_file = os.path.join(out, "strategy.json")
    _write_files(out, strategy_file, graph, machine, cost_model, result, chosen, rows, options, reference, strategies,
                 drift, data.description if data else None)
    print(format_table(rows))
    if why_not:
        print(f"measured: not run ({why_not})")
    descents = f" ({result.descent_simulations} simulations in descents)" if options.descent else ""
    print(f"\nsearched strategy ({result.iterations} iterations{descents} in {result.seconds:.1f} s, "
          f"best found at {result.best_found_at_s:.1f} s): {chosen.note}")
    print(chosen.strategy.describe(graph))
    print(f"\nwrote {strategy_file}, report.json, trace.json, search.png, strategy.png and strategy.svg in {out}")
    if interrupted:
        print("interrupted: kept the best strategy found so far", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = [row.name for row in rows if measured and measured[row.name].step_ms is None]
    if failed:
        print(f"error: {', '.join(failed)} could not run (see the table's notes); the searched strategy is "
              f"simulated only", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _initial(model: ResolvedModel) -> InitialValues | None:
    """A user's module trains its own initial parameters and state; a zoo model its seeded ones (None)."""
    imported = model.imported
    return None if imported is None else InitialValues(imported.params, imported.state)


def _measure(graph, strategies: dict[str, Strategy], chosen: Recommendation, baselines: dict[str, Strategy],
             options: Options, initial: InitialValues | None, simulator: Simulator) -> dict:
    """Every strategy run for real; a kept baseline is the same strategy, run once and shown in both rows."""
    kept_baseline = chosen.kept in baselines
    distinct = {name: s for name, s in strategies.items() if not (name == "searched" and kept_baseline)}
    _warn_if_long(simulator, distinct, options)
    measured = measure_strategies(graph, distinct, options.gpus, options.timed_steps, options.rounds, initial,
                                  options.optimizer)
    if kept_baseline:
        measured["searched"] = measured[chosen.kept]
    return measured


def _warn_if_long(simulator: Simulator, strategies: dict[str, Strategy], options: Options) -> None:
    """A line before measured runs whose steps alone, at their simulated times, take a minute or more."""
    steps = (WARMUP_STEPS + options.timed_steps) * options.rounds
    seconds = steps * sum(simulator.full(strategy).step_ms for strategy in strategies.values()) / 1000
    if seconds >= 60:
        print(f"note: the measured runs take about {seconds / 60:.0f} min or more: {len(strategies)} strategies, "
              f"each run {options.rounds}x for {WARMUP_STEPS + options.timed_steps} steps at its simulated step "
              f"time, plus compiling (--steps and --rounds shorten it, --no-run skips it)", file=sys.stderr,
              flush=True)


def _search(graph, machine, cost_model, starts, options: Options) -> SearchResult:
    from tqdm import tqdm

    given = options.budget_s is not None or options.iterations is not None
    budget = Budget(seconds=options.budget_s, iterations=options.iterations) if given else None
    began = time.perf_counter()
    # Ctrl-C sets a flag the search polls, rather than raising wherever Python happens to be (a
    # KeyboardInterrupt inside a library's callback is swallowed); a second Ctrl-C interrupts as usual.
    interrupted = threading.Event()

    def on_sigint(signum, frame) -> None:
        interrupted.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with tqdm(desc="search", unit=" sims", file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
            def progress(start: str, chain) -> None:  # chain: search.mcmc.Progress
                if chain.iteration % 64 == 0:
                    bar.update(64)
                    bar.set_postfix_str(f"from {start}, best {chain.best_cost:.3f} ms, stops: {chain.waiting_for()}",
                                        refresh=False)

            def building(what: str) -> None:
                bar.set_postfix_str(f"building start: {what}")

            def searching(priced: list[tuple[str, float]], chosen: Budget) -> None:
                if chosen.iterations is not None:  # the bar's end and its time left; chains may stop sooner
                    bar.total = chosen.iterations
                    bar.refresh()
                tqdm.write(f"searching from {', '.join(name for name, _ in priced)} ({_budget_text(chosen, given)}; "
                           f"{time.perf_counter() - began:.1f} s spent building the starts; Ctrl-C stops and keeps "
                           f"the best)", file=sys.stderr)
                sys.stderr.flush()

            result = search_strategy(graph, machine, cost_model, starts, budget, options.seed, on_iteration=progress,
                                     stop_requested=interrupted.is_set, on_building=building, on_starts=searching,
                                     descent=options.descent)
            bar.total = bar.n  # chains that converged end the search before its budget: the bar ends full
            bar.set_postfix_str(f"best {result.best_ms:.3f} ms")
            return result
    finally:
        signal.signal(signal.SIGINT, previous)


def _budget_text(budget: Budget, given: bool) -> str:
    """The budget in words: what was given, or the adaptive default and what it is made of."""
    limits = " or ".join(([f"{budget.iterations} iterations"] if budget.iterations is not None else [])
                         + ([f"{budget.seconds:.0f} s"] if budget.seconds is not None else []))
    if given:
        return f"budget {limits}"
    return (f"adaptive budget {limits}: each chain runs twice the {budget.convergence_floor} iterations before "
            f"FlexFlow's rule (no gain in the last half) may stop it; --budget or --iterations sets another")


def _write_files(out, strategy_file, graph, machine, cost_model, result: SearchResult, chosen: Recommendation, rows,
                 options, reference: float | None, strategies: dict[str, Strategy], drift: DriftCheck | None,
                 data: str | None) -> None:
    write_atomic(strategy_file, strategy_to_json(chosen.strategy, graph))
    simulator = Simulator(graph, machine, cost_model)
    simulator.full(chosen.strategy)
    write_atomic(os.path.join(out, "trace.json"), simulator.trace().to_chrome_json())
    document = report_document(model=graph.model, dataset=graph.dataset, gpus=options.gpus,
                               batch_size=graph.batch_size, machine=machine.name, search=result, kept=chosen.kept,
                               seed=options.seed, rows=rows, strategy_file=strategy_file, reference_loss=reference,
                               calibration=drift.to_json() if drift else None, data=data)
    write_report(os.path.join(out, "report.json"), document)
    plot_search(os.path.join(out, "search.png"), result,
                f"{graph.model} {graph.dataset}, {options.gpus} x {machine.device.kind}")
    titles = {row.name: _panel_title(row, chosen.kept if row.name == "searched" else None) for row in rows}
    draw_strategies([os.path.join(out, "strategy.png"), os.path.join(out, "strategy.svg")], graph, strategies,
                    options.gpus, machine.devices_per_node, titles)


def _panel_title(row: StrategyRow, kept: str | None) -> str:
    """A strategy's name and step times, as the table has them; `kept`: the baseline the searched row is."""
    measured = f", {row.measured_step_ms:.1f} measured" if row.measured_step_ms is not None else ""
    kept = f" (= {kept})" if kept else ""
    return f"{row.name}{kept}\n{row.simulated_step_ms:.1f} ms simulated{measured}"


if __name__ == "__main__":
    sys.exit(main())
