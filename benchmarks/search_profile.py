"""Where the time of a search iteration goes: one chain from one start, as the search runs it.

    python -m benchmarks.search_profile --model inception_v3 --sizes 64 --start additive --iterations 150
    python -m benchmarks.search_profile --model alexnet --sizes 16 64 --start data_parallel --iterations 2000

For each size, the chain the search would run from --start (a baseline, `random`, or a start the search
derives: `additive`, `placed`, `data_parallel_narrower`) runs --iterations iterations with the search's proposals,
delta simulation and temperature, twice with the same seed: once timed (CPU seconds; simulations per
second), once under cProfile, whose top functions by own time say where an iteration's time goes (their
shares are of the profiled chain, which cProfile slows, Python calls most; that chain reads the wall clock,
as reading the CPU clock under cProfile is priced far above its cost). Building the start is not counted.
The collector is off in both, as in the search (search.strategy_search).
"""

from __future__ import annotations

import cProfile
import json
import math
import pstats
import time
from pathlib import Path

import numpy as np

from benchmarks.model_flags import add_model_flags, graph_of, optimizer_for
from models.cli import OneLineParser, UsageError, check_writable, natural_int, positive_int, run_command, write_atomic
from search.mcmc import Budget, run_mcmc
from search.starts import additive_start, narrower_data_parallel
from search.strategy_search import (ADDITIVE_START, BETA_RELATIVE, PLACED_START, RANDOM_START, baseline_strategies,
                                    placed_start, priced_ms, proposal, without_cyclic_collector)
from simulator.cost import RooflineCostModel
from simulator.machine import machine_preset
from simulator.simulate import Simulator
from soap.baselines import random_strategy

ROOT = Path(__file__).resolve().parents[1]
NARROWER_START = "data_parallel_narrower"
TOP_FUNCTIONS = 12


def build_start(name: str, graph, simulator: Simulator, seed: int):
    """The strategy the search starts from under `name`; UsageError when this graph and size have none."""
    num_devices = simulator.machine.num_devices
    if name == RANDOM_START:
        return random_strategy(graph, num_devices, np.random.default_rng(seed))
    if name == ADDITIVE_START:
        strategy = additive_start(graph, simulator.builder)
    elif name == PLACED_START:
        strategy = placed_start(graph, simulator, seed, lambda s: simulator.delta(s).step_ms,
                                lambda s: simulator.delta(s).step_ms)
    elif name == NARROWER_START:
        found = narrower_data_parallel(graph, num_devices, lambda s: simulator.full(s).step_ms)
        strategy = None if found is None else found[1]
    else:
        strategy = baseline_strategies(graph, num_devices, simulator.machine.devices_per_node)[0].get(name)
    if strategy is None:
        raise UsageError(f"--start {name} does not exist for {graph.model} on {num_devices} devices; "
                         f"try data_parallel or {RANDOM_START}")
    return strategy


@without_cyclic_collector
def run_chain(graph, num_devices: int, start_name: str, iterations: int, seed: int, preset: str,
              profiler: cProfile.Profile | None = None) -> tuple[float, int, float, float]:
    """(CPU seconds of the chain, its iterations, the start's ms, the chain's best ms)."""
    machine = machine_preset(preset, num_devices)
    simulator = Simulator(graph, machine, RooflineCostModel(machine.device, optimizer=optimizer_for(graph)))
    start = build_start(start_name, graph, simulator, seed)
    start_ms = simulator.full(start).step_ms
    beta = BETA_RELATIVE / start_ms if math.isfinite(start_ms) else 0.0

    def price(strategy):
        return priced_ms(simulator.delta(strategy, time_over_memory=False))  # as the search prices

    propose = proposal(graph, num_devices)
    clock = time.process_time if profiler is None else time.perf_counter
    if profiler is not None:
        profiler.enable()
    began = time.process_time()
    result = run_mcmc(start, propose, price, np.random.default_rng(seed), beta,
                      Budget(iterations=iterations, min_iterations=iterations + 1), clock=clock)
    seconds = time.process_time() - began
    if profiler is not None:
        profiler.disable()
    return seconds, result.iterations, start_ms, result.best_cost


def top_functions(profiler: cProfile.Profile, count: int = TOP_FUNCTIONS) -> list[dict]:
    """The functions with the most own time, their share of the profiled total and their calls."""
    stats = pstats.Stats(profiler).stats
    total = sum(entry[2] for entry in stats.values())
    rows = sorted(((entry[2], entry[1], key) for key, entry in stats.items()), reverse=True)[:count]
    return [{"function": _name(key), "share": own_s / total, "own_s": own_s, "calls": calls}
            for own_s, calls, key in rows]


def _name(key: tuple[str, int, str]) -> str:
    path, line, function = key
    if path == "~":
        return function
    module = path.split("/site-packages/")[-1]
    if "/site-packages/" not in path and "/lib/python" in path:  # the standard library
        module = path.split("/lib/python")[-1].split("/", 1)[-1]
    if Path(path).is_relative_to(ROOT):
        module = str(Path(path).relative_to(ROOT))
    return f"{module}:{line}({function})"


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.search_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--start", default=ADDITIVE_START,
                        help=f"data_parallel, owt, model_parallel, single, {RANDOM_START}, {ADDITIVE_START}, "
                             f"{PLACED_START} or {NARROWER_START}")
    parser.add_argument("--iterations", type=positive_int("--iterations"), default=150)
    parser.add_argument("--seed", type=natural_int("--seed"), default=0)
    parser.add_argument("--json", metavar="PATH")
    add_model_flags(parser, (64,))
    args = parser.parse_args(argv)
    if args.json:
        check_writable("--json", args.json)
    rows = []
    for num_devices in args.sizes:
        graph = graph_of(args, num_devices)
        seconds, iterations, start_ms, best_ms = run_chain(graph, num_devices, args.start, args.iterations, args.seed,
                                                           args.machine)
        profiler = cProfile.Profile()
        run_chain(graph, num_devices, args.start, args.iterations, args.seed, args.machine, profiler)
        top = top_functions(profiler)
        rows.append({"gpus": num_devices, "batch_size": graph.batch_size, "start": args.start, "start_ms": start_ms,
                     "best_ms": best_ms,
                     "iterations": iterations, "seconds": seconds, "iterations_per_s": iterations / seconds,
                     "top_functions": top})
        print(f"{graph.model} on {num_devices} {args.machine} GPUs, one chain from {args.start} ({start_ms:.3f} ms "
              f"-> {best_ms:.3f}): {iterations} iterations in {seconds:.2f} CPU s, {iterations / seconds:.1f} a "
              f"second; own time under cProfile:")
        for entry in top:
            print(f"  {entry['share']:6.1%}  {entry['calls']:>9}  {entry['function']}")
    if args.json:
        write_atomic(args.json, json.dumps({"benchmark": "search_profile", "model": args.model,
                                            "machine": args.machine, "start": args.start, "seed": args.seed,
                                            "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
