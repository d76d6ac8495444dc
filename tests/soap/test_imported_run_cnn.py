"""An imported ConvNeXt-style model (tests/models/test_importer_cnn.py: depthwise convs, layer norms over the
channels, per-pixel dense layers, GELU, dropout) trains on 2 and 4 CPU devices as on one: without dropout,
its data-parallel, model-parallel, random and channel-split strategies give the module's own loss and
updated parameters after one SGD step (data parallel also on the 2-process local cluster), as do dilated
and explicitly padded convs, a group norm, a global maximum and channel slices (jnp.split); with dropout, a channel split gives what the graph gives on one
device (SOAP draws the same masks on every strategy, other bits than flax's)."""

import math

import jax
import numpy as np
import pytest

from models.importer import import_model
from soap.baselines import data_parallel, model_parallel, random_strategy, single
from soap.config import ParallelConfig
from soap.devices import ClusterJob, run_on_cluster
from soap.runner import InitialValues, run_strategy
from soap.strategy import Strategy
from tests.models.test_importer_cnn import DATASET, DilatedPadded, SplitChannels, TinyConvNeXt, _abstract, _build
from tests.soap.test_imported_run import CONFIG, _one_device_step

BATCH = 4


def _channels(graph, devices):
    """Every op split on its channels where it has them (the depthwise convs in whole groups, the layer norms
    all-reducing their statistics), the rest on the samples."""
    configs = {}
    for op in graph.ops:
        names = op.space.config_labels
        label = "channel" if "channel" in names else "sample"
        degree = math.gcd(devices, op.space.size(label))
        configs[op.name] = ParallelConfig(tuple(degree if name == label else 1 for name in names), tuple(range(degree)))
    return Strategy.for_graph(graph, devices, configs)


@pytest.fixture(scope="module")
def expected():
    module = _build(TinyConvNeXt, rate=0.0)
    return _one_device_step(module, import_model(module, DATASET, BATCH))


@pytest.mark.parametrize("devices, strategy", [
    pytest.param(2, lambda graph: data_parallel(graph, 2), id="2-data-parallel"),
    pytest.param(2, lambda graph: model_parallel(graph, 2), id="2-model-parallel"),
    pytest.param(4, lambda graph: random_strategy(graph, 4, np.random.default_rng(0)), id="4-random"),
    pytest.param(4, lambda graph: _channels(graph, 4), id="4-channels"),
])
def test_a_strategy_trains_the_module_s_own_parameters_as_one_device_does(expected, devices, strategy):
    imported = expected.imported
    result = run_strategy(imported.graph, strategy(imported.graph), CONFIG, jax.devices()[:devices],
                          InitialValues(imported.params, imported.state))
    expected.assert_matches(result)


def test_data_parallel_on_the_2_process_cluster_trains_the_module_s_own_parameters_as_one_device_does(expected):
    """Two worker processes joined by jax.distributed (soap.devices): the gradients' all-reduce crosses processes."""
    imported = expected.imported
    job = ClusterJob.for_strategies(imported.graph, [data_parallel(imported.graph, 2)], CONFIG,
                                    InitialValues(imported.params, imported.state))
    (result,) = run_on_cluster(job, num_workers=2, timeout_s=300).results
    expected.assert_matches(result)


@pytest.mark.parametrize("model, strategy", [
    pytest.param(DilatedPadded, lambda graph: _channels(graph, 4), id="dilated-padded-group-norm-channels"),
    pytest.param(SplitChannels, lambda graph: _channels(graph, 4), id="split-channels"),
    pytest.param(SplitChannels, lambda graph: random_strategy(graph, 4, np.random.default_rng(0)), id="split-random"),
])
def test_the_other_layers_train_as_on_one_device(model, strategy):
    module = _build(model)
    expected = _one_device_step(module, import_model(module, DATASET, BATCH))
    imported = expected.imported
    result = run_strategy(imported.graph, strategy(imported.graph), CONFIG, jax.devices()[:4],
                          InitialValues(imported.params, imported.state))
    expected.assert_matches(result)


def test_dropout_draws_the_same_masks_on_4_devices_as_on_one():
    imported = import_model(_abstract(TinyConvNeXt, rate=0.5), DATASET, BATCH)
    graph = imported.graph
    one = run_strategy(graph, single(graph, 1), CONFIG, jax.devices()[:1])
    four = run_strategy(graph, _channels(graph, 4), CONFIG, jax.devices()[:4])  # one stage: one program
    np.testing.assert_allclose(four.losses, one.losses, rtol=1e-5)
    for name, params in one.params.items():
        for param, value in params.items():
            np.testing.assert_allclose(four.params[name][param], value, rtol=1e-5, atol=1e-7, err_msg=f"{name}.{param}")
