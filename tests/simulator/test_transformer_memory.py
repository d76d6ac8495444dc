"""The simulator's memory of one GPT-2 layer under data_parallel, megatron and megatron_sp, in closed form.

One layer's memory per device is peak(depth 2) - peak(depth 1): the embeddings, the final layer norm and
the head cancel. In float32 elements, with B the sequences each device of a tensor group of degree t sees
(batch x t / N; data parallelism is t = 1), S the sequence and H the width:

Activations. The simulator keeps every op's output shard for the backward (simulator.taskgraph), and the
bytes a task received from other devices. A layer's ops and their outputs, in units of B*S*H:
ln_1 1, q k v 3, their head splits 3, attention 1 (its output only: fused attention, no S x S scores),
merge 1, attn_proj 1, attn_drop 1, add_1 1, ln_2 1, fc 4, act 4, mlp_proj 1, mlp_drop 1, add_2 1: 24.
- data_parallel: 24 B*S*H.
- megatron: q k v, their head splits, attention, merge, fc and act are split t ways (16 / t); ln_1,
  attn_proj and mlp_proj (their partial sums, all-reduced in place), the dropouts, the adds and ln_2 are
  whole on every device of the group (8): (8 + 16 / t) B*S*H. Nothing else arrives: the layer norms'
  outputs are already on every device.
- megatron_sp: 22 are split t ways (the replicated ones on the sequence); attn_proj and mlp_proj keep no
  partial sum, their readers (the dropouts) keep their sequence part of the sum (2 / t; a partial sum is
  transient, as Megatron frees it once reduce-scattered); and q (k and v read where q read) and fc each
  receive the all-gathered layer norm output, (t - 1) / t of it from the others:
  22 / t + 2 / t + 2 (t - 1) / t = (22 + 2t) / t B*S*H.

Korthikanti et al. 2022 count bytes at 16 bits, s*b*h*(34 + 5*a*s/h) per layer, (10 + 24/t + 5as/(ht))
with tensor parallelism, (34/t + 5as/(ht)) with sequence parallelism. In 16-bit elements (bytes / 2; a
dropout mask is one byte, half an element) their set is 17 + 2.5 as/h: replicated 5 (two layer-norm
inputs 2, the inputs of the QKV and first MLP denses 2, two dropout masks 1) and split 12 (Q and K 2, V 1,
the projection's input 1, GeLU's input 4 and output 4) and 2.5 as/h (softmax scores and output, their
dropout mask). Term by term against the simulator's 24: its replicated 8 are their 5 plus the dense
outputs before dropout (2; they keep a mask instead) and the dropout outputs in place of the masks (+1);
its split 16 are their 12 plus the outputs of the head splits and merge (4: reshapes, kept as copies);
it keeps no S x S scores (their 2.5 as/h); and with sequence parallelism it keeps the all-gathered inputs
of the two column-split denses, which Megatron gathers again in the backward (2 (t - 1) / t over their
24 / t). So the ratio of megatron to
data parallelism at equal sequences per GPU, (8t + 16) / 24 (2x at t = 4), is the replication that
Korthikanti et al.'s 10 sbh term describes, not an accounting error; no received bytes are counted twice.

Parameters, gradients and optimizer states (SGD with momentum: 3 x, the fakes' optimizer): a layer has
12 H^2 + 13 H parameters (four H x H denses with biases, two H x 4H, two layer norms). Megatron splits the
column denses' kernels and biases and the row denses' kernels: (12 H^2 + 7 H) / t + 6 H per device (the
two row biases and the layer norms whole).
"""

import pytest

from models.zoo import FamilyOptions, build_graph
from simulator.cost import ConstantCostModel
from simulator.machine import machine_preset
from simulator.simulate import Simulator
from soap.baselines import data_parallel, megatron, megatron_sp, tensor_degree

BATCH, SEQUENCE, WIDTH, HEADS, VOCAB = 8, 16, 32, 8, 64
FLOAT32 = 4
STATES = 3  # weights, gradients, momentum


def tiny_gpt(depth: int):
    return build_graph("gpt2", "tokens", BATCH, FamilyOptions(depth=depth, width=WIDTH, heads=HEADS, vocab=VOCAB,
                                                              seq_len=SEQUENCE))


def layer_bytes(layout, num_devices: int) -> int:
    """The simulator's memory of one layer on the device that holds most: peak(depth 2) - peak(depth 1)."""
    peaks = []
    for depth in (1, 2):
        graph = tiny_gpt(depth)
        simulator = Simulator(graph, machine_preset("h100x8", num_devices), ConstantCostModel())
        peaks.append(simulator.full(layout(graph, num_devices)).peak_memory_bytes)
    per_device = {b - a for a, b in zip(*peaks)}
    assert len(per_device) == 1, "every device of these layouts holds the same"
    return per_device.pop()


def activation_units(layout: str, t: int) -> float:
    """A layer's activations in units of B*S*H float32 elements (the module docstring)."""
    return {"data_parallel": 24, "megatron": 8 + 16 / t, "megatron_sp": (22 + 2 * t) / t}[layout]


def parameter_elements(t: int) -> float:
    h = WIDTH
    return 12 * h * h + 13 * h if t == 1 else (12 * h * h + 7 * h) / t + 6 * h


@pytest.mark.parametrize("t", [pytest.param(t, id=f"t{t}") for t in (2, 4, 8)])
@pytest.mark.parametrize("name, layout", [pytest.param("data_parallel", data_parallel, id="dp"),
                                          pytest.param("megatron", megatron, id="megatron"),
                                          pytest.param("megatron_sp", megatron_sp, id="megatron-sp")])
def test_a_layer_keeps_what_the_closed_form_says(name, layout, t):
    tensor = 1 if name == "data_parallel" else t
    assert tensor == 1 or tensor_degree(tiny_gpt(1), t) == t
    sequences = BATCH * tensor // t  # each device of a tensor group sees the group's sequences
    expected = (activation_units(name, tensor) * sequences * SEQUENCE * WIDTH
                + STATES * parameter_elements(tensor)) * FLOAT32
    assert layer_bytes(layout, t) == pytest.approx(expected, rel=0, abs=0.5)


def test_at_equal_sequences_per_gpu_megatron_keeps_t_times_the_replicated_activations():
    """The ratio the zoo table shows (megatron 1.5-4.5x data parallelism's peak) is the replication."""
    t = 4
    dp = activation_units("data_parallel", 1) * (BATCH // t)
    assert activation_units("megatron", t) * BATCH / dp == pytest.approx((8 * t + 16) / 24)
    assert activation_units("megatron_sp", t) * BATCH / dp == pytest.approx((22 + 2 * t) / 24)
