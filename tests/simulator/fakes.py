"""Fake cost models and machines for simulator and search tests: no device, no calibration file."""

from dataclasses import dataclass

from models.op import Op
from simulator.cost import OpCost
from simulator.machine import DeviceSpec, Link, Machine

FAKE_DEVICE = DeviceSpec("fake", 1e12, 1e12, 2**40)


@dataclass(frozen=True)
class KindTableCost:
    """Cost per op kind: {kind value: (forward_ms, backward_ms)}, the same for every shard shape."""

    table: tuple[tuple[str, float, float], ...]
    update_ms_each: float = 0.0

    def op_cost(self, op: Op, device_kind: str) -> OpCost:
        for kind, forward_ms, backward_ms in self.table:
            if kind == op.kind.value:
                return OpCost(forward_ms, backward_ms, self.update_ms_each if op.param_bytes else 0.0)
        raise KeyError(op.kind)


@dataclass(frozen=True)
class FlopCost:
    """Time proportional to FLOPs: ms_per_gflop per 1e9 FLOPs; free updates."""

    ms_per_gflop: float = 1.0

    def op_cost(self, op: Op, device_kind: str) -> OpCost:
        return OpCost(op.forward_flops / 1e9 * self.ms_per_gflop, op.backward_flops / 1e9 * self.ms_per_gflop)


def fake_machine(num_devices: int, bandwidth_bytes_per_s: float = 1e9, latency_s: float = 0.0,
                 overlap: bool = True, memory_bytes: int = 2**40, devices_per_node: int | None = None) -> Machine:
    link = Link(bandwidth_bytes_per_s, latency_s)
    device = DeviceSpec("fake", 1e12, 1e12, memory_bytes)
    return Machine("fake", device, num_devices, devices_per_node or num_devices, link, link, overlap)


def branchy_cnn(batch_size: int = 2):
    """A tiny CNN of each family's parts: a conv, a batch norm, two branches joined by an add, a pool,
    a dense layer and the loss (8x8x3 images, 4 classes)."""
    from models.graph import GraphBuilder

    b = GraphBuilder("branchy", "toy", (batch_size, 8, 8, 3))
    stem = b.conv2d("stem", 8, kernel=3, bias=False, relu=False, input=None)
    bn = b.batch_norm("bn", relu=True, input=stem)
    left = b.conv2d("left", 8, kernel=3, input=bn)
    right = b.conv2d("right", 8, kernel=1, input=bn)
    b.add("join", [left, right], relu=True)
    b.global_avg_pool("pool")
    b.dense("fc", 4, relu=False)
    b.softmax_xent("loss")
    return b.build(batch_size)
