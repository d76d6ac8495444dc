"""What search.optimize shows and writes: the strategy table, report.json, and the search plot.

report.json schema (other tools read it; keep it exactly):
    {"model": str, "dataset": str, "gpus": int, "batch_size": int, "machine": str,
     "search": {"seconds": float, "iterations": int, "simulations_per_second": float,
                "best_found_at_seconds": float, "seed": int,
                "kept_start": str|null},   # the baseline recommended instead of the search's best, if any
     "reference_loss": float|null,  # the model's flax module on one device, first batch, initial parameters
     "strategies": [{"name": "single"|"data_parallel"|"model_parallel"|"owt"|"searched",
                     "simulated_step_ms": float, "measured_step_ms": float|null, "peak_memory_bytes": int,
                     "first_step_loss": float|null,   # the strategy's first step, on the same batch and parameters
                     "tokens_per_s": float|null,      # token models: tokens of a step / its time (see `rates`)
                     "mfu": float|null}],             # model FLOPs utilisation (see `rates`)
     "strategy_file": str,
     "calibration": {...}|null}   # the local machine's drift check before the measured runs, null otherwise:
         # {"profile_age_s": float|null, "recalibrated": bool, "fresh": bool, "limit": 0.1, "sentinels": [{"key", "profile_ms",
         #  "fresh_ms", "drift"}], "link": {"num_bytes", "priced_ms", "fresh_ms", "drift"}|null,
         #  "remeasured": ["ops"|"links"]}   (simulator.drift.DriftCheck.to_json)
A strategy whose first-step loss differs from the reference by more than LOSS_RTOL (relative) is marked
in the table: it does not compute what one device computes.
"""

from __future__ import annotations

import json

from models.cli import write_atomic, write_figure
from dataclasses import dataclass

from models.graph import OpGraph
from models.token_data import token_input
from search.strategy_search import Recommendation, SearchResult
from simulator.cost import CostModel
from simulator.machine import Machine
from simulator.simulate import Simulator
from soap.strategy import Strategy

GiB = 2**30
# float32 sums over a batch split across devices add in another order: first-step losses of AlexNet and
# the branching blocks of the tests agree with one device to 1e-6 relative; 1e-4 leaves room for deep graphs.
LOSS_RTOL = 1e-4


@dataclass(frozen=True)
class StrategyRow:
    name: str
    simulated_step_ms: float
    measured_step_ms: float | None
    peak_memory_bytes: int  # the largest over devices
    note: str = ""  # why a strategy was not measured, or did not fit
    first_step_loss: float | None = None
    tokens_per_s: float | None = None  # token models only
    mfu: float | None = None


def rates(graph: OpGraph, peak_flops_per_s: float, num_devices: int, step_ms: float) -> tuple[float | None, float]:
    """(tokens per second (None unless the model reads token ids), model FLOPs utilisation) of a step of
    `step_ms`: the graph's forward and backward FLOPs (the kinds' counts, a multiply-add = 2) over the step
    time, against `num_devices` x the device's peak (a calibrated machine's: its fastest op's FLOP rate)."""
    tokens = graph.batch_size * read.sequence_tokens if (read := token_input(graph)) else None
    seconds = step_ms / 1e3
    mfu = (graph.forward_flops + graph.backward_flops) / seconds / (num_devices * peak_flops_per_s)
    return (None if tokens is None else tokens / seconds), mfu


def format_table(rows: list[StrategyRow]) -> str:
    single = next(row for row in rows if row.name == "single")
    tokens = single.tokens_per_s is not None
    header = (f"{'strategy':<15} {'simulated ms':>12} {'speedup':>8} {'measured ms':>12} {'speedup':>8} "
              f"{'peak GiB/device':>16}" + (f" {'tokens/s':>9} {'MFU':>6}" if tokens else ""))
    lines = [header, "-" * len(header)]
    for row in rows:
        measured = f"{row.measured_step_ms:>12.2f}" if row.measured_step_ms is not None else f"{'-':>12}"
        measured_speedup = (f"{single.measured_step_ms / row.measured_step_ms:>7.2f}x"
                            if row.measured_step_ms is not None and single.measured_step_ms is not None else f"{'-':>8}")
        lines.append(f"{row.name:<15} {row.simulated_step_ms:>12.3f} "
                     f"{single.simulated_step_ms / row.simulated_step_ms:>7.2f}x {measured} {measured_speedup} "
                     f"{row.peak_memory_bytes / GiB:>16.3f}"
                     + (f" {row.tokens_per_s:>9.0f} {row.mfu:>6.1%}" if tokens else "")
                     + (f"  {row.note}" if row.note else ""))
    if tokens:
        lines.append("tokens/s and MFU (model FLOPs over the step time and the devices' peak) from the measured "
                     "step where there is one, else the simulated")
    return "\n".join(lines)


def strategy_rows(graph: OpGraph, machine: Machine, cost_model: CostModel, strategies: dict[str, Strategy],
                  measured: dict, chosen: Recommendation, reference: float | None) -> list[StrategyRow]:
    """The table's rows: each strategy simulated on `machine`, with its `measured` (name -> (step ms, note,
    first-step loss); absent: not run), its loss against `reference`, and the searched row's kept start."""
    rows = []
    simulator = Simulator(graph, machine, cost_model)
    for name, strategy in strategies.items():
        result = simulator.full(strategy)
        step_ms, note, loss = measured.get(name, (None, "", None))
        mismatch = loss_mismatch(loss, reference)
        if mismatch:
            note = mismatch + (f"; {note}" if note else "")
        if name == "searched" and chosen.kept:
            note = f"= {chosen.kept}" + (f"; {note}" if note else "")
        if not result.fits_memory:
            note = f"over memory: {result.over_memory()}" + (f"; {note}" if note else "")
        tokens_per_s, mfu = rates(graph, machine.device.peak_flops_per_s, strategy.num_devices,
                                  step_ms if step_ms is not None else result.step_ms)
        rows.append(StrategyRow(name, result.step_ms, step_ms, max(result.peak_memory_bytes), note, loss,
                                tokens_per_s, mfu if tokens_per_s is not None else None))
    return rows


def loss_mismatch(loss: float | None, reference: float | None) -> str:
    """A note when `loss` is not the reference's within LOSS_RTOL, else ""."""
    if loss is None or reference is None or abs(loss - reference) <= LOSS_RTOL * abs(reference):
        return ""
    return f"LOSS DIFFERS from one device: {loss:.6g} vs {reference:.6g}"


def report_document(*, model: str, dataset: str, gpus: int, batch_size: int, machine: str, search: SearchResult,
                    kept: str | None, seed: int, rows: list[StrategyRow], strategy_file: str,
                    reference_loss: float | None, calibration: dict | None = None, data: str | None = None) -> dict:
    """report.json's content; `data`: the description of the data the run checked (--data-dir), None if none."""
    return {
        "model": model, "dataset": dataset, "data": data, "gpus": gpus, "batch_size": batch_size, "machine": machine,
        "reference_loss": reference_loss,
        "search": {"seconds": search.seconds, "iterations": search.iterations,
                   "simulations_per_second": search.simulations_per_second,
                   "best_found_at_seconds": search.best_found_at_s, "seed": seed,
                   "kept_start": kept},
        "strategies": [{"name": row.name, "simulated_step_ms": row.simulated_step_ms,
                        "measured_step_ms": row.measured_step_ms, "peak_memory_bytes": row.peak_memory_bytes,
                        "first_step_loss": row.first_step_loss, "tokens_per_s": row.tokens_per_s, "mfu": row.mfu}
                       for row in rows],
        "strategy_file": strategy_file,
        "calibration": calibration,
    }


def write_report(path: str, document: dict) -> None:
    write_atomic(path, json.dumps(document, indent=1))


def plot_search(path: str, search: SearchResult, title: str) -> None:
    """Best simulated step time against search time, one line per start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for chain in search.chains:
        times = [chain.began_at_s + t for t, _ in chain.mcmc.history] + [chain.began_at_s + chain.mcmc.seconds]
        costs = [c for _, c in chain.mcmc.history] + [chain.mcmc.best_cost]
        axes.step(times, costs, where="post", label=f"from {chain.start_name}")
    axes.set_xlabel("search time (s)")
    axes.set_ylabel("best simulated step time (ms)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    write_figure(path, figure)
    plt.close(figure)
