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
