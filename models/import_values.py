"""What the importer (models.importer) makes of a traced module's variables, shared with its token section
(models.import_tokens): a `Draft` op found in the trace before it is named and added to the graph, and what
a variable means (an op's output, a view of a parameter, non-trainable state)."""

from __future__ import annotations

from dataclasses import dataclass

from models.op import OpKind, Padding
from models.trace import Path


@dataclass(frozen=True)
class Draft:
    """An op found in the trace, before it is named and added to the graph. `inputs` are draft indices
    (None: the image batch); `output` the variable holding its output now (fusing a bias or a ReLU moves
    it); `params` and `state` name each array's nnx path."""

    kind: OpKind
    inputs: tuple[int | None, ...]
    output: int
    shape: tuple[int, ...]
    scope: str
    where: str
    params: tuple[tuple[str, Path], ...] = ()
    state: tuple[tuple[str, Path], ...] = ()
    views: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()  # (param, module's shape, graph's)
    kernel_hw: tuple[int, int] | None = None
    stride_hw: tuple[int, int] | None = None
    padding: Padding | None = None
    relu: bool = False
    settings: tuple[tuple[str, object], ...] | None = None  # a token op's builder keywords (None: an image op)
    attrs: object = None  # the kind's attrs value (models.op.Op.attrs), or None


# What a variable of the trace means.
@dataclass(frozen=True)
class Tensor:
    draft: int | None  # the op producing it; None for the image batch


@dataclass(frozen=True)
class ParamView:
    path: Path
    raw: bool  # the parameter itself, not reshaped
    channels_last: bool  # a vector parameter laid along the last axis (a bias, ready to add)
    heads_last: bool = False  # an [h k] parameter laid along the last two axes (a heads projection's bias)


@dataclass(frozen=True)
class StateView:
    path: Path


def is_flax_call(module, cls) -> bool:
    """An instance of flax's `cls` computing flax's own __call__ (a subclass overriding it may compute more)."""
    return isinstance(module, cls) and type(module).__call__ is cls.__call__
