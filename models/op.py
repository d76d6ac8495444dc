"""Operators: the frozen values the operator graph holds, and what one task of an op computes.

    python -m models alexnet --dataset tiny-imagenet    # prints every op's shapes, FLOPs, parameters

An op's parallelizable dims are the dims of its OUTPUT tensor (FlexFlow's SOAP): Sample (batch), Attribute
(height, width of images) and Parameter (output channels, which splits the weights). Images are NHWC and
dense activations NC. ReLU is fused into conv2d and dense, as FlexFlow does.

FLOP conventions (one multiply-add = 2 FLOPs; bias and ReLU are not counted):
    conv2d forward  = 2 * N * Ho * Wo * Co * Kh * Kw * Ci;  backward = 2 * forward (input and weight grads),
                                                            1 * forward for an op reading the data batch
    dense forward   = 2 * N * In * Out;                     backward = as conv2d
    pool2d forward  = N * Ho * Wo * C * Kh * Kw (one compare per window element); backward = forward
    softmax_xent    = 5 * N * classes forward (max, sub, exp, sum, log-gather); backward = 2 * N * classes
    flatten         = 0 (a reshape)
Worked number: AlexNet conv1 at 64x64, batch 128 -> 2 * 128 * 16 * 16 * 64 * 11 * 11 * 3 = 1.52 GFLOP.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass

Shape = tuple[int, ...]
# A box is a half-open [start, stop) range per dim of a tensor, in that tensor's global coordinates.
Box = tuple[tuple[int, int], ...]


class OpKind(str, enum.Enum):
    CONV2D = "conv2d"
    POOL2D = "pool2d"
    FLATTEN = "flatten"
    DENSE = "dense"
    SOFTMAX_XENT = "softmax_xent"


class Dim(str, enum.Enum):
    """A named dim of an op's output tensor: what a parallel degree splits."""

    SAMPLE = "sample"
    HEIGHT = "height"
    WIDTH = "width"
    CHANNEL = "channel"


class Padding(str, enum.Enum):
    SAME = "SAME"
    VALID = "VALID"


_OUTPUT_DIMS: dict[OpKind, tuple[Dim, ...]] = {
    OpKind.CONV2D: (Dim.SAMPLE, Dim.HEIGHT, Dim.WIDTH, Dim.CHANNEL),
    OpKind.POOL2D: (Dim.SAMPLE, Dim.HEIGHT, Dim.WIDTH, Dim.CHANNEL),
    OpKind.FLATTEN: (Dim.SAMPLE, Dim.CHANNEL),
    OpKind.DENSE: (Dim.SAMPLE, Dim.CHANNEL),
    OpKind.SOFTMAX_XENT: (Dim.SAMPLE,),
}

# Flatten's features interleave H, W and C of its input, so a feature split would need a non-box slice;
# softmax cross-entropy reduces over its classes. Both split on the batch only.
_PARALLEL_DIMS: dict[OpKind, frozenset[Dim]] = {
    OpKind.CONV2D: frozenset(Dim),
    OpKind.POOL2D: frozenset(Dim),
    OpKind.FLATTEN: frozenset({Dim.SAMPLE}),
    OpKind.DENSE: frozenset({Dim.SAMPLE, Dim.CHANNEL}),
    OpKind.SOFTMAX_XENT: frozenset({Dim.SAMPLE}),
}

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Op:
    """One operator: a frozen value, usable as a dict key.

    `input_shapes` lists the tensors the op reads, in order; `param_shapes` names its weights.
    Spatial ops carry `kernel_hw`, `stride_hw` and `padding`; `relu` marks a fused ReLU.
    """

    name: str
    kind: OpKind
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    param_shapes: tuple[tuple[str, Shape], ...] = ()
    dtype: str = "float32"
    kernel_hw: tuple[int, int] | None = None
    stride_hw: tuple[int, int] | None = None
    padding: Padding | None = None
    relu: bool = False
    input_grad: bool = True  # False for an op reading the data batch: no gradient flows to its input

    def __post_init__(self) -> None:
        assert self.dtype in DTYPE_BYTES, self.dtype
        assert len(self.output_shape) == len(_OUTPUT_DIMS[self.kind]), (self.kind, self.output_shape)

    @property
    def output_dims(self) -> tuple[Dim, ...]:
        return _OUTPUT_DIMS[self.kind]

    @property
    def parallel_dims(self) -> frozenset[Dim]:
        return _PARALLEL_DIMS[self.kind]

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def param_count(self) -> int:
        return sum(math.prod(shape) for _, shape in self.param_shapes)

    @property
    def param_bytes(self) -> int:
        return self.param_count * self.dtype_bytes

    @property
    def output_bytes(self) -> int:
        return math.prod(self.output_shape) * self.dtype_bytes

    @property
    def input_bytes(self) -> int:
        return sum(math.prod(shape) for shape in self.input_shapes) * self.dtype_bytes

    @property
    def forward_flops(self) -> int:
        out = self.output_shape
        if self.kind is OpKind.CONV2D:
            kh, kw = self.kernel_hw
            return 2 * math.prod(out) * kh * kw * self.input_shapes[0][-1]
        if self.kind is OpKind.DENSE:
            return 2 * math.prod(out) * self.input_shapes[0][-1]
        if self.kind is OpKind.POOL2D:
            kh, kw = self.kernel_hw
            return math.prod(out) * kh * kw
        if self.kind is OpKind.SOFTMAX_XENT:
            return 5 * math.prod(self.input_shapes[0])
        return 0

    @property
    def backward_flops(self) -> int:
        if self.kind in (OpKind.CONV2D, OpKind.DENSE):
            return (2 if self.input_grad else 1) * self.forward_flops
        if self.kind is OpKind.SOFTMAX_XENT:
            return 2 * math.prod(self.input_shapes[0])
        return self.forward_flops

    @property
    def cost_key(self) -> str:
        """The op's computation as a canonical string, without its name: equal computations share it.

        Cost tables (measured profiles) are keyed by this string of a task's local op (see `local_op`).
        """
        parts = [self.kind.value]
        if self.kernel_hw is not None:
            parts.append(f"k{self.kernel_hw[0]}x{self.kernel_hw[1]}")
            parts.append(f"s{self.stride_hw[0]}x{self.stride_hw[1]}")
            parts.append(self.padding.value)
        if self.relu:
            parts.append("relu")
        if not self.input_grad:
            parts.append("no-input-grad")
        parts.append("in=" + ",".join(_shape_str(s) for s in self.input_shapes))
        parts.append("out=" + _shape_str(self.output_shape))
        if self.param_shapes:
            parts.append("params=" + ",".join(_shape_str(s) for _, s in self.param_shapes))
        parts.append(self.dtype)
        return " ".join(parts)


def _shape_str(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's SAME padding (lax.padtype_to_pads): total = max((out-1)*stride + kernel - size, 0), lo = total//2."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def spatial_output_size(size: int, kernel: int, stride: int, padding: Padding) -> int:
    if padding is Padding.SAME:
        return -(-size // stride)
    return (size - kernel) // stride + 1


def _pad_lo(op: Op, axis: int) -> int:
    """Leading padding of the op's input along spatial axis 0 (height) or 1 (width)."""
    if op.padding is Padding.VALID:
        return 0
    size = op.input_shapes[0][1 + axis]
    return same_padding(size, op.kernel_hw[axis], op.stride_hw[axis])[0]


def input_boxes(op: Op, out_box: Box) -> tuple[Box, ...]:
    """The region of each input that computing `out_box` of the output reads (clipped to the input).

    For a spatially split conv or pool this is the output rows' window plus its halo; a dense layer reads
    all input features of its samples; flatten reads all of H, W, C of its samples.
    """
    in_shape = op.input_shapes[0]
    (n0, n1) = out_box[0]
    if op.kind in (OpKind.CONV2D, OpKind.POOL2D):
        spatial = []
        for axis in (0, 1):
            start, stop = out_box[1 + axis]
            stride, kernel, lo = op.stride_hw[axis], op.kernel_hw[axis], _pad_lo(op, axis)
            first = start * stride - lo
            last = (stop - 1) * stride - lo + kernel
            spatial.append((max(first, 0), min(last, in_shape[1 + axis])))
        channels = (0, in_shape[3]) if op.kind is OpKind.CONV2D else out_box[3]
        return (((n0, n1), spatial[0], spatial[1], channels),)
    if op.kind is OpKind.FLATTEN:
        return (((n0, n1), (0, in_shape[1]), (0, in_shape[2]), (0, in_shape[3])),)
    if op.kind is OpKind.DENSE:
        return (((n0, n1), (0, in_shape[1])),)
    if op.kind is OpKind.SOFTMAX_XENT:
        return (((n0, n1), (0, in_shape[1])),)
    raise AssertionError(op.kind)


def reads_whole_image(op: Op, channels_split: bool) -> bool:
    """Whether a task of `op` reads its input whole in height and width: a conv split on its output
    channels does, at run time (models.train.input_sharding) and in the simulator (task_input_boxes).
    XLA's SPMD partitioner (JAX 0.10.2) computes such a conv wrongly when its input is split spatially
    (tests/models/test_train.py checks such strategies)."""
    return op.kind is OpKind.CONV2D and channels_split


def task_input_boxes(op: Op, degrees: tuple[int, ...], out_box: Box) -> tuple[Box, ...]:
    """What a task of `op` under `degrees` reads at run time: `input_boxes`, but the whole height and
    width where `reads_whole_image`. The simulator charges exactly this."""
    boxes = input_boxes(op, out_box)
    if reads_whole_image(op, degrees[-1] > 1):  # a conv's last dim is its channels
        (batch, _, _, channels), in_shape = boxes[0], op.input_shapes[0]
        return ((batch, (0, in_shape[1]), (0, in_shape[2]), channels),)
    return boxes


def local_op(op: Op, degrees: tuple[int, ...]) -> Op:
    """What ONE task of `op` computes when its output is split by `degrees` (equal partitions).

    Every task of a config computes the same local op: the output shard, the input it reads, and the
    weight slice (a channel split divides the output channels). Without a spatial split the input keeps
    the op's height, width and padding (the op's own computation on a batch or channel shard). With
    one, the input is the halo window as if padded, with VALID padding, so that edge and middle shards
    are the same computation. (A window for an unsplit op would overprice it: the input gradient of a
    SAME conv is computed over the whole window, 11x11 instead of 7x7 for AlexNet's conv2 at 64x64.)
    """
    assert len(degrees) == len(op.output_shape)
    out = tuple(size // d for size, d in zip(op.output_shape, degrees))
    if op.kind in (OpKind.CONV2D, OpKind.POOL2D):
        (kh, kw), (sh, sw) = op.kernel_hw, op.stride_hw
        channels_in = op.input_shapes[0][3] if op.kind is OpKind.CONV2D else out[3]
        params = tuple((name, shape[:-1] + (out[3],)) for name, shape in op.param_shapes)
        if degrees[1] == degrees[2] == 1:
            _, height, width, _ = op.input_shapes[0]
            return dataclasses.replace(op, name="", input_shapes=((out[0], height, width, channels_in),),
                                       output_shape=out, param_shapes=params)
        window = (out[0], (out[1] - 1) * sh + kh, (out[2] - 1) * sw + kw, channels_in)
        return dataclasses.replace(
            op, name="", input_shapes=(window,), output_shape=out, param_shapes=params, padding=Padding.VALID
        )
    if op.kind is OpKind.DENSE:
        params = tuple((name, shape[:-1] + (out[1],)) for name, shape in op.param_shapes)
        in_shape = (out[0], op.input_shapes[0][1])
        return dataclasses.replace(op, name="", input_shapes=(in_shape,), output_shape=out, param_shapes=params)
    in_shape = (out[0],) + op.input_shapes[0][1:]
    return dataclasses.replace(op, name="", input_shapes=(in_shape,), output_shape=out)


def shard_box(shape: Shape, degrees: tuple[int, ...], index: tuple[int, ...]) -> Box:
    """The box of shard `index` (one index per dim) of a tensor split into equal parts by `degrees`."""
    return tuple(
        (i * (size // d), (i + 1) * (size // d)) for size, d, i in zip(shape, degrees, index)
    )
