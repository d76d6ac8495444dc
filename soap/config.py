"""`ParallelConfig`: how one op is split over devices (FlexFlow's per-op parallel configuration).

A config has one degree per config label of the op (`Op.config_labels`, models.labels: sample, height,
width, channel as they apply) and one device id per task. The product of the degrees is the number of
tasks; task k, in row-major order over the degree grid, computes output shard k on `devices[k]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from soap.errors import InvalidConfigError


@dataclass(frozen=True)
class ParallelConfig:
    degrees: tuple[int, ...]
    devices: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "degrees", tuple(int(d) for d in self.degrees))
        object.__setattr__(self, "devices", tuple(int(d) for d in self.devices))
        if not self.degrees or min(self.degrees) < 1:
            raise InvalidConfigError(f"parallel degrees must be positive integers, got {self.degrees}")
        if len(self.devices) != self.num_tasks:
            raise InvalidConfigError(
                f"a config with degrees {self.degrees} has {self.num_tasks} tasks and needs that many device "
                f"ids, got {len(self.devices)}: {self.devices}"
            )
        if min(self.devices) < 0:
            raise InvalidConfigError(f"device ids must be >= 0, got {self.devices}")
        if len(set(self.devices)) != len(self.devices):
            raise InvalidConfigError(f"device ids must not repeat within one op, got {self.devices}")

    @property
    def num_tasks(self) -> int:
        return math.prod(self.degrees)

    @property
    def device_set(self) -> frozenset[int]:
        return frozenset(self.devices)

    def task_index(self, task: int) -> tuple[int, ...]:
        """The shard index (one per output dim) that task `task` computes."""
        return tuple(int(i) for i in np.unravel_index(task, self.degrees))

    def describe(self, dim_names: tuple[str, ...]) -> str:
        """Compact form, e.g. 'sample=2 channel=2 @ 0-3' (degree-1 dims left out)."""
        splits = " ".join(f"{name}={d}" for name, d in zip(dim_names, self.degrees) if d > 1) or "whole"
        return f"{splits} @ {_device_list(self.devices)}"


def _device_list(devices: tuple[int, ...]) -> str:
    if len(devices) > 1 and devices == tuple(range(devices[0], devices[0] + len(devices))):
        return f"{devices[0]}-{devices[-1]}"
    return ",".join(str(d) for d in devices)
