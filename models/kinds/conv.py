"""conv2d: a 2-D convolution, NHWC input, HWIO kernel, optional bias, optional fused ReLU, optionally grouped.

FLOPs: forward = 2 * N * Ho * Wo * Co * Kh * Kw * Ci / G for G groups; backward = 2 * forward (input and
weight gradients), 1 * forward for a conv reading the data batch (no input gradient). Worked numbers:
AlexNet conv1 at 64x64, batch 128 -> 2 * 128 * 16 * 16 * 64 * 11 * 11 * 3 = 1.52 GFLOP; a ConvNeXt-T
stage-1 depthwise 7x7 conv (G = Ci = Co = 96) at 56x56, batch 64 -> 2 * 64 * 56 * 56 * 96 * 49 = 1.89 GFLOP.

Groups (`ConvAttrs.groups`, lax.conv_general_dilated's feature_group_count; nnx.Conv's feature_group_count):
group g reads input channels [g * Ci/G, (g+1) * Ci/G) and writes output channels [g * Co/G, (g+1) * Co/G);
the kernel is (Kh, Kw, Ci/G, Co). The labelled space says it with `Merged` dims: the `channel` label counts
the groups (size G), `group_channel` the output channels of one group and `in_channel` the input channels
of one; the output's and the kernel's last dims are (channel, group_channel) merged and the input's
(channel, in_channel). A channel split therefore divides G and keeps whole groups: each task reads its own
groups' input channels and writes their output channels (no partial sums). A grouped conv's in_channel is
not a config label: a share of it is a strided set of the input's channels (a part of every group), which
no sharding of the input's channel dim holds, and a depthwise conv's (one channel a group) contracts
nothing. A conv of one group keeps the plain space below (and writes no settings in its flat fields: its cost key
and signature are those of every conv before groups).

A plain conv's config also splits its input channels (`in_channel`, the config's last degree, so that a
strategy file written before it names the same splits): each task reads its share of the input's channels
and the kernel's, and holds a partial sum of the whole output box, summed before a reader (an all-reduce,
or a reduce-scatter; simulator.taskgraph), the bias added once (`task_apply`). Only without a fused ReLU,
which cannot act on a partial sum (a conv before a batch norm; models.kinds.base.contracting_splits). Its
input gradient is each task's own slice, no partial sum. Such a split excludes a height or width split
(`Space.exclusive`): XLA's SPMD partitioner (JAX 0.10.2) computes that step wrongly (conv -> conv split 2 on
input channels and 2 on height -> dense, 4 CPU devices: the first conv's bias gradient doubled).

Dilation (`ConvAttrs.dilation_hw`, nnx.Conv's kernel_dilation) spreads the kernel's taps d rows apart: each
window spans (K - 1) * d + 1 input rows (models/kinds/window.py `span`; SAME pads for that span), its FLOPs
those of its K taps. Explicit padding (`Padding.EXPLICIT`, the (low, high) pairs in `ConvAttrs.pads`) sets
each window's leading pad; a halo shard's window holds it (VALID). A conv with such attrs is never computed
as patches, and its halo shard's input gradient is autodiff's (the `_halo_conv` below is a plain conv's).

A task split on the output channels reads its input whole in height and width (`whole_when_split`):
XLA's SPMD partitioner (JAX 0.10.2) computes such a conv wrongly when its input is split spatially
(tests/models/test_train.py checks such strategies), so the runtime pins it so and the simulator charges
it. Its input gradient is then a partial sum over its channel group (its input lacks the channel label).

A conv whose output image has at most IM2COL_MAX_PIXELS pixels is computed as its patches
(lax.conv_general_dilated_patches) times its kernel (`im2col`, set by the graph builder from the whole
op's output, kept by every task's local op): XLA:CPU's convolution has cliffs on small images. Measured
on one core, batch 64, forward / forward with both gradients (2026-11-30):
    2x2x512, 3x3x512x512, stride 1:  lax 1077 / 2153 ms,  patches 26 / 72 ms
    4x4x256, 3x3x256x512, stride 2:  lax 7.5 / 281 ms,    patches 8.7 / 50 ms   (a 2x2 output)
    4x4x256, 3x3x256x256, stride 1:  lax 12 / 38 ms,      patches 22 / 181 ms
    16x16x64, 3x3x64x64, stride 1:   lax 12 / 41 ms,      patches 67 / 681 ms
(shared/REFERENCE.md has the same cliffs at batch 128.) Above 2x2 outputs the plain convolution wins.

A task's local op split on height or width (`halo`: a VALID conv on its window, which only calibration
computes) computes its input gradient as XLA's SPMD partitioner has each device compute a split conv's
in a step: for the rows and columns the task owns only (its share of the input, about its output's size
times the stride), a forward convolution of the output gradient with the flipped kernel; the halo's
gradient is the neighbour's work there, and zero here (`_halo_conv`). Autodiff's gradient of a VALID
conv over the whole window, a transposed convolution XLA:CPU runs slowly on small images, took 793 ms on
128x6x4x256 (ResNet-18's res4 conv split on width) against about 100 ms for the whole backward stage of
the step holding it (benchmarks.op_breakdown --strategy-file, 2026-11-30). The output and the kernel
gradient are autodiff's, the input gradient equals it away from the halo (tests/models/test_kinds.py).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from models.kinds.base import KindSpec, bias_once, contracting_splits, elements, relu_if, tensor_labels
from models.kinds.window import spatial_windows
from models.labels import Label, Merged, Role, Space
from models.op_value import FlatFields, KindAttrs, Op, OpKind, Padding


IM2COL_MAX_PIXELS = 4  # 2x2 outputs and smaller


@dataclass(frozen=True)
class ConvAttrs(KindAttrs):
    """A conv's kernel, stride and padding, its fused ReLU, groups, kernel dilation and explicit pads, and
    how it is computed: as patches @ kernel (`im2col`, set by the graph builder) or as a height or width
    shard read with its halo (`halo`, a task's local op, never a graph's op)."""

    kernel_hw: tuple[int, int]
    stride_hw: tuple[int, int]
    padding: Padding
    relu: bool = False
    groups: int = 1  # feature_group_count: Ci and Co split into this many independent groups
    dilation_hw: tuple[int, int] = (1, 1)  # kernel (rhs) dilation: taps this many rows and columns apart
    pads: tuple[tuple[int, int], tuple[int, int]] | None = None  # (low, high) per spatial dim: Padding.EXPLICIT
    im2col: bool = False
    halo: bool = False

    def __post_init__(self) -> None:  # a graph file gives tuples back as lists
        object.__setattr__(self, "dilation_hw", tuple(int(d) for d in self.dilation_hw))
        if self.pads is not None:
            object.__setattr__(self, "pads", tuple(tuple(int(p) for p in pad) for pad in self.pads))

    @property
    def plain(self) -> bool:
        """One group, no dilation, no explicit pads: the conv every conv was before these settings."""
        return self.groups == 1 and self.dilation_hw == (1, 1) and self.pads is None

    def flat(self) -> FlatFields:
        """The settings beyond kernel, stride, padding and ReLU are written only where one is not the
        default, so that plain convs keep their cost keys, signatures and graph files."""
        others = None if self.plain else (("groups", self.groups), ("dilation_hw", self.dilation_hw),
                                          ("pads", self.pads))
        return FlatFields(self.kernel_hw, self.stride_hw, self.padding, self.relu, self.im2col, self.halo, others)

    @classmethod
    def from_flat(cls, flat: FlatFields) -> ConvAttrs:
        return cls(flat.kernel_hw, flat.stride_hw, flat.padding, flat.relu, im2col=flat.im2col, halo=flat.halo,
                   **dict(flat.others or ()))


class Conv2D(KindSpec):
    kind = OpKind.CONV2D
    attrs_type = ConvAttrs

    def forward_flops(self, op: Op) -> int:
        kh, kw = op.attrs.kernel_hw
        return 2 * elements(op.output_shape) * kh * kw * (op.input_shapes[0][-1] // op.attrs.groups)

    def backward_flops(self, op: Op) -> int:
        return (2 if op.input_grad else 1) * self.forward_flops(op)

    def space(self, op: Op) -> Space:
        """x[sample window(height) window(width) in_channel] . kernel[kernel_h kernel_w in_channel channel]
        + bias[channel] -> y[sample height width channel]; a channel split reads the image whole; in_channel
        is contracted (see the module docstring), its degree the config's last."""
        if op.attrs.groups > 1:
            return self._grouped_space(op)
        kh, kw = op.attrs.kernel_hw
        labels = tensor_labels(op.output_shape) + (
            Label("kernel_h", kh, Role.WINDOW), Label("kernel_w", kw, Role.WINDOW),
            Label("in_channel", op.input_shapes[0][3], Role.CHANNEL))
        height, width = spatial_windows(op, op.attrs.dilation_hw)
        params = {"kernel": ("kernel_h", "kernel_w", "in_channel", "channel"), "bias": ("channel",)}
        outputs = ("sample", "height", "width", "channel")
        return Space(labels, outputs, (("sample", height, width, "in_channel"),),
                     tuple((name, params[name]) for name, _ in op.param_shapes),
                     config_labels=outputs + ("in_channel",), splittable=contracting_splits(op, outputs, "in_channel"),
                     whole_when_split=(("channel", frozenset({"height", "width"})),),
                     exclusive=(("in_channel", frozenset({"height", "width"})),))

    @staticmethod
    def _grouped_space(op: Op) -> Space:
        """x[sample window(height) window(width) (channel in_channel)] . kernel[kernel_h kernel_w in_channel
        (channel group_channel)] + bias[(channel group_channel)] -> y[sample height width (channel
        group_channel)], `channel` counting the groups (see the module docstring)."""
        (kh, kw), count = op.attrs.kernel_hw, op.attrs.groups
        n, out_h, out_w, out_channels = op.output_shape
        labels = (Label("sample", n, Role.SAMPLE), Label("height", out_h, Role.HEIGHT),
                  Label("width", out_w, Role.WIDTH), Label("channel", count, Role.CHANNEL),
                  Label("group_channel", out_channels // count, Role.CHANNEL),
                  Label("kernel_h", kh, Role.WINDOW), Label("kernel_w", kw, Role.WINDOW),
                  Label("in_channel", op.input_shapes[0][3] // count, Role.CHANNEL))
        height, width = spatial_windows(op, op.attrs.dilation_hw)
        outputs, inputs = Merged(("channel", "group_channel")), Merged(("channel", "in_channel"))
        params = {"kernel": ("kernel_h", "kernel_w", "in_channel", outputs), "bias": (outputs,)}
        return Space(labels, ("sample", "height", "width", outputs), (("sample", height, width, inputs),),
                     tuple((name, params[name]) for name, _ in op.param_shapes),
                     config_labels=("sample", "height", "width", "channel"),
                     whole_when_split=(("channel", frozenset({"height", "width"})),))

    def task_apply(self, op: Op, degrees, index, params, inputs, labels) -> jax.Array:
        """An input-channel task adds the bias only where it holds the first channels (`bias_once`)."""
        params = bias_once(op, degrees, index, params, "in_channel")
        return super().task_apply(op, degrees, index, params, inputs, labels)

    def local_op(self, op: Op, degrees: tuple[int, ...]) -> Op:
        """A channel split of a grouped conv leaves each task G / degree groups; a halo shard's window
        holds its padding (VALID)."""
        local = super().local_op(op, degrees)
        if op.attrs.plain:
            return local
        count = op.attrs.groups // op.space.degree_map(degrees)["channel"] if op.attrs.groups > 1 else 1
        attrs = dataclasses.replace(local.attrs, groups=count, pads=None if local.attrs.halo else op.attrs.pads)
        return dataclasses.replace(local, attrs=attrs)

    def layer(self, op: Op, rngs):
        attrs = op.attrs
        return nnx.Conv(op.input_shapes[0][-1], op.output_shape[-1], attrs.kernel_hw, strides=attrs.stride_hw,
                        padding=_padding(op), kernel_dilation=attrs.dilation_hw, feature_group_count=attrs.groups,
                        use_bias=len(op.param_shapes) > 1, dtype=op.dtype, param_dtype=op.dtype, rngs=rngs)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        """As nnx.Conv computes it (lax.conv_general_dilated, then the bias), or as patches @ kernel (a conv
        of default attrs only: the builder sets im2col on no other)."""
        attrs = op.attrs
        if attrs.im2col:
            kh, kw, ci, co = params["kernel"].shape
            patches = lax.conv_general_dilated_patches(inputs[0], (kh, kw), attrs.stride_hw, attrs.padding.value,
                                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
            # The patches' features are ordered (input channel, kernel row, kernel column).
            y = patches @ params["kernel"].transpose(2, 0, 1, 3).reshape(ci * kh * kw, co)
        elif attrs.halo and attrs.plain:
            y = _halo_conv(inputs[0], params["kernel"], attrs.stride_hw)
        else:  # a grouped or dilated conv's halo shard: autodiff's backward of its VALID window
            y = lax.conv_general_dilated(inputs[0], params["kernel"], attrs.stride_hw, _padding(op),
                                         rhs_dilation=attrs.dilation_hw, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         feature_group_count=attrs.groups)
        if "bias" in params:
            y = y + params["bias"]
        return relu_if(op, y)


def _padding(op: Op) -> str | tuple[tuple[int, int], tuple[int, int]]:
    """lax's and nnx.Conv's padding argument: SAME, VALID or the explicit (low, high) pairs."""
    return op.attrs.pads if op.attrs.padding is Padding.EXPLICIT else op.attrs.padding.value


_NHWC = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _halo_conv(x: jax.Array, kernel: jax.Array, stride_hw: tuple[int, int]) -> jax.Array:
    """A VALID conv whose input gradient is a forward convolution (see the module docstring)."""
    return lax.conv_general_dilated(x, kernel, stride_hw, "VALID", dimension_numbers=_NHWC)


def _halo_conv_forward(x, kernel, stride_hw):
    return _halo_conv(x, kernel, stride_hw), (x, kernel)


def _halo_conv_backward(stride_hw, residuals, dy):
    x, kernel = residuals
    (kh, kw), (sh, sw) = kernel.shape[:2], stride_hw
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)  # (kh, kw, Co, Ci)
    # The owned rows: out_h * sh of them, after the top halo of (kh - sh) // 2 (a SAME split's), none for a
    # kernel smaller than its stride (a 1x1 conv of stride 2 owns its whole window); their
    # gradient is the full transposed conv's rows there, computed alone as a forward convolution.
    pads, owned = [], []
    for size, out, k, s in ((x.shape[1], dy.shape[1], kh, sh), (x.shape[2], dy.shape[2], kw, sw)):
        top = max((k - s) // 2, 0)
        rows = min(out * s, size - top)
        pads.append((k - 1 - top, rows + top - (out - 1) * s - 1))
        owned.append((top, size - top - rows))
    source = dy
    if stride_hw == (1, 1):  # the halo is data in a step (the neighbour's gradient), not padding
        source, pads = _with_halo(dy, pads), ((0, 0), (0, 0))
    dx = lax.conv_general_dilated(source, flipped, (1, 1), pads, lhs_dilation=(sh, sw), dimension_numbers=_NHWC)
    dx = jnp.pad(dx, ((0, 0), owned[0], owned[1], (0, 0)))
    _, kernel_pullback = jax.vjp(lambda k: lax.conv_general_dilated(x, k, stride_hw, "VALID",
                                                                    dimension_numbers=_NHWC), kernel)
    return dx, kernel_pullback(dy)[0]


def _with_halo(dy: jax.Array, pads) -> jax.Array:
    """`dy` with `pads` rows and columns of zeros around it (a negative pad crops) that XLA cannot fold
    into the convolution's padding: computed from dy's edge times zero, as a neighbour's halo is data.
    Folded, XLA:CPU swaps a small padded image with the kernel and runs the convolution 25x slower."""
    for axis, (low, high) in zip((1, 2), pads):
        size = dy.shape[axis]
        dy = lax.slice_in_dim(dy, max(-low, 0), size - max(-high, 0), axis=axis)
        edge = lax.slice_in_dim(dy, 0, 1, axis=axis) * 0.0
        dy = jnp.concatenate([edge] * max(low, 0) + [dy] + [edge] * max(high, 0), axis=axis)
    return dy


_halo_conv.defvjp(_halo_conv_forward, _halo_conv_backward)
