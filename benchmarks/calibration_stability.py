"""Calibration from an empty cache, tried again and again: its time, its zero components, how far ops move.

    python -m benchmarks.calibration_stability --model resnet18 --gpus 2 --tries 3 [--dataset D]
                                               [--batch-size 128] [--json PATH]

Each try calibrates the zoo model on the `local` machine (simulator.calibrate: every op shape timed on a
pinned core, then the links) into a new, empty, temporary cache folder, as a new user's first command
does. Printed per try: the wall time, the op shapes measured, the entries with a zero component (a
forward, backward or update not above 0 ms: must be 0) and the entries flagged (kept after failing their
checks); from the second try on, each op's time (forward + backward + SGD update) against the first
try's: the median and the 90th percentile of the relative |difference| over the op shapes. Targets
(issue 36): every try succeeds, 0 zero components, a median difference of 10% or less.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.cli import OneLineParser, check_writable, positive_int, run_command, write_atomic
from models.graph import OpGraph
from models.zoo import MODELS, build_graph, default_dataset
from simulator.calibrate import calibrate
from simulator.calibration_plan import needed_local_ops
from simulator.cost import ProfileEntry


@dataclass(frozen=True)
class Try:
    """One calibration from an empty cache: its wall time and its profile's entries."""

    wall_s: float
    entries: dict[str, ProfileEntry]


def calibrate_from_empty(graph: OpGraph, gpus: int, say) -> Try:
    with tempfile.TemporaryDirectory(prefix="soap-calibration-stability-") as folder:
        start = time.perf_counter()
        _, profile = calibrate(graph, gpus, Path(folder), say=say)
        return Try(time.perf_counter() - start, dict(profile.entries))


def zero_components(graph: OpGraph, gpus: int, entries: dict[str, ProfileEntry]) -> list[str]:
    """The cost keys whose forward or backward, or (with parameters) SGD update, is missing or not above 0."""
    zero = []
    for op in needed_local_ops(graph, gpus):
        entry = entries[op.cost_key]
        components = [entry.forward, entry.backward] + ([entry.update("sgd")] if op.param_bytes else [])
        if any(component is None or not component.ms > 0 for component in components):
            zero.append(op.cost_key)
    return zero


def op_ms(entry: ProfileEntry) -> float:
    return entry.cost("sgd").forward_ms + entry.cost("sgd").backward_ms + entry.cost("sgd").update_ms


def differences(first: dict[str, ProfileEntry], other: dict[str, ProfileEntry]) -> tuple[float, float]:
    """Median and 90th percentile of each op's relative |difference| in time from `first` to `other`."""
    relative = [abs(op_ms(other[key]) - op_ms(first[key])) / op_ms(first[key]) for key in first]
    median, p90 = np.percentile(relative, [50, 90])
    return float(median), float(p90)


def try_line(number: int, graph: OpGraph, gpus: int, this: Try, first: Try) -> str:
    zero = zero_components(graph, gpus, this.entries)
    flagged = sum(1 for entry in this.entries.values() if entry.flags)
    line = (f"try {number}: {this.wall_s:.1f} s, {len(this.entries)} op shapes, {len(zero)} with a zero component, "
            f"{flagged} flagged")
    if this is not first:
        median, p90 = differences(first.entries, this.entries)
        line += f"; op times against try 1: median |difference| {median:.1%}, 90th percentile {p90:.1%}"
    return line


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.calibration_stability", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("--gpus", type=positive_int("--gpus"), default=2,
                        help="number of local devices (CPU: pinned workers)")
    parser.add_argument("--tries", type=positive_int("--tries"), default=3)
    parser.add_argument("--dataset", help="default: tiny-imagenet, or imagenet-299 for a model that needs more")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=128)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.json:
        check_writable("--json", args.json)
    graph = build_graph(args.model, args.dataset or default_dataset(args.model), args.batch_size)
    return report(graph, args.gpus, args.tries, args.json)


def report(graph: OpGraph, gpus: int, tries: int, json_path: str | None = None) -> int:
    """Calibrate `tries` times from an empty cache, printing each try's line; 1 if any zero component."""
    done: list[Try] = []
    for number in range(1, tries + 1):
        done.append(calibrate_from_empty(graph, gpus, say=lambda line: print(line, file=sys.stderr)))
        print(try_line(number, graph, gpus, done[-1], done[0]), flush=True)
    if json_path:
        write_atomic(json_path, json.dumps({
            "model": graph.model, "gpus": gpus,
            "tries": [{"wall_s": t.wall_s, "zero_components": zero_components(graph, gpus, t.entries),
                       "op_ms": {key: op_ms(entry) for key, entry in sorted(t.entries.items())}} for t in done]},
            indent=1))
    return 1 if any(zero_components(graph, gpus, t.entries) for t in done) else 0


if __name__ == "__main__":
    sys.exit(main())
