"""An op a dense reads is priced by its forward that also writes its output transposed, which is what a
step computes for the dense's kernel gradient (simulator.calibration_plan.read_transposed): the rule picks
the right ops, calibration measures that forward for them only, and the simulator prices with it."""

from dataclasses import dataclass

from models.op import Op
from models.zoo import FamilyOptions, build_graph
from simulator.calibration_plan import needed_local_ops, read_transposed, read_transposed_keys
from simulator.cost import OpCost, ProfileEntry, entry_from_json, entry_to_json
from simulator.simulate import simulate
from soap.baselines import single
from soap.timing import Estimate, TimingPolicy
from tests.simulator.fakes import fake_machine

GPT = build_graph("gpt2", "tokens", 2, FamilyOptions(depth=1, width=16, heads=2, vocab=32, seq_len=8))


def test_the_ops_a_dense_reads_are_the_token_ops_before_a_dense_or_the_tied_head():
    chosen = {op.name for op in GPT.ops if read_transposed(GPT, op)}
    # ln_1 feeds q, k and v; ln_2 feeds fc; act feeds mlp_proj; merge feeds attn_proj; ln_f the tied head.
    assert chosen == {"h0.ln_1", "h0.ln_2", "h0.act", "h0.merge", "ln_f"}
    alexnet = build_graph("alexnet", "tiny-imagenet", 2)
    assert not any(read_transposed(alexnet, op) for op in alexnet.ops)  # [batch, features]: not measured
    keys = read_transposed_keys(GPT, 2)
    assert keys and keys <= {op.cost_key for op in needed_local_ops(GPT, 2)}
    assert {op.kind.value for op in needed_local_ops(GPT, 2) if op.cost_key in keys} == {
        "layer_norm", "activation", "merge_heads"}


def test_the_transposed_forward_is_timed_only_when_asked_and_round_trips():
    from models.op import local_op
    from simulator.measure import time_local_op

    ln = local_op(GPT.op("h0.ln_1"), (1, 1, 1, 1))
    policy = TimingPolicy(max_s=0.1)
    plain = time_local_op(ln, ("sgd",), policy)
    assert plain.forward_transposed is None and "forward_transposed" not in entry_to_json(plain)
    entry = time_local_op(ln, ("sgd",), policy, read_transposed=True)
    assert entry.forward_transposed.ms > 0 and entry.problems(True, ("sgd",)) == ()
    assert entry_from_json(entry_to_json(entry)) == entry
    assert entry.cost("sgd").forward_read_transposed_ms == entry.forward_transposed.ms


@dataclass(frozen=True)
class TransposedCost:
    """1 ms forward (3 ms where the transposed forward is asked and the op has one), 2 ms backward."""

    def op_cost(self, op: Op, device_kind: str) -> OpCost:
        return OpCost(1.0, 2.0, 0.0, 3.0)


def test_the_simulator_prices_an_op_a_dense_reads_by_its_transposed_forward():
    _, trace = simulate(GPT, single(GPT, 1), fake_machine(1), TransposedCost())
    forward_ms = {event.name.split(" ")[0].removesuffix("[0]"): event.end_ms - event.start_ms for event in trace.events
                  if event.kind == "forward"}
    assert set(forward_ms) == {op.name for op in GPT.ops}
    assert {name for name, ms in forward_ms.items() if ms == 3.0} == {"h0.ln_1", "h0.ln_2", "h0.act", "h0.merge", "ln_f"}
    assert {ms for ms in forward_ms.values()} == {1.0, 3.0}


def test_an_entry_without_it_is_measured_again_for_an_op_a_dense_reads(tmp_path):
    from simulator.calibrate import _needs_measuring
    from simulator.cost import TableCostModel

    keys = read_transposed_keys(GPT, 1)
    ops = needed_local_ops(GPT, 1)
    estimate = Estimate(1.0, 0.01, 5)
    updates = (("sgd", estimate),)
    entries = {op.cost_key: ProfileEntry(estimate, estimate, updates if op.param_bytes else ()) for op in ops}
    profile = TableCostModel("cpu", "0.10.2", entries)
    again = {op.cost_key for op in ops if _needs_measuring(op, profile, keys)}
    assert again == keys
    entries = {key: ProfileEntry(e.forward, e.backward, e.updates, forward_transposed=estimate if key in keys else None)
               for key, e in entries.items()}
    assert not any(_needs_measuring(op, TableCostModel("cpu", "0.10.2", entries), keys) for op in ops)
