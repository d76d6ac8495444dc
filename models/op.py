"""Operators: the frozen values the operator graph holds.

    python -m models resnet50 --dataset imagenet    # prints every op's shapes, FLOPs, parameters

An op's computation is a labelled iteration space (`Op.space`, models.labels): a config gives a degree to
each of its config labels, Sample (batch), Attribute (height, width of images) and Parameter (output
channels, which splits the weights) for the CNN kinds; token kinds also give degrees to sequence, heads,
hidden and vocabulary labels, contracting ones included. Images are NHWC, dense activations NC, token
tensors [b s d] (sample, sequence, hidden) and token ids [b s] int32. ReLU is fused into conv2d, dense,
batch_norm and add, as FlexFlow does.

Everything that depends on an op's kind (its labels, FLOPs, the computation one task performs, its JAX
computation) lives in the kind's module under models/kinds/, found through `Op.spec`; what a split of
the labels implies (boxes, shards, groups) lives in models.labels; the functions here only ask them. FLOP conventions are stated in each kind's module (one
multiply-add = 2 FLOPs; bias and ReLU are not counted).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from dataclasses import dataclass, field
from typing import Any

from models import labels
from models.labels import Box, Label, Shape, Space, shard_box, shard_shape  # noqa: F401 (re-exported)


class OpKind(str, enum.Enum):
    CONV2D = "conv2d"
    POOL2D = "pool2d"  # max pool
    AVG_POOL2D = "avg_pool2d"
    GLOBAL_AVG_POOL = "global_avg_pool"
    BATCH_NORM = "batch_norm"
    ADD = "add"
    CONCAT = "concat"
    FLATTEN = "flatten"
    DENSE = "dense"
    SOFTMAX_XENT = "softmax_xent"
    LAYER_NORM = "layer_norm"
    EMBEDDING = "embedding"
    ADD_POSITION = "add_position"
    ATTENTION = "attention"
    SPLIT_HEADS = "split_heads"
    MERGE_HEADS = "merge_heads"
    ACTIVATION = "activation"
    MULTIPLY = "multiply"
    DROPOUT = "dropout"
    TOKEN_XENT = "token_xent"
    ATTEND = "attend"
    IMAGE_TOKENS = "image_tokens"
    CLASS_TOKEN = "class_token"
    FIRST_TOKEN = "first_token"
    ADD_TOKEN_TYPE = "add_token_type"
    GROUP_NORM = "group_norm"
    GLOBAL_MAX_POOL = "global_max_pool"
    CHANNEL_SLICE = "channel_slice"


class Padding(str, enum.Enum):
    SAME = "SAME"
    VALID = "VALID"
    EXPLICIT = "EXPLICIT"  # (low, high) per spatial dim, in the conv's attrs (models.kinds.conv.ConvAttrs.pads)


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Op:
    """One operator: a frozen value, usable as a dict key.

    `input_shapes` lists the tensors the op reads, in order; `param_shapes` names its trainable weights and
    `state_shapes` its non-trainable state (batch norm's running averages). Spatial ops carry `kernel_hw`,
    `stride_hw` and `padding`; `relu` marks a fused ReLU; `im2col` a conv computed as patches times its
    kernel. `attrs` holds the kind's own frozen attributes (a dataclass the kind's module defines: heads,
    causal, eps, rate, ...; None for kinds without). `tied` names, for each parameter that is another op's
    weight read again (GPT-2's head reads the token table), that op: (param name, owner op), the owner's
    parameter of the same name (models.network.op_params); the weight is
    one tensor, counted, stored and updated once, its gradient the sum of its readers'. `state_shapes`,
    `im2col`, `attrs` and `tied` are left out of the repr: the graph signature adds them where set
    (models.graph.OpGraph.signature), so graphs without them keep theirs. `halo` marks a task's local op
    that is a height or width shard of a windowed op, read with its halo (never a graph's op).
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
    state_shapes: tuple[tuple[str, Shape], ...] = field(default=(), repr=False)
    im2col: bool = field(default=False, repr=False)  # a conv computed as patches @ kernel (models/kinds/conv.py)
    halo: bool = field(default=False, repr=False)  # a spatial shard of a windowed op (models/kinds/window.py)
    attrs: Any = field(default=None, repr=False)  # the kind's frozen attributes value, or None
    tied: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (param name, owner op) of shared weights

    def __post_init__(self) -> None:
        assert self.dtype in DTYPE_BYTES, self.dtype

    @property
    def spec(self):
        """The kind's rules (models.kinds.KindSpec)."""
        return kind_spec(self.kind)

    @functools.cached_property
    def space(self) -> Space:
        """The op's labelled iteration space (models.labels), declared by its kind."""
        return self.spec.space(self)

    @property
    def config_labels(self) -> tuple[Label, ...]:
        """The labels a config gives degrees to, in the order of its degrees."""
        return tuple(self.space.by_name[name] for name in self.space.config_labels)

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def param_count(self) -> int:
        """Its own parameters' elements (a tied weight counts at its owner)."""
        tied = {name for name, _ in self.tied}
        return sum(math.prod(shape) for name, shape in self.param_shapes if name not in tied)

    @property
    def state_count(self) -> int:
        return sum(math.prod(shape) for _, shape in self.state_shapes)

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
        return self.spec.forward_flops(self)

    @property
    def backward_flops(self) -> int:
        return self.spec.backward_flops(self)

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
        if self.attrs is not None:
            parts.extend(attrs_items(self.attrs))
        if self.im2col:
            parts.append("im2col")
        if self.halo:
            parts.append("halo")
        if not self.input_grad:
            parts.append("no-input-grad")
        parts.append("in=" + ",".join(_shape_str(s) for s in self.input_shapes))
        parts.append("out=" + _shape_str(self.output_shape))
        if self.param_shapes:
            parts.append("params=" + ",".join(_shape_str(s) for _, s in self.param_shapes))
        parts.append(self.dtype)
        return " ".join(parts)


def attrs_items(attrs) -> list[str]:
    """A kind's attributes as 'field=value' strings, in field order (cost keys, signatures)."""
    return [f"{item.name}={getattr(attrs, item.name)}" for item in dataclasses.fields(attrs)]


def _shape_str(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


_SPECS: dict = {}


def kind_spec(kind: OpKind):
    """The registered KindSpec of `kind` (models.kinds registers every kind when first asked)."""
    spec = _SPECS.get(kind)
    if spec is None:
        import models.kinds  # noqa: F401  (fills _SPECS; imported here because the kinds import Op)
        spec = _SPECS[kind]
    return spec


def register(spec) -> None:
    _SPECS[spec.kind] = spec


def registered_kinds() -> set[OpKind]:
    return set(_SPECS)


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
