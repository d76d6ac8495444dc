"""The named baseline strategies and a random valid strategy.

- `single`: every op whole on device 0.
- `data_parallel`: every op split on the batch over all N devices.
- `model_parallel`: layer-wise, the program order cut into N groups of about equal forward FLOPs, each
  whole on one device. AlexNet keeps the seed's variant (`SEED_MODEL_PARALLEL`): every op whose output
  channels divide by a degree of N is channel (Parameter) split over the largest such degree; an op that
  cannot be channel split (softmax, flatten, a channel count sharing no factor with N) runs whole on the
  device the layer-wise cut gives it.
- `owt` (Krizhevsky's "one weird trick"): batch split in every op but the fully-connected layers (conv,
  pool, norm, add, concat, flatten, the loss); channel split in the dense layers (hybrid with the batch
  where the channels do not divide by N).
For graphs with attention heads (transformers), `TENSOR_PARALLEL` adds:
- `megatron` (Shoeybi et al. 2019): tensor parallelism of degree t over the devices of a node, data
  parallelism across nodes (the batch split N / t ways, node-major). Asked of label roles, never of
  names, in program order: a vocabulary split where an op has one (embedding, the tied head, the loss:
  vocab-parallel); a heads split (splitting and merging heads, attention); a dense whose input arrives
  split on hidden (after heads or a column split) splits its contracting label (a row split: partial
  sums, all-reduced where read), else its output (a column split); an element-wise op whose input
  arrives split keeps the split (GELU between the two denses of the MLP); every other op (layer norms,
  dropout, residual adds) is computed whole on every rank of the group (a replica split).
- `megatron_sp` (Korthikanti et al. 2022): the same with those whole ops split on the sequence instead
  (sequence parallelism): each all-reduce becomes an all-gather and a reduce-scatter; where t does not
  divide the sequence (ViT's 197 tokens) those ops stay whole on the group, as in megatron.
A vocabulary that t does not divide (GPT-2's 50257 = 29 x 1733; Megatron pads it to 50304) stays unsplit:
those ops are data parallel over all N.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from models.graph import OpGraph
from models.errors import SoapError
from models.labels import Role, axis_labels
from models.op import Op
from soap.config import ParallelConfig
from soap.errors import BatchNotDivisibleError
from soap.space import enumerate_configs
from soap.strategy import Strategy


def _degrees(op: Op, **by_role: int) -> tuple[int, ...]:
    """A degree for each config label of `op`: `by_role[role]` on its output's labels of that role, else 1."""
    output = op.space.output
    return tuple(by_role.get(label.role.value, 1) if label.name in output else 1 for label in op.config_labels)


def _largest_common_degree(size: int, num_devices: int) -> int:
    """The largest divisor of num_devices that also divides size (1 if none other)."""
    return math.gcd(size, num_devices)


def _require_batch_divides(graph: OpGraph, num_devices: int, baseline: str) -> None:
    if graph.batch_size % num_devices:
        raise BatchNotDivisibleError(
            f"{baseline} splits the batch over all devices: batch size {graph.batch_size} is not divisible by "
            f"{num_devices} devices; use a batch size that is a multiple of {num_devices}"
        )


def whole_ops(graph: OpGraph, num_devices: int, device_of: Callable[[Op], int]) -> Strategy:
    """Every op whole (no split) on the device `device_of(op)` names."""
    configs = {op.name: ParallelConfig(_degrees(op), (device_of(op),)) for op in graph.ops}
    return Strategy.for_graph(graph, num_devices, configs)


def single(graph: OpGraph, num_devices: int) -> Strategy:
    return whole_ops(graph, num_devices, lambda op: 0)


def data_parallel(graph: OpGraph, num_devices: int) -> Strategy:
    _require_batch_divides(graph, num_devices, "data_parallel")
    devices = tuple(range(num_devices))
    configs = {op.name: ParallelConfig(_degrees(op, sample=num_devices), devices) for op in graph.ops}
    return Strategy.for_graph(graph, num_devices, configs)


def _layerwise_devices(graph: OpGraph, num_devices: int) -> dict[str, int]:
    """Lay the ops along the devices in program order, each device taking an equal share of FLOPs."""
    total = max(graph.forward_flops, 1)
    placement, done = {}, 0
    for op in graph.ops:
        midpoint = done + op.forward_flops / 2
        placement[op.name] = min(num_devices - 1, int(num_devices * midpoint / total))
        done += op.forward_flops
    return placement


# Models whose model_parallel baseline is the seed's channel split (the thesis's AlexNet experiments).
SEED_MODEL_PARALLEL = frozenset({"alexnet"})


def model_parallel(graph: OpGraph, num_devices: int) -> Strategy:
    layerwise = _layerwise_devices(graph, num_devices)
    configs = {}
    for op in graph.ops:
        channels = _channel_degree(op, num_devices) if graph.model in SEED_MODEL_PARALLEL else 1
        if channels > 1:
            configs[op.name] = ParallelConfig(_degrees(op, channel=channels), tuple(range(channels)))
        else:
            configs[op.name] = ParallelConfig(_degrees(op), (layerwise[op.name],))
    return Strategy.for_graph(graph, num_devices, configs)


def _channel_degree(op: Op, num_devices: int) -> int:
    space = op.space
    channels = [label for label in op.config_labels
                if label.role is Role.CHANNEL and label.name in space.output and label.name in space.splittable]
    if not channels:
        return 1
    return _largest_common_degree(channels[0].size, num_devices)


def owt(graph: OpGraph, num_devices: int) -> Strategy:
    _require_batch_divides(graph, num_devices, "owt")
    devices = tuple(range(num_devices))
    configs = {}
    for op in graph.ops:
        if op.spec.fully_connected:
            channels = _channel_degree(op, num_devices)
            degrees = _degrees(op, sample=num_devices // channels, channel=channels)
        else:
            degrees = _degrees(op, sample=num_devices)
        configs[op.name] = ParallelConfig(degrees, devices)
    return Strategy.for_graph(graph, num_devices, configs)


def tensor_degree(graph: OpGraph, num_devices: int, devices_per_node: int | None = None) -> int:
    """Megatron's tensor-parallel degree: the largest divisor of the node's devices (all N by default) that
    divides every heads and hidden size of the graph."""
    sizes = [label.size for op in graph.ops for label in op.config_labels
             if label.role in (Role.HEADS, Role.HIDDEN) and label.name in op.space.splittable]
    node = math.gcd(devices_per_node or num_devices, num_devices)
    return max(d for d in range(1, node + 1) if node % d == 0 and all(size % d == 0 for size in sizes))


def megatron(graph: OpGraph, num_devices: int, devices_per_node: int | None = None,
             sequence_parallel: bool = False) -> Strategy:
    """Megatron-LM's layout (the module docstring), t = `tensor_degree`, the batch split N / t ways."""
    t = tensor_degree(graph, num_devices, devices_per_node)
    if t == 1:
        raise SoapError(f"megatron needs a tensor-parallel degree above 1, but no divisor of {num_devices} devices "
                        f"divides every heads and hidden size of {graph.model}; use data_parallel")
    if graph.batch_size % (num_devices // t):
        raise BatchNotDivisibleError(
            f"megatron splits the batch over {num_devices // t} groups of {t} devices: batch size {graph.batch_size} "
            f"is not divisible by {num_devices // t}; use a batch size that is a multiple of {num_devices // t}")
    devices = tuple(range(num_devices))
    split_out: dict[str, bool] = {}  # op -> its output arrives split on hidden (or heads) over the group
    configs = {}
    for op in graph.ops:
        arrives_split = any(split_out.get(p, False) for p in graph.producers(op.name))
        degrees, split_out[op.name] = _megatron_degrees(op, num_devices, t, arrives_split, sequence_parallel)
        configs[op.name] = ParallelConfig(degrees, devices[:math.prod(degrees)])
    return Strategy.for_graph(graph, num_devices, configs)


def megatron_sp(graph: OpGraph, num_devices: int, devices_per_node: int | None = None) -> Strategy:
    return megatron(graph, num_devices, devices_per_node, sequence_parallel=True)


def _megatron_degrees(op: Op, num_devices: int, t: int, arrives_split: bool,
                      sequence_parallel: bool) -> tuple[tuple[int, ...], bool]:
    """One op's degrees under Megatron's rules, and whether its output leaves split on hidden or heads."""
    space = op.space
    labels = [label for label in op.config_labels if label.name in space.splittable]
    output = {n for axis in space.output for n in axis_labels(axis)}
    by_role = {role: [label for label in labels if label.role is role] for role in Role}
    contracting = [label for label in by_role[Role.HIDDEN] if label.name not in output]
    produced = [label for label in by_role[Role.HIDDEN] if label.name in output]
    data = num_devices // t
    choice, split = None, False
    if by_role[Role.VOCAB] and by_role[Role.VOCAB][0].size % t == 0:
        choice = by_role[Role.VOCAB][0]
    elif by_role[Role.VOCAB]:
        return _by_name(op, {label.name: num_devices for label in by_role[Role.SAMPLE]}), False
    elif by_role[Role.HEADS]:
        choice, split = by_role[Role.HEADS][0], True
    elif contracting:
        choice, split = (contracting[0], False) if arrives_split else (produced[0], True)
    elif arrives_split and produced:
        choice, split = produced[0], True
    elif sequence_parallel and by_role[Role.SEQUENCE] and by_role[Role.SEQUENCE][0].size % t == 0:
        choice = by_role[Role.SEQUENCE][0]  # else (ViT's 197 tokens) the op is whole on the group, as in megatron
    elif by_role[Role.REPLICA]:
        choice = by_role[Role.REPLICA][0]
    if choice is None:
        return _by_name(op, {label.name: num_devices for label in by_role[Role.SAMPLE]}), False
    return _by_name(op, {**{label.name: data for label in by_role[Role.SAMPLE]}, choice.name: t}), split


def _by_name(op: Op, degrees: dict[str, int]) -> tuple[int, ...]:
    return tuple(degrees.get(label.name, 1) for label in op.config_labels)


BASELINES: dict[str, Callable[[OpGraph, int], Strategy]] = {
    "single": single,
    "data_parallel": data_parallel,
    "model_parallel": model_parallel,
    "owt": owt,
}
# Asked only of graphs with attention heads (`baselines_for`).
TENSOR_PARALLEL: dict[str, Callable[[OpGraph, int], Strategy]] = {
    "megatron": megatron,
    "megatron_sp": megatron_sp,
}


def has_heads(graph: OpGraph) -> bool:
    return any(label.role is Role.HEADS for op in graph.ops for label in op.config_labels)


def baselines_for(graph: OpGraph) -> dict[str, Callable[[OpGraph, int], Strategy]]:
    """The baselines that apply to `graph`: the four of every graph, and Megatron's for a transformer."""
    return {**BASELINES, **TENSOR_PARALLEL} if has_heads(graph) else dict(BASELINES)


def random_strategy(graph: OpGraph, num_devices: int, rng: np.random.Generator, spmd: bool = False) -> Strategy:
    """A strategy giving each op a config drawn uniformly from its enumerated space (`spmd`: soap.space's)."""
    configs = {}
    for op in graph.ops:
        space = enumerate_configs(op, num_devices, spmd)
        configs[op.name] = space[rng.integers(len(space))]
    return Strategy.for_graph(graph, num_devices, configs)
