"""What a step writes twice, as it is and transposed, for a kernel gradient over the tokens (a dense's
input, the tied head's output gradient: simulator.calibration_plan.transposed_copies): the rule picks the
right ops, calibration times those forwards and backwards for them only, and the simulator prices by them."""

from dataclasses import dataclass

from models.op import Op, local_op
from models.zoo import FamilyOptions, build_graph
from simulator.calibration_plan import (INPUT_GRADIENT, OUTPUT, needed_local_ops, transposed_copies,
                                        transposed_copies_by_key)
from simulator.cost import OpCost, ProfileEntry, TableCostModel, entry_from_json, entry_to_json
from simulator.simulate import simulate
from soap.baselines import single
from soap.timing import Estimate, TimingPolicy
from tests.simulator.fakes import fake_machine

GPT = build_graph("gpt2", "tokens", 2, FamilyOptions(depth=1, width=16, heads=2, vocab=32, seq_len=8))
# ln_1 feeds q, k and v; ln_2 feeds fc; act feeds mlp_proj; merge feeds attn_proj: their outputs. The loss
# reads the tied head's logits: its input gradient (the head's table gradient is dy^T . x).
COPIES = {"h0.ln_1": (OUTPUT,), "h0.ln_2": (OUTPUT,), "h0.act": (OUTPUT,), "h0.merge": (OUTPUT,),
          "loss": (INPUT_GRADIENT,)}


def test_the_copies_are_the_inputs_of_denses_and_the_gradient_of_the_tied_heads_logits():
    assert {op.name: copies for op in GPT.ops if (copies := transposed_copies(GPT, op))} == COPIES
    alexnet = build_graph("alexnet", "tiny-imagenet", 2)
    assert not any(transposed_copies(alexnet, op) for op in alexnet.ops)  # [batch, features]: not measured
    by_key = transposed_copies_by_key(GPT, 2)
    needed = {op.cost_key: op for op in needed_local_ops(GPT, 2)}
    assert by_key and set(by_key) <= set(needed)
    assert {needed[key].kind.value for key in by_key} == {"layer_norm", "activation", "merge_heads", "token_xent"}


def test_the_copies_are_timed_only_when_asked_and_round_trip():
    from simulator.measure import time_local_op

    policy = TimingPolicy(max_s=0.1)
    ln, loss = local_op(GPT.op("h0.ln_1"), (1, 1, 1, 1)), local_op(GPT.op("loss"), (1, 1, 1))
    plain = time_local_op(ln, ("sgd",), policy)
    assert plain.forward_transposed is None and plain.backward_transposed is None
    assert "forward_transposed" not in entry_to_json(plain)
    entry = time_local_op(ln, ("sgd",), policy, transposed=(OUTPUT,))
    assert entry.forward_transposed.ms > 0 and entry.backward_transposed is None
    assert entry_from_json(entry_to_json(entry)) == entry
    assert entry.cost("sgd").forward_transposed_ms == entry.forward_transposed.ms
    gradient = time_local_op(loss, ("sgd",), policy, transposed=(INPUT_GRADIENT,))
    assert gradient.backward_transposed.ms > 0 and gradient.forward_transposed is None
    assert entry_from_json(entry_to_json(gradient)) == gradient


@dataclass(frozen=True)
class CopiedCost:
    """1 ms forward and 2 ms backward; 3 ms and 5 ms with their transposed copies."""

    def op_cost(self, op: Op, device_kind: str) -> OpCost:
        return OpCost(1.0, 2.0, 0.0, 3.0, 5.0)


def test_the_simulator_prices_an_op_by_the_copies_its_step_writes():
    _, trace = simulate(GPT, single(GPT, 1), fake_machine(1), CopiedCost())
    ms = {(event.kind, event.name.removeprefix("grad ").split(" ")[0].removesuffix("[0]")): event.end_ms - event.start_ms
          for event in trace.events if event.kind in ("forward", "backward")}
    assert {name for (kind, name), value in ms.items() if kind == "forward" and value == 3.0} == {
        name for name, copies in COPIES.items() if OUTPUT in copies}
    assert {name for (kind, name), value in ms.items() if kind == "backward" and value == 5.0} == {"loss"}
    assert {value for value in ms.values()} == {1.0, 2.0, 3.0, 5.0}


def test_a_cached_entry_without_a_copy_the_step_writes_is_measured_again():
    from simulator.calibrate import _needs_measuring

    copies = transposed_copies_by_key(GPT, 1)
    ops = needed_local_ops(GPT, 1)
    estimate = Estimate(1.0, 0.01, 5)
    updates = (("sgd", estimate),)
    entries = {op.cost_key: ProfileEntry(estimate, estimate, updates if op.param_bytes else ()) for op in ops}
    assert {op.cost_key for op in ops if _needs_measuring(op, TableCostModel("cpu", "0.10.2", entries), copies)} \
        == set(copies)
    entries = {key: ProfileEntry(e.forward, e.backward, e.updates,
                                 forward_transposed=estimate if OUTPUT in copies.get(key, ()) else None,
                                 backward_transposed=estimate if INPUT_GRADIENT in copies.get(key, ()) else None)
               for key, e in entries.items()}
    assert not any(_needs_measuring(op, TableCostModel("cpu", "0.10.2", entries), copies) for op in ops)
