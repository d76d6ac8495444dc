"""Branches running at the same time, measured: one Inception-A block on one worker and with its branches
split over two, simulated and measured side by side.

    python -m benchmarks.concurrency [--batch-size 32] [--steps 5] [--rounds 2] [--json PATH]

The block is Inception-v3's Mixed_5b at its real size (35x35x192 input; 1x1 | 1x1-5x5 | 1x1-3x3-3x3 |
3x3 avg pool-1x1 branches, each conv with a batch norm and ReLU, concatenated), after a 1x1 stem conv and
before a global pool, a dense layer and the loss. Strategies on the `local` machine (2 pinned workers,
calibrated on first use, checked for drift before the runs: simulator.drift): `one worker` (every op
whole on device 0), `branches apart` (the double-3x3 branch, the heaviest, whole on device 1, the rest
whole on device 0: the two run at the same time) and `data_parallel`. Target: simulated and measured agree within 10%.
"""

from __future__ import annotations

import json
import sys

from models.cli import CommandFailed, OneLineParser, check_writable, positive_int, run_command, write_atomic
from models.datasets import DatasetShape
from models.graph import GraphBuilder, OpGraph
from models.inception import InceptionBlocks
from search.run import measure_strategies
from simulator.drift import calibrated_for_run
from simulator.simulate import Simulator
from soap.baselines import data_parallel, whole_ops

APART = "Mixed_5b.branch3x3dbl"  # the ops of this branch go to device 1


def inception_block(batch_size: int) -> OpGraph:
    shape = DatasetShape("inception-block", 35, 35, 192, 10)
    b = GraphBuilder("inception_block", shape.name, (batch_size, 35, 35, 192))
    x = b.conv2d("stem", 192, kernel=1, input=None)
    InceptionBlocks(b, 1.0).block_a("Mixed_5b", x, 32)
    b.global_avg_pool("pool")
    b.dense("fc", shape.classes, relu=False)
    b.softmax_xent("loss")
    return b.build(batch_size)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.concurrency", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=32)
    parser.add_argument("--steps", type=positive_int("--steps"), default=5)
    parser.add_argument("--rounds", type=positive_int("--rounds"), default=2)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--recalibrate", action="store_true",
                        help="measure every op and the links again, though cached (without it, the run first "
                             "re-times a few ops and a link point and measures again only beyond 10%% drift)")
    args = parser.parse_args(argv)
    if args.json:
        check_writable("--json", args.json)
    graph = inception_block(args.batch_size)
    calibrated = calibrated_for_run(graph, 2, args.recalibrate, say=lambda line: print(line, file=sys.stderr))
    machine, profile = calibrated.machine, calibrated.profile
    strategies = {"one worker": whole_ops(graph, 2, lambda op: 0),
                  "branches apart": whole_ops(graph, 2, lambda op: 1 if op.name.startswith(APART) else 0),
                  "data_parallel": data_parallel(graph, 2)}
    simulator = Simulator(graph, machine, profile)
    simulated = {name: simulator.full(strategy).step_ms for name, strategy in strategies.items()}
    measured = measure_strategies(graph, strategies, 2, args.steps, args.rounds)
    print(f"Inception-A block (Mixed_5b, 35x35x192), batch {args.batch_size}, 2 local workers; fastest of "
          f"{args.rounds} runs of {args.steps} timed steps")
    print(f"{'strategy':<16} {'simulated ms':>12} {'measured ms':>12} {'error':>8} {'sim speedup':>12} {'meas speedup':>13}")
    rows = []
    for name in strategies:
        step_ms = measured[name].step_ms
        error = (simulated[name] - step_ms) / step_ms if step_ms else None
        sim_speedup = simulated["one worker"] / simulated[name]
        meas_speedup = measured["one worker"].step_ms / step_ms if step_ms and measured["one worker"].step_ms else None
        rows.append({"name": name, "simulated_ms": simulated[name], "measured_ms": step_ms, "relative_error": error,
                     "note": measured[name].note})
        print(f"{name:<16} {simulated[name]:>12.1f} {step_ms if step_ms else float('nan'):>12.1f} "
              f"{error if error is not None else float('nan'):>+7.1%} {sim_speedup:>11.2f}x "
              f"{meas_speedup if meas_speedup else float('nan'):>12.2f}x  {measured[name].note}")
    if args.json:
        write_atomic(args.json, json.dumps({"benchmark": "concurrency", "batch_size": args.batch_size, "rows": rows,
                                            "calibration": calibrated.check.to_json()},
                                           indent=1))
    failed = [name for name in strategies if measured[name].step_ms is None]
    if failed:
        raise CommandFailed(f"{', '.join(failed)} could not run (see the notes above)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
