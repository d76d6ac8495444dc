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


# What a step also writes transposed ([features, tokens]) for a kernel gradient over the tokens: a dense's
# kernel gradient x^T . dy reads its input x so, the tied head's table gradient dy^T . x its output gradient.
OUTPUT, INPUT_GRADIENT = "output", "input gradient"


def transposed_copies(graph: OpGraph, op: Op) -> tuple[str, ...]:
    """What a training step computes twice of `op`, as it is and transposed, for the kernel gradient of an
    op next to it: its OUTPUT where a dense reads it, its INPUT_GRADIENT where its input is the tied head's
    logits. XLA:CPU lays that operand of the kernel gradient's dot out transposed and fuses the copy into
    the loop that computes it, recomputing its arithmetic: a 4-layer GPT's GELU on 16x128x1024 took 35.7
    ms a step (benchmarks.op_breakdown), 7.5 ms as calibrated without the copy, and its loss's backward
    22.4 ms against 6.1 (2026-12-07; the compiled step's fusions `copy_bitcast_fusion` write GELU's output
    as f32[1024,2048] and the loss's input gradient as f32[4096,2048]). Token tensors only (rank 3 or
    more): a CNN's dense head reads a [batch, features] input, not measured."""
    copies = []
    if len(op.output_shape) >= 3 and any(graph.op(consumer).kind is OpKind.DENSE
                                         for consumer in graph.consumers(op.name)):
        copies.append(OUTPUT)
    producers = graph.producers(op.name)
    if producers and len(op.input_shapes[0]) >= 3 and graph.op(producers[0]).kind is OpKind.ATTEND:
        copies.append(INPUT_GRADIENT)
    return tuple(copies)


def transposed_copies_by_key(graph: OpGraph, num_devices: int) -> dict[str, tuple[str, ...]]:
    """transposed_copies of every needed local op that has some, by cost key: calibration also times its
    forward (OUTPUT) or backward (INPUT_GRADIENT) writing that copy."""
    return {local_op(op, degrees).cost_key: copies for op in graph.ops if (copies := transposed_copies(graph, op))
            for degrees in valid_degrees(op, num_devices)}
