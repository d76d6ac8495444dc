"""The operator graph: a networkx.DiGraph of frozen `Op` values, built with shape inference.

    python -m models alexnet --dataset tiny-imagenet

Nodes are op names, each holding its `Op` under the attribute "op"; an edge (producer, consumer) holds
the tensor's shape under "shape". Ops with no producer read the data batch (images, and labels for the
loss), which the input pipeline places where their tasks need it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math

import networkx as nx

from models.errors import ShapeError
from models.op import Op, OpKind, Padding, Shape, spatial_output_size


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
        self.nx = nx.freeze(nx_graph)
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
        return tuple(self.nx.successors(name))

    @functools.cached_property
    def signature(self) -> str:
        """16 hex digits of a SHA-256 over every op and edge: equal graphs, equal signatures."""
        text = repr((self.model, self.dataset, self.batch_size, self.ops, sorted(self.nx.edges)))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def param_count(self) -> int:
        return sum(op.param_count for op in self.ops)

    @property
    def forward_flops(self) -> int:
        return sum(op.forward_flops for op in self.ops)


class GraphBuilder:
    """Builds an `OpGraph` op by op, inferring each output shape from its input.

    Each method adds one op reading the output of `input` (default: the op added last; None for the
    first op, which reads the data batch) and returns the new op's name.
    """

    def __init__(self, model: str, dataset: str, input_shape: Shape, dtype: str = "float32"):
        self._model = model
        self._dataset = dataset
        self._input_shape = input_shape
        self._dtype = dtype
        self._graph = nx.DiGraph()
        self._last: str | None = None

    def _shape_of(self, name: str | None) -> Shape:
        return self._input_shape if name is None else self._graph.nodes[name]["op"].output_shape

    def _add(self, op: Op, source: str | None) -> str:
        if source is None:
            op = dataclasses.replace(op, input_grad=False)  # it reads the data batch, which needs no gradient
        if op.name in self._graph:
            raise ShapeError(f"op name {op.name!r} is used twice in {self._model!r}; give every op its own name")
        self._graph.add_node(op.name, op=op, inputs=() if source is None else (source,))
        if source is not None:
            self._graph.add_edge(source, op.name, shape=self._shape_of(source))
        self._last = op.name
        return op.name

    def _source(self, input) -> str | None:
        return self._last if input is ... else input

    def conv2d(self, name, channels, kernel, stride=1, padding=Padding.SAME, relu=True, input=...) -> str:
        source = self._source(input)
        n, h, w, c = self._require_rank(name, self._shape_of(source), 4)
        out_h = spatial_output_size(h, kernel, stride, padding)
        out_w = spatial_output_size(w, kernel, stride, padding)
        self._require_positive(name, (out_h, out_w))
        op = Op(
            name=name, kind=OpKind.CONV2D, input_shapes=((n, h, w, c),), output_shape=(n, out_h, out_w, channels),
            param_shapes=(("kernel", (kernel, kernel, c, channels)), ("bias", (channels,))), dtype=self._dtype,
            kernel_hw=(kernel, kernel), stride_hw=(stride, stride), padding=padding, relu=relu,
        )
        return self._add(op, source)

    def pool2d(self, name, kernel=3, stride=2, padding=Padding.VALID, input=...) -> str:
        source = self._source(input)
        n, h, w, c = self._require_rank(name, self._shape_of(source), 4)
        out_h = spatial_output_size(h, kernel, stride, padding)
        out_w = spatial_output_size(w, kernel, stride, padding)
        self._require_positive(name, (out_h, out_w))
        op = Op(
            name=name, kind=OpKind.POOL2D, input_shapes=((n, h, w, c),), output_shape=(n, out_h, out_w, c),
            dtype=self._dtype, kernel_hw=(kernel, kernel), stride_hw=(stride, stride), padding=padding,
        )
        return self._add(op, source)

    def flatten(self, name, input=...) -> str:
        source = self._source(input)
        shape = self._require_rank(name, self._shape_of(source), 4)
        op = Op(name=name, kind=OpKind.FLATTEN, input_shapes=(shape,),
                output_shape=(shape[0], math.prod(shape[1:])), dtype=self._dtype)
        return self._add(op, source)

    def dense(self, name, units, relu=True, input=...) -> str:
        source = self._source(input)
        n, features = self._require_rank(name, self._shape_of(source), 2)
        op = Op(
            name=name, kind=OpKind.DENSE, input_shapes=((n, features),), output_shape=(n, units),
            param_shapes=(("kernel", (features, units)), ("bias", (units,))), dtype=self._dtype, relu=relu,
        )
        return self._add(op, source)

    def softmax_xent(self, name, input=...) -> str:
        source = self._source(input)
        n, classes = self._require_rank(name, self._shape_of(source), 2)
        op = Op(name=name, kind=OpKind.SOFTMAX_XENT, input_shapes=((n, classes),), output_shape=(n,),
                dtype=self._dtype)
        return self._add(op, source)

    def build(self, batch_size: int) -> OpGraph:
        return OpGraph(self._model, self._dataset, batch_size, self._graph)

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
