"""FlexFlow's search-time table, reproduced: time to the final best with full and with delta simulation.

    python -m benchmarks.search_time [--model alexnet] [--json PATH] [--iterations 4000] [--seeds 0 1 2 3]
    python -m benchmarks.search_time --model inception_v3 --sizes 16 64 --iterations 300
    python -m benchmarks.search_time --sizes 16 32 64 --seeds 0 1 2 3 --reference-ms 1.894 1.549 1.313
    python -m benchmarks.search_time --descent --sizes 16 --seeds 0 1 2 3 --reference-ms 1.894
    python -m benchmarks.search_time --model gpt2 --sizes 8 16 64 --machine k80-16x4

A zoo model (AlexNet by default: tiny-imagenet shapes, batch 128) on 4, 8, 16, 32, 64 GPUs of
p100-4x4-shaped machines (roofline costs from the datasheet; --machine for another preset). A transformer
(GPT-2, BERT: the tokens dataset; ViT) trains as in benchmarks.zoo_table: AdamW, 8 sequences (images) per
GPU (benchmarks.model_flags). For each size: a
reference search REFERENCE_FACTOR (10) times longer than the timed one (10 x --iterations, all chains)
finds the reference best; then the search of --iterations (same seed) runs with delta simulation and with
full simulation, stopped as soon as its best is within 1% of the reference best, and that moment is its
time-to-best ("-": not within 1% in --iterations). Both count building the starts the search derives
(search.starts). Times are the search process's CPU seconds (time.process_time: on an idle core, its wall
time; a process paused or sharing its core does not spend them). Full and delta make the same decisions
(their costs are equal), so only the time differs. With several --seeds, each seed runs both searches;
the reference best is the best of every seed's reference search, a time is the median over the seeds (a
seed not within 1% counts as the slowest; "-" when half or more are not), and "within 1%" says how many
seeds got there: MCMC's time to a good strategy varies several-fold from seed to seed. With
--reference-ms (one step time per size, a best known from an earlier run), the timed searches are measured
against those instead, and no reference search runs: a change to the search is compared with the one
before it on the same targets, without the ten-times-longer reference searches.
Beside it: FlexFlow's figures where FlexFlow has them (AlexNet on its P100 cluster, the p100-4x4 preset;
SysML 2019, as quoted in the seed; "-" elsewhere) and the reference best's simulated speedup over data
parallelism and over the fastest baseline (soap.baselines: data parallel, OWT, model parallel, single; "-"
for one the device count rules out).
"""

from __future__ import annotations

import json
import math
import statistics
import time

from benchmarks.model_flags import add_model_flags, graph_of, optimizer_for
from models.cli import (OneLineParser, UsageError, check_writable, natural_int, positive_float, positive_int,
                        run_command, write_atomic)
from search.mcmc import Budget, Progress
from search.strategy_search import SearchResult, baseline_strategies, search_starts, search_strategy
from simulator.cost import RooflineCostModel
from simulator.machine import machine_preset
from simulator.simulate import Simulator
from soap.baselines import has_heads
from soap.optimizer import Optimizer

# FlexFlow's search time to its best, full / delta simulation, seconds, by (model, machine) and GPUs.
FLEXFLOW_S = {("alexnet", "p100-4x4"): {4: (0.11, 0.04), 8: (0.40, 0.13), 16: (1.4, 0.48), 32: (5.3, 1.8),
                                        64: (18.0, 5.9)}}
SIZES = (4, 8, 16, 32, 64)
REFERENCE_FACTOR = 10  # the reference search runs this many times the timed search's iterations


def time_to_within(result: SearchResult, target_ms: float) -> float | None:
    """Seconds since the search began at which a strategy it priced (a start, one its derivation priced, a
    descent's step, a chain's best) first came within `target_ms`."""
    moments = [seconds for seconds, ms in result.improvements if ms <= target_ms]
    return min(moments) if moments else None


def _search_until(graph, machine, cost, starts, budget: Budget, seed: int, simulation: str, target_ms: float,
                  descent: bool = False):
    """The search, stopped as soon as its best is within `target_ms` (same chains, same decisions)."""
    reached = False

    def note(_name: str, progress: Progress) -> None:
        nonlocal reached
        reached = reached or progress.best_cost <= target_ms

    return search_strategy(graph, machine, cost, starts, budget, seed, on_iteration=note, simulation=simulation,
                           stop_requested=lambda: reached, clock=time.process_time, descent=descent)


def run_size(graph, num_devices: int, iterations: int, seeds: tuple[int, ...] = (0,),
             preset: str = "p100-4x4", reference_ms: float | None = None, descent: bool = False,
             optimizer: Optimizer = Optimizer.SGD) -> dict:
    """One row of the table; `reference_ms`, when given, is the best the seeds are timed against, and no
    reference search runs (the row's reference fields are then empty); `descent`: every search, the
    reference's included, with greedy descents among its moves; `optimizer`: the update the costs price."""
    machine = machine_preset(preset, num_devices)
    cost = RooflineCostModel(machine.device, optimizer=optimizer)
    baselines = baseline_strategies(graph, num_devices, machine.devices_per_node)[0]
    starts = {seed: search_starts(graph, num_devices, baselines, seed) for seed in seeds}
    budget = Budget(iterations=iterations)
    references = []
    if reference_ms is None:
        references = [search_strategy(graph, machine, cost, starts[seed],
                                      Budget(iterations=REFERENCE_FACTOR * iterations), seed, clock=time.process_time,
                                      descent=descent)
                      for seed in seeds]
        reference_ms = min(result.best_ms for result in references)
    target = reference_ms * 1.01
    delta_s, full_s, searched_ms = [], [], []
    for seed in seeds:
        by_delta = _search_until(graph, machine, cost, starts[seed], budget, seed, "delta", target, descent)
        by_full = _search_until(graph, machine, cost, starts[seed], budget, seed, "full", target, descent)
        assert by_delta.best == by_full.best, "full and delta simulation led the same search apart"
        delta_s.append(time_to_within(by_delta, target))
        full_s.append(time_to_within(by_full, target))
        searched_ms.append(by_delta.best_ms)
    simulator = Simulator(graph, machine, cost)
    baseline_ms = {name: simulator.full(strategy).step_ms for name, strategy in baselines.items()}
    best_baseline = min(baseline_ms, key=baseline_ms.get)
    dp_ms = baseline_ms.get("data_parallel")
    flexflow = FLEXFLOW_S.get((graph.model, preset), {}).get(num_devices, (None, None))
    return {
        "gpus": num_devices, "batch_size": graph.batch_size, "reference_best_ms": reference_ms, "seeds": list(seeds),
        "full_s": median_seconds(full_s), "delta_s": median_seconds(delta_s),
        "within_1pct": sum(seconds is not None for seconds in delta_s),
        "full_s_by_seed": full_s, "delta_s_by_seed": delta_s, "searched_ms_by_seed": searched_ms,
        "reference_best_ms_by_seed": [result.best_ms for result in references],
        "flexflow_full_s": flexflow[0], "flexflow_delta_s": flexflow[1],
        "speedup_over_dp": None if dp_ms is None else dp_ms / reference_ms,
        "best_baseline": best_baseline, "best_baseline_ms": baseline_ms[best_baseline],
        "speedup_over_best_baseline": baseline_ms[best_baseline] / reference_ms,
        "iterations": iterations, "reference_iterations": [result.iterations for result in references],
        "reference_s": [result.seconds for result in references],
    }


def median_seconds(seconds: list[float | None]) -> float | None:
    """The median of the seeds' times, a seed not within 1% (None) counted as slower than all; None when
    that median is one of them."""
    median = statistics.median(math.inf if value is None else value for value in seconds)
    return None if math.isinf(median) else median


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _speedup(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.search_time", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--iterations", type=positive_int("--iterations"), default=4000,
                        help=f"iterations of the timed search (all chains; the reference search runs "
                             f"{REFERENCE_FACTOR}x as many); chains also stop when converged")
    parser.add_argument("--seeds", type=natural_int("--seeds"), nargs="+", default=[0], metavar="SEED",
                        help="run the searches with each seed; times are medians over them")
    parser.add_argument("--reference-ms", type=positive_float("--reference-ms", "a step time in ms > 0"), nargs="+",
                        metavar="MS", help="one best step time per --sizes entry to time the seeds against, "
                                           "instead of running reference searches")
    parser.add_argument("--descent", action="store_true",
                        help="every search with greedy descents among its moves (search.optimize --descent)")
    add_model_flags(parser, SIZES)
    args = parser.parse_args(argv)
    if args.reference_ms is not None and len(args.reference_ms) != len(args.sizes):
        raise UsageError(f"--reference-ms takes one step time per --sizes entry (--sizes lists {len(args.sizes)}, "
                         f"--reference-ms {len(args.reference_ms)}); give one ms per size, in the order of --sizes")
    if args.json:
        check_writable("--json", args.json)
    graph = graph_of(args, args.sizes[0])
    batch = (f"batch {args.batch_size}" if args.batch_size or not has_heads(graph) else
             f"{graph.batch_size // args.sizes[0]} per GPU, {optimizer_for(graph).value}")
    against = ("the given bests" if args.reference_ms else
               f"the best a search of {REFERENCE_FACTOR * args.iterations} iterations finds")
    print(f"{graph.model} {graph.dataset} {batch}, {args.machine} machines; time to within 1% of "
          f"{against}, in at most {args.iterations} (seeds {' '.join(map(str, args.seeds))}; times are medians "
          f"over them){'; with greedy descents' if args.descent else ''}")
    print(f"{'GPUs':>5} {'full s':>8} {'delta s':>8} {'within 1%':>10} {'FlexFlow full/delta s':>22} {'best ms':>12} "
          f"{'best baseline ms':>30} {'vs DP':>7} {'vs best baseline':>17}")
    rows = []
    for position, num_devices in enumerate(args.sizes):
        reference_ms = args.reference_ms[position] if args.reference_ms else None
        graph = graph_of(args, num_devices)
        row = run_size(graph, num_devices, args.iterations, tuple(args.seeds), args.machine, reference_ms,
                       args.descent, optimizer_for(graph))
        rows.append(row)
        print(f"{num_devices:>5} {_seconds(row['full_s']):>8} {_seconds(row['delta_s']):>8} "
              f"{row['within_1pct']:>4} of {len(args.seeds):<3} "
              f"{_seconds(row['flexflow_full_s']):>11} / {_seconds(row['flexflow_delta_s']):<8} "
              f"{row['reference_best_ms']:>12.3f} "
              f"{row['best_baseline_ms']:>12.3f} ({row['best_baseline']:<15}) {_speedup(row['speedup_over_dp']):>7} "
              f"{_speedup(row['speedup_over_best_baseline']):>17}")
    if args.json:
        write_atomic(args.json, json.dumps({"benchmark": "search_time", "model": graph.model, "dataset": graph.dataset,
                                            "machine": args.machine,
                                            "iterations": args.iterations, "seeds": args.seeds,
                                            "descent": args.descent, "rows": rows},
                                           indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
