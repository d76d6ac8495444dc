"""The flags that pick a zoo model in the simulation benchmarks: --model, --dataset, --batch-size,
--sizes, --machine, and the graph and optimizer they name for each size.

A transformer (a graph with attention heads: GPT-2, BERT, ViT) is trained as benchmarks.zoo_table trains
it: AdamW, PER_GPU_TRANSFORMER sequences (or images) per GPU, so its batch grows with the device count;
every other model gets SGD with momentum and a batch of --batch-size over all devices (128 by default).
"""

from __future__ import annotations

import argparse
import functools

from models.cli import UsageError, positive_int
from models.graph import OpGraph
from models.zoo import DEFAULT_BATCH_SIZE, MODELS, build_graph, default_dataset
from simulator.machine import PRESETS
from soap.baselines import has_heads
from soap.optimizer import Optimizer

PER_GPU_TRANSFORMER = 8  # sequences (or images) per GPU of a transformer, as Megatron-LM's examples train


def add_model_flags(parser: argparse.ArgumentParser, sizes: tuple[int, ...]) -> None:
    parser.add_argument("--model", default="alexnet", help=f"the zoo model, one of: {', '.join(MODELS)} "
                                                           f"(default alexnet)")
    parser.add_argument("--dataset", help="the input's shape (default: tokens for a token model; tiny-imagenet, "
                                          "or imagenet-299 for an image model that needs more)")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"),
                        help=f"samples per step, over all devices (default: {DEFAULT_BATCH_SIZE}; a transformer's "
                             f"{PER_GPU_TRANSFORMER} per GPU)")
    parser.add_argument("--sizes", type=positive_int("--sizes"), nargs="+", default=sizes, metavar="GPUS",
                        help=f"the device counts to run, one row each (default {' '.join(map(str, sizes))})")
    parser.add_argument("--machine", default="p100-4x4",
                        help=f"the simulated machine, a preset: {', '.join(PRESETS)} (default p100-4x4)")


@functools.cache
def is_transformer(model: str, dataset: str) -> bool:
    """Whether `model` has attention heads (its graph of one sample at `dataset` says)."""
    return has_heads(build_graph(model, dataset, 1))


def graph_of(args: argparse.Namespace, num_devices: int) -> OpGraph:
    """The graph the flags name on `num_devices` devices (a SoapError line if they name none); --machine
    checked to be a preset."""
    if args.machine not in PRESETS:
        raise UsageError(f"--machine {args.machine!r} is not a preset; use one of: {', '.join(PRESETS)}")
    dataset = args.dataset or default_dataset(args.model)
    batch_size = args.batch_size
    if batch_size is None:
        batch_size = (PER_GPU_TRANSFORMER * num_devices if is_transformer(args.model, dataset)
                      else DEFAULT_BATCH_SIZE)
    return build_graph(args.model, dataset, batch_size)


def optimizer_for(graph: OpGraph) -> Optimizer:
    """AdamW for a transformer, as it is trained; SGD with momentum otherwise."""
    return Optimizer.ADAMW if has_heads(graph) else Optimizer.SGD
