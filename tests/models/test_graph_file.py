"""Graphs as data: every zoo model written and read back is the same graph; a bad document is one line."""

import json

import pytest

from models.errors import ShapeError
from models.graph_file import graph_from_json, graph_to_json
from models.zoo import IMAGE_MODELS, build_graph


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
