"""Calibration's pure parts: which ops to time, the cache, the link fits, the local machine."""

from dataclasses import replace

import pytest

from models.zoo import build_graph
from simulator.calibrate import (CachePaths, LinkTimings, cpu_kind, load_profile, local_machine, measured_links,
                                 overlaps, save_profile, with_entry)
from simulator.calibration_plan import needed_local_ops
from simulator.cost import OpCost, ProfileEntry
from simulator.machine import DeviceSpec
from soap.timing import Estimate
from tests.simulator.fakes import branchy_cnn

GRAPH = build_graph("alexnet", "tiny-imagenet", 128)


def _entry(forward_ms: float, backward_ms: float, update_ms: float | None = None) -> ProfileEntry:
    updates = () if update_ms is None else (("sgd", Estimate(update_ms, 0.01, 5)),)
    return ProfileEntry(Estimate(forward_ms, 0.01, 5), Estimate(backward_ms, 0.01, 5), updates)


def test_needed_local_ops_on_two_devices():
    ops = needed_local_ops(GRAPH, 2)
    keys = [op.cost_key for op in ops]
    assert len(keys) == len(set(keys))
    # Whole, or halved on one splittable dim whose size is even: conv1 (16x16, 4 even dims) 5; pool1,
    # conv2 (7x7) and pool2, conv3-5, pool5 (3x3, 1x1) split only batch or channels: 3 each, 7 ops;
    # flatten 2 (whole, batch); fc6, fc7 3 each, fc8 (no ReLU) 4 with its input channels halved; loss 2
    # -> 5 + 21 + 2 + 10 + 2 = 40.
    assert len(ops) == 40
    assert all(op.name == "" for op in ops)


def test_cache_round_trip_and_corrupt_file_is_set_aside(tmp_path):
    paths = CachePaths.of(tmp_path, "cpu core", "0.10.2", 2)
    assert paths.profile.name == "profile-cpu-core-jax0.10.2.json"
    profile = load_profile(paths.profile, "cpu core", "0.10.2")
    assert profile.entries == {}
    op = needed_local_ops(GRAPH, 1)[0]
    save_profile(paths.profile, with_entry(profile, op, _entry(1.5, 3.0, 0.5)))
    assert load_profile(paths.profile, "cpu core", "0.10.2").op_cost(op, "cpu core") == OpCost(1.5, 3.0, 0.5)
    paths.profile.write_text("{ truncated")
    said = []
    assert load_profile(paths.profile, "cpu core", "0.10.2", say=said.append).entries == {}
    assert "is unusable" in said[0] and "measuring again" in said[0]
    assert paths.profile.with_suffix(".bad").exists() and not paths.profile.exists()


def test_profile_of_another_jax_version_is_not_used(tmp_path):
    path = tmp_path / "p.json"
    save_profile(path, with_entry(load_profile(path, "cpu", "0.9.0"), needed_local_ops(GRAPH, 1)[0], _entry(1, 2, 1)))
    said = []
    assert load_profile(path, "cpu", "0.10.2", say=said.append).entries == {}
    assert "is for jax_version '0.9.0', not '0.10.2'" in said[0]


def test_measured_links_and_local_machine():
    sizes = (4096, 65536, 1 << 20, 16 << 20)
    # Resharding: 0.1 ms + received bytes / 1 GB/s (inner dim: / 0.25 GB/s); all-reduce on 2 devices: ring
    # traffic = bytes, 0.2 ms + bytes / 0.5 GB/s; reduce-scatter: half the bytes sent, 0.2 ms + that / 2 GB/s.
    timings = LinkTimings(sizes, tuple(0.1 + b / 1e6 for b in sizes), tuple(0.1 + b / 0.25e6 for b in sizes),
                          tuple(0.2 + b / 0.5e6 for b in sizes),
                          {"compute_ms": 48.6, "allreduce_ms": 53.4, "together_ms": 99.7},
                          tuple(0.2 + b / 2 / 2e6 for b in sizes), False, tuple(3.5 + b / 0.5e6 for b in sizes),
                          tuple(0.3 + b / 0.4e6 for b in sizes))
    links = measured_links(timings, 2)
    assert links.link == tuple((float(b), (0.1 + b / 1e6) / 1e3) for b in sizes)
    fit = links.fit("link")
    assert fit.bandwidth_bytes_per_s == pytest.approx(1e9) and fit.latency_s == pytest.approx(1e-4)
    assert links.fit("inner_dim_reshard").bandwidth_bytes_per_s == pytest.approx(0.25e9)
    assert links.fit("allreduce").bandwidth_bytes_per_s == pytest.approx(0.5e9)
    assert links.fit("allreduce").latency_s == pytest.approx(2e-4)
    assert [b for b, _ in links.reduce_scatter] == [b / 2 for b in sizes]
    assert links.fit("reduce_scatter").bandwidth_bytes_per_s == pytest.approx(2e9)
    assert links.combined_allreduce == tuple((float(b), (3.5 + b / 0.5e6) / 1e3) for b in sizes)
    assert links.fit("partial_sum_allreduce").bandwidth_bytes_per_s == pytest.approx(0.4e9)
    assert not overlaps(timings.overlap)  # the measured CPU figures of shared/REFERENCE.md
    assert overlaps({"compute_ms": 50, "allreduce_ms": 50, "together_ms": 55})
    machine = local_machine(DeviceSpec("cpu", 1e11, 1e10, 2**33), 2, links, False, False)
    assert not machine.reduce_scatter and machine.reduce_scatter_link.measured == links.reduce_scatter
    assert local_machine(machine.device, 2, links, False, True).reduce_scatter
    assert machine.name == "local" and machine.link(0, 1).bandwidth_bytes_per_s == pytest.approx(1e9)
    assert machine.link(0, 1).measured == links.link and machine.inner_dim_reshard.measured == links.inner_dim_reshard
    assert machine.allreduce.latency_s == pytest.approx(2e-4) and not machine.comm_overlaps_compute
    assert machine.combined_allreduce.measured == links.combined_allreduce
    assert machine.partial_sum_allreduce.measured == links.partial_sum_allreduce
    assert machine.link(0, 1).transfer_ms(1 << 20) == pytest.approx(0.1 + (1 << 20) / 1e6)
    # On 4 devices each receives 3x the bytes each holds: the timings are kept on what a device receives,
    # the all-reduce's on the ring's traffic 2(r-1)/r = 1.5x, the reduce-scatter's on (r-1)/r = 0.75x.
    four = measured_links(timings, 4)
    assert [b for b, _ in four.link] == [3.0 * b for b in sizes]
    assert [b for b, _ in four.allreduce] == [1.5 * b for b in sizes]
    assert [b for b, _ in four.reduce_scatter] == [0.75 * b for b in sizes]


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
    # Measured, not defaulted: the backwards together (about two forwards' work: the gradients of the
    # inputs and of the weights) take longer than the forwards.
    costs = [profile.op_cost(op, machine.device.kind) for op in needed_local_ops(graph, 1)]
    assert sum(c.backward_ms for c in costs) > sum(c.forward_ms for c in costs)
    # Each op with parameters carries its own update, timed on its own: none is 0 (fc7's 64 MiB kernel's
    # least of all); an op without parameters has none.
    ops = needed_local_ops(graph, 1)
    assert all(profile.entries[op.cost_key].updates == () for op in ops if not op.param_bytes)
    assert all(profile.entries[op.cost_key].update("sgd").ms > 0 for op in ops if op.param_bytes)
    assert Simulator(graph, machine, profile).full(single(graph, 1)).step_ms > 0
    said.clear()
    again, cached = calibrate(graph, 1, tmp_path, say=said.append)
    assert said == [] and cached.entries == profile.entries and again == machine


IN_ONE_PROCESS = """
import json, sys
from dataclasses import asdict
from pathlib import Path
import simulator.calibrate
from models.zoo import build_graph
from simulator.calibrate import calibrate, local_device_kind
from simulator.simulate import Simulator
from soap.baselines import data_parallel

link_jobs = []  # the link job's timings as read back, before they are priced (simulator.calibrate.LinkTimings)
priced = simulator.calibrate.measured_links


def recorded(timings, num_devices):
    link_jobs.append(asdict(timings))
    return priced(timings, num_devices)


simulator.calibrate.measured_links = recorded
graph = build_graph("alexnet", "tiny-imagenet", 2)
said = []
machine, profile = calibrate(graph, 2, Path(sys.argv[1]), say=said.append, in_process=True)
print(json.dumps({"said": said, "kind": machine.device.kind, "expected_kind": local_device_kind(2, True),
                  "devices": machine.num_devices, "link_points": machine.link(0, 1).measured,
                  "allreduce_points": machine.allreduce.measured, "entries": len(profile.entries),
                  "step_ms": Simulator(graph, machine, profile).full(data_parallel(graph, 2)).step_ms,
                  "link_jobs": link_jobs, "reduce_scatter": machine.reduce_scatter}))
"""


def test_calibrating_in_one_process_measures_its_own_devices(tmp_path):
    # The GPU path (one process drives all its devices), run on 2 CPU devices of one process.
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from simulator.calibration_plan import MESSAGE_SIZES

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    process = subprocess.run([sys.executable, "-c", IN_ONE_PROCESS, str(tmp_path)], capture_output=True, text=True,
                             env=env, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.splitlines()[-1])
    said = [line for line in result["said"]  # a busy CI: said, and the entries its noise spread too wide, flagged
            if not line.startswith(("note: other processes kept", "warning: flagged ["))]
    assert said[0].startswith("calibrating 40 op shapes of alexnet on one cpu")
    assert said[1] == "this takes about 1-3 minutes, once: later runs read the cache"  # 40 x 1.4-4 s
    # A CPU device reports no memory limit: the host's share that stands in for it is said, not silent.
    assert said[2].startswith("note: cpu reports no memory limit; each device is given the host's memory / 2")
    assert said[3].startswith("calibrating the links between 2 devices")
    assert result["kind"] == result["expected_kind"] and result["kind"].endswith("(cpu)")
    # Every message size measured (these points price every transfer), 64 MB slower than 4 KB.
    for points in (result["link_points"], result["allreduce_points"]):
        assert len(points) == 8 and points[-1][1] > points[0][1]
    assert result["devices"] == 2
    assert result["entries"] == 40 and result["step_ms"] > 0
    # The link job (simulator.calibrate_worker) in this one process: what the fits and the measured links
    # are made of, every size timed for both resharding kinds, the all-reduce, the reduce-scatter, the
    # combined all-reduce and a partial sum's all-reduce in a chain of denses.
    [links] = result["link_jobs"]
    assert links["sizes_bytes"] == list(MESSAGE_SIZES)
    for key in ("reshard_ms", "inner_reshard_ms", "allreduce_ms", "reduce_scatter_ms", "combined_allreduce_ms",
                "partial_sum_allreduce_ms"):
        assert len(links[key]) == len(MESSAGE_SIZES) and all(ms > 0 for ms in links[key]), key
    # XLA:CPU sums a row-split dense's output, then sliced on the sequence, by an all-reduce and a slice.
    assert links["emits_reduce_scatter"] is False and result["reduce_scatter"] is False


def test_the_inner_dim_array_of_the_link_job_is_split_on_its_columns():
    # 128 rows, split on its columns, 64 KB on each device.
    from simulator.measure import _per_device_columns, _ring_mesh

    columns = _per_device_columns(_ring_mesh(2), 65536)
    assert columns.shape == (128, 2 * 128) and columns.addressable_shards[0].data.shape == (128, 128)


def test_the_backward_is_timed_alone_from_the_residuals_of_its_forward():
    # The backward program is the pullback alone: fed the residuals a forward saved, it computes the input
    # gradient and the kernel gradient (two convolutions, no forward conv), equal to jax.vjp's.
    import jax
    import numpy as np

    from models.network import apply_op
    from models.op import local_op
    from simulator.measure import local_op_programs

    op = local_op(build_graph("resnet18", "tiny-imagenet", 2).op("res2a_branch2a"), (1, 1, 1, 1, 1))
    programs = local_op_programs(op)
    output, pullback = programs.forward_vjp(programs.params, programs.inputs)
    np.testing.assert_allclose(output, programs.forward(programs.params, programs.inputs), rtol=1e-5, atol=1e-5)
    assert programs.backward.lower(pullback, programs.cotangent).compile().as_text().count("convolution(") == 2
    _, reference = jax.vjp(lambda params, inputs: apply_op(op, params, inputs, None), programs.params, programs.inputs)
    for got, want in zip(jax.tree.leaves(programs.backward(pullback, programs.cotangent)),
                         jax.tree.leaves(reference(programs.cotangent))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_update_program_is_the_optimizers_step(optimizer):
    # SGD with momentum 0.9 at 0.01 (the runs'): the first step is params - 0.01 grads; AdamW's first step
    # moves each parameter by about its learning rate (1e-3), against its gradient's sign, after decay.
    import numpy as np

    from models.op import local_op
    from simulator.measure import local_op_programs, update_program

    params = local_op_programs(local_op(GRAPH.op("conv2"), (1, 1, 1, 1, 1))).params
    update, (params, opt_state, grads) = update_program(params, optimizer)
    new_params, _ = update(params, opt_state, grads)
    for name, value in params.items():
        if optimizer == "sgd":
            np.testing.assert_allclose(new_params[name], value - 0.01 * grads[name], rtol=1e-5, atol=1e-7)
        else:
            decayed = value * (1 - 1e-3 * 1e-4)
            np.testing.assert_allclose(new_params[name], decayed - 1e-3 * np.sign(grads[name]), atol=1e-5)


def test_an_op_without_parameters_gets_no_update():
    from models.op import local_op
    from simulator.measure import time_local_op
    from soap.timing import TimingPolicy

    entry = time_local_op(local_op(GRAPH.op("pool1"), (16, 1, 1, 1)), ("sgd", "adamw"), TimingPolicy(max_s=0.1))
    assert entry.updates == () and entry.forward.ms > 0 and entry.backward.ms > 0


def test_calibrating_a_cnn_with_a_branch_and_a_batch_norm_from_an_empty_cache_has_no_zero_component(tmp_path):
    from simulator.calibrate import calibrate

    graph = branchy_cnn(2)
    machine, profile = calibrate(graph, 1, tmp_path, say=lambda line: None, in_process=True, optimizer="adamw")
    ops = needed_local_ops(graph, 1)
    assert {op.cost_key for op in ops} == set(profile.entries)
    for op in ops:
        entry = profile.entries[op.cost_key]
        assert entry.forward.ms > 0 and entry.backward.ms > 0, op.cost_key
        assert (entry.update("adamw").ms > 0) if op.param_bytes else entry.updates == (), op.cost_key
        # A noisy machine may leave a tiny op's spread wide (flagged, kept); never a missing or zero component.
        assert entry.forward.repeats >= 5 and all("spread" in flag for flag in entry.flags), entry.flags
    # The profile prices the run's optimizer: AdamW here, and SGD is measured and kept beside it when asked.
    assert profile.optimizer == "adamw" and profile.op_cost(ops[0], machine.device.kind).update_ms > 0
    _, with_sgd = calibrate(graph, 1, tmp_path, say=lambda line: None, in_process=True)
    assert {name for name, _ in with_sgd.entries[ops[0].cost_key].updates} == {"adamw", "sgd"}


def _fake_measurements(zero_tries: int):
    """A measure_entry whose measurements give a 0 ms backward for the first `zero_tries` of each op, and
    the count of measurements per op."""
    from simulator.calibration_plan import INPUT_GRADIENT, OUTPUT
    from simulator.measure import measure_entry

    tries: dict[str, int] = {}

    def time_op(op, optimizers, transposed=()):
        tries[op.cost_key] = tries.get(op.cost_key, 0) + 1
        backward_ms = 0.0 if tries[op.cost_key] <= zero_tries else 2.0
        updates = tuple((name, Estimate(0.5, 0.01, 5)) for name in optimizers) if op.param_bytes else ()
        copy = Estimate(1.5, 0.01, 5)
        return ProfileEntry(Estimate(1.0, 0.01, 5), Estimate(backward_ms, 0.01, 5), updates,
                            forward_transposed=copy if OUTPUT in transposed else None,
                            backward_transposed=copy if INPUT_GRADIENT in transposed else None)

    return (lambda op, optimizers, transposed=(): measure_entry(op, optimizers, transposed, time_op)), tries


def test_an_entry_measured_0_is_measured_again(monkeypatch, tmp_path):
    from simulator import measure
    from simulator.calibrate import calibrate

    fake, tries = _fake_measurements(zero_tries=2)
    monkeypatch.setattr(measure, "measure_entry", fake)
    _, profile = calibrate(branchy_cnn(2), 1, tmp_path, say=lambda line: None, in_process=True)
    assert set(tries.values()) == {3}
    assert all(entry.backward.ms == 2.0 and entry.flags == () for entry in profile.entries.values())


def test_an_entry_that_stays_0_is_flagged_said_and_kept_and_the_calibration_goes_on(monkeypatch, tmp_path):
    import json

    from simulator import measure
    from simulator.calibrate import CachePaths, calibrate
    from simulator.simulate import Simulator
    from soap.baselines import single

    fake, tries = _fake_measurements(zero_tries=99)
    monkeypatch.setattr(measure, "measure_entry", fake)
    graph = branchy_cnn(2)
    said = []
    machine, profile = calibrate(graph, 1, tmp_path, say=said.append, in_process=True)
    assert set(tries.values()) == {3}  # MEASUREMENTS, then no more
    flagged = [line for line in said if line.startswith("warning: flagged [")]
    assert len(flagged) == len(needed_local_ops(graph, 1))
    assert flagged[0].endswith("]: backward 0.0 ms (kept after 3 measurements; the calibration goes on)")
    written = json.loads(CachePaths.of(tmp_path, machine.device.kind, profile.jax_version, 1).profile.read_text())
    assert all(entry["flags"] == ["backward 0.0 ms"] for entry in written["entries"].values())
    assert Simulator(graph, machine, profile).full(single(graph, 1)).step_ms > 0


def test_a_profile_of_an_older_format_is_measured_again(monkeypatch, tmp_path):
    import json

    from simulator import measure
    from simulator.calibrate import calibrate

    fake, tries = _fake_measurements(zero_tries=0)
    monkeypatch.setattr(measure, "measure_entry", fake)
    graph = branchy_cnn(2)
    machine, _ = calibrate(graph, 1, tmp_path, say=lambda line: None, in_process=True)
    profile_path = next(tmp_path.glob("profile-*.json"))
    old = json.loads(profile_path.read_text())
    old.update(version=2, entries={key: {"forward_ms": 1.0, "backward_ms": 0.0, "update_ms": 0.0}
                                   for key in old["entries"]})  # version 2: components as clamped differences
    profile_path.write_text(json.dumps(old))
    said = []
    _, profile = calibrate(graph, 1, tmp_path, say=said.append, in_process=True)
    assert "has version 2; this SOAP reads version 3" in said[0] and "measuring again" in said[0]
    assert set(tries.values()) == {2}  # every op measured once more
    assert all(entry.backward.ms == 2.0 for entry in profile.entries.values())


def test_a_calibration_of_a_minute_or_more_on_cpu_says_how_long_before_it_starts():
    from simulator.calibrate import _expected_minutes
    assert _expected_minutes(133, "cpu-core x2") == pytest.approx((133 * 1.4 / 60, 133 * 4.0 / 60))
    assert _expected_minutes(10, "cpu-core x2") is None  # under a minute: nothing said
    assert _expected_minutes(500, "NVIDIA H100 80GB HBM3 (gpu)") is None


def test_remeasuring_times_every_op_or_the_links_again_though_cached(tmp_path, monkeypatch):
    """--recalibrate and drift (simulator.drift) ask calibrate to measure again what the cache holds: a
    fake job runner stands for the workers and records what each job measures."""
    import simulator.calibrate as calibrate_module
    from simulator.calibration_plan import MESSAGE_SIZES
    from simulator.cost import entry_from_json, entry_to_json

    graph = branchy_cnn(4)
    needed = {op.cost_key: op for op in needed_local_ops(graph, 2)}
    jobs = []

    def fake_job(job, read_results, timeout_s, in_process, say, on_poll=None, what=None):
        if job["ops"]:
            jobs.append(("ops", len(needed) - len(job["skip"])))
            return {key: _entry(1.0, 2.0, 0.1 if op.param_bytes else None) for key, op in needed.items()
                    if key not in job["skip"]}, None
        jobs.append(("links", None))
        ms = [0.5 + b / 1e6 for b in MESSAGE_SIZES]
        return {"sizes_bytes": list(MESSAGE_SIZES), "reshard_ms": ms, "inner_reshard_ms": ms, "allreduce_ms": ms,
                "overlap": {"compute_ms": 50, "allreduce_ms": 50, "together_ms": 100}, "reduce_scatter_ms": ms,
                "emits_reduce_scatter": False, "combined_allreduce_ms": ms, "partial_sum_allreduce_ms": ms}, None

    monkeypatch.setattr(calibrate_module, "run_calibration_job", fake_job)
    calibrate = calibrate_module.calibrate
    quiet = {"say": lambda line: None, "in_process": False}
    calibrate(graph, 2, tmp_path, **quiet)
    assert jobs == [("ops", len(needed)), ("links", None)]
    assert CachePaths.of(tmp_path, cpu_kind(2), "x", 2).links_plot.suffix == ".png"
    assert len(list(tmp_path.glob("machine-local-2-*.png"))) == 1
    jobs.clear()
    calibrate(graph, 2, tmp_path, **quiet)
    assert jobs == []
    calibrate(graph, 2, tmp_path, **quiet, remeasure_ops=True)
    assert jobs == [("ops", len(needed))]
    jobs.clear()
    calibrate(graph, 2, tmp_path, **quiet, remeasure_links=True)
    assert jobs == [("links", None)]
    # When an entry was measured travels with it; one written without it reads back as unknown (None).
    stamped = replace(_entry(1.0, 2.0), measured_at_s=1.8e9)
    assert entry_from_json(entry_to_json(stamped)) == stamped
    record = entry_to_json(_entry(1.0, 2.0))
    del record["measured_at"]
    assert entry_from_json(record).measured_at_s is None


def test_every_local_op_of_a_tiny_gpt_on_two_devices_runs_its_programs():
    # The programs calibration times for every local op of a token model's space (sample, sequence, heads,
    # hidden column/row and vocabulary splits): ids int32 over the whole vocabulary, labels per token,
    # every input of attention, add and the head, the tied table read but its update left to its owner.
    import jax
    import jax.numpy as jnp

    from models.network import own_param_shapes
    from models.zoo import FamilyOptions
    from simulator.measure import local_op_programs, update_program

    graph = build_graph("gpt2", "tokens", 4, FamilyOptions(depth=1, width=32, heads=2, vocab=64, seq_len=8))
    ops = needed_local_ops(graph, 2)
    assert {op.kind.value for op in ops} >= {"embedding", "attention", "attend", "token_xent", "layer_norm", "dense"}
    for op in ops:
        programs = local_op_programs(op)
        assert [x.dtype for x in programs.inputs] == [jnp.dtype(d) for d in op.spec.input_dtypes(op)]
        assert [x.shape for x in programs.inputs] == list(op.input_shapes)
        output, pullback = programs.forward_vjp(programs.params, programs.inputs)
        assert output.shape == op.output_shape and bool(jnp.all(jnp.isfinite(output))), op.cost_key
        grads = jax.tree.leaves(programs.backward(pullback, programs.cotangent))
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads), op.cost_key
        own = {name: programs.params[name] for name in own_param_shapes(op)}
        if own:
            update, arguments = update_program(own, "adamw")
            jax.block_until_ready(update(*arguments))
        if op.tied:  # the head reads wte's table: its gradient is computed here, its update is wte's
            assert "embedding" in programs.params and "embedding" not in own
    lookups = [op for op in ops if op.kind.value == "embedding"]
    shard = next(op for op in lookups if op.attrs is not None)  # the vocabulary split: a masked lookup
    ids = local_op_programs(shard).inputs[0]
    assert shard.attrs.vocab == 64 and shard.param_shapes == (("embedding", (32, 32)),)
    assert int(ids.max()) >= 32 and int(ids.min()) < 32  # ids of both shards, those of the other look up 0
    assert all(op.attrs is None for op in lookups if op is not shard)

