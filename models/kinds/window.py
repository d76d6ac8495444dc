"""What windowed ops (conv2d and the pools) share: the halo box a task reads and the local op it runs.

A task computing output rows [start, stop) of a window of kernel k, stride s and leading padding lo reads
input rows [start*s - lo, (stop-1)*s - lo + k), clipped to the input. Its local op: without a spatial
split, the op on its batch or channel shard with the op's own height, width and padding; with one, the
halo window as if padded, with VALID padding, so that edge and middle shards are the same computation. (A
window for an unsplit op would overprice it: the input gradient of a SAME conv is computed over the whole
window, 11x11 instead of 7x7 for AlexNet's conv2 at 64x64.)
"""

from __future__ import annotations

import dataclasses

from models.kinds.base import split_params
from models.op import Box, Op, Padding, same_padding, shard_shape


def pad_lo(op: Op, axis: int) -> int:
    """Leading padding of the op's input along spatial axis 0 (height) or 1 (width)."""
    if op.padding is Padding.VALID:
        return 0
    size = op.input_shapes[0][1 + axis]
    return same_padding(size, op.kernel_hw[axis], op.stride_hw[axis])[0]


def window_boxes(op: Op, out_box: Box, channels: tuple[int, int]) -> tuple[Box, ...]:
    in_shape = op.input_shapes[0]
    spatial = []
    for axis in (0, 1):
        start, stop = out_box[1 + axis]
        stride, kernel, lo = op.stride_hw[axis], op.kernel_hw[axis], pad_lo(op, axis)
        first = start * stride - lo
        last = (stop - 1) * stride - lo + kernel
        spatial.append((max(first, 0), min(last, in_shape[1 + axis])))
    return ((out_box[0], spatial[0], spatial[1], channels),)


def window_local_op(op: Op, degrees: tuple[int, ...], channels_in: int) -> Op:
    out = shard_shape(op.output_shape, degrees)
    (kh, kw), (sh, sw) = op.kernel_hw, op.stride_hw
    params = split_params(op, degrees[3])
    if degrees[1] == degrees[2] == 1:
        _, height, width, _ = op.input_shapes[0]
        return dataclasses.replace(op, name="", input_shapes=((out[0], height, width, channels_in),),
                                   output_shape=out, param_shapes=params)
    window = (out[0], (out[1] - 1) * sh + kh, (out[2] - 1) * sw + kw, channels_in)
    return dataclasses.replace(op, name="", input_shapes=(window,), output_shape=out, param_shapes=params,
                               padding=Padding.VALID, halo=True)
