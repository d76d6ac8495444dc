"""How long soap.parallelize takes on a large user model: import, search and plan, each timed.

    python -m benchmarks.parallelize_time --layers 24 --width 1024 --seq-len 1024 --batch-size 32 --gpus 8 \
        --machine h100x8 --budget-s 10 [--json PATH]

The model is a user's GPT written in flax nnx (tests/models/user_gpt.py: learned positions, pre-norm blocks,
hand-written causal attention, a tied head), built with nnx.eval_shape so that it holds no parameter
memory (the flags above: gpt2_medium's size, heads of 64), trained on [batch-size seq-len] token ids.
Phases, wall seconds each (time.perf_counter):
- import: models.importer.import_model, the module traced and matched into SOAP's graph;
- search: search.parallelize.search_imported on the --machine preset's roofline costs (the baselines,
  the SPMD search of --budget-s seconds, the simulated table);
- plan: the strategy lowered onto the model (soap.plan: meshes, state shardings, partition specs), which
  needs --gpus JAX devices; on a CPU machine run it with XLA_FLAGS=--xla_force_host_platform_device_count=8
  (with fewer, the plan is not timed and says so).
The issue's target: parallelize on a gpt2_medium-sized user module for h100x8 under 60 s.
"""

from __future__ import annotations

import json
import time

import jax
from flax import nnx

from models.cli import OneLineParser, check_writable, positive_float, positive_int, run_command, write_atomic
from models.errors import SoapError
from models.importer import import_model
from search.parallelize import search_imported
from simulator.machine import load_machine
from soap.optimizer import Optimizer
from tests.models.user_gpt import GPT

HEAD_DIM = 64  # GPT-2's heads: width / 64 of them


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.parallelize_time", description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=positive_int("--layers"), default=24)
    parser.add_argument("--width", type=positive_int("--width"), default=1024)
    parser.add_argument("--heads", type=positive_int("--heads"), help=f"default: width / {HEAD_DIM}")
    parser.add_argument("--vocab", type=positive_int("--vocab"), default=50257)
    parser.add_argument("--seq-len", type=positive_int("--seq-len"), default=1024)
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=32)
    parser.add_argument("--gpus", type=positive_int("--gpus"), default=8)
    parser.add_argument("--machine", default="h100x8", help="a machine preset or JSON (simulator.machine)")
    parser.add_argument("--budget-s", type=positive_float("--budget-s"), default=10.0)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.json:
        check_writable("--json", args.json)
    heads = args.heads or args.width // HEAD_DIM
    if not heads or args.width % heads:
        raise SoapError(f"--width {args.width} does not split into {heads} heads; pass --heads dividing the width")
    machine = load_machine(args.machine, args.gpus)
    model = nnx.eval_shape(lambda: GPT(args.vocab, args.seq_len, args.width, heads, args.layers, 0.1, nnx.Rngs(0)))
    print(f"GPT {args.layers} layers, width {args.width}, {heads} heads, vocab {args.vocab}; {args.batch_size}x"
          f"{args.seq_len} tokens on {args.gpus} GPUs of {args.machine}, search budget {args.budget_s:g} s")
    times = {}
    start = time.perf_counter()
    imported = import_model(model, "tokens", args.batch_size, seq_len=args.seq_len)
    times["import_s"] = _lap(start, "import", f"{len(imported.graph.ops)} ops")
    start = time.perf_counter()
    plan = search_imported(model, imported, machine, args.gpus, args.budget_s, Optimizer.ADAMW)
    searched = next(row for row in plan.rows if row.name == "searched")
    times["search_s"] = _lap(start, "search", f"searched {searched.simulated_step_ms:.3f} ms a step; {plan.note}")
    if jax.device_count() >= args.gpus:
        start = time.perf_counter()
        plan.partition_specs
        times["plan_s"] = _lap(start, "plan", f"mesh {dict(plan.mesh.shape)}")
    else:
        times["plan_s"] = None
        print(f"plan    not timed: it needs {args.gpus} devices, JAX has {jax.device_count()} (on CPU: "
              f"XLA_FLAGS=--xla_force_host_platform_device_count={args.gpus})")
    total = sum(seconds for seconds in times.values() if seconds is not None)
    print(f"total   {total:8.2f} s")
    if args.json:
        write_atomic(args.json, json.dumps({
            "benchmark": "parallelize_time", "layers": args.layers, "width": args.width, "heads": heads,
            "vocab": args.vocab, "seq_len": args.seq_len, "batch_size": args.batch_size, "gpus": args.gpus,
            "machine": args.machine, "budget_s": args.budget_s, "ops": len(imported.graph.ops),
            "searched_ms": searched.simulated_step_ms, **times, "total_s": total}, indent=1))
    return 0


def _lap(start: float, phase: str, note: str) -> float:
    seconds = time.perf_counter() - start
    print(f"{phase:<7} {seconds:8.2f} s  ({note})")
    return seconds


if __name__ == "__main__":
    raise SystemExit(main())
