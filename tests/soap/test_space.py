"""ParallelConfig validation and the enumerated space of an op."""

import math

import pytest

from models.graph import GraphBuilder
from models.zoo import build_graph
from soap.config import ParallelConfig
from soap.errors import InvalidConfigError
from soap.space import enumerate_configs, valid_degrees, validate_config

GRAPH = build_graph("alexnet", "tiny-imagenet", 128)


@pytest.mark.parametrize(
    "degrees, devices, message",
    [
        pytest.param((0, 1), (0,), r"parallel degrees must be positive integers, got \(0, 1\)", id="zero-degree"),
        pytest.param((2, 1), (0,), r"has 2 tasks and needs that many device ids, got 1: \(0,\)", id="too-few-ids"),
        pytest.param((2,), (1, 1), r"device ids must not repeat within one op, got \(1, 1\)", id="repeated"),
        pytest.param((2,), (-1, 0), r"device ids must be >= 0, got \(-1, 0\)", id="negative"),
    ],
)
def test_config_construction_errors(degrees, devices, message):
    with pytest.raises(InvalidConfigError, match=message):
        ParallelConfig(degrees, devices)


def test_config_is_a_hashable_value():
    a, b = ParallelConfig((2, 1), (0, 1)), ParallelConfig((2, 1), (0, 1))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.num_tasks == 2 and a.task_index(1) == (1, 0)
    assert ParallelConfig((2, 1, 2, 1), (4, 5, 6, 7)).describe(("sample", "height", "width", "channel")) \
        == "sample=2 width=2 @ 4-7"
    assert ParallelConfig((1,), (3,)).describe(("sample",)) == "whole @ 3"


@pytest.mark.parametrize(
    "op, degrees, devices, num_devices, message",
    [
        pytest.param("conv1", (1, 3, 1, 1, 1), (0, 1, 2), 4,
                     r"conv2d 'conv1': output dim height=16 is not divisible by degree 3; "
                     r"valid degrees on 4 devices: 1, 2, 4", id="indivisible"),
        pytest.param("fc6", (2, 1), (0, 1), 2, r"dense 'fc6': needs one degree per dim \('sample', "
                     r"'channel', 'in_channel'\), got 2", id="rank"),
        pytest.param("flatten", (1, 2), (0, 1), 2, r"flatten 'flatten': dim channel cannot be split \(degree 2\); "
                     r"splittable dims: sample", id="unsplittable"),
        pytest.param("conv1", (4, 1, 1, 1, 1), (0, 1, 2, 3), 2, r"4 tasks .* need more than the 2 devices",
                     id="too-many-tasks"),
        pytest.param("fc7", (2, 1, 1), (0, 2), 2, r"device id 2 is out of range; ids run 0..1", id="out-of-range"),
    ],
)
def test_validate_config_errors(op, degrees, devices, num_devices, message):
    with pytest.raises(InvalidConfigError, match=message):
        validate_config(GRAPH.op(op), ParallelConfig(degrees, devices), num_devices)


def test_enumeration_on_two_devices_by_hand():
    # fc7 (128, 4096, a fused ReLU: no input-channel split) on 2 devices: degrees (1,1,1) on device 0 or 1,
    # (2,1,1) and (1,2,1) on devices 0-1.
    assert set(enumerate_configs(GRAPH.op("fc7"), 2)) == {
        ParallelConfig((1, 1, 1), (0,)), ParallelConfig((1, 1, 1), (1,)),
        ParallelConfig((2, 1, 1), (0, 1)), ParallelConfig((1, 2, 1), (0, 1)),
    }
    # loss (128,) splits on the batch only.
    assert len(enumerate_configs(GRAPH.op("loss"), 2)) == 3


@pytest.mark.parametrize("num_devices", [1, 2, 3, 4, 8, 16])
def test_every_enumerated_config_is_valid_and_blocks_are_aligned(num_devices):
    for op in GRAPH.ops:
        configs = enumerate_configs(op, num_devices)
        assert len(configs) == len(set(configs))
        for config in configs:
            validate_config(op, config, num_devices)
            assert config.devices[0] % config.num_tasks == 0
            assert config.devices == tuple(range(config.devices[0], config.devices[0] + config.num_tasks))
        assert {c.degrees for c in configs} == set(valid_degrees(op, num_devices))
        for degrees in valid_degrees(op, num_devices):
            assert math.prod(degrees) <= num_devices
            assert all(size % d == 0 for size, d in zip(op.output_shape, degrees))


@pytest.mark.parametrize("num_devices", [1, 2, 4, 8])
def test_the_spmd_space_is_the_configs_on_all_the_devices(num_devices):
    for op in GRAPH.ops:
        assert enumerate_configs(op, num_devices, spmd=True) == tuple(
            config for config in enumerate_configs(op, num_devices) if config.num_tasks == num_devices)
    # fc7 (128, 4096) on 2 devices: split on the batch or on the channels, never whole.
    assert enumerate_configs(GRAPH.op("fc7"), 2, spmd=True) == (ParallelConfig((1, 2, 1), (0, 1)),
                                                                 ParallelConfig((2, 1, 1), (0, 1)))
    assert valid_degrees(GRAPH.op("loss"), 4, spmd=True) == ((4,),)


def _input_channel_graph():
    """A conv and a dense without fused ReLUs (their input channels may split), a depthwise conv and a grouped
    one (their in_channel is inside each group: not offered)."""
    b = GraphBuilder("cin", "toy", (8, 6, 6, 12))
    b.conv2d("conv", 8, kernel=3, relu=False)
    b.conv2d("depthwise", 8, kernel=3, groups=8, relu=False)
    b.conv2d("grouped", 8, kernel=3, groups=2, relu=False)
    b.flatten("flatten")
    b.dense("fc", 6, relu=False)
    b.softmax_xent("loss")
    return b.build(8)


CIN = _input_channel_graph()


def test_input_channel_splits_are_offered_where_they_contract_without_a_relu():
    conv, fc = CIN.op("conv"), CIN.op("fc")
    assert conv.space.config_labels == ("sample", "height", "width", "channel", "in_channel")
    assert fc.space.config_labels == ("sample", "channel", "in_channel")
    # conv reads 12 channels: 2, 3, 4 and 6 ways on 6 devices (5 does not divide 12); fc reads 8 * 6 * 6 = 288.
    assert {d[-1] for d in valid_degrees(conv, 6)} == {1, 2, 3, 4, 6}
    assert {d[-1] for d in valid_degrees(fc, 4)} == {1, 2, 3, 4}
    assert ParallelConfig((1, 1, 1, 2, 2), (0, 1, 2, 3)) in enumerate_configs(conv, 4)
    for name in ("depthwise", "grouped"):
        assert "in_channel" not in CIN.op(name).space.config_labels
    for relu in (GRAPH.op("conv2"), GRAPH.op("fc7")):  # AlexNet's fuse ReLUs: a partial sum cannot pass one
        assert {d[-1] for d in valid_degrees(relu, 8)} == {1}


@pytest.mark.parametrize("op, degrees, message", [
    pytest.param("conv", (1, 1, 1, 1, 5), r"conv2d 'conv': contracted input dim in_channel=12 is not divisible by "
                 r"degree 5; valid degrees on 8 devices: 1, 2, 3, 4, 6$", id="conv"),
    pytest.param("fc", (1, 1, 7), r"dense 'fc': contracted input dim in_channel=288 is not divisible by degree 7; "
                 r"valid degrees on 8 devices: 1, 2, 3, 4, 6, 8$", id="dense"),
])
def test_an_input_channel_degree_that_does_not_divide_is_one_line(op, degrees, message):
    config = ParallelConfig(degrees, tuple(range(math.prod(degrees))))
    with pytest.raises(InvalidConfigError, match=message):
        validate_config(CIN.op(op), config, 8)


def test_a_config_carries_over_to_a_neighbour_as_it_did_before_input_channels():
    from soap.space import carried_over

    conv, pool, fc8, flatten, loss = (GRAPH.op(name) for name in ("conv2", "pool2", "fc8", "flatten", "loss"))
    four = (0, 1, 2, 3)
    assert carried_over(ParallelConfig((2, 1, 1, 2, 1), four), conv, pool) == ParallelConfig((2, 1, 1, 2), four)
    assert carried_over(ParallelConfig((2, 1, 1, 2), four), pool, conv) == ParallelConfig((2, 1, 1, 2, 1), four)
    assert carried_over(ParallelConfig((2, 2), four), flatten, fc8) == ParallelConfig((2, 2, 1), four)
    assert carried_over(ParallelConfig((1, 2, 2), four), fc8, flatten) is None  # flatten has no input channels
    assert carried_over(ParallelConfig((2, 1, 1), (0, 1)), fc8, loss) is None  # 2 labels against 1, as before
    assert carried_over(ParallelConfig((1, 1, 2), (0, 1)), CIN.op("fc"), fc8) == ParallelConfig((1, 1, 2), (0, 1))
