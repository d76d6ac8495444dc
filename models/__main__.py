"""Print a model's operator graph: shapes, FLOPs and parameters of every op.

    python -m models alexnet --dataset tiny-imagenet --batch-size 128
"""

from __future__ import annotations

import argparse
import sys

from models.datasets import DATASETS
from models.errors import SoapError
from models.graph import OpGraph
from models.zoo import DEFAULT_BATCH_SIZE, MODELS, build_graph


def format_table(graph: OpGraph) -> str:
    header = f"{'op':<8} {'kind':<13} {'input':<20} {'output':<20} {'fwd GFLOP':>10} {'bwd GFLOP':>10} {'params':>12}"
    lines = [f"{graph.model} / {graph.dataset}, batch {graph.batch_size}, signature {graph.signature}", header]
    for op in graph.ops:
        lines.append(
            f"{op.name:<8} {op.kind.value:<13} {str(op.input_shapes[0]):<20} {str(op.output_shape):<20} "
            f"{op.forward_flops / 1e9:>10.3f} {op.backward_flops / 1e9:>10.3f} {op.param_count:>12,}"
        )
    lines.append(f"{'total':<63} {graph.forward_flops / 1e9:>10.3f} "
                 f"{sum(op.backward_flops for op in graph.ops) / 1e9:>10.3f} {graph.param_count:>12,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.splitlines()[0])
    parser.add_argument("model", help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("--dataset", default="tiny-imagenet", help=f"one of: {', '.join(DATASETS)}")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args(argv)
    try:
        graph = build_graph(args.model, args.dataset, args.batch_size)
    except SoapError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(graph))
    return 0


if __name__ == "__main__":
    sys.exit(main())
