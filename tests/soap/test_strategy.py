"""Strategy values, baselines, random strategies and the strategy file."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from models.zoo import build_graph
from soap.baselines import BASELINES, data_parallel, model_parallel, owt, random_strategy, single
from soap.config import ParallelConfig
from soap.errors import InvalidConfigError, StrategyFileError
from soap.space import validate_config
from soap.strategy import Strategy, strategy_from_json, strategy_to_json

GRAPH = build_graph("alexnet", "tiny-imagenet", 128)


@pytest.mark.parametrize("num_devices", [1, 2, 4, 8, 16, 32, 64])
@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_is_valid(name, num_devices):
    strategy = BASELINES[name](GRAPH, num_devices)
    assert strategy.num_devices == num_devices and list(strategy) == [op.name for op in GRAPH.ops]
    for op in GRAPH.ops:
        validate_config(op, strategy[op.name], num_devices)


def test_baselines_by_hand_on_two_devices():
    both = (0, 1)
    assert all(c == ParallelConfig(c.degrees, (0,)) and c.num_tasks == 1 for c in single(GRAPH, 2).values())
    assert all(c.degrees[0] == 2 and c.num_tasks == 2 and c.devices == both for c in data_parallel(GRAPH, 2).values())
    o = owt(GRAPH, 2)
    assert o["conv1"] == ParallelConfig((2, 1, 1, 1, 1), both)
    assert o["flatten"] == ParallelConfig((2, 1), both)
    assert o["fc6"] == o["fc7"] == o["fc8"] == ParallelConfig((1, 2, 1), both)
    assert o["loss"] == ParallelConfig((2,), both)
    m = model_parallel(GRAPH, 2)
    assert m["conv2"] == ParallelConfig((1, 1, 1, 2, 1), both) and m["fc7"] == ParallelConfig((1, 2, 1), both)
    # Ops that cannot be channel split run whole, laid layer-wise along the devices.
    assert m["flatten"].num_tasks == 1 and m["loss"] == ParallelConfig((1,), (1,))


def test_owt_is_hybrid_where_channels_do_not_divide():
    # fc8 has 200 classes; on 64 devices the channel degree is gcd(200, 64) = 8 and the batch takes 8.
    assert owt(GRAPH, 64)["fc8"] == ParallelConfig((8, 8, 1), tuple(range(64)))


def test_baselines_that_split_the_batch_need_it_to_divide():
    graph = build_graph("alexnet", "tiny-imagenet", 100)
    with pytest.raises(InvalidConfigError, match="data_parallel splits the batch over all devices: batch size 100 "
                                                 "is not divisible by 8 devices"):
        data_parallel(graph, 8)


def test_strategy_is_a_frozen_hashable_mapping():
    a, b = owt(GRAPH, 4), owt(GRAPH, 4)
    assert a == b and hash(a) == hash(b) and a != data_parallel(GRAPH, 4)
    moved = a.with_config("loss", ParallelConfig((1,), (3,)))
    assert moved["loss"].devices == (3,) and a["loss"].num_tasks == 4
    with pytest.raises(TypeError):
        a["loss"] = ParallelConfig((1,), (0,))
    assert "fc7      channel=4 @ 0-3" in a.describe(GRAPH)


def test_for_graph_rejects_missing_and_unknown_ops():
    configs = dict(single(GRAPH, 2))
    del configs["fc7"]
    with pytest.raises(InvalidConfigError, match=r"strategy gives no config for ops \['fc7'\]"):
        Strategy.for_graph(GRAPH, 2, configs)
    configs["fc7"] = configs["fc8"]
    configs["fc9"] = configs["fc8"]
    with pytest.raises(InvalidConfigError, match=r"strategy names ops \['fc9'\] that alexnet does not have"):
        Strategy.for_graph(GRAPH, 2, configs)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_devices=st.sampled_from([1, 2, 3, 4, 8, 16, 64]),
       dataset=st.sampled_from(["tiny-imagenet", "dogs-vs-cats"]))
def test_json_round_trip_of_random_strategies(seed, num_devices, dataset):
    graph = GRAPH if dataset == "tiny-imagenet" else DOGS
    strategy = random_strategy(graph, num_devices, np.random.default_rng(seed))
    text = strategy_to_json(strategy, graph)
    assert strategy_from_json(text, graph, num_devices) == strategy


DOGS = build_graph("alexnet", "dogs-vs-cats", 128)


def test_random_strategy_is_deterministic_per_seed():
    a = random_strategy(GRAPH, 8, np.random.default_rng(7))
    assert a == random_strategy(GRAPH, 8, np.random.default_rng(7))
    assert a != random_strategy(GRAPH, 8, np.random.default_rng(8))


def _doc(**changes):
    document = json.loads(strategy_to_json(owt(GRAPH, 2), GRAPH))
    document.update(changes)
    return json.dumps(document)


def _doc_op(name, entry):
    document = json.loads(strategy_to_json(owt(GRAPH, 2), GRAPH))
    document["ops"][name] = entry
    return json.dumps(document)


@pytest.mark.parametrize(
    "text, num_devices, message",
    [
        pytest.param("{not json", 2, r"strategy file is not valid JSON", id="malformed"),
        pytest.param("[]", 2, r'is not a SOAP strategy \(needs "format": "soap-strategy"\)', id="not-a-strategy"),
        pytest.param(_doc(version=9), 2, r"has version 9; this SOAP reads version 1", id="version"),
        pytest.param(_doc(model="vgg"), 2, r"is for model 'vgg' but this run has model 'alexnet'", id="other-model"),
        pytest.param(_doc(), 4, r"is for num_devices 2 but this run has num_devices 4", id="other-device-count"),
        pytest.param(_doc(graph_signature="0" * 16), 2, r"is for graph '0000000000000000' but alexnet here is graph",
                     id="other-graph"),
        pytest.param(_doc(ops=[]), 2, r'has no "ops" object', id="no-ops"),
        pytest.param(_doc_op("fc9", {"degrees": {}, "devices": [0]}), 2, r"names op 'fc9' that alexnet does not have",
                     id="unknown-op"),
        pytest.param(_doc_op("fc7", {"degrees": {"height": 2}, "devices": [0, 1]}), 2,
                     r"op 'fc7' has no dims \['height'\]; its dims: sample, channel, in_channel", id="bad-dim"),
        pytest.param(_doc_op("fc7", {"degrees": {"channel": 2}, "devices": [0, 0]}), 2,
                     r"op 'fc7': device ids must not repeat", id="repeated-device"),
        pytest.param(_doc_op("fc7", {"degrees": {"channel": 2}, "devices": [0, 5]}), 2,
                     r"dense 'fc7': device id 5 is out of range; ids run 0..1", id="device-out-of-range"),
        pytest.param(_doc_op("fc8", {"degrees": {"channel": 3}, "devices": [0, 1, 2]}), 2,
                     r"output dim channel=200 is not divisible by degree 3", id="indivisible"),
        pytest.param(_doc_op("fc8", {"degrees": {"channel": "2"}, "devices": [0, 1]}), 2,
                     r"degrees and devices must be integers", id="string-degree"),
        pytest.param(_doc_op("fc8", {"devices": [0, 1]}), 2, r'op \'fc8\' needs \{"degrees"', id="no-degrees"),
    ],
)
def test_strategy_file_errors(text, num_devices, message):
    with pytest.raises(StrategyFileError, match=message):
        strategy_from_json(text, GRAPH, num_devices)


# Written by search.optimize's strategy_to_json before convs and dense layers had an in_channel degree (main at
# 4045004): AlexNet on 4 devices, random_strategy(seed 3).
BEFORE_IN_CHANNEL = """{
  "format": "soap-strategy",
  "version": 1,
  "model": "alexnet",
  "dataset": "tiny-imagenet",
  "batch_size": 128,
  "graph_signature": "59a39a26afea61d7",
  "num_devices": 4,
  "ops": {
    "conv1": {"degrees": {"sample": 2}, "devices": [2, 3]},
    "pool1": {"degrees": {}, "devices": [0]},
    "conv2": {"degrees": {}, "devices": [2]},
    "pool2": {"degrees": {}, "devices": [3]},
    "conv3": {"degrees": {}, "devices": [2]},
    "conv4": {"degrees": {"sample": 2}, "devices": [2, 3]},
    "conv5": {"degrees": {"sample": 2, "channel": 2}, "devices": [0, 1, 2, 3]},
    "pool5": {"degrees": {"channel": 4}, "devices": [0, 1, 2, 3]},
    "flatten": {"degrees": {}, "devices": [0]},
    "fc6": {"degrees": {}, "devices": [1]},
    "fc7": {"degrees": {}, "devices": [3]},
    "fc8": {"degrees": {"channel": 2}, "devices": [0, 1]},
    "loss": {"degrees": {"sample": 2}, "devices": [0, 1]}
  }
}
"""


def test_a_file_written_before_the_input_channel_label_loads_with_degree_one_and_writes_the_same_bytes():
    strategy = strategy_from_json(BEFORE_IN_CHANNEL, GRAPH, 4)
    assert strategy["conv5"] == ParallelConfig((2, 1, 1, 2, 1), (0, 1, 2, 3))
    assert strategy["fc8"] == ParallelConfig((1, 2, 1), (0, 1))
    for op in GRAPH.ops:
        if "in_channel" in op.space.config_labels:
            assert strategy[op.name].degrees[op.space.config_labels.index("in_channel")] == 1
    assert strategy_to_json(strategy, GRAPH) == BEFORE_IN_CHANNEL


def test_an_input_channel_degree_in_a_file_that_does_not_divide_is_one_line():
    text = _doc_op("fc8", {"degrees": {"in_channel": 3}, "devices": [0, 1, 2]}).replace('"num_devices": 2', '"num_devices": 4')
    with pytest.raises(StrategyFileError, match=r"^strategy file: dense 'fc8': contracted input dim in_channel=4096 is "
                                                r"not divisible by degree 3; valid degrees on 4 devices: 1, 2, 4$"):
        strategy_from_json(text, GRAPH, 4)
