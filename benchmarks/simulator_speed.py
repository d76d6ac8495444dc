"""Simulations per second, full and delta, for a zoo model on p100-4x4-shaped machines of 2-64 GPUs.

    python -m benchmarks.simulator_speed [--model alexnet] [--json PATH] [--moves 400] [--dataset D]
    python -m benchmarks.simulator_speed --model inception_v3 --sizes 16 64 --moves 100

Each size replays one random walk of single-op moves from data parallelism (what MCMC proposes),
first once by full simulation to fill the value caches both modes share (local-op costs, slice
intersections), then timed: every strategy of the walk by full simulation, then the walk by delta
simulation (its segments built afresh: the walk's strategies are new to it, as a search's are). Both modes
are checked to agree on every step time. Targets: delta >= 3x full at 16 GPUs and above (FlexFlow:
2.2-6.9x); a full simulation of AlexNet on 4 GPUs under 1 ms.
"""

from __future__ import annotations

import json
import time

import numpy as np

from benchmarks.model_flags import add_model_flags, graph_of, optimizer_for
from models.cli import OneLineParser, check_writable, natural_int, positive_int, run_command, write_atomic
from simulator.cost import RooflineCostModel
from simulator.machine import machine_preset
from simulator.simulate import Simulator
from soap.baselines import data_parallel
from soap.space import enumerate_configs

SIZES = (2, 4, 8, 16, 32, 64)


def random_walk(graph, num_devices: int, moves: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    strategy = data_parallel(graph, num_devices)
    walk = [strategy]
    for _ in range(moves):
        op = graph.ops[rng.integers(len(graph.ops))]
        space = enumerate_configs(op, num_devices)
        strategy = strategy.with_config(op.name, space[rng.integers(len(space))])
        walk.append(strategy)
    return walk


def measure(graph, num_devices: int, moves: int, seed: int, preset: str = "p100-4x4") -> dict:
    machine = machine_preset(preset, num_devices)
    simulator = Simulator(graph, machine, RooflineCostModel(machine.device, optimizer=optimizer_for(graph)))
    walk = random_walk(graph, num_devices, moves, seed)
    for strategy in walk:  # fills the value caches both modes share; not the segments delta keeps
        simulator.full(strategy)
    started = time.perf_counter()
    by_full = [simulator.full(strategy).step_ms for strategy in walk]
    full_s = time.perf_counter() - started
    simulator.full(walk[0])
    started = time.perf_counter()
    by_delta = [simulator.delta(strategy).step_ms for strategy in walk[1:]]
    delta_s = time.perf_counter() - started
    assert by_delta == by_full[1:], "delta and full simulation disagree"
    full_per_s, delta_per_s = len(walk) / full_s, (len(walk) - 1) / delta_s
    return {"gpus": num_devices, "batch_size": graph.batch_size, "full_per_s": full_per_s, "delta_per_s": delta_per_s,
            "full_ms": 1e3 / full_per_s, "delta_ms": 1e3 / delta_per_s, "ratio": delta_per_s / full_per_s}


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.simulator_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--moves", type=positive_int("--moves"), default=400)
    parser.add_argument("--seed", type=natural_int("--seed"), default=0)
    add_model_flags(parser, SIZES)
    args = parser.parse_args(argv)
    if args.json:
        check_writable("--json", args.json)
    graph = graph_of(args, args.sizes[0])
    print(f"{graph.model} {graph.dataset} ({len(graph)} ops), {args.machine} machines, {args.moves} random single-op "
          f"moves from DP")
    print(f"{'GPUs':>5} {'batch':>6} {'full/s':>9} {'delta/s':>9} {'full ms':>8} {'delta ms':>9} {'delta/full':>11}")
    rows = []
    for num_devices in args.sizes:
        graph = graph_of(args, num_devices)
        row = measure(graph, num_devices, args.moves, args.seed, args.machine)
        rows.append(row)
        print(f"{num_devices:>5} {graph.batch_size:>6} {row['full_per_s']:>9.0f} {row['delta_per_s']:>9.0f} "
              f"{row['full_ms']:>8.3f} "
              f"{row['delta_ms']:>9.3f} {row['ratio']:>10.2f}x")
    if args.json:
        write_atomic(args.json, json.dumps({"benchmark": "simulator_speed", "model": graph.model,
                                            "dataset": graph.dataset,
                                            "machine": args.machine, "moves": args.moves, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
