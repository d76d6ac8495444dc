"""An operator graph as data: every op with its inputs, shapes, attributes, FLOPs and parameters.

    python -m models resnet18 --dataset imagenet --json resnet18.json
    graph_from_json(graph_to_json(graph)).signature == graph.signature

The document holds all an op is (kind, shapes, kernel, stride, padding, fused ReLU, parameters, state; its
kind's attributes in their flat form, models.op_value.FlatFields, the form files have always had),
so a graph written in one process is rebuilt exactly in another (a cluster's workers run the graph the
parent built, a zoo member or not), and what it costs (FLOPs, parameter counts) for people and tools.
"""

from __future__ import annotations

import json

import networkx as nx

from models.documents import read_document
from models.errors import ShapeError
from models.graph import OpGraph
from models.op import FlatFields, Op, OpKind, Padding, kind_spec

FORMAT_VERSION = 1
DATA = "data"  # the inputs of an op that reads the batch


def graph_document(graph: OpGraph) -> dict:
    ops = [_op_entry(op, graph.producers(op.name)) for op in graph.ops]
    return {"format": "soap-graph", "version": FORMAT_VERSION, "model": graph.model, "dataset": graph.dataset,
            "batch_size": graph.batch_size, "signature": graph.signature, "param_count": graph.param_count,
            "forward_flops": graph.forward_flops, "backward_flops": graph.backward_flops, "ops": ops}


def _op_entry(op: Op, producers: tuple[str, ...]) -> dict:
    """One op of the document: its attributes in their flat form (models.op_value.FlatFields)."""
    flat = op.flat_fields
    return {"name": op.name, "kind": op.kind.value, "inputs": list(producers) or [DATA],
            "input_shapes": [list(s) for s in op.input_shapes], "output_shape": list(op.output_shape),
            "params": {name: list(shape) for name, shape in op.param_shapes},
            "state": {name: list(shape) for name, shape in op.state_shapes},
            "dtype": op.dtype, "kernel": list(flat.kernel_hw) if flat.kernel_hw else None,
            "stride": list(flat.stride_hw) if flat.stride_hw else None,
            "padding": flat.padding.value if flat.padding else None, "relu": flat.relu, "input_grad": op.input_grad,
            "im2col": flat.im2col, "attrs": dict(flat.others) if flat.others is not None else None,
            "tied": {name: owner for name, owner in op.tied},
            "forward_flops": op.forward_flops, "backward_flops": op.backward_flops, "param_count": op.param_count}


def graph_to_json(graph: OpGraph) -> str:
    return json.dumps(graph_document(graph), indent=1)


def _attrs(kind: OpKind, entry: dict):
    """The kind's attributes value from the entry's flat fields (tuples come back from JSON as lists)."""
    attrs_type = kind_spec(kind).attrs_type
    if attrs_type is None:
        return None
    others = entry.get("attrs")
    return attrs_type.from_flat(FlatFields(
        kernel_hw=tuple(entry["kernel"]) if entry["kernel"] else None,
        stride_hw=tuple(entry["stride"]) if entry["stride"] else None,
        padding=Padding(entry["padding"]) if entry["padding"] else None, relu=entry["relu"], im2col=entry["im2col"],
        others=None if others is None else tuple((k, tuple(v) if isinstance(v, list) else v)
                                                 for k, v in others.items())))


def graph_from_json(text: str, source: str = "graph") -> OpGraph:
    """The graph a `graph_to_json` text describes; ShapeError if it is not one, or not the graph it says."""
    document = read_document(text, "graph", FORMAT_VERSION, source, ShapeError, "write it again")
    try:
        nx_graph = nx.DiGraph()
        for entry in document["ops"]:
            inputs = () if entry["inputs"] == [DATA] else tuple(entry["inputs"])
            op = Op(name=entry["name"], kind=OpKind(entry["kind"]),
                    input_shapes=tuple(tuple(s) for s in entry["input_shapes"]),
                    output_shape=tuple(entry["output_shape"]),
                    param_shapes=tuple((k, tuple(v)) for k, v in entry["params"].items()), dtype=entry["dtype"],
                    input_grad=entry["input_grad"], state_shapes=tuple((k, tuple(v)) for k, v in entry["state"].items()),
                    tied=tuple(entry.get("tied", {}).items()), attrs=_attrs(OpKind(entry["kind"]), entry))
            nx_graph.add_node(op.name, op=op, inputs=inputs)
            for source_op, shape in zip(inputs, op.input_shapes):
                nx_graph.add_edge(source_op, op.name, shape=shape)
        graph = OpGraph(document["model"], document["dataset"], document["batch_size"], nx_graph)
    except (KeyError, TypeError, ValueError) as error:
        raise ShapeError(f"{source} has a malformed op ({error!r}); write it again") from None
    if graph.signature != document["signature"]:
        raise ShapeError(f"{source} describes graph {graph.signature}, not the {document['signature']} it names; "
                         f"write it again")
    return graph
