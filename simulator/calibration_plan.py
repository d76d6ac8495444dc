"""What a calibration measures: the local ops a model's SOAP space can produce, and the link message sizes.

    python -m simulator.calibrate --model alexnet --gpus 2

Shared by simulator.calibrate (which decides what is missing from the cache) and
simulator.calibrate_worker (which measures it), so that neither imports the other's module for it.
"""

from __future__ import annotations

from models.graph import OpGraph
from models.op import Op, local_op
from soap.space import valid_degrees

MESSAGE_SIZES = tuple(4 * 2**10 * 4**k for k in range(8))  # 4 KB .. 64 MB


def needed_local_ops(graph: OpGraph, num_devices: int) -> list[Op]:
    """Every distinct computation a task can perform under some config of the space, in program order."""
    seen: dict[str, Op] = {}
    for op in graph.ops:
        for degrees in valid_degrees(op, num_devices):
            local = local_op(op, degrees)
            seen.setdefault(local.cost_key, local)
    return list(seen.values())
