"""Calibration's pure parts: which ops to time, the cache, the link fits, the local machine."""

import pytest

from models.zoo import build_graph
from simulator.calibrate import (CachePaths, LinkTimings, load_profile, local_machine, measured_links, overlaps,
                                 save_profile, with_entry)
from simulator.calibration_plan import needed_local_ops
from simulator.cost import OpCost
from simulator.machine import DeviceSpec

GRAPH = build_graph("alexnet", "tiny-imagenet", 128)


def test_needed_local_ops_on_two_devices():
    ops = needed_local_ops(GRAPH, 2)
    keys = [op.cost_key for op in ops]
    assert len(keys) == len(set(keys))
    # Whole, or halved on one splittable dim whose size is even: conv1 (16x16, 4 even dims) 5; pool1,
    # conv2 (7x7) and pool2, conv3-5, pool5 (3x3, 1x1) split only batch or channels: 3 each, 7 ops;
    # flatten 2 (whole, batch); fc6-fc8 3 each; loss 2 -> 5 + 21 + 2 + 9 + 2 = 39.
    assert len(ops) == 39
    assert all(op.name == "" for op in ops)


def test_cache_round_trip_and_corrupt_file_is_set_aside(tmp_path):
    paths = CachePaths.of(tmp_path, "cpu core", "0.10.2", 2)
    assert paths.profile.name == "profile-cpu-core-jax0.10.2.json"
    profile = load_profile(paths.profile, "cpu core", "0.10.2")
    assert profile.entries == {}
    op = needed_local_ops(GRAPH, 1)[0]
    save_profile(paths.profile, with_entry(profile, op, OpCost(1.5, 3.0)))
    assert load_profile(paths.profile, "cpu core", "0.10.2").op_cost(op, "cpu core") == OpCost(1.5, 3.0)
    paths.profile.write_text("{ truncated")
    said = []
    assert load_profile(paths.profile, "cpu core", "0.10.2", say=said.append).entries == {}
    assert "is unusable" in said[0] and "measuring again" in said[0]
    assert paths.profile.with_suffix(".bad").exists() and not paths.profile.exists()


def test_profile_of_another_jax_version_is_not_used(tmp_path):
    path = tmp_path / "p.json"
    save_profile(path, with_entry(load_profile(path, "cpu", "0.9.0"), needed_local_ops(GRAPH, 1)[0], OpCost(1, 2)))
    said = []
    assert load_profile(path, "cpu", "0.10.2", say=said.append).entries == {}
    assert "is for jax_version '0.9.0', not '0.10.2'" in said[0]


def test_measured_links_and_local_machine():
    sizes = (4096, 65536, 1 << 20, 16 << 20)
    # Resharding: 0.1 ms + received bytes / 1 GB/s (inner dim: / 0.25 GB/s); all-reduce on 2 devices: ring
    # traffic = bytes, 0.2 ms + bytes / 0.5 GB/s.
    timings = LinkTimings(sizes, tuple(0.1 + b / 1e6 for b in sizes), tuple(0.1 + b / 0.25e6 for b in sizes),
                          tuple(0.2 + b / 0.5e6 for b in sizes),
                          {"compute_ms": 48.6, "allreduce_ms": 53.4, "together_ms": 99.7})
    links = measured_links(timings, 2)
    assert links.link == tuple((float(b), (0.1 + b / 1e6) / 1e3) for b in sizes)
    fit = links.fit("link")
    assert fit.bandwidth_bytes_per_s == pytest.approx(1e9) and fit.latency_s == pytest.approx(1e-4)
    assert links.fit("inner_dim_reshard").bandwidth_bytes_per_s == pytest.approx(0.25e9)
    assert links.fit("allreduce").bandwidth_bytes_per_s == pytest.approx(0.5e9)
    assert links.fit("allreduce").latency_s == pytest.approx(2e-4)
    assert not overlaps(timings.overlap)  # the measured CPU figures of shared/REFERENCE.md
    assert overlaps({"compute_ms": 50, "allreduce_ms": 50, "together_ms": 55})
    machine = local_machine(DeviceSpec("cpu", 1e11, 1e10, 2**33), 2, links, False)
    assert machine.name == "local" and machine.link(0, 1).bandwidth_bytes_per_s == pytest.approx(1e9)
    assert machine.link(0, 1).measured == links.link and machine.inner_dim_reshard.measured == links.inner_dim_reshard
    assert machine.allreduce.latency_s == pytest.approx(2e-4) and not machine.comm_overlaps_compute
    assert machine.link(0, 1).transfer_ms(1 << 20) == pytest.approx(0.1 + (1 << 20) / 1e6)
    # On 4 devices each receives 3x the bytes each holds: the timings are kept on what a device receives,
    # and the all-reduce's on the ring's traffic 2(r-1)/r = 1.5x.
    four = measured_links(LinkTimings(sizes, timings.reshard_ms, timings.inner_reshard_ms, timings.allreduce_ms,
                                      timings.overlap), 4)
    assert [b for b, _ in four.link] == [3.0 * b for b in sizes]
    assert [b for b, _ in four.allreduce] == [1.5 * b for b in sizes]


def test_calibrating_a_small_graph_on_the_cpu_writes_a_valid_profile_then_hits_the_cache(tmp_path):
    from simulator.calibrate import calibrate, cpu_kind
    from simulator.simulate import Simulator
    from soap.baselines import single

    graph = build_graph("alexnet", "tiny-imagenet", 2)
    said = []
    machine, profile = calibrate(graph, 1, tmp_path, say=said.append)
    assert said and said[0].startswith("calibrating 13 op shapes of alexnet on 1 pinned cores at once")
    assert machine.name == "local" and machine.num_devices == 1 and machine.device.kind == cpu_kind(1)
    assert cpu_kind(1).endswith("(1 busy)")
    assert {op.cost_key for op in needed_local_ops(graph, 1)} == set(profile.entries)
    # Measured, not defaulted: every forward takes time, and the backwards together (about two forwards'
    # work: the gradients of the inputs and of the weights) take longer than the forwards.
    assert all(cost.forward_ms > 0 for cost in profile.entries.values())
    assert sum(c.backward_ms for c in profile.entries.values()) > sum(c.forward_ms for c in profile.entries.values())
    # Each op with parameters carries its own update time, measured: fc7's 64 MiB kernel takes time.
    ops = needed_local_ops(graph, 1)
    assert all(profile.entries[op.cost_key].update_ms == 0 for op in ops if not op.param_bytes)
    assert profile.entries[max(ops, key=lambda op: op.param_bytes).cost_key].update_ms > 0
    assert Simulator(graph, machine, profile).full(single(graph, 1)).step_ms > 0
    said.clear()
    again, cached = calibrate(graph, 1, tmp_path, say=said.append)
    assert said == [] and cached.entries == profile.entries and again == machine


IN_ONE_PROCESS = """
import json, sys
from pathlib import Path
from models.zoo import build_graph
from simulator.calibrate import calibrate, local_device_kind
from simulator.simulate import Simulator
from soap.baselines import data_parallel

graph = build_graph("alexnet", "tiny-imagenet", 2)
said = []
machine, profile = calibrate(graph, 2, Path(sys.argv[1]), say=said.append, in_process=True)
print(json.dumps({"said": said, "kind": machine.device.kind, "expected_kind": local_device_kind(2, True),
                  "devices": machine.num_devices, "link_points": machine.link(0, 1).measured,
                  "allreduce_points": machine.allreduce.measured, "entries": len(profile.entries),
                  "step_ms": Simulator(graph, machine, profile).full(data_parallel(graph, 2)).step_ms}))
"""


def test_calibrating_in_one_process_measures_its_own_devices(tmp_path):
    # The GPU path (one process drives all its devices), run on 2 CPU devices of one process.
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    process = subprocess.run([sys.executable, "-c", IN_ONE_PROCESS, str(tmp_path)], capture_output=True, text=True,
                             env=env, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.splitlines()[-1])
    said = [line for line in result["said"] if not line.startswith("note: other processes kept")]  # a busy CI
    assert said[0].startswith("calibrating 39 op shapes of alexnet on one cpu")
    # A CPU device reports no memory limit: the host's share that stands in for it is said, not silent.
    assert said[1].startswith("note: cpu reports no memory limit; each device is given the host's memory / 2")
    assert said[2].startswith("calibrating the links between 2 devices")
    assert result["kind"] == result["expected_kind"] and result["kind"].endswith("(cpu)")
    # Every message size measured (these points price every transfer), 64 MB slower than 4 KB.
    for points in (result["link_points"], result["allreduce_points"]):
        assert len(points) == 8 and points[-1][1] > points[0][1]
    assert result["devices"] == 2
    assert result["entries"] == 39 and result["step_ms"] > 0


def test_the_link_job_times_every_message_size_in_this_process(tmp_path):
    # The calibration worker's link job on 2 of this process's CPU devices (no cluster): what the fits and
    # the measured links are made of, every size timed for both resharding kinds and the all-reduce.
    import json

    from simulator.calibration_plan import MESSAGE_SIZES
    from simulator.calibrate_worker import run_job
    from simulator.measure import _per_device_columns, _ring_mesh

    job = {"graph": None, "num_devices": 2, "skip": [], "ops": False, "links": True}  # no ops: no graph read
    run_job(job, tmp_path, reporter=True)
    links = json.loads((tmp_path / "links.json").read_text())
    assert links["sizes_bytes"] == list(MESSAGE_SIZES)
    for key in ("reshard_ms", "inner_reshard_ms", "allreduce_ms"):
        assert len(links[key]) == len(MESSAGE_SIZES) and all(ms > 0 for ms in links[key])
    # The inner-dim array: 128 rows, split on its columns, 64 KB on each device.
    columns = _per_device_columns(_ring_mesh(2), 65536)
    assert columns.shape == (128, 2 * 128) and columns.addressable_shards[0].data.shape == (128, 128)


def test_the_timed_forward_and_backward_keeps_the_forward_of_a_conv_without_relu():
    # Its gradients do not read its output: a program returning only the gradients let XLA drop the forward
    # conv, and backward = total - forward came out short by it. Kept: the forward, the input gradient and
    # the kernel gradient, three convolutions, and the output equals the forward program's.
    import numpy as np

    from models.op import local_op
    from simulator.measure import local_op_programs

    op = local_op(build_graph("resnet18", "tiny-imagenet", 2).op("res2a_branch2a"), (1, 1, 1, 1))
    assert not op.relu
    (forward, forward_args), (forward_backward, args), (update, update_args) = local_op_programs(op)
    output, (grads, _) = forward_backward(*args)
    np.testing.assert_allclose(output, forward(*forward_args), rtol=1e-5, atol=1e-5)
    assert forward_backward.lower(*args).compile().as_text().count("convolution(") == 3
    # The update program is the step's: SGD with momentum 0.9 at 0.01, whose first step is params - 0.01 grads.
    (updated_output, _), new_params, _ = update(*update_args)
    np.testing.assert_allclose(updated_output, output, rtol=1e-6)
    for name, value in update_args[1].items():
        np.testing.assert_allclose(new_params[name], value - 0.01 * grads[name], rtol=1e-5, atol=1e-7)


def test_an_op_without_parameters_has_no_update_program():
    from models.op import local_op
    from simulator.measure import local_op_programs

    assert local_op_programs(local_op(GRAPH.op("pool1"), (1, 1, 1, 1)))[2] is None
