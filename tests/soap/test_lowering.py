"""Lowering strategies to JAX shardings, and one training step of every kind of strategy against one device."""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from models.batch import synthetic_batch
from models.datasets import DatasetShape
from models.labels import Role, output_axes
from models.network import init_params
from models.op import shard_box
from soap.step import TrainStep, sgd_momentum, step_stages
from models.vgg import vgg16
from models.zoo import build_graph
from soap.config import ParallelConfig
from soap.baselines import BASELINES, data_parallel, model_parallel, owt, random_strategy
from soap.lowering import LoweringError, strategy_shardings
from soap.runner import RunConfig, run_strategy
from soap.space import enumerate_configs
from soap.strategy import Strategy

GRAPH = build_graph("alexnet", "tiny-imagenet", 8)


def spmd_strategy(graph, num_devices, seed):
    """A random strategy with every op split over all devices: one program mixing every kind of split."""
    rng = np.random.default_rng(seed)
    configs = {}
    for op in graph.ops:
        whole = [c for c in enumerate_configs(op, num_devices) if c.num_tasks == num_devices]
        configs[op.name] = whole[rng.integers(len(whole))]
    return Strategy.for_graph(graph, num_devices, configs)


def _box(index, shape):
    """A JAX shard index (slices, slice(None) for a whole dim) as a box of (start, stop) pairs."""
    return tuple(s.indices(size)[:2] for s, size in zip(index, shape))


@pytest.mark.parametrize("strategy", [
    pytest.param(owt(GRAPH, 4), id="4dev-owt"),
    pytest.param(random_strategy(GRAPH, 8, np.random.default_rng(5)), id="8dev-random5"),
    pytest.param(spmd_strategy(GRAPH, 8, 2), id="8dev-spmd2"),
])
def test_task_k_computes_output_shard_k_on_devices_k(strategy):
    shardings = strategy_shardings(GRAPH, strategy)
    for op in GRAPH.ops:
        config, sharding = strategy[op.name], shardings.activations[op.name]
        assert sharding.mesh.axis_names == tuple(dim.name for dim in op.config_labels)
        assert sharding.mesh.axis_types == (AxisType.Auto,) * len(op.config_labels)
        held = sharding.devices_indices_map(op.output_shape)
        assert len(held) == config.num_tasks
        for task, device_id in enumerate(config.devices):
            box = shard_box(op.output_shape, config.degrees, config.task_index(task))
            assert _box(held[jax.devices()[device_id]], op.output_shape) == box, (op.name, task)


def test_a_channel_split_splits_the_last_axis_of_kernel_and_bias_and_other_splits_replicate():
    strategy = owt(GRAPH, 4).with_config("conv2", ParallelConfig((2, 1, 1, 2, 1), (0, 1, 2, 3)))
    conv2 = GRAPH.op("conv2")
    params = strategy_shardings(GRAPH, strategy).params
    kernel = params["conv2"]["kernel"].devices_indices_map(dict(conv2.param_shapes)["kernel"])
    bias = params["conv2"]["bias"].devices_indices_map((192,))
    # Tasks 0 and 2 (sample 0 and 1, channel 0) hold output channels 0..96; tasks 1 and 3 hold 96..192.
    for device_id, channels in [(0, (0, 96)), (1, (96, 192)), (2, (0, 96)), (3, (96, 192))]:
        device = jax.devices()[device_id]
        assert _box(kernel[device], (5, 5, 64, 192)) == ((0, 5), (0, 5), (0, 64), channels)
        assert _box(bias[device], (192,)) == (channels,)
    assert params["fc7"]["kernel"].spec == P(None, "channel") and params["fc7"]["bias"].spec == P("channel")
    assert params["conv1"]["kernel"].spec == P(None, None, None, None)  # owt: batch split, weights replicated
    assert params["conv1"]["kernel"].is_fully_replicated


def _stage_names(strategy):
    return tuple(stage.names for stage in step_stages(GRAPH, strategy_shardings(GRAPH, strategy)))


def test_stages_group_consecutive_ops_on_one_device_set():
    assert _stage_names(data_parallel(GRAPH, 4)) == (tuple(op.name for op in GRAPH.ops),)
    # model_parallel on 2: channel-split ops on both devices; flatten and the loss whole on device 1.
    stages = step_stages(GRAPH, strategy_shardings(GRAPH, model_parallel(GRAPH, 2)))
    assert tuple(stage.names for stage in stages) == (
        ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"), ("flatten",), ("fc6", "fc7", "fc8"),
        ("loss",))
    assert [(stage.inputs, stage.outputs, stage.has_loss) for stage in stages] == [
        (("data",), ("pool5",), False), (("pool5",), ("flatten",), False), (("flatten",), ("fc8",), False),
        (("fc8",), (), True)]


def test_too_few_devices_and_a_foreign_graph_are_refused():
    big = model_parallel(GRAPH, 16)
    with pytest.raises(LoweringError, match="the strategy is for 16 devices but JAX has 8; run it on 16 devices"):
        strategy_shardings(GRAPH, big)
    other = build_graph("alexnet", "tiny-imagenet", 16)
    with pytest.raises(LoweringError, match=f"the strategy is for graph '{GRAPH.signature}' but alexnet here is "
                                            f"graph '{other.signature}'"):
        strategy_shardings(other, owt(GRAPH, 2))


def _case(num_devices, name, strategy):
    return pytest.param(strategy, id=f"{num_devices}dev-{name}")


CASES = [
    *[_case(n, name, BASELINES[name](GRAPH, n)) for n in (2, 4) for name in ("data_parallel", "model_parallel", "owt")],
    # Seeds picked for coverage: 2dev-random3 and 4dev-random1 split conv1 on height/width and fc8 on its input
    # channels (partial sums); all five put ops on device subsets; 4dev-random6 splits conv1 on space and channels.
    *[_case(2, f"random{seed}", random_strategy(GRAPH, 2, np.random.default_rng(seed))) for seed in (3, 5)],
    *[_case(4, f"random{seed}", random_strategy(GRAPH, 4, np.random.default_rng(seed))) for seed in (1, 6, 9)],
    _case(4, "spmd1", spmd_strategy(GRAPH, 4, 1)),
]


@pytest.mark.parametrize("strategy", CASES)
def test_one_step_equals_one_device(strategy, reference):
    result = run_strategy(reference.graph, strategy, RunConfig(fetch_params=True))
    reference.assert_matches(result)


def test_random_cases_cover_spatial_and_input_channel_splits_and_device_subsets():
    spatial = [c for c in CASES if any(d > 1 and label.role in (Role.HEIGHT, Role.WIDTH) for op in GRAPH.ops
                                       for label, d in zip(op.config_labels, c.values[0][op.name].degrees))]
    staged = [c for c in CASES if len(_stage_names(c.values[0])) > 1]
    contracting = [c for c in CASES if c.values[0]["fc8"].degrees[-1] > 1]
    assert len(spatial) >= 2 and len(staged) >= 5 and len(contracting) >= 2


@pytest.mark.parametrize("strategy", [pytest.param(owt(GRAPH, 4), id="4dev-owt"),
                                      pytest.param(spmd_strategy(GRAPH, 4, 3), id="4dev-spmd3")])
def test_the_compiled_program_places_what_the_strategy_says(strategy, reference):
    graph = reference.graph
    shardings = strategy_shardings(graph, strategy)
    step = TrainStep(graph, shardings, sgd_momentum())
    state = step.init(jax.tree.map(np.asarray, init_params(graph, seed=0)))
    batch = step.place_batch(*synthetic_batch(graph, seed=0))
    assert tuple(stage.names for stage in step.stages) == _stage_names(strategy)
    text = step.lower(state, *batch).as_text()
    for op in GRAPH.ops:
        config = strategy[op.name]
        mesh = ", ".join(f'"{dim.name}"={d}' for dim, d in zip(op.config_labels, config.degrees))
        dims = ", ".join(f'{{"{name}"}}' if name else "{}" for name in output_axes(op.space, config.degrees))
        assert f"<[{mesh}]>" in text, op.name
        assert f"[{dims}]>" in text, op.name
    _, state = step(state, *batch)
    for name, entry in shardings.params.items():
        for key, sharding in entry.items():
            assert state.params[name][key].sharding == sharding, (name, key)


def test_a_tiny_vgg_runs_every_baseline_and_random_strategies_as_one_device_does():
    graph = vgg16(DatasetShape("toy", 32, 32, 3, 10), 8, width=4, fc_units=16, groups=(1, 1, 2, 1, 1))
    config = RunConfig(fetch_params=True)
    one = run_strategy(graph, BASELINES["single"](graph, 1), config)
    rng = np.random.default_rng(5)
    strategies = [build(graph, 4) for build in BASELINES.values()] + [random_strategy(graph, 4, rng) for _ in range(3)]
    for strategy in strategies:
        result = run_strategy(graph, strategy, config)
        np.testing.assert_allclose(result.losses, one.losses, rtol=1e-5)
        for name, entry in one.params.items():
            for key, value in entry.items():
                np.testing.assert_allclose(result.params[name][key], value, rtol=1e-5, atol=1e-8, err_msg=f"{name}.{key}")
