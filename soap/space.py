"""The SOAP space of an op: validating a config and enumerating every valid one.

A config is valid for an op on N devices when it has one degree per config label of the op (models.labels),
splits only the labels its kind lets split and never two its kind says exclude each other (a conv's input
channels and its height or width), every degree divides its label's size exactly (equal partitions; for a
label of whole units, `Space.units`, the units: a dense's h*k features that the user's module holds as h
heads split whole heads, so that the user's plan can place the module's kernel), and its device ids are
distinct and in 0..N-1. Enumeration yields, for every valid degree tuple with t = product <= N tasks,
each contiguous block of t devices that starts at a multiple of t (FlexFlow's contiguous blocks; the
alignment keeps blocks inside nodes of 2^k devices).

The SPMD space (`spmd=True`) holds only the configs with t = N tasks: every op on all N devices, split any
way, which a single jitted step runs as one program (soap.plan; soap.stages: one device set, one stage).
"""

from __future__ import annotations

import functools
import itertools
import math

from models.labels import Label, Role, exclusive_splits, output_labels
from models.op import Op
from soap.config import ParallelConfig
from soap.errors import InvalidConfigError


INPUT_CHANNELS = "in_channel"  # the contracted label of a conv and an image dense (models/kinds/conv.py, dense.py)


def _size(op: Op, label: Label, num_devices: int) -> int:
    """What a label's degree must divide: its size, its units (`Space.units`), or for copies
    (models.labels.replicated) the devices."""
    if label.role is Role.REPLICA:
        return num_devices
    return dict(op.space.units).get(label.name, label.size)


def divisors(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, n + 1) if n % d == 0)


def validate_config(op: Op, config: ParallelConfig, num_devices: int) -> None:
    """Raise InvalidConfigError (one line: rule, value, fix) unless `config` fits `op` on `num_devices`."""
    space = op.space
    dims = space.config_labels
    where = f"{op.kind.value} {op.name!r}"
    if len(config.degrees) != len(dims):
        raise InvalidConfigError(
            f"{where}: needs one degree per dim {dims}, got {len(config.degrees)}: {config.degrees}"
        )
    outputs = output_labels(space)
    for label, degree in zip(op.config_labels, config.degrees):
        if degree > 1 and label.name not in space.splittable:
            allowed = ", ".join(name for name in dims if name in space.splittable)
            raise InvalidConfigError(f"{where}: dim {label.name} cannot be split (degree {degree}); "
                                     f"splittable dims: {allowed}")
        size = _size(op, label, num_devices)
        if size % degree:
            valid = ", ".join(str(d) for d in divisors(size) if d <= num_devices)
            # A contracted dim (conv's and dense's in_channel) is the input's, so the user looks there.
            kind = "output dim" if label.name in outputs or label.role is Role.REPLICA else "contracted input dim"
            what = (f"dim {label.name}={label.size} holds {size} heads of the module's kernel, which are not "
                    f"divisible by degree {degree} (a split of it must be whole heads)"
                    if label.name in dict(op.space.units) else
                    f"{kind} {label.name}={label.size} is not divisible by degree {degree}")
            raise InvalidConfigError(f"{where}: {what}; valid degrees on {num_devices} devices: {valid}")
    clash = exclusive_splits(space, config.degrees)
    if clash is not None:
        split = space.degree_map(config.degrees)
        raise InvalidConfigError(
            f"{where}: dims {clash[0]} and {clash[1]} cannot both be split (degrees {split[clash[0]]} and "
            f"{split[clash[1]]}; XLA computes that split wrongly); split one of them"
        )
    if config.num_tasks > num_devices:
        raise InvalidConfigError(
            f"{where}: {config.num_tasks} tasks (degrees {config.degrees}) need more than the {num_devices} devices"
        )
    if max(config.devices) >= num_devices:
        raise InvalidConfigError(
            f"{where}: device id {max(config.devices)} is out of range; ids run 0..{num_devices - 1}"
        )


def valid_degrees(op: Op, num_devices: int, spmd: bool = False) -> tuple[tuple[int, ...], ...]:
    """Every degree tuple that splits `op` into at most `num_devices` equal tasks (`spmd`: exactly that many)."""
    per_dim = [
        tuple(d for d in divisors(_size(op, label, num_devices)) if d <= num_devices)
        if label.name in op.space.splittable else (1,)
        for label in op.config_labels
    ]
    return tuple(combo for combo in itertools.product(*per_dim)
                 if (math.prod(combo) == num_devices or (not spmd and math.prod(combo) < num_devices))
                 and exclusive_splits(op.space, combo) is None)


@functools.lru_cache(maxsize=4096)
def enumerate_configs(op: Op, num_devices: int, spmd: bool = False) -> tuple[ParallelConfig, ...]:
    """Every config of the space for `op`: valid degrees x aligned contiguous device blocks (`spmd`: the
    configs on all the devices)."""
    configs = []
    for degrees in valid_degrees(op, num_devices, spmd):
        tasks = math.prod(degrees)
        for start in range(0, num_devices - tasks + 1, tasks):
            configs.append(ParallelConfig(degrees, tuple(range(start, start + tasks))))
    return tuple(configs)


def carried_over(config: ParallelConfig, source: Op, target: Op) -> ParallelConfig | None:
    """`config` of op `source` as a config of op `target`, the split the search's moves share along a run of
    ops (the same devices): the degrees of their other config labels position by position where the two
    ops have as many (a conv and its pool; a row-split dense and the replicated residual after it), as
    before convs and dense layers had input channels, and the in_channel degree by name (1 where `source`
    has none); None where the counts differ or `config` splits input channels `target` does not have."""
    split = source.space.degree_map(config.degrees)
    if split.get(INPUT_CHANNELS, 1) > 1 and INPUT_CHANNELS not in target.space.config_labels:
        return None
    others = [d for name, d in split.items() if name != INPUT_CHANNELS]
    wanted = target.space.config_labels
    if len(others) != len(wanted) - (INPUT_CHANNELS in wanted):
        return None
    position = iter(others)
    degrees = tuple(split.get(name, 1) if name == INPUT_CHANNELS else next(position) for name in wanted)
    return config if degrees == config.degrees else ParallelConfig(degrees, config.devices)


def on_all_devices(configs, num_devices: int) -> bool:
    """Whether every config of `configs` (a Strategy's values) runs on all `num_devices` devices: a strategy
    of the SPMD space."""
    return all(config.num_tasks == num_devices for config in configs)
