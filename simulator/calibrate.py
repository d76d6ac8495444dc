"""Calibrate the simulator on the devices at hand: per-op timings and link fits, cached on disk.

    python -m simulator.calibrate --model alexnet --gpus 2
    python -m simulator.calibrate --model gpt2 --depth 4 --width 256 --heads 4 --vocab 4096 --seq-len 128 \
        --batch-size 16 --gpus 2 --optimizer adamw
    python -m search.optimize --model alexnet --gpus 2 --machine local     # calibrates (or loads) first

1. Every local op (models.op.local_op) that the SOAP space can produce for the model on N devices is
   timed, forward, backward and the optimizer update each as its own program (simulator.measure), on one
   device: on the CPU, a pinned core of a local-cluster worker
   (soap.devices) while the N workers all time the same ops at once, as in a parallel step; on GPUs,
   the first GPU of this process, which drives them all (the links below are measured the same way).
   Timings go into a profile (simulator.cost.TableCostModel) keyed by device kind, JAX version (with
   models.network.OPS_VERSION, how the ops are computed) and the local op's cost key; a second run finds
   them in the cache. An entry that fails its checks (a component not above 0, an interval wider than
   +-20%) is measured again; after 3 measurements it is kept, flagged in the profile and said, and the
   calibration goes on.
2. Resharding (XLA's all-gather, how a step's program moves the slices a task reads from other devices),
   all-reduce and reduce-scatter are timed between the N devices (or workers) from 4 KB to 64 MB, priced by the
   non-decreasing curve through the timings and fitted to latency + bytes / bandwidth (simulator.linkfit);
   whether communication overlaps compute is measured too, and whether XLA compiles a partial sum that each
   device slices (sequence parallelism's row-split dense) into a reduce-scatter (XLA:CPU: an all-reduce). The result is the machine `local`, written
   beside the profile with a plot of its links (the machine file's name, .png).
A corrupt cache file, or one written by another profile format, is reported, set aside and measured
again; a profile of another device kind or JAX version is never used.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from models.cli import OneLineParser, positive_int, run_command, write_atomic
from models.errors import SoapError
from models.graph import OpGraph
from models.graph_file import graph_to_json
from models.op import Op
from simulator.calibration_plan import INPUT_GRADIENT, OUTPUT, needed_local_ops, transposed_copies_by_key
from simulator.cost import MEASUREMENTS, OPTIMIZERS, ProfileEntry, TableCostModel, entry_from_json, profile_from_json
from simulator.errors import ProfileError
from simulator.linkfit import LinkFit, fit_link, monotonic_points, plot_links
from simulator.machine import DeviceSpec, Link, Machine, machine_from_json, machine_to_json
from soap.optimizer import Optimizer

# How the links are measured; a machine cached by another version is measured again. 2: resharding
# (all-gather) instead of a ppermute ring, which priced transfers 2-2.5x too cheap on gloo. 3: resharding
# an inner dim (split channels) measured apart, 2-3x slower than the leading dim at 4-16 MB; links priced
# by their timings, not a fitted line. 4: each point under the ops' timing policy (soap.timing.time_until_stable,
# a fixed count of samples: simulator.measure.COLLECTIVE_POLICY), priced by a non-decreasing curve
# (simulator.linkfit). 5: the median of those samples, not the first quartile. 6: reduce-scatter timed too,
# and whether XLA compiles a row-split dense's sliced partial sum into one (Machine.reduce_scatter).
LINKS_VERSION = 8
# Arrays an update moves per parameter. SGD with momentum: param, grad, momentum read; momentum, param
# written. AdamW: param, grad and both moments read; the moments and param written.
DEFAULT_CACHE = Path(os.environ.get("SOAP_CACHE", Path.home() / ".cache" / "soap"))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text).strip("-")


@dataclass(frozen=True)
class CachePaths:
    profile: Path
    machine: Path
    links_plot: Path  # the machine's link timings and their fits (simulator.linkfit.plot_links)

    @classmethod
    def of(cls, cache_dir: Path, device_kind: str, jax_version: str, num_devices: int) -> CachePaths:
        stem = f"{_slug(device_kind)}-jax{jax_version}"
        machine = f"machine-local-{num_devices}-links{LINKS_VERSION}-{stem}"
        return cls(cache_dir / f"profile-{stem}.json", cache_dir / f"{machine}.json", cache_dir / f"{machine}.png")


def load_profile(path: Path, device_kind: str, jax_version: str, say=print) -> TableCostModel:
    """The cached profile, or an empty one; a corrupt, foreign or older-format file is said, set aside and
    rebuilt."""
    empty = TableCostModel(device_kind, jax_version, {}, str(path))
    if not path.exists():
        return empty
    try:
        return profile_from_json(path.read_text(), device_kind, jax_version, source=str(path))
    except (ProfileError, OSError, UnicodeDecodeError) as error:
        aside = path.with_suffix(".bad")
        path.replace(aside)
        say(f"calibration cache {path} is unusable ({error}); moved to {aside.name}, measuring again")
        return empty


def check_cache_dir(cache_dir: Path) -> None:
    """ProfileError (one line) before anything is measured if the cache folder cannot be created or written."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as error:
        raise ProfileError(f"the calibration cache folder {str(cache_dir)!r} cannot be written ({error.strerror}); "
                           f"set SOAP_CACHE (or --cache-dir) to a writable folder") from None


def save_profile(path: Path, profile: TableCostModel) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(str(path), profile.to_json())  # an interrupted write never leaves a corrupt profile


def with_entry(profile: TableCostModel, op: Op, entry: ProfileEntry) -> TableCostModel:
    return _with_entries(profile, {op.cost_key: entry})


@dataclass(frozen=True)
class LinkTimings:
    """Measured milliseconds per message size (bytes held by each device): resharding a split array to
    whole on every device (simulator.measure.time_reshard_ms), split on its leading dim and on an inner
    dim, an all-reduce and a reduce-scatter over all devices; and whether XLA emits reduce-scatters
    (simulator.measure.emits_reduce_scatter)."""

    sizes_bytes: tuple[int, ...]
    reshard_ms: tuple[float, ...]
    inner_reshard_ms: tuple[float, ...]
    allreduce_ms: tuple[float, ...]
    overlap: dict  # simulator.measure.time_overlap's figures
    reduce_scatter_ms: tuple[float, ...]
    emits_reduce_scatter: bool
    combined_allreduce_ms: tuple[float, ...]  # per (array, 1 KB) pair of one combined all-reduce
    partial_sum_allreduce_ms: tuple[float, ...]  # a dense's output all-reduced in a chain of denses


@dataclass(frozen=True)
class MeasuredLinks:
    """Each measured link: the timings on the bytes a device receives (resharding, (N-1) * bytes) or sends
    (all-reduce, the ring's 2(r-1)/r * bytes; reduce-scatter, (r-1)/r * bytes), priced by their
    non-decreasing curve, with the fitted line (simulator.linkfit) for its latency, bandwidth above the
    largest size, and fit quality."""

    link: tuple[tuple[float, float], ...]  # resharding on the leading dim
    inner_dim_reshard: tuple[tuple[float, float], ...]
    allreduce: tuple[tuple[float, float], ...]
    reduce_scatter: tuple[tuple[float, float], ...]
    combined_allreduce: tuple[tuple[float, float], ...]  # on the ring traffic of the pair's large array
    partial_sum_allreduce: tuple[tuple[float, float], ...]  # on ring traffic

    def fit(self, name: str) -> LinkFit:
        points = getattr(self, name)
        return fit_link([b for b, _ in points], [s for _, s in points])

    def as_link(self, name: str) -> Link:
        fit = self.fit(name)
        return Link(fit.bandwidth_bytes_per_s, fit.latency_s, measured=monotonic_points(getattr(self, name)))

    def plot(self, path: Path, title: str) -> None:
        """The links' timings, priced curves and fitted lines in one figure."""
        plot_links(str(path), {name: (getattr(self, name), self.as_link(name).measured, self.fit(name))
                               for name in ("link", "inner_dim_reshard", "allreduce", "reduce_scatter",
                                            "combined_allreduce", "partial_sum_allreduce")}, title)


def measured_links(timings: LinkTimings, num_devices: int) -> MeasuredLinks:
    received = [(num_devices - 1) * b for b in timings.sizes_bytes]
    ring = [2 * (num_devices - 1) / num_devices * b for b in timings.sizes_bytes]
    scattered = [(num_devices - 1) / num_devices * b for b in timings.sizes_bytes]

    def points(sizes: list[float], ms: tuple[float, ...]) -> tuple[tuple[float, float], ...]:
        return tuple((float(b), m / 1e3) for b, m in zip(sizes, ms))

    return MeasuredLinks(points(received, timings.reshard_ms), points(received, timings.inner_reshard_ms),
                         points(ring, timings.allreduce_ms), points(scattered, timings.reduce_scatter_ms),
                         points(ring, timings.combined_allreduce_ms), points(ring, timings.partial_sum_allreduce_ms))


def overlaps(overlap: dict) -> bool:
    """Communication overlaps compute when both together take clearly less than one after the other."""
    return overlap["together_ms"] < 0.8 * (overlap["compute_ms"] + overlap["allreduce_ms"])


def local_machine(device: DeviceSpec, num_devices: int, links: MeasuredLinks, overlap: bool,
                  reduce_scatter: bool) -> Machine:
    """The measured machine; `reduce_scatter`: whether XLA compiles a sliced partial sum into a reduce-scatter
    here (simulator.measure.emits_reduce_scatter), so that the simulator prices what the step runs."""
    link = links.as_link("link")
    return Machine("local", device, num_devices, num_devices, link, link, overlap,
                   allreduce=links.as_link("allreduce"), inner_dim_reshard=links.as_link("inner_dim_reshard"),
                   reduce_scatter=reduce_scatter, reduce_scatter_link=links.as_link("reduce_scatter"),
                   combined_allreduce=links.as_link("combined_allreduce"),
                   partial_sum_allreduce=links.as_link("partial_sum_allreduce"))


def cpu_kind(busy_cores: int) -> str:
    """The device kind of one pinned CPU core while `busy_cores` cores compute at once: a core is slower
    when its neighbours work too (shared caches and memory bandwidth; shared/REFERENCE.md: a matmul chain
    took 50 ms alone and 55-61 ms beside another), so timings are kept apart per number of busy cores."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if model is None:
        import platform

        model = platform.processor() or platform.machine()
    return f"cpu-core {model} ({busy_cores} busy)"


def read_ops_log(folder: Path) -> dict[str, ProfileEntry]:
    entries = {}
    path = folder / "ops.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            entries[record["key"]] = entry_from_json(record)
    return entries


def _needs_measuring(op: Op, profile: TableCostModel, transposed: dict[str, tuple[str, ...]]) -> bool:
    """Not in the profile, without the update of the profile's optimizer for an op with parameters, or
    without a transposed copy's forward or backward a step computes (`transposed`:
    calibration_plan.transposed_copies_by_key)."""
    entry = profile.entries.get(op.cost_key)
    copies = transposed.get(op.cost_key, ())
    return (entry is None or bool(op.param_bytes) and entry.update(profile.optimizer) is None
            or OUTPUT in copies and entry.forward_transposed is None
            or INPUT_GRADIENT in copies and entry.backward_transposed is None)


def _merged(old: ProfileEntry | None, new: ProfileEntry) -> ProfileEntry:
    """`new`, keeping the updates of other optimizers that `old` (the cached entry) holds."""
    updates = {**dict(old.updates if old else ()), **dict(new.updates)}
    return replace(new, updates=tuple(sorted(updates.items())))


def flagged_lines(entries: dict[str, ProfileEntry]) -> list[str]:
    """One line per entry kept despite failing its checks, for the calibration's report."""
    return [f"flagged [{key}]: {'; '.join(entry.flags)}" for key, entry in sorted(entries.items()) if entry.flags]


# Seconds one op shape takes to calibrate on a pinned CPU core: ResNet-18's 133 shapes took 3 minutes on a
# quiet 2-core machine and 9-11 with other work beside it (benchmarks.calibration_stability, 2026-12-07).
CPU_SECONDS_PER_SHAPE = (1.4, 4.0)


def _expected_minutes(num_shapes: int, device_kind: str) -> tuple[float, float] | None:
    """How long calibrating `num_shapes` op shapes takes on CPU cores, when it is a minute or more."""
    if "cpu" not in device_kind.lower():
        return None
    low, high = (num_shapes * seconds / 60 for seconds in CPU_SECONDS_PER_SHAPE)
    return (max(low, 1.0), high) if high >= 1.0 else None


def calibrate(graph: OpGraph, num_devices: int, cache_dir: Path = DEFAULT_CACHE, say=print,
              timeout_s: float = 3600, in_process: bool | None = None, optimizer: str = "sgd",
              remeasure_ops: bool = False, remeasure_links: bool = False) -> tuple[Machine, TableCostModel]:
    """The `local` machine and its measured profile for `graph` on `num_devices` local devices (cached),
    pricing `optimizer`'s update (simulator.cost.OPTIMIZERS). `remeasure_ops` times every op of the graph
    again though cached, `remeasure_links` the links (--recalibrate, or drift: simulator.drift).

    CPU devices are measured in a local cluster of pinned workers; other devices (GPUs) by this process,
    which drives them all (`in_process`, default: measures_in_process())."""
    import jax
    from tqdm import tqdm

    from models.network import OPS_VERSION

    in_process = measures_in_process() if in_process is None else in_process
    if in_process and jax.device_count() < num_devices:
        raise SoapError(f"calibrating {num_devices} devices, but this process has {jax.device_count()} "
                        f"{jax.default_backend()} devices; ask for at most {jax.device_count()}")
    kind = local_device_kind(num_devices, in_process)
    version = f"{jax.__version__}+ops{OPS_VERSION}"  # timings of these ops
    check_cache_dir(cache_dir)
    paths = CachePaths.of(cache_dir, kind, version, num_devices)
    loaded = load_profile(paths.profile, kind, version, say)
    profile = TableCostModel(kind, version, loaded.entries, loaded.source, optimizer)
    transposed = transposed_copies_by_key(graph, num_devices)
    missing = [op for op in needed_local_ops(graph, num_devices)
               if remeasure_ops or _needs_measuring(op, profile, transposed)]
    if missing:
        where = f"one {kind}" if in_process else f"{num_devices} pinned cores at once ({kind})"
        say(f"calibrating {len(missing)} op shapes of {graph.model} on {where}; cached in {paths.profile}")
        expected = _expected_minutes(len(missing), kind)
        if expected:
            say(f"this takes about {expected[0]:.0f}-{expected[1]:.0f} minutes, once: later runs read the cache")
        skip = sorted(set(profile.entries) - {op.cost_key for op in missing})
        job = {"graph": graph_to_json(graph), "num_devices": num_devices, "skip": skip, "optimizers": [optimizer],
               "ops": True, "links": False}
        with tqdm(total=len(missing), desc="ops", unit=" op", file=sys.stderr, mininterval=2.0) as bar:
            def progress(folder: Path) -> None:
                done = read_ops_log(folder)
                measured_so_far.update(done)
                bar.update(len(done) - bar.n)
            measured_so_far: dict[str, ProfileEntry] = {}
            try:
                measured, _ = run_calibration_job(job, read_ops_log, timeout_s, in_process, say, on_poll=progress)
            except KeyboardInterrupt:  # what was measured is kept: the next run measures only the rest
                save_profile(paths.profile, _with_entries(profile, measured_so_far))
                say(f"interrupted: kept the {len(measured_so_far)} op shapes measured so far in {paths.profile}")
                raise
        profile = _with_entries(profile, measured)
        save_profile(paths.profile, profile)
        for line in flagged_lines({key: profile.entries[key] for key in measured}):
            say(f"warning: {line} (kept after {MEASUREMENTS} measurements; the calibration goes on)")
    machine = None if remeasure_links else _cached_machine(paths.machine, say)
    if machine is None:
        machine = _measure_machine(graph, num_devices, kind, profile, timeout_s, in_process, say, paths.links_plot)
        write_atomic(str(paths.machine), machine_to_json(machine))
    return machine, profile


def _with_entries(profile: TableCostModel, entries: dict[str, ProfileEntry]) -> TableCostModel:
    merged = {key: _merged(profile.entries.get(key), entry) for key, entry in entries.items()}
    return TableCostModel(profile.device_kind, profile.jax_version, {**profile.entries, **merged}, profile.source,
                          profile.optimizer)


def _cached_machine(path: Path, say) -> Machine | None:
    if not path.exists():
        return None
    try:
        return machine_from_json(path.read_text(), source=str(path))
    except SoapError as error:
        path.replace(path.with_suffix(".bad"))
        say(f"calibration cache {path} is unusable ({error}); measuring the links again")
        return None


def measures_in_process() -> bool:
    """Whether calibration measures in this process (GPUs: it drives them all) rather than in a local
    cluster of pinned workers (CPU cores)."""
    import jax

    return jax.default_backend() != "cpu"


def run_calibration_job(job: dict, read_results, timeout_s: float, in_process: bool, say, on_poll=None,
                        what: str | None = None):
    """(results, warning) of a calibration job (simulator.calibrate_worker): on a local cluster of pinned
    workers, or in this process. Says so, naming `what` was measured, when other processes loaded the machine
    meanwhile (soap.timing.OtherLoad)."""
    from soap.timing import OtherLoad

    what = what or ("the calibration of the ops" if job["ops"] else "the calibration of the links")
    with OtherLoad() as load:
        if not in_process:
            from soap.devices import run_worker_job

            report = run_worker_job(json.dumps(job), job["num_devices"], read_results, "simulator.calibrate_worker",
                                    timeout_s, on_poll=on_poll)
            results, warning = report.results, report.warning
        else:
            from simulator.calibrate_worker import run_job

            with tempfile.TemporaryDirectory(prefix="soap-calibrate-") as folder:
                run_job(job, Path(folder), reporter=True)
                results, warning = read_results(Path(folder)), None
    if note := load.busy_note(what):
        say(note)
    return results, warning


def local_device_kind(num_devices: int, in_process: bool) -> str:
    """The kind that keys the profile: JAX's device kind (e.g. 'NVIDIA H100 80GB HBM3') in one process,
    a pinned CPU core (cpu_kind) in a cluster."""
    if not in_process:
        return cpu_kind(num_devices)
    import jax

    return f"{jax.devices()[0].device_kind} ({jax.default_backend()})"


def _measure_machine(graph: OpGraph, num_devices: int, kind: str, profile: TableCostModel, timeout_s: float,
                     in_process: bool, say, plot_path: Path) -> Machine:
    device = _device_spec(graph, kind, profile, num_devices, in_process, say)
    if num_devices == 1:
        return Machine("local", device, 1, 1, Link(1e9, 0.0), Link(1e9, 0.0), False)
    where = f"{num_devices} devices" if in_process else f"{num_devices} pinned workers"
    say(f"calibrating the links between {where} (4 KB - 64 MB, resharding, all-reduce and reduce-scatter)")
    job = {"graph": graph_to_json(graph),
           "num_devices": num_devices, "skip": [], "ops": False, "links": True}
    results, warning = run_calibration_job(job, lambda f: json.loads((f / "links.json").read_text()), timeout_s, in_process,
                                say)
    if warning:
        say(f"warning: {warning}")
    timings = LinkTimings(tuple(results["sizes_bytes"]), tuple(results["reshard_ms"]),
                          tuple(results["inner_reshard_ms"]), tuple(results["allreduce_ms"]), results["overlap"],
                          tuple(results["reduce_scatter_ms"]), results["emits_reduce_scatter"],
                          tuple(results["combined_allreduce_ms"]), tuple(results["partial_sum_allreduce_ms"]))
    links = measured_links(timings, num_devices)
    say(f"links (priced by the measured timings; fitted lines): resharding {_fitted(links.fit('link'))}, on an "
        f"inner dim {_fitted(links.fit('inner_dim_reshard'))}; all-reduce {_fitted(links.fit('allreduce'))}; "
        f"reduce-scatter {_fitted(links.fit('reduce_scatter'))}; a weight and its bias in a combined all-reduce "
        f"{_fitted(links.fit('combined_allreduce'))}; a partial sum in a step "
        f"{_fitted(links.fit('partial_sum_allreduce'))} (XLA compiles a sliced partial sum into "
        f"{'a reduce-scatter' if timings.emits_reduce_scatter else 'an all-reduce and a slice'}); overlap with compute: "
        f"{'yes' if overlaps(timings.overlap) else 'no'} ({timings.overlap})")
    links.plot(plot_path, f"links between {where} ({kind})")
    say(f"link timings and their fits plotted in {plot_path}")
    return local_machine(device, num_devices, links, overlaps(timings.overlap), timings.emits_reduce_scatter)


def _fitted(fit: LinkFit) -> str:
    return f"{fit.bandwidth_bytes_per_s / 1e9:.2f} GB/s + {fit.latency_s * 1e6:.0f} us (R^2 {fit.r_squared:.4f})"


def _device_spec(graph: OpGraph, kind: str, profile: TableCostModel, num_devices: int, in_process: bool,
                 say=print) -> DeviceSpec:
    """Rates the roofline would use, estimated from the measurements (the profile prices the ops): the
    fastest forward's FLOP rate, and the memory bandwidth of the largest update measured above 0 (past the
    caches, as a memory-bound op's arrays are); without one, the fastest forward's bytes rate."""
    ops = needed_local_ops(graph, num_devices)
    costs = {op.cost_key: profile.entries[op.cost_key].cost(profile.optimizer) for op in ops}
    timed = [op for op in ops if costs[op.cost_key].forward_ms > 0]
    flops_per_s = max((op.forward_flops / (costs[op.cost_key].forward_ms / 1e3) for op in timed), default=0.0)
    updated = [op for op in ops if op.param_bytes and costs[op.cost_key].update_ms > 0]
    if updated:
        largest = max(updated, key=lambda op: op.param_bytes)
        bandwidth = Optimizer(profile.optimizer).update_traffic * largest.param_bytes / (costs[largest.cost_key].update_ms / 1e3)
    else:
        bandwidth = max(((op.input_bytes + op.output_bytes) / (costs[op.cost_key].forward_ms / 1e3) for op in timed),
                        default=0.0)
    return DeviceSpec(kind, flops_per_s, bandwidth, _device_memory_bytes(num_devices, in_process, say))


def _device_memory_bytes(num_devices: int, in_process: bool, say=print) -> int:
    """An accelerator's own memory as JAX reports it; a CPU core's share of the host's memory."""
    host_share = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // num_devices
    if in_process:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"])
        say(f"note: {jax.devices()[0].device_kind} reports no memory limit; each device is given the host's "
            f"memory / {num_devices} = {host_share / 2**30:.1f} GiB for the simulator's memory check")
    return host_share


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    from models.zoo import DEFAULT_BATCH_SIZE, add_family_flags, build_graph, default_dataset, family_options

    parser = OneLineParser(prog="python -m simulator.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help="the zoo model whose op shapes to time (python -m models lists them), e.g. alexnet")
    parser.add_argument("--gpus", type=positive_int("--gpus"), required=True,
                        help="how many devices the model will be split over: every shard shape a split over that "
                             "many can produce is timed (without GPUs: that many worker processes, one pinned core each)")
    parser.add_argument("--dataset",
                        help="the input's shape, as search.optimize takes it (default: tokens for a token model, "
                             "else tiny-imagenet where the model builds at 64x64)")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=DEFAULT_BATCH_SIZE,
                        help=f"images (or sequences) per step over all devices, as search.optimize takes it "
                             f"(default {DEFAULT_BATCH_SIZE})")
    add_family_flags(parser)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where the profile and the measured links are kept (default $SOAP_CACHE, else "
                             "~/.cache/soap); a later run reads them instead of timing again")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                        help="the optimizer whose update is measured (kept beside the others in the profile)")
    args = parser.parse_args(argv)
    graph = build_graph(args.model, args.dataset or default_dataset(args.model), args.batch_size,
                        family_options(args))
    machine, profile = calibrate(graph, args.gpus, args.cache_dir, optimizer=args.optimizer)
    print(f"profile: {len(profile.entries)} op shapes ({profile.source})")
    print(machine_to_json(machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
