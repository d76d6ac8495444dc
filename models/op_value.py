"""The operator value: `Op`, its kind (`OpKind`), the base of each kind's attributes (`KindAttrs`, written
in their flat form, `FlatFields`) and the registry of every kind's rules.

A leaf module: the kinds under models/kinds/ import it to declare their rules over an `Op`, and
models/kinds/__init__.py registers one KindSpec per kind here at its import, so that `Op.spec` finds its
kind's rules without this module importing the kinds. models/op.py, the module the rest of the code asks,
imports models.kinds (filling the registry) and re-exports these.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from dataclasses import dataclass, field
from typing import Any

from models.labels import Label, Shape, Space


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
class FlatFields:
    """An op's attributes in the form graph files (models/graph_file.py), graph signatures and cost keys write
    them: the form an op held them in before each kind had its own attributes value, kept so that measured
    profiles (keyed by cost key), strategy files (by signature) and graph files written before stay valid.
    The window (kernel, stride, padding), fused-ReLU, im2col and halo fields, and the kind's other
    attributes as (name, value) pairs in field order (None where it has none to write)."""

    kernel_hw: tuple[int, int] | None = None
    stride_hw: tuple[int, int] | None = None
    padding: Padding | None = None
    relu: bool = False
    im2col: bool = False
    halo: bool = False
    others: tuple[tuple[str, Any], ...] | None = None

    def others_items(self) -> list[str]:
        """The other attributes as 'name=value' strings (cost keys, signatures)."""
        return [f"{name}={value}" for name, value in self.others or ()]

    def key_parts(self) -> list[str]:
        """The cost key's attribute words, in the order cost keys have always had them."""
        parts = []
        if self.kernel_hw is not None:
            parts += [f"k{self.kernel_hw[0]}x{self.kernel_hw[1]}", f"s{self.stride_hw[0]}x{self.stride_hw[1]}",
                      self.padding.value]
        if self.relu:
            parts.append("relu")
        parts.extend(self.others_items())
        if self.im2col:
            parts.append("im2col")
        if self.halo:
            parts.append("halo")
        return parts


class KindAttrs:
    """The base of each kind's frozen attributes dataclass (`Op.attrs`): how it writes and reads itself as
    FlatFields. By default every field is one of the others; a kind with window or fused-ReLU fields says
    how it maps them."""

    def flat(self) -> FlatFields:
        return FlatFields(others=tuple((item.name, getattr(self, item.name)) for item in dataclasses.fields(self)))

    @classmethod
    def from_flat(cls, flat: FlatFields) -> KindAttrs | None:
        """The attributes `flat` writes (None where it writes none: an op of the kind without attributes)."""
        return None if flat.others is None else cls(**dict(flat.others))


@dataclass(frozen=True)
class Op:
    """One operator: a frozen value, usable as a dict key.

    `input_shapes` lists the tensors the op reads, in order; `param_shapes` names its trainable weights and
    `state_shapes` its non-trainable state (batch norm's running averages). `attrs` holds the kind's own
    frozen attributes (a KindAttrs dataclass the kind's module defines: kernel, stride, padding and fused
    ReLU of a conv, a pool's window, heads, causal, eps, rate, ...; None for kinds without). `tied` names,
    for each parameter that is another op's weight read again (GPT-2's head reads the token table), that
    op: (param name, owner op), the owner's parameter of the same name (models.network.op_params); the
    weight is one tensor, counted, stored and updated once, its gradient the sum of its readers'. Graph
    files, the graph signature and cost keys write the attributes in their flat form (`flat_fields`).
    """

    name: str
    kind: OpKind
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    param_shapes: tuple[tuple[str, Shape], ...] = ()
    dtype: str = "float32"
    input_grad: bool = True  # False for an op reading the data batch: no gradient flows to its input
    state_shapes: tuple[tuple[str, Shape], ...] = field(default=(), repr=False)
    attrs: Any = field(default=None, repr=False)  # the kind's frozen attributes value, or None
    tied: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (param name, owner op) of shared weights

    def __post_init__(self) -> None:
        assert self.dtype in DTYPE_BYTES, self.dtype

    @property
    def spec(self):
        """The kind's rules (models.kinds.KindSpec, registered by models.kinds at its import)."""
        return kind_spec(self.kind)

    @functools.cached_property
    def space(self) -> Space:
        """The op's labelled iteration space (models.labels), declared by its kind."""
        return self.spec.space(self)

    @property
    def flat_fields(self) -> FlatFields:
        """The attributes as graph files, signatures and cost keys write them."""
        return FlatFields() if self.attrs is None else self.attrs.flat()

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
        parts = [self.kind.value, *self.flat_fields.key_parts()]
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


_SPECS: dict = {}


def kind_spec(kind: OpKind):
    """The registered KindSpec of `kind` (models.kinds registers every kind at its import)."""
    return _SPECS[kind]


def register(spec) -> None:
    _SPECS[spec.kind] = spec


def registered_kinds() -> set[OpKind]:
    return set(_SPECS)
