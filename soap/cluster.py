"""Prepare a job folder for workers started by hand, one per host: the several-hosts path (README).

    python -m soap.cluster FOLDER --model alexnet --workers 2 --coordinator host0:8476 \
        --strategy runs/x/strategy.json [--dataset D] [--batch-size B] [--steps 3] [--timed-steps 10] [--pin]
    python -m soap.worker FOLDER 0          # on host 0 (FOLDER on a file system every host sees)
    python -m soap.worker FOLDER 1          # on host 1, and so on: no parent process

Writes FOLDER/cluster.json and FOLDER/job.json, exactly what soap.devices writes for the local cluster
it starts itself. The workers join at --coordinator (process 0's host; the port must be free there),
train the strategy --steps steps (the first `--steps` losses are kept) and time --timed-steps more;
process 0 prints one line per strategy and writes FOLDER/results.json. --strategy is a strategy.json
or a baseline name (single, data_parallel, model_parallel, owt); --pin pins worker i to core i (several
workers on one host, as the local cluster does). A worker that dies ends the others within
soap.join.HEARTBEAT_TIMEOUT_S seconds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from models.cli import OneLineParser, UsageError, positive_int, read_text, run_command
from models.zoo import DEFAULT_BATCH_SIZE, MODELS, build_graph
from soap.baselines import BASELINES
from soap.devices import ClusterJob, write_job_folder
from soap.runner import RunConfig
from soap.strategy import strategy_from_json


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = OneLineParser(prog="python -m soap.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the job folder (created if missing)")
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("--dataset", default="tiny-imagenet",
                        help="the input images' shape and class count (models.datasets; default tiny-imagenet)")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=DEFAULT_BATCH_SIZE,
                        help=f"images per step, over all workers (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--workers", type=positive_int("--workers"), required=True, help="how many workers will join: one per device")
    parser.add_argument("--coordinator", required=True, metavar="HOST:PORT", help="the host worker 0 runs on, and a port free there")
    parser.add_argument("--strategy", required=True, help=f"a strategy.json or a baseline ({', '.join(BASELINES)})")
    parser.add_argument("--steps", type=positive_int("--steps"), default=3, help="training steps whose losses are printed (default 3)")
    parser.add_argument("--timed-steps", type=positive_int("--timed-steps"), default=10,
                        help="steps timed after those, for the median step time (default 10)")
    parser.add_argument("--pin", action="store_true", help="pin worker i to core i (several workers on one host)")
    args = parser.parse_args(argv)
    host, _, port = args.coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--coordinator must be HOST:PORT (e.g. host0:8476), got {args.coordinator!r}")
    graph = build_graph(args.model, args.dataset, args.batch_size)
    if args.strategy in BASELINES:
        strategy = BASELINES[args.strategy](graph, args.workers)
    else:
        text = read_text("--strategy", args.strategy, f"a strategy.json or a baseline ({', '.join(BASELINES)})")
        strategy = strategy_from_json(text, graph, args.workers, source=f"--strategy {args.strategy}")
    cores = tuple(range(args.workers)) if args.pin else (None,) * args.workers
    if args.pin and args.workers > len(os.sched_getaffinity(0)):
        raise UsageError(f"--pin needs a core per worker: {args.workers} workers, {len(os.sched_getaffinity(0))} "
                         f"cores here; drop --pin or start fewer workers per host")
    try:
        args.folder.mkdir(parents=True, exist_ok=True)
        job = ClusterJob.for_strategies(graph, [strategy], RunConfig(steps=args.steps, timed_steps=args.timed_steps))
        write_job_folder(args.folder, job.to_json(), args.coordinator, cores)
    except OSError as error:
        raise UsageError(f"job folder {str(args.folder)!r} cannot be written ({error.strerror}); pass a writable "
                         f"folder") from None
    print(f"wrote {args.folder / 'cluster.json'} and job.json: {graph.model}, {args.workers} workers, coordinator "
          f"{args.coordinator}; start `python -m soap.worker {args.folder} I` for I = 0 .. {args.workers - 1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
