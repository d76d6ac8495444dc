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
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from models.graph import OpGraph
from models.labels import Role
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


BASELINES: dict[str, Callable[[OpGraph, int], Strategy]] = {
    "single": single,
    "data_parallel": data_parallel,
    "model_parallel": model_parallel,
    "owt": owt,
}


def random_strategy(graph: OpGraph, num_devices: int, rng: np.random.Generator) -> Strategy:
    """A strategy giving each op a config drawn uniformly from its enumerated space."""
    configs = {}
    for op in graph.ops:
        space = enumerate_configs(op, num_devices)
        configs[op.name] = space[rng.integers(len(space))]
    return Strategy.for_graph(graph, num_devices, configs)
