"""Operators: the frozen values the operator graph holds, and what a split of one reads and computes.

    python -m models resnet50 --dataset imagenet    # prints every op's shapes, FLOPs, parameters

An op's computation is a labelled iteration space (`Op.space`, models.labels): a config gives a degree to
each of its config labels, Sample (batch), Attribute (height, width of images) and Parameter (output
channels, which splits the weights) for the CNN kinds; token kinds also give degrees to sequence, heads,
hidden and vocabulary labels, contracting ones included. Images are NHWC, dense activations NC, token
tensors [b s d] (sample, sequence, hidden) and token ids [b s] int32. ReLU is fused into conv2d, dense,
batch_norm and add, as FlexFlow does.

Everything that depends on an op's kind (its labels, FLOPs, the computation one task performs, its JAX
computation) lives in the kind's module under models/kinds/, found through `Op.spec`; what a split of
the labels implies (boxes, shards, groups) lives in models.labels; the functions here only ask them. FLOP
conventions are stated in each kind's module (one multiply-add = 2 FLOPs; bias and ReLU are not counted).
The value itself (`Op`, `OpKind`, the kinds' registry) is models/op_value.py, a leaf the kinds import;
this module imports the kinds (filling the registry) and re-exports it.
"""

from __future__ import annotations

import models.kinds  # noqa: F401 (registers every kind's rules, which Op.spec finds)
from models import labels
from models.labels import Box, Label, Shape, Space, shard_box, shard_shape  # noqa: F401 (re-exported)
from models.op_value import (  # noqa: F401 (re-exported: the rest of the code asks this module)
    DTYPE_BYTES, FlatFields, KindAttrs, Op, OpKind, Padding, kind_spec, registered_kinds)


def input_boxes(op: Op, out_box: Box) -> tuple[Box, ...]:
    """The region of each input that computing `out_box` of the output reads (clipped to the input; an
    input the box does not need at all gets an empty range)."""
    ranges = dict(zip(op.space.output, out_box))
    return tuple(labels.input_box(op.space, j, ranges) for j in range(len(op.input_shapes)))


def task_input_boxes(op: Op, degrees: tuple[int, ...], out_box: Box) -> tuple[Box, ...]:
    """What a task of `op` under `degrees` computing `out_box` reads at run time (models.labels.input_box
    with the labels its kind reads whole and the run-time split of `input_degrees`: a conv split on its
    output channels reads its input whole in height and width; an input dim that its split does not
    divide, e.g. height 55 under a split of 3 for an output height 27, is read whole, as
    soap.step.input_sharding places it). The simulator charges exactly this."""
    space = op.space
    ranges = dict(zip(space.output, out_box))
    whole = labels.whole_labels(space, degrees)
    return tuple(labels.input_box(space, j, ranges, whole, split)
                 for j, split in enumerate(labels.input_degrees(space, degrees)))


def input_degrees(op: Op, degrees: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """For each input, the degree each of its dims is split by at run time (models.labels.input_axes)."""
    return labels.input_degrees(op.space, degrees)


def local_op(op: Op, degrees: tuple[int, ...]) -> Op:
    """What ONE task of `op` computes when its output is split by `degrees` (equal partitions): a name-less
    op on the shard's shapes, whose cost_key keys measured profiles."""
    assert len(degrees) == len(op.space.config_labels)
    return op.spec.local_op(op, degrees)
