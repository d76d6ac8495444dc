"""Where a strategy's step time goes, op by op: measured on the local cluster beside the simulator's trace.

    python -m benchmarks.op_breakdown --gpus 2 --strategy owt [--model M] [--strategy-file STRATEGY.json] [--json PATH]

Runs one strategy on N pinned workers with JAX's profiler on, and sums, per device, the wall time of every
executed XLA instruction by the op it belongs to (soap.step names each op's scope "op.NAME" and its
update "update.NAME"; autodiff marks the backward "transpose(jvp(...))") and by phase: forward, backward,
update, communication (all-reduce, all-gather, collective-permute, ... of that op), and other (not named).
Beside each, the simulated time of the same op and phase on the same device (forward, backward and update
tasks; transfers into the op and its gradient all-reduce as communication). Time a device spends waiting
for another inside a collective shows up as that collective's time: the measured communication column is
transfer plus waiting. The profile covers --steps steps after 2 warm-up steps, reported per step.

A staged strategy (several programs a step, whose instruction names repeat) is broken down by program
instead: each stage's forward and backward program and each move of a tensor between stages, every one
waited for before the next (soap.step.TrainStep.program_times, so they do not overlap), beside the
simulated tasks of the same program on the same device (`simulated_programs`).
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

from models.cli import (CommandFailed, OneLineParser, UsageError, check_writable, positive_int, read_text, run_command,
                        write_atomic)
from models.graph_file import graph_to_json
from models.zoo import (DEFAULT_BATCH_SIZE, MODELS, TOKEN_MODELS, add_family_flags, build_graph, default_dataset,
                        family_options)
from soap.optimizer import Optimizer
from soap.strategy import strategy_from_json, strategy_to_json

PHASES = ("forward", "backward", "update", "comm", "other")
NOT_EXECUTED = ("parameter", "constant", "get-tuple-element", "tuple", "bitcast")  # no thunk, no time
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = .*? ([a-z-]+)\(([^)]*)\)")
_OP_NAME = re.compile(r"op_name=\"([^\"]*)\"")


def _op_name_of(name: str, instructions: dict[str, tuple[str, str, list[str]]]) -> str:
    """An instruction's op_name; one without (XLA drops it from some fusions) takes its operands', the
    backward's first (a weight gradient reads a forward activation and a backward cotangent)."""
    seen, frontier = set(), [name]
    while frontier:
        found = [instructions[n][1] for n in frontier if instructions[n][1]]
        if found:
            return next((f for f in found if "transpose(" in f), found[0])
        seen.update(frontier)
        frontier = [o for n in frontier for o in instructions[n][2] if o in instructions and o not in seen]
    return ""


def _updated_by(name: str, instructions: dict[str, tuple[str, str, list[str]]]) -> str | None:
    """The op whose parameter update reads the unnamed instruction `name` (its weight gradient: a conv's
    kernel-gradient fusion carries no op_name, and its operands would name the op whose gradient feeds
    it, e.g. the next batch norm), else None."""
    if instructions[name][1]:
        return None
    for opcode, op_name, operands in instructions.values():
        if name in operands and (update := re.search(r"update\.([\w.-]+)", op_name)):
            return update.group(1)
    return None


def instruction_phases(hlo_text: str) -> dict[str, tuple[str, str]]:
    """Each instruction of the entry computation -> (op name or "", phase), from its op_name metadata."""
    instructions = {}
    for line in hlo_text[hlo_text.index("\nENTRY"):].splitlines()[1:]:
        if match := _INSTRUCTION.match(line):
            name, opcode, operands = match.groups()
            op_name = _OP_NAME.search(line)
            instructions[name] = (opcode, op_name.group(1) if op_name else "", re.findall(r"%([\w.-]+)", operands))
    phases = {}
    for name, (opcode, _, _) in instructions.items():
        if opcode in NOT_EXECUTED:
            continue
        if updated := _updated_by(name, instructions):  # a weight gradient XLA left unnamed
            phases[name] = (updated, "backward")
            continue
        op_name = _op_name_of(name, instructions)
        update = re.search(r"update\.([\w.-]+)", op_name)
        op = re.search(r"op\.([\w.-]+)", op_name)
        if opcode.split("-start")[0] in COLLECTIVES:
            phases[name] = (op.group(1) if op else (update.group(1) if update else ""), "comm")
        elif update:
            phases[name] = (update.group(1), "update")
        elif op:
            phases[name] = (op.group(1), "backward" if "transpose(" in op_name else "forward")
        else:
            phases[name] = ("", "other")
    return phases


def measured_breakdown(events: list[dict], phases: dict[str, tuple[str, str]], steps: int) -> dict[str, float]:
    """Milliseconds per step by "op/phase" from profiler events (complete events named after instructions)."""
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("ph") != "X" or event.get("name") not in phases:
            continue
        op, phase = phases[event["name"]]
        totals[f"{op}/{phase}"] += event["dur"] / 1e3 / steps
    return dict(totals)


def simulated_breakdown(graph, strategy, machine, cost) -> list[dict[str, float]]:
    """Per device, simulated milliseconds by "op/phase" (transfers and all-reduces as the op's comm)."""
    from simulator.simulate import Simulator
    from simulator.taskgraph import ALLREDUCE, BACKWARD, FORWARD, STATS, TRANSFER, UPDATE

    simulator = Simulator(graph, machine, cost)
    simulator.full(strategy)
    kinds = {FORWARD: "forward", BACKWARD: "backward", UPDATE: "update", TRANSFER: "comm", ALLREDUCE: "comm",
             STATS: "comm"}
    per_device: list[dict[str, float]] = [defaultdict(float) for _ in range(machine.num_devices)]
    names = [op.name for op in graph.ops]
    for task in simulator.tasks():
        op = names[task.label[1] if task.kind == TRANSFER else task.label[0]]
        devices = {r for r in task.resources if r < machine.num_devices}
        if task.kind in (TRANSFER, ALLREDUCE, STATS) and not devices:  # comm that does not block devices
            devices = _comm_devices(task, machine.num_devices)
        for device in devices:
            per_device[device][f"{op}/{kinds[task.kind]}"] += task.duration_ms
    return [dict(d) for d in per_device]


def simulated_programs(graph, strategy, machine, cost) -> list[dict[str, float]]:
    """Per device, simulated milliseconds by the program of a staged step they belong to (the labels of
    soap.step.TrainStep.program_times): a stage's forward or backward (its compute, statistics, the
    moves inside it, its gradient all-reduces and updates), and each move of a tensor between stages."""
    from simulator.simulate import Simulator
    from simulator.taskgraph import ALLREDUCE, STATS, TRANSFER
    from soap.stages import split_stages

    simulator = Simulator(graph, machine, cost)
    simulator.full(strategy)
    stages = split_stages(graph, {name: config.device_set for name, config in strategy.items()})
    stage_of = {graph.index(name): number for number, stage in enumerate(stages) for name in stage.names}
    names, n = [op.name for op in graph.ops], len(graph.ops)
    per_device: list[dict[str, float]] = [defaultdict(float) for _ in range(machine.num_devices)]
    for task in simulator.tasks():
        backward = task.key >> 24 >= n
        if task.kind == TRANSFER and stage_of[task.label[0]] != stage_of[task.label[1]]:
            source, target = task.label[0], task.label[1]
            label = (f"grad of {names[target]} from stage {stage_of[source]}" if backward
                     else f"to stage {stage_of[target]}: {names[source]}")
        else:
            op = task.label[1] if task.kind == TRANSFER else task.label[0]
            label = f"stage {stage_of[op]} {'backward' if backward else 'forward'}"
        devices = {r for r in task.resources if r < machine.num_devices}
        if task.kind in (TRANSFER, ALLREDUCE, STATS) and not devices:  # comm that does not block devices
            devices = _comm_devices(task, machine.num_devices)
        for device in devices:
            per_device[device][label] += task.duration_ms
    return [dict(d) for d in per_device]


def _comm_devices(task, num_devices: int) -> set[int]:
    """The devices at the ends of a link resource (N + src * N + dst)."""
    devices = set()
    for resource in task.resources:
        src, dst = divmod(resource - num_devices, num_devices)
        devices |= {src, dst}
    return devices


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    from simulator.calibrate import calibrate
    from soap.baselines import BASELINES, TENSOR_PARALLEL, baselines_for
    from soap.devices import ClusterError, run_worker_job

    parser = OneLineParser(prog="python -m benchmarks.op_breakdown", description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=positive_int("--gpus"), default=2)
    parser.add_argument("--strategy", default="owt", help=f"a baseline ({', '.join({**BASELINES, **TENSOR_PARALLEL})}; "
                                                          f"the last two for a model with attention heads)")
    parser.add_argument("--strategy-file", help="a strategy.json instead of a baseline")
    parser.add_argument("--model", default="alexnet", help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("--dataset", help="default: tiny-imagenet (imagenet-299 where a model needs more); tokens "
                                          "for a token model")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"),
                        help=f"default: {DEFAULT_BATCH_SIZE}, 16 for a token model")
    add_family_flags(parser)
    parser.add_argument("--optimizer", choices=[o.value for o in Optimizer], help="default: sgd, adamw for a token model")
    parser.add_argument("--steps", type=positive_int("--steps"), default=3)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.json:
        check_writable("--json", args.json)
    tokens = args.model in TOKEN_MODELS
    graph = build_graph(args.model, args.dataset or default_dataset(args.model),
                        args.batch_size or (16 if tokens else DEFAULT_BATCH_SIZE), family_options(args))
    optimizer = Optimizer(args.optimizer or ("adamw" if tokens else "sgd"))
    baselines = baselines_for(graph)
    if args.strategy_file:
        text = read_text("--strategy-file", args.strategy_file, "a strategy.json written by search.optimize")
        strategy = strategy_from_json(text, graph, args.gpus, args.strategy_file)
    elif args.strategy in baselines:
        strategy = baselines[args.strategy](graph, args.gpus)
    else:
        raise UsageError(f"--strategy {args.strategy!r} is not a baseline of {graph.model}; use one of "
                         f"{', '.join(baselines)} or --strategy-file")
    machine, profile = calibrate(graph, args.gpus, say=lambda line: print(line, file=sys.stderr),
                                 optimizer=optimizer.value)
    from soap.stages import split_stages

    staged = len(split_stages(graph, {name: config.device_set for name, config in strategy.items()})) > 1
    job = {"graph": graph_to_json(graph), "steps": args.steps, "strategy": strategy_to_json(strategy, graph),
           "optimizer": optimizer.value}
    try:
        measured = run_worker_job(json.dumps(job), args.gpus,
                                  lambda folder: [json.loads((folder / f"breakdown{p}.json").read_text())
                                                  for p in range(args.gpus)],
                                  "benchmarks.op_breakdown_worker", timeout_s=900).results
    except ClusterError as error:
        raise CommandFailed(str(error)) from None
    if staged:
        simulated = simulated_programs(graph, strategy, machine, profile)
        order = list(dict.fromkeys(k for d in measured for k in d))  # program order, as the workers ran them
        keys = order + sorted({k for d in simulated for k in d} - set(order))
        title = "program"
    else:
        simulated = simulated_breakdown(graph, strategy, machine, profile)
        keys = sorted({k for d in measured + simulated for k in d},
                      key=lambda k: ([op.name for op in graph.ops] + [""]).index(k.split("/")[0]) * 10
                      + PHASES.index(k.split("/")[1]))
        title = "op/phase"
    width = max(22, *(len(k) + 1 for k in keys))
    header = f"{title:<{width}}" + "".join(f"{f'sim d{d}':>10}{f'meas d{d}':>10}" for d in range(args.gpus))
    print(f"{args.strategy_file or args.strategy} on {args.gpus} local workers, ms per step"
          + (" (staged: each program waited for in turn, so programs do not overlap)" if staged else ""))
    print(header)
    for key in keys:
        print(f"{key:<{width}}" + "".join(f"{simulated[d].get(key, 0):>10.1f}{measured[d].get(key, 0):>10.1f}"
                                         for d in range(args.gpus)))
    for d in range(args.gpus):
        print(f"device {d}: simulated sum {sum(simulated[d].values()):.1f} ms, measured sum "
              f"{sum(measured[d].values()):.1f} ms")
    if args.json:
        write_atomic(args.json, json.dumps({"strategy": args.strategy_file or args.strategy,
                                            "simulated": simulated, "measured": measured}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
