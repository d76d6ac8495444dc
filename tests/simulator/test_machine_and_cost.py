"""Machines (presets, JSON files) and cost models (roofline, measured profiles): values and bad input."""

import json

import pytest

from models.op import local_op
from models.zoo import build_graph
from simulator.cost import OpCost, ProfileEntry, RooflineCostModel, TableCostModel, profile_from_json
from soap.timing import Estimate
from simulator.errors import MachineError, ProfileError
from simulator.machine import PRESETS, load_machine, machine_from_json, machine_preset, machine_to_json

GRAPH = build_graph("alexnet", "tiny-imagenet", 128)


def test_presets_and_links():
    cluster = machine_preset("p100-4x4", num_devices=64)
    assert cluster.num_devices == 64 and cluster.node_of(63) == 15
    assert cluster.link(0, 3).bandwidth_bytes_per_s == 20e9  # NVLink inside a node
    assert cluster.link(3, 4).bandwidth_bytes_per_s == 12.5e9  # EDR between nodes
    assert machine_preset("p100x2-pcie").num_devices == 2
    assert set(PRESETS) >= {"p100x2-pcie", "p100-4x4", "k80-16x4", "h100x8"}
    assert cluster.link(0, 1).transfer_ms(20e6) == pytest.approx(1.005)  # 5 us + 20 MB / 20 GB/s


def test_machine_json_round_trip(tmp_path):
    machine = machine_preset("k80-16x4", 8)
    assert machine_from_json(machine_to_json(machine)) == machine
    path = tmp_path / "m.json"
    path.write_text(machine_to_json(machine))
    assert load_machine(str(path)) == machine
    assert load_machine(str(path), 4).num_devices == 4


def _machine_doc(**changes):
    document = json.loads(machine_to_json(machine_preset("p100x2-pcie")))
    for dotted, value in changes.items():
        target = document
        *path, last = dotted.split("__")
        for part in path:
            target = target[part]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return json.dumps(document)


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("{", r"machine file is not valid JSON", id="malformed"),
        pytest.param(_machine_doc(format="x"), r'is not a SOAP machine \(needs "format": "soap-machine"\)', id="format"),
        pytest.param(_machine_doc(intra_node=None), r"is missing the 'intra_node' object", id="missing-link"),
        pytest.param(_machine_doc(device__memory_bytes=None), r"'device' is missing fields \['memory_bytes'\]",
                     id="missing-device-field"),
        pytest.param(_machine_doc(num_devices=None), r"is missing fields \['num_devices'\]", id="missing-count"),
        pytest.param(_machine_doc(num_devices=0), r"num_devices must be >= 1, got 0", id="zero-devices"),
        pytest.param(_machine_doc(intra_node__bandwidth_bytes_per_s=-5), r"intra_node.bandwidth_bytes_per_s must be "
                     r"a positive number, got -5", id="negative-bandwidth"),
        pytest.param(_machine_doc(inter_node__latency_s=-1), r"inter_node.latency_s must be a number >= 0, got -1",
                     id="negative-latency"),
    ],
)
def test_machine_file_errors(text, message):
    with pytest.raises(MachineError, match=message):
        machine_from_json(text)


def test_unknown_machine_and_unreadable_file():
    with pytest.raises(MachineError, match=r"unknown machine 'tpu'; presets: p100x2-pcie"):
        load_machine("tpu")
    with pytest.raises(MachineError, match=r"machine 'p100x2-pcie' has at most 2 devices, 4 were asked for"):
        load_machine("p100x2-pcie", 4)
    with pytest.raises(MachineError, match=r"machine 'p100-4x4' has at most 64 devices, 128 were asked for"):
        load_machine("p100-4x4", 128)
    with pytest.raises(MachineError, match=r"cannot read machine file '/nonexistent.json'"):
        load_machine("/nonexistent.json")


def test_roofline_worked_number():
    # conv1 at 64x64, batch 128, on a P100-PCIe: 1.52 GFLOP / (0.6 * 9.3e12 FLOP/s) = 0.273 ms.
    cost = RooflineCostModel(machine_preset("p100x2-pcie").device)
    conv1 = local_op(GRAPH.op("conv1"), (1, 1, 1, 1, 1))
    assert cost.op_cost(conv1, "P100-PCIE").forward_ms == pytest.approx(1_522_532_352 / (0.6 * 9.3e12) * 1e3)
    assert cost.op_cost(conv1, "P100-PCIE").forward_ms == pytest.approx(0.2729, abs=1e-4)
    # A pool is memory-bound: bytes / (0.6 * 732 GB/s).
    pool1 = local_op(GRAPH.op("pool1"), (1, 1, 1, 1))
    num_bytes = pool1.input_bytes + pool1.output_bytes
    assert cost.op_cost(pool1, "P100-PCIE").forward_ms == pytest.approx(num_bytes / (0.6 * 732e9) * 1e3)


def _profile(**changes):
    fc7 = local_op(GRAPH.op("fc7"), (2, 1, 1))
    entry = ProfileEntry(Estimate(3.0, 0.01, 5), Estimate(6.0, 0.02, 7),
                         (("adamw", Estimate(1.5, 0.01, 5)), ("sgd", Estimate(1.0, 0.01, 5))))
    table = TableCostModel("cpu-core", "0.10.2", {fc7.cost_key: entry})
    document = json.loads(table.to_json())
    document.update(changes)
    return json.dumps(document)


def test_profile_round_trip_and_lookup():
    table = profile_from_json(_profile(), "cpu-core", "0.10.2")
    fc7 = local_op(GRAPH.op("fc7"), (2, 1, 1))
    assert table.op_cost(fc7, "cpu-core") == OpCost(3.0, 6.0, 1.0)  # SGD's update, the runs' optimizer
    assert table.entries[fc7.cost_key].backward == Estimate(6.0, 0.02, 7)  # its spread and samples kept
    adamw = TableCostModel(table.device_kind, table.jax_version, table.entries, optimizer="adamw")
    assert adamw.op_cost(fc7, "cpu-core") == OpCost(3.0, 6.0, 1.5)


def test_a_profile_without_the_runs_optimizer_says_how_to_calibrate_it():
    fc7 = local_op(GRAPH.op("fc7"), (2, 1, 1))
    entry = ProfileEntry(Estimate(3.0, 0.01, 5), Estimate(6.0, 0.01, 5), (("sgd", Estimate(1.0, 0.01, 5)),))
    table = TableCostModel("cpu-core", "0.10.2", {fc7.cost_key: entry}, optimizer="adamw")
    with pytest.raises(ProfileError, match=r"profile has no adamw update for \[dense relu .*\]; calibrate with this "
                                           r"optimizer \(python -m simulator.calibrate --optimizer adamw\)"):
        table.op_cost(fc7, "cpu-core")


@pytest.mark.parametrize(
    "entry, problems",
    [
        pytest.param(ProfileEntry(Estimate(1.0, 0.01, 5), Estimate(2.0, 0.01, 5), (("sgd", Estimate(0.1, 0.01, 5)),)),
                     (), id="sound"),
        pytest.param(ProfileEntry(Estimate(1.0, 0.01, 5), Estimate(0.0, 0.01, 5), (("sgd", Estimate(0.1, 0.01, 5)),)),
                     ("backward 0.0 ms",), id="zero-backward"),
        pytest.param(ProfileEntry(Estimate(1.0, 0.25, 40), Estimate(2.0, 0.01, 5)),
                     ("forward spread +-25% over 40 samples (limit +-20%)", "sgd update not measured"), id="wide-no-update"),
        pytest.param(ProfileEntry(Estimate(-1.0, 0.01, 5), Estimate(2.0, 0.01, 5), (("sgd", Estimate(0.0, 0.0, 5)),)),
                     ("forward -1.0 ms", "sgd update 0.0 ms"), id="negative-and-zero-update"),
    ],
)
def test_an_entry_names_the_checks_it_fails(entry, problems):
    assert entry.problems(True, ("sgd",)) == problems


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("nope", r"profile is not valid JSON", id="malformed"),
        pytest.param(_profile(version=0), r"profile has version 0; this SOAP reads version 3", id="version"),
        pytest.param(_profile(jax_version="0.4.30"), r"profile is for jax_version '0.4.30', not '0.10.2'; "
                     r"calibrate on this machine", id="other-jax"),
        pytest.param(_profile(device_kind="gpu"), r"profile is for device_kind 'gpu', not 'cpu-core'", id="other-kind"),
        pytest.param(_profile(entries={"k": {"forward": {"ms": 1}}}), r"profile has a malformed entry \(KeyError\('spread'\)\); "
                     r"calibration sets it aside and measures again", id="bad-entry"),
        pytest.param(_profile(entries={"k": {"forward": {"ms": 1, "spread": 0, "repeats": 5}}}),
                     r"malformed entry \(KeyError\('backward'", id="no-backward"),
    ],
)
def test_profile_errors(text, message):
    with pytest.raises(ProfileError, match=message):
        profile_from_json(text, "cpu-core", "0.10.2")


def test_profile_missing_entry_names_the_op_and_shard_shape():
    table = profile_from_json(_profile(), "cpu-core", "0.10.2")
    fc6 = local_op(GRAPH.op("fc6"), (1, 2, 1))
    with pytest.raises(ProfileError, match=r"profile has no entry for \[dense relu in=128x256 out=128x2048 "
                                           r"params=256x2048,2048 float32\]; calibrate"):
        table.op_cost(fc6, "cpu-core")
    with pytest.raises(ProfileError, match=r"was measured on 'cpu-core' but the machine's devices are 'gpu'"):
        table.op_cost(fc6, "gpu")


def test_machine_with_a_measured_allreduce_and_reduce_scatter_round_trips():
    import dataclasses

    from simulator.machine import Link

    machine = dataclasses.replace(machine_preset("p100x2-pcie"), name="local", allreduce=Link(2e9, 3e-5))
    assert machine_from_json(machine_to_json(machine)) == machine
    curve = Link(1e9, 1e-4, measured=((4096.0, 1e-4), (8192.0, 2e-4)))
    scatter = dataclasses.replace(machine, reduce_scatter_link=curve)
    assert machine_from_json(machine_to_json(scatter)) == scatter
    combined = dataclasses.replace(machine, combined_allreduce=curve)
    assert machine_from_json(machine_to_json(combined)) == combined
    partial_sum = dataclasses.replace(machine, partial_sum_allreduce=curve)
    assert machine_from_json(machine_to_json(partial_sum)) == partial_sum
    with pytest.raises(MachineError, match="reduce_scatter_link.latency_s must be a number >= 0, got -1"):
        dataclasses.replace(machine, reduce_scatter_link=Link(1e9, -1))
    with pytest.raises(MachineError, match="allreduce.bandwidth_bytes_per_s must be a positive number, got 0"):
        dataclasses.replace(machine, allreduce=Link(0, 0.0))


MEASURED = ((4096.0, 4e-3), (1048576.0, 4e-3), (4194304.0, 8e-3), (16777216.0, 30e-3))


def test_a_measured_link_prices_by_its_timings():
    from simulator.machine import Link

    link = Link(0.5e9, 1e-3, measured=MEASURED)
    assert link.transfer_ms(100) == 4.0  # below the smallest size: the smallest's time
    assert link.transfer_ms(1048576) == pytest.approx(4.0)
    # Between 1 MiB (4 ms) and 4 MiB (8 ms), on the line: 2.5 MiB is half way.
    assert link.transfer_ms(2.5 * 1048576) == pytest.approx(6.0)
    # Beyond 16 MiB (30 ms): the fitted bandwidth, 16 MiB more at 0.5 GB/s = 33.554432 ms.
    assert link.transfer_ms(2 * 16777216) == pytest.approx(30 + 16777216 / 0.5e9 * 1e3)
    assert Link(0.5e9, 1e-3).transfer_ms(1e6) == pytest.approx(3.0)  # no timings: the line


def test_measured_links_round_trip_and_bad_timings():
    import dataclasses

    from simulator.machine import Link

    measured = Link(0.5e9, 1e-3, measured=MEASURED)
    machine = dataclasses.replace(machine_preset("p100x2-pcie"), name="local", intra_node=measured,
                                  inter_node=measured, allreduce=measured, inner_dim_reshard=measured)
    assert machine_from_json(machine_to_json(machine)) == machine
    with pytest.raises(MachineError, match=r"inner_dim_reshard.measured must list distinct message sizes in "
                                           r"increasing order, got \[4096.0, 4096.0\]"):
        dataclasses.replace(machine, inner_dim_reshard=Link(1e9, 0.0, measured=((4096.0, 1e-3), (4096.0, 2e-3))))
    with pytest.raises(MachineError, match=r"intra_node.measured must be 2 or more \[bytes, seconds\] pairs of "
                                           r"positive numbers, got \(\(4096.0, -1.0\),\)"):
        dataclasses.replace(machine, intra_node=Link(1e9, 0.0, measured=((4096.0, -1.0),)))
    with pytest.raises(MachineError, match=r"'allreduce'.measured must be a list of \[bytes, seconds\] pairs"):
        document = json.loads(machine_to_json(machine))
        document["allreduce"]["measured"] = "fast"
        machine_from_json(json.dumps(document))
