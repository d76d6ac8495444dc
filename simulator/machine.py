"""Machines: devices grouped in nodes, and the links between them.

    python -m search.optimize --model alexnet --gpus 8 --machine p100-4x4
    python -m search.optimize --model alexnet --gpus 2 --machine my_machine.json

A transfer of b bytes over a link takes latency_s + b / bandwidth_bytes_per_s (per direction), or, for a
link with "measured": [[bytes, seconds], ...] (written by calibration, sizes increasing), the line
through those timings (see Link).
Devices i and j share a node when i // devices_per_node == j // devices_per_node; intra-node pairs use
the `intra_node` link, others the `inter_node` link. `comm_overlaps_compute` says whether a transfer or
collective runs beside the device's compute (GPUs with NCCL and XLA's async collectives) or blocks it
(XLA:CPU with gloo, measured: a 48.6 ms matmul and a 53.4 ms all-reduce in one program took 99.7 ms).

Machine JSON schema (version 1; every field required; numbers positive):
    {"format": "soap-machine", "version": 1, "name": "my-cluster",
     "device": {"kind": "P100-SXM2", "peak_flops_per_s": 10.6e12,
                "memory_bandwidth_bytes_per_s": 732e9, "memory_bytes": 17179869184},
     "num_devices": 8, "devices_per_node": 4,
     "intra_node": {"bandwidth_bytes_per_s": 20e9, "latency_s": 5e-6},
     "inter_node": {"bandwidth_bytes_per_s": 12.5e9, "latency_s": 1e-5},
     "comm_overlaps_compute": true}
An optional "allreduce": {"bandwidth_bytes_per_s": ..., "latency_s": ...} (written by calibration) prices an
all-reduce of b bytes over r devices as latency_s + 2(r-1)/r * b / bandwidth_bytes_per_s; without it, the
ring formula runs over the slowest link of the ring (simulator.taskgraph.ring_allreduce_ms). An optional
"inner_dim_reshard" link (written by calibration) prices moving a tensor split on its last dim (channels,
features), which XLA transposes around the collective; without it, the node links price every move. An
optional "reduce_scatter_link" (written by calibration) prices a reduce-scatter of b bytes over r devices
on the (r-1)/r * b bytes each sends; without it, half the all-reduce (simulator.taskgraph). "reduce_scatter"
(optional, default false) says whether the machine's compiled steps sum a sliced partial sum by one. An
optional "combined_allreduce" link (written by calibration) prices an op's gradient arrays in the one
combined all-reduce XLA makes of a step's gradient all-reduces, where the collectives run it operand by
operand and an operand after a large one pays the link's floor again (XLA:CPU over gloo): the time of a
(b-byte array, 1 KB array) pair of such an all-reduce, on the ring traffic of the b bytes
(simulator.measure.time_combined_allreduce_ms; simulator.taskgraph prices with it). An optional
"partial_sum_allreduce" link (written by calibration) prices the all-reduce of a partial sum inside a step:
a contraction's output summed right after the contraction computed it, which XLA:CPU over gloo runs slower
than the same all-reduce alone (simulator.measure.time_partial_sum_allreduce_ms); without it, "allreduce"
prices it.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import asdict, dataclass, replace

from models.documents import read_document
from simulator.errors import MachineError

FORMAT = "soap-machine"
VERSION = 1
GiB = 2**30


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator kind: datasheet (or measured) rates. `kind` keys cost tables."""

    kind: str
    peak_flops_per_s: float
    memory_bandwidth_bytes_per_s: float
    memory_bytes: int


@dataclass(frozen=True)
class Link:
    """latency_s + bytes / bandwidth_bytes_per_s; or, where `measured` holds timings (bytes, seconds) sorted
    by bytes, the line through them: a fitted line misprices a range of 4 KB - 64 MB (gloo takes 4 ms for
    anything up to 1 MB, then grows faster than linearly), and a step moves mostly 0.1 - 16 MB. Below the
    smallest measured size the time is the smallest's; above the largest it grows at the fitted bandwidth."""

    bandwidth_bytes_per_s: float
    latency_s: float
    measured: tuple[tuple[float, float], ...] = ()

    def transfer_ms(self, num_bytes: float) -> float:
        points = self.measured
        if not points:
            return (self.latency_s + num_bytes / self.bandwidth_bytes_per_s) * 1e3
        if num_bytes <= points[0][0]:
            return points[0][1] * 1e3
        if num_bytes >= points[-1][0]:
            return (points[-1][1] + (num_bytes - points[-1][0]) / self.bandwidth_bytes_per_s) * 1e3
        at = bisect.bisect_right(points, (num_bytes, math.inf))
        (x0, y0), (x1, y1) = points[at - 1], points[at]
        return (y0 + (y1 - y0) * (num_bytes - x0) / (x1 - x0)) * 1e3


@dataclass(frozen=True)
class Machine:
    name: str
    device: DeviceSpec
    num_devices: int
    devices_per_node: int
    intra_node: Link
    inter_node: Link
    comm_overlaps_compute: bool
    allreduce: Link | None = None  # measured all-reduce, fitted on ring traffic (see module docstring)
    inner_dim_reshard: Link | None = None  # measured move of a tensor split on its last dim (module docstring)
    # Whether a partial sum that each device then slices is summed by a reduce-scatter, or by an all-reduce
    # of the whole box, which is what XLA was seen to compile (XLA:CPU over gloo: a channel-split AlexNet's
    # step all-reduces f32[128,4096] for fc7's input gradient; simulator.taskgraph._summed_incoming). No
    # preset claims reduce-scatters until a GPU's compiled step shows them.
    reduce_scatter: bool = False
    reduce_scatter_link: Link | None = None  # measured reduce-scatter, on the bytes each device sends
    combined_allreduce: Link | None = None  # measured (array, 1 KB array) pair of a combined all-reduce
    partial_sum_allreduce: Link | None = None  # measured all-reduce of a contraction's output in a step

    def __post_init__(self) -> None:
        _check_machine(self)

    def node_of(self, device: int) -> int:
        return device // self.devices_per_node

    def link(self, src: int, dst: int) -> Link:
        return self.intra_node if self.node_of(src) == self.node_of(dst) else self.inter_node

    def with_devices(self, num_devices: int) -> Machine:
        """The same machine with `num_devices` devices (nodes added or removed)."""
        return replace(self, num_devices=num_devices)


def _check_machine(machine: Machine) -> None:
    where = f"machine {machine.name!r}"
    if not isinstance(machine.num_devices, int) or machine.num_devices < 1:
        raise MachineError(f"{where}: num_devices must be >= 1, got {machine.num_devices}")
    if not isinstance(machine.devices_per_node, int) or machine.devices_per_node < 1:
        raise MachineError(f"{where}: devices_per_node must be >= 1, got {machine.devices_per_node}")
    links = {"intra_node": machine.intra_node, "inter_node": machine.inter_node}
    if machine.allreduce is not None:
        links["allreduce"] = machine.allreduce
    if machine.inner_dim_reshard is not None:
        links["inner_dim_reshard"] = machine.inner_dim_reshard
    if machine.reduce_scatter_link is not None:
        links["reduce_scatter_link"] = machine.reduce_scatter_link
    if machine.combined_allreduce is not None:
        links["combined_allreduce"] = machine.combined_allreduce
    if machine.partial_sum_allreduce is not None:
        links["partial_sum_allreduce"] = machine.partial_sum_allreduce
    positive = {
        "device.peak_flops_per_s": machine.device.peak_flops_per_s,
        "device.memory_bandwidth_bytes_per_s": machine.device.memory_bandwidth_bytes_per_s,
        "device.memory_bytes": machine.device.memory_bytes,
        **{f"{name}.bandwidth_bytes_per_s": link.bandwidth_bytes_per_s for name, link in links.items()},
    }
    for field, value in positive.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise MachineError(f"{where}: {field} must be a positive number, got {value!r}")
    for name, link in links.items():
        value = link.latency_s
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise MachineError(f"{where}: {name}.latency_s must be a number >= 0, got {value!r}")
        _check_measured(f"{where}: {name}.measured", link.measured)


def _check_measured(where: str, points) -> None:
    if not points:
        return
    numbers = all(isinstance(p, tuple) and len(p) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                              and v > 0 for v in p) for p in points)
    if not numbers or len(points) < 2:
        raise MachineError(f"{where} must be 2 or more [bytes, seconds] pairs of positive numbers, got {points!r}")
    sizes = [p[0] for p in points]
    if sizes != sorted(set(sizes)):
        raise MachineError(f"{where} must list distinct message sizes in increasing order, got {sizes}")


# Datasheet figures (shared/REFERENCE.md). Latencies are typical one-way software latencies.
P100_PCIE = DeviceSpec("P100-PCIE", 9.3e12, 732e9, 16 * GiB)
P100_SXM2 = DeviceSpec("P100-SXM2", 10.6e12, 732e9, 16 * GiB)
K80 = DeviceSpec("K80-GK210", 2.8e12, 240e9, 12 * GiB)
K20 = DeviceSpec("K20", 3.52e12, 208e9, 5 * GiB)  # Tesla K20 datasheet: 3.52 TFLOP/s FP32, 208 GB/s GDDR5, 5 GB
H100_SXM = DeviceSpec("H100-SXM", 67e12, 3.35e12, 80 * GiB)

PCIE3 = Link(12e9, 10e-6)        # PCIe 3.0 x16: 15.75 GB/s nominal per direction, ~12 measured
PCIE2 = Link(6e9, 10e-6)         # PCIe 2.0 x16: 8 GB/s nominal per direction (16 x 500 MB/s), ~6 achievable
NVLINK1 = Link(20e9, 5e-6)       # one NVLink 1 link per GPU pair: 20 GB/s per direction
NVLINK4 = Link(450e9, 3e-6)      # NVLink 4 through NVSwitch: 900 GB/s total, 450 per direction
EDR_IB = Link(12.5e9, 5e-6)      # 100 Gb/s EDR InfiniBand
FDR_IB = Link(7e9, 5e-6)         # 56 Gb/s FDR InfiniBand

PRESETS: dict[str, Machine] = {
    machine.name: machine
    for machine in (
        Machine("p100x2-pcie", P100_PCIE, 2, 2, PCIE3, PCIE3, comm_overlaps_compute=True),
        Machine("p100-4x4", P100_SXM2, 16, 4, NVLINK1, EDR_IB, comm_overlaps_compute=True),
        Machine("k80-16x4", K80, 64, 4, PCIE3, FDR_IB, comm_overlaps_compute=True),
        # Krizhevsky's one-weird-trick box: 8 K20s on PCIe 2.0. Each GPU pair gets its own link: no shared
        # switch or root-port contention (benchmarks/owt_table.py says what that leaves out).
        Machine("k20-pcie", K20, 8, 8, PCIE2, PCIE2, comm_overlaps_compute=True),
        Machine("h100x8", H100_SXM, 8, 8, NVLINK4, NVLINK4, comm_overlaps_compute=True),
    )
}


# Clusters that grow by whole nodes of the same kind, up to FlexFlow's largest runs; the others are fixed boxes.
GROWS_TO = {"p100-4x4": 64, "k80-16x4": 64}


def machine_preset(name: str, num_devices: int | None = None) -> Machine:
    """A named machine; `num_devices` uses that many of its devices (clusters grow by whole nodes)."""
    if name not in PRESETS:
        raise MachineError(f"unknown machine {name!r}; presets: {', '.join(PRESETS)}, or a path to a machine JSON")
    machine = PRESETS[name]
    return machine if num_devices is None else _resized(machine, num_devices, GROWS_TO.get(name, machine.num_devices))


def _resized(machine: Machine, num_devices: int, max_devices: int) -> Machine:
    if num_devices > max_devices:
        raise MachineError(f"machine {machine.name!r} has at most {max_devices} devices, {num_devices} were asked "
                           f"for; use fewer devices or a larger machine")
    return machine.with_devices(num_devices)


def machine_to_json(machine: Machine) -> str:
    document = {"format": FORMAT, "version": VERSION, **asdict(machine)}
    return json.dumps(document, indent=1)


def machine_from_json(text: str, source: str = "machine file") -> Machine:
    document = read_document(text, "machine", VERSION, source, MachineError, "see the schema in simulator/machine.py")
    device = _section(document, "device", ("kind", "peak_flops_per_s", "memory_bandwidth_bytes_per_s",
                                           "memory_bytes"), source)
    links = {name: _link(document, name, source) for name in ("intra_node", "inter_node")}
    missing = [k for k in ("name", "num_devices", "devices_per_node", "comm_overlaps_compute") if k not in document]
    if missing:
        raise MachineError(f"{source} is missing fields {missing}; see the schema in simulator/machine.py")
    allreduce, inner, scatter, combined, partial_sum = (
        _link(document, name, source) if document.get(name) is not None else None
        for name in ("allreduce", "inner_dim_reshard", "reduce_scatter_link", "combined_allreduce",
                     "partial_sum_allreduce"))
    return Machine(
        name=str(document["name"]), device=DeviceSpec(**device), num_devices=document["num_devices"],
        devices_per_node=document["devices_per_node"], intra_node=links["intra_node"],
        inter_node=links["inter_node"], comm_overlaps_compute=bool(document["comm_overlaps_compute"]),
        allreduce=allreduce, inner_dim_reshard=inner, reduce_scatter=bool(document.get("reduce_scatter", False)),
        reduce_scatter_link=scatter, combined_allreduce=combined, partial_sum_allreduce=partial_sum,
    )


def _link(document: dict, name: str, source: str) -> Link:
    section = _section(document, name, ("bandwidth_bytes_per_s", "latency_s"), source)
    measured = document[name].get("measured", [])
    if not isinstance(measured, list) or not all(isinstance(p, list) for p in measured):
        raise MachineError(f"{source}: {name!r}.measured must be a list of [bytes, seconds] pairs")
    return Link(**section, measured=tuple(tuple(p) for p in measured))


def _section(document: dict, name: str, fields: tuple[str, ...], source: str) -> dict:
    section = document.get(name)
    if not isinstance(section, dict):
        raise MachineError(f"{source} is missing the {name!r} object; see the schema in simulator/machine.py")
    missing = [f for f in fields if f not in section]
    if missing:
        raise MachineError(f"{source}: {name!r} is missing fields {missing}")
    return {f: section[f] for f in fields}


def load_machine(name_or_path: str, num_devices: int | None = None) -> Machine:
    """A preset by name, or a machine JSON file by path."""
    if name_or_path in PRESETS:
        return machine_preset(name_or_path, num_devices)
    if not name_or_path.endswith(".json"):
        raise MachineError(f"unknown machine {name_or_path!r}; presets: {', '.join(PRESETS)}, "
                           f"or a path to a machine JSON")
    try:
        with open(name_or_path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise MachineError(f"cannot read machine file {name_or_path!r}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise MachineError(f"machine file {name_or_path!r} is not a text file (not UTF-8); pass a machine JSON "
                           f"(python -m simulator.calibrate writes one) or a preset: {', '.join(PRESETS)}") from None
    machine = machine_from_json(text, source=name_or_path)
    return machine if num_devices is None else _resized(machine, num_devices, machine.num_devices)
