"""A local-cluster worker's first step: pin to its core and join the others (soap.devices starts them).

This module imports only the standard library: a worker must pin itself before numpy or JAX start
their thread pools, because threads inherit the affinity of their creator.
"""

import json
import os
from pathlib import Path

_INITIALIZATION_TIMEOUT_S = 120


def join_cluster(folder: Path, process_id: int) -> str:
    """Pin to this worker's core, join the cluster (jax.distributed, gloo collectives on CPU); the job JSON."""
    cluster = json.loads((folder / "cluster.json").read_text())
    core = cluster["cores"][process_id]
    if core is not None:
        os.sched_setaffinity(0, {core})
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=cluster["coordinator"], num_processes=cluster["num_workers"],
                               process_id=process_id, initialization_timeout=_INITIALIZATION_TIMEOUT_S)
    return (folder / "job.json").read_text()


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
