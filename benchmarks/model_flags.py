"""The flags that pick a zoo model in the simulation benchmarks: --model, --dataset, --batch-size,
--sizes, --machine, and the graph they name."""

from __future__ import annotations

import argparse

from models.cli import UsageError, positive_int
from models.graph import OpGraph
from models.zoo import MODELS, build_graph, default_dataset
from simulator.machine import PRESETS


def add_model_flags(parser: argparse.ArgumentParser, sizes: tuple[int, ...]) -> None:
    parser.add_argument("--model", default="alexnet", help=f"the zoo model, one of: {', '.join(MODELS)} "
                                                           f"(default alexnet)")
    parser.add_argument("--dataset", help="the input images' shape (default: tiny-imagenet, or imagenet-299 for a "
                                          "model that needs more)")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=128,
                        help="images per step, over all devices (default 128)")
    parser.add_argument("--sizes", type=positive_int("--sizes"), nargs="+", default=sizes, metavar="GPUS",
                        help=f"the device counts to run, one row each (default {' '.join(map(str, sizes))})")
    parser.add_argument("--machine", default="p100-4x4",
                        help=f"the simulated machine, a preset: {', '.join(PRESETS)} (default p100-4x4)")


def graph_of(args: argparse.Namespace) -> OpGraph:
    """The graph the flags name (a SoapError line if they name none); --machine checked to be a preset."""
    if args.machine not in PRESETS:
        raise UsageError(f"--machine {args.machine!r} is not a preset; use one of: {', '.join(PRESETS)}")
    return build_graph(args.model, args.dataset or default_dataset(args.model), args.batch_size)
