"""Graphs as data: every zoo model written and read back is the same graph; a bad document is one line."""

import json
import pathlib

import pytest

from models.errors import ShapeError
from models.graph_file import graph_from_json, graph_to_json
from models.op import Padding
from models.zoo import IMAGE_MODELS, build_graph

# Written by main's code before each kind held its own attributes value (an Op's flat kernel, stride,
# padding, relu and im2col fields): grouped, dilated and explicitly padded convs, an im2col conv, both
# pools, an add, a batch norm and a dense with and without a fused ReLU.
WRITTEN_BEFORE = pathlib.Path(__file__).parent / "data" / "graph_written_by_main.json"


@pytest.mark.parametrize("model", sorted(IMAGE_MODELS))
def test_every_zoo_graph_round_trips(model):
    graph = build_graph(model, "imagenet-299", 4)
    again = graph_from_json(graph_to_json(graph))
    assert again.signature == graph.signature and again.ops == graph.ops
    assert [again.producers(op.name) for op in again.ops] == [graph.producers(op.name) for op in graph.ops]


def test_a_document_that_is_not_the_graph_it_names_is_refused():
    document = json.loads(graph_to_json(build_graph("resnet18", "tiny-imagenet", 4)))
    document["ops"][0]["relu"] = not document["ops"][0]["relu"]
    with pytest.raises(ShapeError, match=r"^graph describes graph [0-9a-f]{16}, not the [0-9a-f]{16} it names"):
        graph_from_json(json.dumps(document))
    del document["ops"][1]["kind"]
    with pytest.raises(ShapeError, match=r"^graph has a malformed op \(KeyError\('kind'\)\); write it again$"):
        graph_from_json(json.dumps(document))
    with pytest.raises(ShapeError, match="is not valid JSON"):
        graph_from_json("{")


def test_a_graph_file_written_before_the_kinds_held_their_attributes_loads_and_writes_back_byte_for_byte():
    text = WRITTEN_BEFORE.read_text()
    graph = graph_from_json(text, str(WRITTEN_BEFORE))  # its signature checked against the one it names
    assert graph.signature == "5f307e1203ea5d8f" and graph_to_json(graph) == text
    dw, dil, small = graph.op("dw").attrs, graph.op("dil").attrs, graph.op("small").attrs
    assert (dw.groups, dw.relu, dw.im2col) == (32, False, False)
    assert (dil.padding, dil.dilation_hw, dil.pads, dil.relu) == (Padding.EXPLICIT, (2, 2), ((1, 2), (2, 1)), True)
    assert (small.kernel_hw, small.stride_hw, small.im2col) == ((3, 3), (4, 4), True)
    assert (graph.op("pool").attrs.kernel_hw, graph.op("avg").attrs.padding) == ((3, 3), Padding.SAME)
    assert graph.op("sum").attrs.relu and graph.op("bn").attrs.relu and not graph.op("fc").attrs.relu
