"""The operator graph: a networkx.DiGraph of frozen `Op` values, built with shape inference.

    python -m models resnet50 --dataset imagenet

Nodes are op names, each holding its `Op` under the attribute "op" and the names of the ops it reads,
in the order of its inputs, under "inputs"; an edge (producer, consumer) holds the tensor's shape under
"shape". Ops with no producer read the data batch (images, and labels for the loss), which the input
pipeline places where their tasks need it. Ops may read several inputs (add, concat): the graph is a
DAG, and the order ops were added in, the program order, is one topological order of it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Sequence

import networkx as nx

from models.errors import ShapeError
from models.kinds.activation import Activation, ActivationAttrs
from models.kinds.attention import AttentionAttrs
from models.kinds.base import ReluAttrs
from models.kinds.channel_slice import ChannelSliceAttrs
from models.kinds.conv import IM2COL_MAX_PIXELS, ConvAttrs
from models.kinds.dense import DenseAttrs
from models.kinds.dropout import DropoutAttrs
from models.kinds.group_norm import GroupNormAttrs
from models.kinds.layer_norm import LayerNormAttrs
from models.kinds.pool import PoolAttrs
from models.kinds.window import spatial_output_size
from models.op import Op, OpKind, Padding, Shape


class OpGraph:
    """An immutable operator graph of one model at one dataset shape and batch size.

    Built once by `GraphBuilder`; treat it as a value (it is never mutated after construction).
    """

    def __init__(self, model: str, dataset: str, batch_size: int, nx_graph: nx.DiGraph):
        if not nx.is_directed_acyclic_graph(nx_graph):
            raise ShapeError(f"operator graph of {model!r} has a cycle; an operator graph must be a DAG")
        self.model = model
        self.dataset = dataset
        self.batch_size = batch_size
        self.nx = nx.freeze(nx_graph.copy())  # a copy: the builder may go on adding ops
        # Insertion order is the program order; it is one topological order of the DAG.
        self.ops: tuple[Op, ...] = tuple(nx_graph.nodes[name]["op"] for name in nx_graph.nodes)
        self._index = {op.name: i for i, op in enumerate(self.ops)}

    def __repr__(self) -> str:
        return f"OpGraph({self.model}, {self.dataset}, batch={self.batch_size}, {len(self.ops)} ops)"

    def __len__(self) -> int:
        return len(self.ops)

    def op(self, name: str) -> Op:
        return self.ops[self._index[name]]

    def index(self, name: str) -> int:
        return self._index[name]

    def producers(self, name: str) -> tuple[str, ...]:
        """The ops whose outputs `name` reads, in the order of its inputs."""
        return tuple(self.nx.nodes[name]["inputs"])

    def consumers(self, name: str) -> tuple[str, ...]:
        """The ops reading `name`'s output, in program order."""
        return tuple(sorted(self.nx.successors(name), key=self._index.__getitem__))

    @functools.cached_property
    def signature(self) -> str:
        """16 hex digits of a SHA-256 over every op and edge: equal graphs, equal signatures.

        Ops with several inputs add their input order, ops with state their state shapes, convs computed
        as patches say so, ops with attributes beyond the window and ReLU fields or with tied weights add
        them (`_signature_extras`: none of it was in an op's repr, so that graphs without them keep the
        signature they always had)."""
        text = repr((self.model, self.dataset, self.batch_size, tuple(map(_SignedOp, self.ops)),
                     sorted(self.nx.edges)))
        extras = tuple(_signature_extras(op, self.producers(op.name)) for op in self.ops)
        extras = tuple(extra for extra in extras if extra is not None)
        if extras:
            text += repr(extras)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def param_count(self) -> int:
        """Every trainable weight once (a tied weight at its owner)."""
        return sum(op.param_count for op in self.ops)

    @property
    def forward_flops(self) -> int:
        return sum(op.forward_flops for op in self.ops)

    @property
    def backward_flops(self) -> int:
        return sum(op.backward_flops for op in self.ops)


def _listing(sources: Sequence[str], shapes: Sequence[Shape]) -> str:
    """'a (2, 4), b (2, 8)': the inputs of an op and their shapes, for an error line."""
    return ", ".join(f"{source} {shape}" for source, shape in zip(sources, shapes))


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class _SignedOp:
    """An op as the signature writes it: the repr an Op had when it held its window and ReLU fields itself
    (models.op_value.FlatFields), so that every graph keeps the signature its strategy files name."""

    def __init__(self, op: Op):
        self.op = op

    def __repr__(self) -> str:
        op, flat = self.op, self.op.flat_fields
        return (f"Op(name={op.name!r}, kind={op.kind!r}, input_shapes={op.input_shapes!r}, "
                f"output_shape={op.output_shape!r}, param_shapes={op.param_shapes!r}, dtype={op.dtype!r}, "
                f"kernel_hw={flat.kernel_hw!r}, stride_hw={flat.stride_hw!r}, padding={flat.padding!r}, "
                f"relu={flat.relu!r}, input_grad={op.input_grad!r})")


def _signature_extras(op: Op, producers: tuple[str, ...]) -> tuple | None:
    """What the signature adds for an op beyond `_SignedOp` (None: nothing): its producers and state where
    it has several inputs or state, im2col, its other attributes and its tied weights where set."""
    flat = op.flat_fields
    if not (len(op.input_shapes) > 1 or op.state_shapes or flat.im2col or flat.others is not None or op.tied):
        return None
    return ((op.name, producers, op.state_shapes) + (("im2col",) if flat.im2col else ())
            + ((tuple(flat.others_items()), op.tied) if flat.others is not None or op.tied else ()))


class GraphBuilder:
    """Builds an `OpGraph` op by op, inferring each output shape from its inputs.

    Each method adds one op and returns its name. Single-input ops read `input` (default: the op added
    last; None for an op reading the data batch); add and concat read `inputs`, a list of op names.
    """

    def __init__(self, model: str, dataset: str, input_shape: Shape, dtype: str = "float32"):
        self._model = model
        self._dataset = dataset
        self._input_shape = input_shape
        self._dtype = dtype
        self._graph = nx.DiGraph()
        self._last: str | None = None

    def shape(self, name: str | None) -> Shape:
        """The output shape of op `name` (the data batch's shape for None)."""
        if name is not None and name not in self._graph:
            raise ShapeError(f"{self._model!r} has no op {name!r} to read; add it before the ops that read it")
        return self._input_shape if name is None else self._graph.nodes[name]["op"].output_shape

    def _add(self, op: Op, sources: tuple[str | None, ...]) -> str:
        if sources == (None,):
            op = dataclasses.replace(op, input_grad=False)  # it reads the data batch, which needs no gradient
            sources = ()
        if op.name in self._graph:
            raise ShapeError(f"op name {op.name!r} is used twice in {self._model!r}; give every op its own name")
        self._graph.add_node(op.name, op=op, inputs=sources)
        for source in sources:
            self._graph.add_edge(source, op.name, shape=self.shape(source))
        self._last = op.name
        return op.name

    def _source(self, input) -> str | None:
        return self._last if input is ... else input

    def _windowed_output(self, name: str, source: str | None, kernel, stride, padding, dilation=1) -> tuple:
        """(input shape, output (n, h, w), the op's window fields, explicit pads or None); `padding` SAME,
        VALID or ((top, bottom), (left, right))."""
        n, h, w, c = self._require_rank(name, self.shape(source), 4)
        (kh, kw), (sh, sw), (dh, dw) = _pair(kernel), _pair(stride), _pair(dilation)
        pads = None
        if isinstance(padding, (tuple, list)):
            pads, padding = (_pair(padding[0]), _pair(padding[1])), Padding.EXPLICIT
        padding = Padding(padding)
        out_h = spatial_output_size(h, (kh - 1) * dh + 1, sh, padding, pads[0] if pads else (0, 0))
        out_w = spatial_output_size(w, (kw - 1) * dw + 1, sw, padding, pads[1] if pads else (0, 0))
        self._require_positive(name, (out_h, out_w))
        return (n, h, w, c), (n, out_h, out_w), dict(kernel_hw=(kh, kw), stride_hw=(sh, sw), padding=padding), pads

    def conv2d(self, name, channels, kernel, stride=1, padding=Padding.SAME, relu=True, bias=True, groups=1,
               dilation=1, input=...) -> str:
        """A conv of `kernel` (an int or (height, width)) and `stride`; `bias=False` before a batch norm;
        `groups` independent channel groups (the input's channels for a depthwise conv); `dilation` of the
        kernel (an int or a pair); `padding` SAME, VALID or explicit ((top, bottom), (left, right))."""
        source = self._source(input)
        in_shape, (n, out_h, out_w), window, pads = self._windowed_output(name, source, kernel, stride, padding,
                                                                          dilation)
        self._require_groups(name, in_shape[3], channels, groups)
        attrs = ConvAttrs(**window, relu=relu, groups=groups, dilation_hw=_pair(dilation), pads=pads)
        attrs = dataclasses.replace(attrs, im2col=out_h * out_w <= IM2COL_MAX_PIXELS and attrs.plain)
        params = (("kernel", window["kernel_hw"] + (in_shape[3] // groups, channels)),) + (
            (("bias", (channels,)),) if bias else ())
        op = Op(name=name, kind=OpKind.CONV2D, input_shapes=(in_shape,), output_shape=(n, out_h, out_w, channels),
                param_shapes=params, dtype=self._dtype, attrs=attrs)
        return self._add(op, (source,))

    @staticmethod
    def _require_groups(name: str, in_channels: int, out_channels: int, groups: int) -> None:
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ShapeError(f"conv {name!r}: {groups} groups do not divide its {in_channels} input and "
                             f"{out_channels} output channels; use a number of groups dividing both")

    def pool2d(self, name, kernel=3, stride=2, padding=Padding.VALID, input=...) -> str:
        """A max pool."""
        return self._pool(OpKind.POOL2D, name, kernel, stride, padding, input)

    def avg_pool2d(self, name, kernel=3, stride=1, padding=Padding.SAME, input=...) -> str:
        return self._pool(OpKind.AVG_POOL2D, name, kernel, stride, padding, input)

    def _pool(self, kind, name, kernel, stride, padding, input) -> str:
        source = self._source(input)
        in_shape, (n, out_h, out_w), window, pads = self._windowed_output(name, source, kernel, stride, padding)
        if pads is not None:
            raise ShapeError(f"pool {name!r} pads explicitly by {pads}; pools take SAME or VALID padding")
        op = Op(name=name, kind=kind, input_shapes=(in_shape,), output_shape=(n, out_h, out_w, in_shape[3]),
                dtype=self._dtype, attrs=PoolAttrs(**window))
        return self._add(op, (source,))

    def global_avg_pool(self, name, input=...) -> str:
        return self._global_pool(OpKind.GLOBAL_AVG_POOL, name, input)

    def global_max_pool(self, name, input=...) -> str:
        return self._global_pool(OpKind.GLOBAL_MAX_POOL, name, input)

    def _global_pool(self, kind: OpKind, name, input) -> str:
        source = self._source(input)
        n, _, _, c = shape = self._require_rank(name, self.shape(source), 4)
        op = Op(name=name, kind=kind, input_shapes=(shape,), output_shape=(n, c), dtype=self._dtype)
        return self._add(op, (source,))

    def batch_norm(self, name, relu=False, input=...) -> str:
        """Batch norm over every dim but the channels (training mode), scale and bias per channel."""
        source = self._source(input)
        shape = self.shape(source)
        if len(shape) not in (2, 4):
            self._require_rank(name, shape, 4)
        channels = (shape[-1],)
        op = Op(name=name, kind=OpKind.BATCH_NORM, input_shapes=(shape,), output_shape=shape,
                param_shapes=(("scale", channels), ("bias", channels)), dtype=self._dtype,
                state_shapes=(("mean", channels), ("var", channels)), attrs=ReluAttrs(relu))
        return self._add(op, (source,))

    def add(self, name, inputs: Sequence[str], relu=False) -> str:
        """The element-wise sum of `inputs` (two or more ops of one shape)."""
        sources = self._require_inputs(name, inputs)
        shapes = tuple(self.shape(s) for s in sources)
        if len(set(shapes)) > 1:
            raise ShapeError(f"add {name!r} sums inputs of different shapes "
                             f"{_listing(sources, shapes)}; add tensors of one shape")
        op = Op(name=name, kind=OpKind.ADD, input_shapes=shapes, output_shape=shapes[0], dtype=self._dtype,
                attrs=ReluAttrs(relu))
        return self._add(op, sources)

    def concat(self, name, inputs: Sequence[str]) -> str:
        """`inputs` joined along their channels (the last dim); the other dims must agree."""
        sources = self._require_inputs(name, inputs)
        shapes = tuple(self.shape(s) for s in sources)
        if len({shape[:-1] for shape in shapes}) > 1:
            raise ShapeError(f"concat {name!r} joins inputs whose dims other than the channels differ "
                             f"({_listing(sources, shapes)}); "
                             f"give its branches one batch, height and width")
        out = shapes[0][:-1] + (sum(shape[-1] for shape in shapes),)
        op = Op(name=name, kind=OpKind.CONCAT, input_shapes=shapes, output_shape=out, dtype=self._dtype)
        return self._add(op, sources)

    def channel_slice(self, name, offset, channels, input=...) -> str:
        """The channels [offset, offset + channels) of the input (its last dim)."""
        source = self._source(input)
        shape = self.shape(source)
        if offset < 0 or channels < 1 or offset + channels > shape[-1]:
            raise ShapeError(f"channel slice {name!r}: channels [{offset}, {offset + channels}) are not within the "
                             f"input's {shape[-1]}; slice within [0, {shape[-1]})")
        op = Op(name=name, kind=OpKind.CHANNEL_SLICE, input_shapes=(shape,), output_shape=shape[:-1] + (channels,),
                dtype=self._dtype, attrs=ChannelSliceAttrs(offset=offset))
        return self._add(op, (source,))

    def flatten(self, name, input=...) -> str:
        source = self._source(input)
        shape = self._require_rank(name, self.shape(source), 4)
        op = Op(name=name, kind=OpKind.FLATTEN, input_shapes=(shape,),
                output_shape=(shape[0], math.prod(shape[1:])), dtype=self._dtype)
        return self._add(op, (source,))

    def dense(self, name, units, relu=True, bias=True, pixels=False, heads=None, input=...) -> str:
        """x . kernel (+ bias) on (N, features) or on [b s d] tokens (the last dim contracted); with `pixels`
        on every pixel of NHWC images (a rank-4 input is otherwise a missing flatten); `heads`: the
        DenseAttrs of a projection to or from heads held as the module's [d h k] (models/kinds/dense.py)."""
        source = self._source(input)
        shape = self.shape(source)
        if len(shape) != 3 and not (pixels and len(shape) == 4):
            self._require_rank(name, shape, 4 if pixels else 2)
        params = (("kernel", (shape[-1], units)),) + ((("bias", (units,)),) if bias else ())
        op = Op(name=name, kind=OpKind.DENSE, input_shapes=(shape,), output_shape=shape[:-1] + (units,),
                param_shapes=params, dtype=self._dtype,
                attrs=dataclasses.replace(heads or DenseAttrs(), relu=relu))
        return self._add(op, (source,))

    def softmax_xent(self, name, input=...) -> str:
        source = self._source(input)
        n, classes = self._require_rank(name, self.shape(source), 2)
        op = Op(name=name, kind=OpKind.SOFTMAX_XENT, input_shapes=((n, classes),), output_shape=(n,),
                dtype=self._dtype)
        return self._add(op, (source,))

    def embedding(self, name, vocab, width, input=...) -> str:
        """Token ids [b s] (the data batch, int32) to vectors [b s width] through a table [vocab width]."""
        source = self._source(input)
        shape = self._require_rank(name, self.shape(source), 2)
        op = Op(name=name, kind=OpKind.EMBEDDING, input_shapes=(shape,), output_shape=shape + (width,),
                param_shapes=(("embedding", (vocab, width)),), dtype=self._dtype)
        return self._add(op, (source,))

    def add_position(self, name, positions, input=...) -> str:
        """x [b s d] + the first s rows of a learned table [positions d] (positions: the model's context)."""
        source = self._source(input)
        shape = self._require_rank(name, self.shape(source), 3)
        if shape[1] > positions:
            raise ShapeError(f"op {name!r}: sequence length {shape[1]} is over the model's context of {positions} "
                             f"positions; use a sequence length of at most {positions}")
        op = Op(name=name, kind=OpKind.ADD_POSITION, input_shapes=(shape,), output_shape=shape,
                param_shapes=(("embedding", (positions, shape[2])),), dtype=self._dtype)
        return self._add(op, (source,))

    def add_token_type(self, name, types, input=...) -> str:
        """x [b s d] + row 0 of a token-type table [types d] (one segment: every type id is 0)."""
        source = self._source(input)
        shape = self._require_rank(name, self.shape(source), 3)
        op = Op(name=name, kind=OpKind.ADD_TOKEN_TYPE, input_shapes=(shape,), output_shape=shape,
                param_shapes=(("embedding", (types, shape[2])),), dtype=self._dtype)
        return self._add(op, (source,))

    def layer_norm(self, name, eps=1e-5, rms=False, input=...) -> str:
        """Layer norm (RMS norm where `rms`) over the last dim, scale (and bias) per feature."""
        source = self._source(input)
        shape = self.shape(source)
        params = (("scale", shape[-1:]),) + (() if rms else (("bias", shape[-1:]),))
        op = Op(name=name, kind=OpKind.LAYER_NORM, input_shapes=(shape,), output_shape=shape, param_shapes=params,
                dtype=self._dtype, attrs=LayerNormAttrs(eps=eps, rms=rms))
        return self._add(op, (source,))

    def group_norm(self, name, groups, eps=1e-6, input=...) -> str:
        """Group norm of NHWC images: `groups` channel groups, statistics per sample and group."""
        source = self._source(input)
        shape = self._require_rank(name, self.shape(source), 4)
        if groups < 1 or shape[-1] % groups:
            raise ShapeError(f"group norm {name!r}: {groups} groups do not divide its {shape[-1]} channels; use a "
                             f"number of groups dividing {shape[-1]}")
        op = Op(name=name, kind=OpKind.GROUP_NORM, input_shapes=(shape,), output_shape=shape,
                param_shapes=(("scale", shape[-1:]), ("bias", shape[-1:])), dtype=self._dtype,
                attrs=GroupNormAttrs(groups=groups, eps=eps))
        return self._add(op, (source,))

    def split_heads(self, name, heads, input=...) -> str:
        """[b s (heads k)] -> [b s heads k]."""
        source = self._source(input)
        batch, sequence, width = self._require_rank(name, self.shape(source), 3)
        if width % heads:
            raise ShapeError(f"op {name!r}: {heads} heads do not divide the width {width}; use a number of heads "
                             f"that divides {width}")
        op = Op(name=name, kind=OpKind.SPLIT_HEADS, input_shapes=((batch, sequence, width),),
                output_shape=(batch, sequence, heads, width // heads), dtype=self._dtype)
        return self._add(op, (source,))

    def merge_heads(self, name, input=...) -> str:
        """[b s heads k] -> [b s (heads k)]."""
        source = self._source(input)
        batch, sequence, heads, head_dim = shape = self._require_rank(name, self.shape(source), 4)
        op = Op(name=name, kind=OpKind.MERGE_HEADS, input_shapes=(shape,),
                output_shape=(batch, sequence, heads * head_dim), dtype=self._dtype)
        return self._add(op, (source,))

    def attention(self, name, inputs: Sequence[str], causal=False) -> str:
        """Softmax attention of `inputs` = [queries, keys, values], each [b s heads k] (keys, values: [b t h k])."""
        sources = self._require_inputs(name, inputs)
        shapes = tuple(self._require_rank(name, self.shape(s), 4) for s in sources)
        q, k, v = shapes if len(shapes) == 3 else (None, None, None)
        if q is None or k != v or (q[0], q[2], q[3]) != (k[0], k[2], k[3]):
            raise ShapeError(f"attention {name!r} reads {_listing(sources, shapes)}; "
                             f"it needs queries [b s h k] and keys and values of one shape [b t h k]")
        op = Op(name=name, kind=OpKind.ATTENTION, input_shapes=shapes, output_shape=q, dtype=self._dtype,
                attrs=AttentionAttrs(causal=causal))
        return self._add(op, sources)

    def activation(self, name, fn: Activation | str, input=...) -> str:
        source = self._source(input)
        shape = self.shape(source)
        op = Op(name=name, kind=OpKind.ACTIVATION, input_shapes=(shape,), output_shape=shape, dtype=self._dtype,
                attrs=ActivationAttrs(fn))
        return self._add(op, (source,))

    def multiply(self, name, inputs: Sequence[str]) -> str:
        """The element-wise product of two ops of one shape."""
        sources = self._require_inputs(name, inputs)
        shapes = tuple(self.shape(s) for s in sources)
        if len(sources) != 2 or shapes[0] != shapes[1]:
            raise ShapeError(f"multiply {name!r} reads {_listing(sources, shapes)}; "
                             f"it multiplies two tensors of one shape")
        op = Op(name=name, kind=OpKind.MULTIPLY, input_shapes=shapes, output_shape=shapes[0], dtype=self._dtype)
        return self._add(op, sources)

    def dropout(self, name, rate, input=...) -> str:
        source = self._source(input)
        shape = self.shape(source)
        if not 0 <= rate < 1:
            raise ShapeError(f"dropout {name!r}: rate {rate} is outside [0, 1); use a rate such as 0.1")
        op = Op(name=name, kind=OpKind.DROPOUT, input_shapes=(shape,), output_shape=shape, dtype=self._dtype,
                attrs=DropoutAttrs(rate=rate))
        return self._add(op, (source,))

    def attend(self, name, table: str, bias=False, input=...) -> str:
        """Logits [b s vocab] = x [b s d] . the table of embedding op `table` (tied: one weight), + an own bias."""
        source = self._source(input)
        batch, sequence, width = self._require_rank(name, self.shape(source), 3)
        owner = self._graph.nodes[table]["op"] if table in self._graph else None
        if owner is None or owner.kind is not OpKind.EMBEDDING or owner.param_shapes[0][1][1] != width:
            raise ShapeError(f"attend {name!r} reads the table of {table!r}, which is not an embedding of width "
                             f"{width} in {self._model!r}; name the token embedding op")
        vocab = owner.param_shapes[0][1][0]
        params = (("embedding", (vocab, width)),) + ((("bias", (vocab,)),) if bias else ())
        op = Op(name=name, kind=OpKind.ATTEND, input_shapes=((batch, sequence, width),),
                output_shape=(batch, sequence, vocab), param_shapes=params, dtype=self._dtype,
                tied=(("embedding", table),))
        return self._add(op, (source,))

    def token_xent(self, name, input=...) -> str:
        """Per-token softmax cross-entropy of logits [b s vocab] against the labels [b s]."""
        source = self._source(input)
        shape = self._require_rank(name, self.shape(source), 3)
        op = Op(name=name, kind=OpKind.TOKEN_XENT, input_shapes=(shape,), output_shape=shape[:2], dtype=self._dtype)
        return self._add(op, (source,))

    def image_tokens(self, name, input=...) -> str:
        """An NHWC image as tokens [b (h w) c], row by row (ViT's patches after their conv)."""
        source = self._source(input)
        n, h, w, c = shape = self._require_rank(name, self.shape(source), 4)
        op = Op(name=name, kind=OpKind.IMAGE_TOKENS, input_shapes=(shape,), output_shape=(n, h * w, c),
                dtype=self._dtype)
        return self._add(op, (source,))

    def class_token(self, name, input=...) -> str:
        """A learned class token put before the tokens [b s d] -> [b (1 + s) d]."""
        source = self._source(input)
        n, s, d = shape = self._require_rank(name, self.shape(source), 3)
        op = Op(name=name, kind=OpKind.CLASS_TOKEN, input_shapes=(shape,), output_shape=(n, s + 1, d),
                param_shapes=(("cls", (d,)),), dtype=self._dtype)
        return self._add(op, (source,))

    def first_token(self, name, input=...) -> str:
        """The first token of each sample, [b s d] -> [b d] (ViT's class token at the end)."""
        source = self._source(input)
        n, _, d = shape = self._require_rank(name, self.shape(source), 3)
        op = Op(name=name, kind=OpKind.FIRST_TOKEN, input_shapes=(shape,), output_shape=(n, d), dtype=self._dtype)
        return self._add(op, (source,))

    def build(self, batch_size: int) -> OpGraph:
        return OpGraph(self._model, self._dataset, batch_size, self._graph)

    def _require_inputs(self, name: str, inputs: Sequence[str]) -> tuple[str, ...]:
        sources = tuple(inputs)
        if len(sources) < 2:
            raise ShapeError(f"op {name!r} needs at least two inputs, got {list(sources)}; list them in inputs=[...]")
        if None in sources:
            raise ShapeError(f"op {name!r} lists the data batch (None) among its inputs; only single-input ops read "
                             f"the data: read it through an op first")
        for source in sources:
            self.shape(source)
        return sources

    def _require_rank(self, name: str, shape: Shape, rank: int) -> Shape:
        if len(shape) != rank:
            raise ShapeError(f"op {name!r} needs a rank-{rank} input but gets shape {shape}; "
                             f"insert a flatten or fix the layer order")
        return shape

    @staticmethod
    def _require_positive(name: str, sizes: tuple[int, ...]) -> None:
        if min(sizes) < 1:
            raise ShapeError(f"op {name!r} would have an empty output ({sizes}); the input is too small "
                             f"for its kernel and stride: use a larger image size")
