"""The op breakdown attributes every instruction of a compiled step to an op and a phase."""

import jax
import numpy as np

from benchmarks.op_breakdown import instruction_phases, measured_breakdown
from models.batch import synthetic_batch
from models.network import init_params
from models.train import TrainStep, sgd_momentum
from models.zoo import build_graph
from soap.baselines import data_parallel
from soap.lowering import strategy_shardings


def test_a_data_parallel_step_splits_into_ops_and_phases():
    graph = build_graph("alexnet", "tiny-imagenet", 8)
    step = TrainStep(graph, strategy_shardings(graph, data_parallel(graph, 2)), sgd_momentum())
    state = step.init(jax.tree.map(np.asarray, init_params(graph, 0)))
    images, labels = step.place_batch(*synthetic_batch(graph, 0))
    phases = instruction_phases(step.lower(state, images, labels).compile().as_text())
    found = set(phases.values())
    for op in ("conv1", "conv2", "fc7"):
        assert (op, "forward") in found and (op, "backward") in found
    assert ("fc7", "update") in found
    assert any(phase == "comm" for _, phase in found)  # the gradient all-reduce
    named = sum(1 for op, _ in phases.values() if op)
    assert named >= 0.8 * len(phases), [n for n, (op, _) in phases.items() if not op]
    events = [{"ph": "X", "name": name, "dur": 2000.0} for name in phases] + [{"ph": "X", "name": "x", "dur": 1.0}]
    breakdown = measured_breakdown(events, phases, steps=2)
    assert sum(breakdown.values()) == len(phases) * 1.0  # 2 ms each over 2 steps; unknown names ignored
