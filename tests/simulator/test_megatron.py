"""Megatron's communication in closed form (Shoeybi et al. 2019; Korthikanti et al. 2022), counted in the
simulated trace of a tiny GPT under soap.baselines' megatron and megatron_sp.

Per transformer layer, tensor parallelism of degree t moves exactly: forward, one all-reduce of b*s*h
floats after the attention's output projection and one after the MLP's second dense; backward, one into
each layer norm (the column-split denses' partial input gradients). With q, k and v as three denses (this
zoo's GPT), XLA sums each one's partial gradient of ln_1's output before adding them, in one combined
collective of 3 b*s*h floats, where Megatron's fused QKV dense has one of b*s*h. With
sequence parallelism, each all-reduce becomes an all-gather (a resharding of the sequence-split layer
norm's output into the column-split denses, once for q, k and v) and a reduce-scatter.
"""

import dataclasses

import pytest

from models.zoo import FamilyOptions, build_graph
from simulator.cost import ConstantCostModel
from simulator.machine import Link, machine_preset
from simulator.simulate import Simulator
from simulator.taskgraph import (ALL_REDUCED, REDUCE_SCATTERED, TRANSFER, ring_allreduce_ms, ring_reduce_scatter_ms,
                                 task_name)
from soap.baselines import megatron, megatron_sp, tensor_degree

BATCH, SEQUENCE, WIDTH, HEADS, VOCAB, T = 4, 8, 16, 4, 32, 4


def tiny_gpt(depth: int):
    return build_graph("gpt2", "tokens", BATCH, FamilyOptions(depth=depth, width=WIDTH, heads=HEADS, vocab=VOCAB,
                                                              seq_len=SEQUENCE))


def machine(reduce_scatter: bool, **fields):
    return dataclasses.replace(machine_preset("h100x8", T), reduce_scatter=reduce_scatter, **fields)


def layer_transfers(graph, strategy, reduce_scatter=False, **fields) -> list[tuple[str, float]]:
    """The transfer tasks touching layer h0's ops: (name, duration)."""
    simulator = Simulator(graph, machine(reduce_scatter, **fields), ConstantCostModel())
    simulator.full(strategy)
    return [(task_name(task, graph), task.duration_ms) for task in simulator.tasks()
            if task.kind == TRANSFER and "h0." in task_name(task, graph)]


def test_the_tensor_degree_divides_the_heads_and_the_node():
    assert tensor_degree(tiny_gpt(1), 4) == 4
    assert tensor_degree(tiny_gpt(1), 8, devices_per_node=4) == 4
    assert tensor_degree(tiny_gpt(1), 6) == 2  # 3 does not divide 4 heads


def test_a_megatron_layer_costs_two_all_reduces_forward_and_two_backward():
    graph = tiny_gpt(1)
    moved = layer_transfers(graph, megatron(graph, T))
    link = machine(False).intra_node
    floats_bytes = BATCH * SEQUENCE * WIDTH * 4
    expected_ms = {
        f"h0.attn_proj -> h0.attn_drop (partial sums {ALL_REDUCED})": floats_bytes,
        f"h0.mlp_proj -> h0.mlp_drop (partial sums {ALL_REDUCED})": floats_bytes,
        f"grad h0.q -> h0.ln_1 (partial sums {ALL_REDUCED})": 3 * floats_bytes,  # q's, k's and v's at once
        f"grad h0.fc -> h0.ln_2 (partial sums {ALL_REDUCED})": floats_bytes,
    }
    assert sorted(name for name, _ in moved) == sorted(expected_ms)
    for name, duration in moved:
        assert duration == pytest.approx(ring_allreduce_ms(expected_ms[name], T, link.bandwidth_bytes_per_s,
                                                           link.latency_s))


def test_sequence_parallelism_turns_each_all_reduce_into_an_all_gather_and_a_reduce_scatter():
    graph = tiny_gpt(1)
    moved = layer_transfers(graph, megatron_sp(graph, T), reduce_scatter=True)
    names = [name for name, _ in moved]
    scattered = [name for name in names if REDUCE_SCATTERED in name]
    gathered = [name for name in names if "slices" in name]  # reshardings: the all-gathers
    assert sorted(scattered) == sorted([
        f"h0.attn_proj -> h0.attn_drop (partial sums {REDUCE_SCATTERED})",
        f"h0.mlp_proj -> h0.mlp_drop (partial sums {REDUCE_SCATTERED})",
        f"grad h0.q -> h0.ln_1 (partial sums {REDUCE_SCATTERED})",
        f"grad h0.fc -> h0.ln_2 (partial sums {REDUCE_SCATTERED})",
    ])
    # Forward: ln_1's output gathered once for q, k and v, ln_2's for fc; backward: the gradients of the
    # dropouts' outputs gathered into the row-split denses.
    assert sorted(name.split(" (")[0] for name in gathered) == sorted([
        "h0.ln_1 -> h0.q", "h0.ln_2 -> h0.fc", "grad h0.attn_drop -> h0.attn_proj", "grad h0.mlp_drop -> h0.mlp_proj",
    ])
    assert len(names) == 8
    link = machine(True).intra_node
    floats_bytes = BATCH * SEQUENCE * WIDTH * 4
    for name, duration in moved:
        if REDUCE_SCATTERED in name:
            box_bytes = 3 * floats_bytes if name.startswith("grad h0.q") else floats_bytes
            assert duration == pytest.approx(ring_reduce_scatter_ms(box_bytes, T, link.bandwidth_bytes_per_s,
                                                                    link.latency_s))


def test_a_measured_reduce_scatter_prices_it_on_the_bytes_each_device_sends():
    # A calibrated machine's reduce-scatter curve (simulator.calibrate) wins over the ring formula: a box of
    # b bytes over 4 devices is priced at the curve's time for the 3/4 * b bytes each device sends.
    graph = tiny_gpt(1)
    curve = Link(1e9, 1e-3, measured=((1000.0, 2e-3), (1e6, 4e-3)))
    moved = layer_transfers(graph, megatron_sp(graph, T), reduce_scatter=True, reduce_scatter_link=curve)
    box_bytes = BATCH * SEQUENCE * WIDTH * 4
    scattered = {name: duration for name, duration in moved if REDUCE_SCATTERED in name}
    assert len(scattered) == 4
    for name, duration in scattered.items():
        operands = 3 if name.startswith("grad h0.q") else 1  # q's, k's and v's partial gradients at once
        assert duration == pytest.approx(curve.transfer_ms(0.75 * operands * box_bytes))


def test_megatron_is_asked_of_roles_and_left_out_of_cnns():
    from soap.baselines import baselines_for
    graph = tiny_gpt(2)
    strategy = megatron(graph, 8, devices_per_node=4)
    by_kind = {}
    for op in graph.ops:
        split = {label.name: d for label, d in zip(op.config_labels, strategy[op.name].degrees) if d > 1}
        by_kind.setdefault(op.kind.value, set()).add(tuple(sorted(split.items())))
    assert by_kind["embedding"] == {(("sample", 2), ("vocab", 4))}
    assert by_kind["attention"] == {(("heads", 4), ("sample", 2))}
    assert by_kind["layer_norm"] == {(("replica", 4), ("sample", 2))}
    assert by_kind["dense"] == {(("hidden", 4), ("sample", 2)), (("in_hidden", 4), ("sample", 2))}
    assert by_kind["token_xent"] == {(("sample", 2), ("vocab", 4))}
    assert "megatron" in baselines_for(graph) and "megatron" not in baselines_for(build_graph("alexnet", "tiny-imagenet", 8))


def test_a_machine_that_runs_a_combined_collective_operand_by_operand_sums_q_k_and_v_one_by_one():
    # A calibrated local machine (XLA:CPU over gloo) measured a partial sum's all-reduce in a step and runs
    # a combined all-reduce operand by operand: q's, k's and v's partial gradients each pay the partial-sum
    # curve at the ring traffic of their box, 2(t-1)/t * b.
    graph = tiny_gpt(1)
    partial_sum = Link(1e9, 2e-3, measured=((1000.0, 3e-3), (1e6, 5e-3)))
    combined = Link(1e9, 1e-3)
    moved = dict(layer_transfers(graph, megatron(graph, T), partial_sum_allreduce=partial_sum,
                                 combined_allreduce=combined, allreduce=Link(1e9, 1e-4)))
    one_ms = partial_sum.transfer_ms(2 * (T - 1) / T * BATCH * SEQUENCE * WIDTH * 4)
    assert moved[f"h0.attn_proj -> h0.attn_drop (partial sums {ALL_REDUCED})"] == pytest.approx(one_ms)
    assert moved[f"grad h0.fc -> h0.ln_2 (partial sums {ALL_REDUCED})"] == pytest.approx(one_ms)
    assert moved[f"grad h0.q -> h0.ln_1 (partial sums {ALL_REDUCED})"] == pytest.approx(3 * one_ms)
