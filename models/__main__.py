"""Print a model's operator graph: inputs, shapes, FLOPs and parameters of every op.

    python -m models resnet50 --dataset imagenet --batch-size 64
    python -m models inception_v3 --dataset imagenet-299 --json inception.json   # the graph as data
    python -m models path/to/file.py:NAME --dataset tiny-imagenet   # a flax nnx model of your own, imported
    python -m models gpt2 --depth 4 --width 256 --heads 4 --vocab 4096 --seq-len 128   # a smaller GPT-2
"""

from __future__ import annotations

import json
import sys

from models.cli import OneLineParser, check_writable, positive_int, run_command, write_atomic
from models.datasets import DATASETS, TOKEN_DATASETS
from models.graph import OpGraph
from models.graph_file import DATA, graph_document
from models.resolve import MODEL_HELP, resolve_model
from models.zoo import DEFAULT_BATCH_SIZE, TOKEN_MODELS, add_family_flags, family_options


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def format_table(graph: OpGraph) -> str:
    rows = []
    for op in graph.ops:
        inputs = ", ".join(graph.producers(op.name)) or DATA
        shapes = " + ".join(_shape(s) for s in op.input_shapes)
        rows.append((op.name, op.kind.value, inputs, shapes, _shape(op.output_shape),
                     f"{op.forward_flops / 1e9:.3f}", f"{op.backward_flops / 1e9:.3f}", f"{op.param_count:,}"))
    header = ("op", "kind", "inputs", "input shapes", "output", "fwd GFLOP", "bwd GFLOP", "params")
    total = ("total", "", "", "", "", f"{graph.forward_flops / 1e9:.3f}", f"{graph.backward_flops / 1e9:.3f}",
             f"{graph.param_count:,}")
    widths = [max(len(row[i]) for row in [header, total, *rows]) for i in range(len(header))]
    right = {5, 6, 7}

    def line(row) -> str:
        return "  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))

    title = (f"{graph.model} / {graph.dataset}, batch {graph.batch_size}, {len(graph.ops)} ops, "
             f"signature {graph.signature}")
    return "\n".join([title, line(header), *map(line, rows), line(total)]).rstrip()




def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = OneLineParser(prog="python -m models", description=__doc__.splitlines()[0])
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--dataset", help=f"the inputs' shape: one of {', '.join((*DATASETS, *TOKEN_DATASETS))} "
                                          f"(default: tiny-imagenet, or tokens for {', '.join(TOKEN_MODELS)})")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=DEFAULT_BATCH_SIZE,
                        help=f"samples per step (default {DEFAULT_BATCH_SIZE}); shapes and FLOPs are per step")
    add_family_flags(parser)
    parser.add_argument("--json", metavar="PATH", help="also write the graph as JSON to PATH")
    args = parser.parse_args(argv)
    if args.json:
        check_writable("--json", args.json)
    dataset = args.dataset or (TOKEN_DATASETS[0] if args.model in TOKEN_MODELS else "tiny-imagenet")
    graph = resolve_model(args.model, dataset, args.batch_size, family_options(args)).graph
    print(format_table(graph))
    if args.json:
        write_atomic(args.json, json.dumps(graph_document(graph), indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
