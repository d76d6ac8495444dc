"""The op breakdown attributes every instruction of a compiled step to an op and a phase."""

import jax
import pytest
import numpy as np

from benchmarks.op_breakdown import instruction_phases, measured_breakdown
from models.batch import synthetic_batch
from models.network import init_params
from soap.step import TrainStep, sgd_momentum
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


def test_the_simulated_side_sums_each_device_task_by_op_and_phase():
    from benchmarks.op_breakdown import simulated_breakdown
    from simulator.cost import RooflineCostModel
    from simulator.machine import machine_preset
    from simulator.simulate import Simulator

    graph = build_graph("alexnet", "tiny-imagenet", 8)
    machine = machine_preset("p100x2-pcie", 2)
    cost = RooflineCostModel(machine.device)
    strategy = data_parallel(graph, 2)
    per_device = simulated_breakdown(graph, strategy, machine, cost)
    assert len(per_device) == 2 and per_device[0] == per_device[1]  # data parallel: both devices alike
    assert {"conv1/forward", "conv1/backward", "fc7/update", "fc7/comm"} <= set(per_device[0])
    trace = Simulator(graph, machine, cost)
    trace.full(strategy)
    compute = sum(e.end_ms - e.start_ms for e in trace.trace().events if e.resource == "device 0")
    assert sum(v for k, v in per_device[0].items() if not k.endswith("/comm")) == pytest.approx(compute)


def test_a_staged_step_is_broken_down_by_program_with_the_simulators_labels():
    from benchmarks.op_breakdown import simulated_programs
    from simulator.cost import RooflineCostModel
    from simulator.machine import machine_preset
    from soap.baselines import model_parallel

    graph = build_graph("resnet18", "tiny-imagenet", 4)
    strategy = model_parallel(graph, 2)  # layer-wise: the first ops on device 0, the rest on device 1
    step = TrainStep(graph, strategy_shardings(graph, strategy), sgd_momentum())
    state = step.init(jax.tree.map(np.asarray, init_params(graph, 0)))
    images, labels = step.place_batch(*synthetic_batch(graph, 0))
    loss, _, times = step.program_times(state, images, labels)
    assert loss == pytest.approx(float(step(state, images, labels)[0]))  # the same step, waited for
    measured = [label for label, _ in times]
    assert measured[:2] == ["to stage 0: data", "stage 0 forward"] and measured[-1].startswith("stage 0 backward")
    machine = machine_preset("p100x2-pcie", 2)
    simulated = simulated_programs(graph, strategy, machine, RooflineCostModel(machine.device))
    labels_simulated = set(simulated[0]) | set(simulated[1])
    # Every stage program is priced, and every move the simulator prices is a program the step runs (the
    # step also moves tensors between stages on the same devices, where the simulator has nothing to move).
    programs = {label for label in measured if label.startswith("stage ")}
    assert programs <= labels_simulated and {"stage 0 forward", "stage 1 backward"} <= programs
    assert labels_simulated - programs <= set(measured)


def test_an_unnamed_weight_gradient_belongs_to_the_op_whose_update_reads_it():
    # XLA leaves the op name off a conv's kernel-gradient fusion; its operands would name the batch norm
    # whose input gradient feeds it. The update that reads it names the conv.
    hlo = """
ENTRY %main {
  %cot = f32[2,4,4,8]{3,2,1,0} fusion(%a), kind=kLoop, metadata={op_name="jit(step)/op.bn2/transpose(jvp(bn))"}
  %x = f32[2,4,4,8]{3,2,1,0} fusion(%b), kind=kLoop, metadata={op_name="jit(step)/op.conv2/conv"}
  %kgrad = f32[3,3,8,8]{3,2,1,0} fusion(%x, %cot), kind=kOutput
  %new = f32[3,3,8,8]{3,2,1,0} fusion(%kgrad, %w), kind=kLoop, metadata={op_name="jit(step)/update.conv2/add"}
  %other = f32[2,4,4,8]{3,2,1,0} fusion(%cot), kind=kLoop
}
"""
    phases = instruction_phases(hlo)
    assert phases["kgrad"] == ("conv2", "backward")
    assert phases["new"] == ("conv2", "update")
    assert phases["other"] == ("bn2", "backward")  # unnamed and not a weight gradient: its operand's op
