"""A cluster worker's first step: read its arguments, pin to its core and join the others.

    python -m soap.worker FOLDER PROCESS_ID     # soap.devices starts one per worker; README: several hosts

This module imports only the standard library and models.cli: a worker must pin itself before numpy or
JAX start their thread pools, because threads inherit the affinity of their creator.

A worker also keeps the memory it frees (`keep_freed_memory`), as a GPU's caching allocator does. glibc's
malloc hands a block over 32 MiB straight back to the kernel, or trims it from a thread's arena, so a
program that allocates such scratch on every call pays its page faults on every call. XLA:CPU's convolution
does: Inception-v3's Mixed_6a 3x3 stride-2 conv, batch 16, took 300 ms a call on one core, half of it in the
kernel (70,000 page faults a call, five 48 MB im2col buffers), and 146 ms with the memory kept (0 faults).
Whether a process paid them depended on which thread's arena served the buffer, so the same op measured
142 ms inside one program and 302 ms inside another (benchmarks.op_breakdown, 2026-12-01).
"""

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from models.cli import OneLineParser, UsageError, natural_int, run_command

_INITIALIZATION_TIMEOUT_S = 120
# A worker that dies (killed, its host down) is noticed by the others' coordination service within this
# many seconds, and they end with an error instead of waiting forever in a collective.
HEARTBEAT_TIMEOUT_S = 20


def worker_main(prog: str, run: Callable[[Path, int], int], argv: list[str] | None = None) -> int:
    """A worker command's exit code: FOLDER PROCESS_ID checked (one line, exit 2), then `run(folder, id)`."""
    return run_command(lambda args: run(*parse_worker_args(prog, args)), sys.argv[1:] if argv is None else argv)


def parse_worker_args(prog: str, argv: list[str]) -> tuple[Path, int]:
    """FOLDER (holding cluster.json and job.json) and PROCESS_ID (0 .. workers - 1), or UsageError."""
    parser = OneLineParser(prog=prog, description="one worker of a SOAP cluster (README: several hosts)")
    parser.add_argument("folder", type=Path, help="the job folder: cluster.json and job.json")
    parser.add_argument("process_id", type=natural_int("PROCESS_ID"))
    args = parser.parse_args(argv)
    for name in ("cluster.json", "job.json"):
        if not (args.folder / name).is_file():
            raise UsageError(f"{args.folder / name} does not exist; FOLDER must hold the cluster.json and job.json "
                             f"that python -m soap.cluster writes")
    try:
        num_workers = json.loads((args.folder / "cluster.json").read_text())["num_workers"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{args.folder / 'cluster.json'} is not a cluster file ({error}); write it with "
                         f"python -m soap.cluster") from None
    if args.process_id >= num_workers:
        raise UsageError(f"PROCESS_ID {args.process_id} is not a worker of this {num_workers}-worker cluster; "
                         f"pass 0 to {num_workers - 1}")
    return args.folder, args.process_id


def join_cluster(folder: Path, process_id: int) -> str:
    """Pin to this worker's core, join the cluster (jax.distributed, gloo collectives on CPU); the job JSON."""
    cluster = json.loads((folder / "cluster.json").read_text())
    keep_freed_memory()
    core = cluster["cores"][process_id]
    if core is not None:
        os.sched_setaffinity(0, {core})
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=cluster["coordinator"], num_processes=cluster["num_workers"],
                               process_id=process_id, initialization_timeout=_INITIALIZATION_TIMEOUT_S,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    return (folder / "job.json").read_text()


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve every block from one arena it never trims (see the module docstring);
    False where the C library is not glibc. Call it before any thread starts: a thread keeps its arena."""
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
    return all(mallopt(option, value) == 1
               for option, value in ((m_arena_max, 1), (m_mmap_max, 0), (m_trim_threshold, 2**31 - 1)))


def barrier(name: str, timeout_s: float = 24 * 3600) -> None:
    """Wait until every worker of the cluster reaches the barrier `name` (a no-op for one process).

    Between strategies: a process with no device in a strategy (e.g. process 1 under `single`) runs ahead
    through it and would wait for the others inside its next strategy's first collective, whose gloo
    set-up times out after 30 s; the coordination service's barrier waits as long as it takes.
    """
    import jax
    from jax._src import distributed

    if jax.process_count() > 1:
        distributed.global_state.client.wait_at_barrier(name, int(timeout_s * 1e3))
