"""The importer adds no cost: the zoo's ResNet-18 and the same network written as a plain flax module
(tests/models/test_importer.py) simulate to the same step time and peak memory under every baseline and
a random strategy (roofline costs on the p100x2-pcie preset)."""

import numpy as np
import pytest
from flax import nnx

from models.importer import import_model
from models.zoo import build_graph
from soap.baselines import BASELINES, random_strategy
from soap.strategy import Strategy
from simulator.cost import RooflineCostModel
from simulator.machine import load_machine
from simulator.simulate import Simulator
from tests.models.test_importer import ResNet18

BATCH = 32


def _twin_strategy(strategy: Strategy, zoo, twin) -> Strategy:
    """The same configs for the twin's ops, matched by program order (the graphs differ only in names)."""
    return Strategy.for_graph(twin, strategy.num_devices, {twin_op.name: strategy[zoo_op.name]
                                                           for zoo_op, twin_op in zip(zoo.ops, twin.ops)})


@pytest.fixture(scope="module")
def graphs():
    zoo = build_graph("resnet18", "tiny-imagenet", BATCH)
    module = nnx.eval_shape(lambda: ResNet18(rngs=nnx.Rngs(0), width=64))
    return zoo, import_model(module, "tiny-imagenet", BATCH).graph


@pytest.mark.parametrize("name", [*BASELINES, "random"])
def test_the_zoo_s_resnet18_and_its_imported_twin_simulate_alike(name, graphs):
    zoo, twin = graphs
    machine = load_machine("p100x2-pcie", 2)
    cost_model = RooflineCostModel(machine.device)
    strategy = (random_strategy(zoo, 2, np.random.default_rng(0)) if name == "random"
                else BASELINES[name](zoo, 2))
    zoo_result = Simulator(zoo, machine, cost_model).full(strategy)
    twin_result = Simulator(twin, machine, cost_model).full(_twin_strategy(strategy, zoo, twin))
    assert twin_result.step_ms == pytest.approx(zoo_result.step_ms, rel=1e-12)
    assert twin_result.peak_memory_bytes == zoo_result.peak_memory_bytes
