"""What a calibration measures: the local ops a model's SOAP space can produce, and the link message sizes.

    python -m simulator.calibrate --model alexnet --gpus 2

Shared by simulator.calibrate (which decides what is missing from the cache) and
simulator.calibrate_worker (which measures it), so that neither imports the other's module for it.
"""

from __future__ import annotations

from models.graph import OpGraph
from models.op import Op, OpKind, local_op
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


# Kinds whose kernel gradient reads their input transposed (x^T . dy over the tokens).
_KERNEL_GRADIENT_READERS = (OpKind.DENSE, OpKind.ATTEND)


def read_transposed(graph: OpGraph, op: Op) -> bool:
    """Whether a training step computes `op`'s output twice: as it is, and transposed ([features, tokens])
    for the kernel gradient of a dense (or tied head) that reads it. XLA:CPU lays the dense's input out so
    and fuses that copy into the producer's loop, recomputing the producer's arithmetic: a 4-layer GPT's
    GELU on 16x128x1024 took 35.7 ms a step (benchmarks.op_breakdown), 7.5 ms as calibrated without the
    copy (2026-12-07; the compiled step's fusion `copy_bitcast_fusion` recomputes tanh into f32[1024,2048]).
    Token tensors only (rank 3 or more): a CNN's dense head reads a [batch, features] input, not measured."""
    return len(op.output_shape) >= 3 and any(graph.op(consumer).kind in _KERNEL_GRADIENT_READERS
                                             for consumer in graph.consumers(op.name))


def read_transposed_keys(graph: OpGraph, num_devices: int) -> frozenset[str]:
    """The cost keys of needed_local_ops whose op's output a dense reads (read_transposed): calibration
    also times their forward with the transposed copy."""
    return frozenset(local_op(op, degrees).cost_key for op in graph.ops if read_transposed(graph, op)
                     for degrees in valid_degrees(op, num_devices))
