"""The flags that pick a zoo model in the simulation benchmarks: --model, --dataset, --batch-size,
--sizes, --machine, and the graph they name (or one error line)."""

from __future__ import annotations

import argparse
import sys

from models.errors import SoapError
from models.graph import OpGraph
from models.zoo import MODELS, build_graph, default_dataset


def add_model_flags(parser: argparse.ArgumentParser, sizes: tuple[int, ...]) -> None:
    parser.add_argument("--model", default="alexnet", help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("--dataset", help="default: tiny-imagenet, or imagenet-299 for a model that needs more")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sizes", type=int, nargs="+", default=sizes, metavar="GPUS")
    parser.add_argument("--machine", default="p100-4x4", help="a preset machine")


def graph_of(args: argparse.Namespace) -> OpGraph | None:
    """The graph the flags name, or None after printing the error line."""
    try:
        return build_graph(args.model, args.dataset or default_dataset(args.model), args.batch_size)
    except SoapError as error:
        print(f"error: {error}", file=sys.stderr)
        return None
