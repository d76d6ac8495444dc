"""Krizhevsky's "one weird trick" table, in simulation: OWT and the searched strategy on 1-8 K20s.

    python -m benchmarks.owt_table [--json PATH] [--budget SECONDS] [--seed N]

AlexNet at ImageNet's shapes (224x224x3, 1000 classes), 128 images per GPU as in the paper (batch
128 * N), on the `k20-pcie` machine preset (Tesla K20s on PCIe 2.0, Krizhevsky's machine) with roofline
costs from the datasheet, for N = 1, 2, 4, 8. For each N: the simulated step time of OWT
(soap.baselines.owt), of data parallelism and of the searched strategy (MCMC from data parallel, OWT,
model parallel and a random strategy; `--budget` seconds per N, shared by the chains). Two columns of
context: OWT with communication blocking compute ("blocking"), and a lower bound on any strategy under
these costs, the whole batch on one K20 divided by N ("bound": perfect split, no communication).

Speedup, in the paper's sense. The paper trains the same model on the same data with N GPUs and reports
wall-clock time and speedup (shared/REFERENCE.md: "| 1 | (128,128) | ... | 98.05h | 1x |" and
"| 8 | (1024,1024) | ... | 15.68h | 6.25x |"); its speedups are the ratios of those times
(98.05 / 50.24 = 1.95, 98.05 / 26.20 = 3.74, 98.05 / 15.68 = 6.25). A run of N GPUs takes steps of
128 * N images, so it takes 1/N as many steps, and the time ratio is a throughput ratio:

    speedup(N) = step_ms(1 GPU, batch 128) * N / step_ms(N GPUs, batch 128 * N)

The paper column is its (128N, 128N) rows, where the fully-connected layers also see the whole batch of
128 * N, as our OWT does; the (128N, 128) rows (fc weights updated every 128 images) are in the JSON.

Where the simulation departs from the paper, and why (measured with the defaults: OWT simulates at
2.01x / 3.89x / 7.27x on 2 / 4 / 8 GPUs against the paper's 1.95x / 3.74x / 6.25x; 8.08x at 8 before
the simulator priced a resharding as one collective and a channel split's input gradient as an
all-reduce, 2026-11-25):
- Fully-connected scheme. The paper describes three ways to feed the model-parallel fc layers: (a) every
  worker sends its last conv activities to all others and the fc layers run on all 128 * N images at
  once; (b) one worker's 128 images at a time, the next worker's transfer overlapping the fc compute of
  the current batch; (c) every worker sends 128 / N of its images at a time. soap.baselines.owt is (a):
  dense layers channel split over all N devices (batch split in conv, pool, flatten and the loss), each
  dense task gathering every device's features. Its batch sizes are the (128N, 128N) rows'; the paper's
  (128N, 128) rows (fc weights updated every 128 images) can only come from (b) or (c), so the paper's
  communication pattern and its fc GEMM shapes (128 x 9216 x 4096/N, N times in turn) are not ours.
- Links. Every directed GPU pair has its own 6 GB/s link, and a resharding is one collective that lasts
  until the device receiving most has its bytes (simulator.taskgraph): in (a)'s all-gather a GPU takes
  in its N-1 peers' features (128 x 9216 floats = 4.7 MB each) one after the other over its link, 5.5 ms
  at N = 8, as through a GPU's one x16 link. What is left out: the switches and the path between CPU
  sockets, shared above the GPUs' links (no shared-bus contention in the simulator).
- Overlap. The preset says communication overlaps compute entirely (GPUs with async copies), so the
  conv gradient all-reduce (ring, 2(N-1)/N x 9.9 MB) and most transfers hide behind compute. The
  "blocking" column is the other extreme: every transfer and all-reduce occupies its devices; OWT on 8
  GPUs then takes 295 ms (7.25x), as the fc layers wait for their inputs either way.
- Compute. Roofline costs at 60% of peak for every op whatever its shard's size: the per-GPU work is the
  same at every N, so only communication and the optimizer update change with N; small shards (fc layers
  split 8 ways) lose nothing, unlike real kernels. The momentum update (5 x 244 MB of parameters, about
  9.8 ms on one K20) is paid once per step of 128 * N images, and OWT splits its fc part N ways, so with
  communication hidden the speedup is slightly superlinear ("bound" is above N for the same reason).
  If the paper's runs were 90 epochs of ImageNet's 1.28M images (an assumption, not in REFERENCE.md),
  its 1-GPU step took 98.05 h / 900,820 steps = 392 ms against 268 ms simulated (cuda-convnet2 at about
  41% of peak, not 60%), and its 8-GPU step 502 ms: about 110 ms per step lost to communication and
  the rest, where the simulator loses 27 ms (294 ms).
- Scope. The paper's times are whole training runs (data loading and augmentation on the host, testing);
  the simulator prices one training step. Its network is the one-column AlexNet this graph follows
  (64-192-384-256-256 convs, 4096-4096-1000 fc); dropout and padding details differ.
"""

from __future__ import annotations

import json
from dataclasses import replace


from models.cli import OneLineParser, check_writable, natural_int, positive_float, run_command, write_atomic
from models.zoo import build_graph
from search.mcmc import Budget
from search.strategy_search import baseline_strategies, search_starts, search_strategy
from simulator.cost import RooflineCostModel
from simulator.machine import machine_preset
from simulator.simulate import Simulator
from soap.baselines import single

MACHINE = "k20-pcie"
IMAGES_PER_GPU = 128
SIZES = (1, 2, 4, 8)
# shared/REFERENCE.md, "One weird trick": speedup of the (128N, 128N) rows and of the (128N, 128) rows.
PAPER_SPEEDUP = {1: 1.0, 2: 1.95, 4: 3.74, 8: 6.25}
PAPER_SPEEDUP_FC128 = {1: 1.0, 2: 1.93, 4: 3.66, 8: 6.16}
PAPER_HOURS = {1: 98.05, 2: 50.24, 4: 26.20, 8: 15.68}


def simulated_ms(graph, machine, strategy) -> float:
    result = Simulator(graph, machine, RooflineCostModel(machine.device)).full(strategy)
    assert result.fits_memory, f"{machine.name}: {result.over_memory()}"
    return result.step_ms


def single_gpu_ms() -> float:
    """One K20, one batch of 128: the paper's 1x."""
    graph = build_graph("alexnet", "imagenet", IMAGES_PER_GPU)
    return simulated_ms(graph, machine_preset(MACHINE, 1), single(graph, 1))


def perfect_split_bound_ms(graph, num_devices: int) -> float:
    """A lower bound on any strategy's step: the whole batch on one K20, divided by N.

    Under roofline costs a shard's time is max(FLOPs, bytes) over rates, and the shards of an op sum to
    its FLOPs and to at least its bytes, so the devices' busy times sum to at least one device's time for
    the whole step; the busiest device has at least 1/N of it (memory is not checked: a bound only)."""
    machine = machine_preset(MACHINE, 1)
    return Simulator(graph, machine, RooflineCostModel(machine.device)).full(single(graph, 1)).step_ms / num_devices


def speedup(single_ms: float, num_devices: int, step_ms: float) -> float:
    """Images per second on N GPUs over images per second on one (the paper's time ratio)."""
    return single_ms * num_devices / step_ms


def owt_row(num_devices: int, budget: Budget, seed: int) -> dict:
    """One row of the table: N GPUs, batch 128 * N."""
    graph = build_graph("alexnet", "imagenet", IMAGES_PER_GPU * num_devices)
    machine = machine_preset(MACHINE, num_devices)
    blocking = replace(machine, comm_overlaps_compute=False)
    baselines, _ = baseline_strategies(graph, num_devices)
    starts = search_starts(graph, num_devices, baselines, seed)
    result = search_strategy(graph, machine, RooflineCostModel(machine.device), starts, budget, seed)
    base_ms = single_gpu_ms()
    owt_ms = simulated_ms(graph, machine, baselines["owt"])
    owt_blocking_ms = simulated_ms(graph, blocking, baselines["owt"])
    dp_ms = simulated_ms(graph, machine, baselines["data_parallel"])
    bound_ms = perfect_split_bound_ms(graph, num_devices)
    return {
        "gpus": num_devices, "batch": graph.batch_size, "single_gpu_batch128_ms": base_ms,
        "owt_ms": owt_ms, "owt_speedup": speedup(base_ms, num_devices, owt_ms),
        "paper_owt_speedup": PAPER_SPEEDUP[num_devices], "paper_owt_speedup_fc128": PAPER_SPEEDUP_FC128[num_devices],
        "paper_hours": PAPER_HOURS[num_devices],
        "searched_ms": result.best_ms, "searched_speedup": speedup(base_ms, num_devices, result.best_ms),
        "data_parallel_ms": dp_ms, "data_parallel_speedup": speedup(base_ms, num_devices, dp_ms),
        "owt_blocking_ms": owt_blocking_ms, "owt_blocking_speedup": speedup(base_ms, num_devices, owt_blocking_ms),
        "bound_ms": bound_ms, "bound_speedup": speedup(base_ms, num_devices, bound_ms),
        "search_iterations": result.iterations, "search_s": result.seconds,
    }


HEADER = (f"{'GPUs':>4} {'batch':>5} {'1 GPU ms':>9} {'OWT ms':>8} {'OWT x':>6} {'paper x':>7} "
          f"{'searched ms':>11} {'searched x':>10} {'DP x':>6} {'OWT blocking x':>14} {'bound x':>7}")


def format_row(row: dict) -> str:
    return (f"{row['gpus']:>4} {row['batch']:>5} {row['single_gpu_batch128_ms']:>9.1f} {row['owt_ms']:>8.1f} "
            f"{row['owt_speedup']:>5.2f}x {row['paper_owt_speedup']:>6.2f}x {row['searched_ms']:>11.1f} "
            f"{row['searched_speedup']:>9.2f}x {row['data_parallel_speedup']:>5.2f}x "
            f"{row['owt_blocking_speedup']:>13.2f}x {row['bound_speedup']:>6.2f}x")


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.owt_table", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--budget", type=positive_float("--budget"), default=5.0, help="search seconds per N")
    parser.add_argument("--seed", type=natural_int("--seed"), default=0)
    args = parser.parse_args(argv)
    if args.json:
        check_writable("--json", args.json)
    print(f"AlexNet imagenet, {IMAGES_PER_GPU} images per GPU, machine {MACHINE}, roofline costs; search "
          f"{args.budget:g} s per size, seed {args.seed}. x = speedup: 1-GPU ms * N / N-GPU ms (the paper's)")
    print(HEADER)
    rows = []
    for num_devices in SIZES:
        rows.append(owt_row(num_devices, Budget(seconds=args.budget), args.seed))
        print(format_row(rows[-1]), flush=True)
    if args.json:
        write_atomic(args.json, json.dumps({"benchmark": "owt_table", "machine": MACHINE, "budget_s": args.budget,
                                            "seed": args.seed, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
