"""What windowed ops (conv2d and the pools) share: their input's height and width as windows (models.labels).

A task computing output rows [start, stop) of a window of kernel k, stride s and leading padding lo reads
input rows [start*s - lo, (stop-1)*s - lo + k), clipped to the input (`models.labels.Window`). Its local
op: without a spatial split, the op on its batch or channel shard with the op's own height, width and
padding; with one, the halo window as if padded, with VALID padding, so that edge and middle shards are
the same computation (models.kinds.base.KindSpec.local_op). (A window for an unsplit op would overprice
it: the input gradient of a SAME conv is computed over the whole window, 11x11 instead of 7x7 for
AlexNet's conv2 at 64x64.)
"""

from __future__ import annotations

from models.labels import Window
from models.op_value import Op, Padding


def span(kernel: int, dilation: int) -> int:
    """The input rows one window of `kernel` taps `dilation` rows apart covers."""
    return (kernel - 1) * dilation + 1


def pad_lo(op: Op, axis: int, dilation: int) -> int:
    """Leading padding of the op's input along spatial axis 0 (height) or 1 (width) (a conv's or a pool's
    attrs: kernel, stride, padding, and a conv's explicit pads)."""
    attrs = op.attrs
    if attrs.padding is Padding.VALID:
        return 0
    if attrs.padding is Padding.EXPLICIT:
        return attrs.pads[axis][0]
    size = op.input_shapes[0][1 + axis]
    return same_padding(size, span(attrs.kernel_hw[axis], dilation), attrs.stride_hw[axis])[0]


def spatial_windows(op: Op, dilation_hw: tuple[int, int] = (1, 1)) -> tuple[Window, Window]:
    """The input's height and width as windows over the output's (a conv's kernel dilated by
    `dilation_hw`; pools have none)."""
    attrs = op.attrs
    return tuple(Window(label, op.input_shapes[0][1 + axis], span(attrs.kernel_hw[axis], dilation_hw[axis]),
                        attrs.stride_hw[axis], pad_lo(op, axis, dilation_hw[axis]))
                 for axis, label in enumerate(("height", "width")))


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's SAME padding (lax.padtype_to_pads): total = max((out-1)*stride + kernel - size, 0), lo = total//2."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def spatial_output_size(size: int, kernel: int, stride: int, padding: Padding, pads: tuple[int, int] = (0, 0)) -> int:
    """Output rows of a window of `kernel` rows (a dilated kernel's span) and `stride`; `pads` for EXPLICIT."""
    if padding is Padding.SAME:
        return -(-size // stride)
    return (size + sum(pads) - kernel) // stride + 1
