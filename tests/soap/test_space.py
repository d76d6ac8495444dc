"""ParallelConfig validation and the enumerated space of an op."""

import math

import pytest

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
        pytest.param("conv1", (1, 3, 1, 1), (0, 1, 2), 4,
                     r"conv2d 'conv1': output dim height=16 is not divisible by degree 3; "
                     r"valid degrees on 4 devices: 1, 2, 4", id="indivisible"),
        pytest.param("fc6", (2, 1, 1), (0, 1), 2, r"dense 'fc6': needs one degree per output dim \('sample', "
                     r"'channel'\), got 3", id="rank"),
        pytest.param("flatten", (1, 2), (0, 1), 2, r"flatten 'flatten': dim channel cannot be split \(degree 2\); "
                     r"splittable dims: sample", id="unsplittable"),
        pytest.param("conv1", (4, 1, 1, 1), (0, 1, 2, 3), 2, r"4 tasks .* need more than the 2 devices",
                     id="too-many-tasks"),
        pytest.param("fc7", (2, 1), (0, 2), 2, r"device id 2 is out of range; ids run 0..1", id="out-of-range"),
    ],
)
def test_validate_config_errors(op, degrees, devices, num_devices, message):
    with pytest.raises(InvalidConfigError, match=message):
        validate_config(GRAPH.op(op), ParallelConfig(degrees, devices), num_devices)


def test_enumeration_on_two_devices_by_hand():
    # fc7 (128, 4096) on 2 devices: degrees (1,1) on device 0 or 1, (2,1) and (1,2) on devices 0-1.
    assert set(enumerate_configs(GRAPH.op("fc7"), 2)) == {
        ParallelConfig((1, 1), (0,)), ParallelConfig((1, 1), (1,)),
        ParallelConfig((2, 1), (0, 1)), ParallelConfig((1, 2), (0, 1)),
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
    assert enumerate_configs(GRAPH.op("fc7"), 2, spmd=True) == (ParallelConfig((1, 2), (0, 1)),
                                                                 ParallelConfig((2, 1), (0, 1)))
    assert valid_degrees(GRAPH.op("loss"), 4, spmd=True) == ((4,),)
