"""The zoo on FlexFlow's machines, in simulation: step time of every baseline and of the searched strategy.

    python -m benchmarks.zoo_table [--budget 60] [--json PATH] [--models alexnet vgg16 resnet101 inception_v3]

Each model at ImageNet's shapes (224x224; inception_v3 at 299x299), 64 images per GPU, on p100-4x4 at 16
GPUs and k80-16x4 at 64 GPUs (datasheet machines, roofline costs). For each: the simulated step time of
single, data_parallel, model_parallel, owt and the best strategy a search of --budget seconds finds from
them (search.strategy_search, delta simulation, seed 0; --budget counts the search process's CPU seconds,
building the derived starts included, so that a paused or shared core does not shorten it), and the
searched speedup over data parallelism and over the best baseline, beside FlexFlow's reported range
(SysML 2019: 1.3-3.3x over data parallelism and expert strategies; ResNet-101 close to data
parallelism). Strategies over a device's memory are marked; the search never accepts one.

    python -m benchmarks.zoo_table --models gpt2 gpt2_medium gpt2_xl vit_b16 bert_base [--budget 60]

A transformer (a model with attention heads: GPT-2 and its family and BERT on token ids, ViT-B/16 on
ImageNet's 224x224 images) runs on h100x8 (8 GPUs), p100-4x4 (16) and k80-16x4 (64) with AdamW, 8
sequences of its context (8 images) per GPU (benchmarks.model_flags): the step time and peak memory per
device of data_parallel, megatron, megatron_sp and the searched strategy (Megatron's layouts are left out
where no tensor degree divides the heads, e.g. GPT-2 XL's 25 on 16 GPUs), and the searched speedup over
the best Megatron layout.
"""

from __future__ import annotations

import json
import time

from benchmarks.model_flags import PER_GPU_TRANSFORMER, is_transformer, optimizer_for
from models.cli import OneLineParser, UsageError, check_writable, natural_int, positive_float, run_command, write_atomic
from models.datasets import TOKEN_DATASETS
from models.zoo import MODELS, build_graph, default_dataset
from search.mcmc import Budget
from search.strategy_search import baseline_strategies, search_starts, search_strategy
from simulator.cost import RooflineCostModel
from simulator.machine import machine_preset
from simulator.simulate import Simulator

MACHINES = (("p100-4x4", 16), ("k80-16x4", 64))
TRANSFORMER_MACHINES = (("h100x8", 8), ("p100-4x4", 16), ("k80-16x4", 64))
IMAGES_PER_GPU = 64
TRANSFORMER_STRATEGIES = ("data_parallel", "megatron", "megatron_sp", "searched")
FLEXFLOW_RANGE = "1.3-3.3x"


def dataset_for(model: str) -> str:
    """ImageNet's shapes for an image model (299x299 for Inception-v3), the tokens for a token model."""
    dataset = default_dataset(model)
    if dataset in TOKEN_DATASETS:
        return dataset
    return "imagenet-299" if model == "inception_v3" else "imagenet"


def transformer(model: str) -> bool:
    """Whether `model` belongs in the transformer table (it has attention heads)."""
    return is_transformer(model, dataset_for(model))


def run(model: str, preset: str, num_devices: int, budget_s: float, seed: int) -> dict:
    per_gpu = PER_GPU_TRANSFORMER if transformer(model) else IMAGES_PER_GPU
    graph = build_graph(model, dataset_for(model), per_gpu * num_devices)
    machine = machine_preset(preset, num_devices)
    cost = RooflineCostModel(machine.device, optimizer=optimizer_for(graph))
    baselines, _ = baseline_strategies(graph, num_devices, machine.devices_per_node)
    simulator = Simulator(graph, machine, cost)
    rows = {name: _row(simulator.full(strategy)) for name, strategy in baselines.items()}
    starts = search_starts(graph, num_devices, baselines, seed)
    searched = search_strategy(graph, machine, cost, starts, Budget(seconds=budget_s), seed, clock=time.process_time)
    rows["searched"] = _row(simulator.full(searched.best))
    fitting = [row["step_ms"] for name, row in rows.items() if name != "searched" and row["fits_memory"]]
    return {"model": model, "machine": preset, "gpus": num_devices, "batch_size": graph.batch_size,
            "ops": len(graph), "strategies": rows, "iterations": searched.iterations,
            "search_s": searched.seconds, "best_found_at_s": searched.best_found_at_s,
            "speedup_over_dp": rows["data_parallel"]["step_ms"] / searched.best_ms,
            "speedup_over_best_baseline": min(fitting) / searched.best_ms if fitting else None}


def _row(result) -> dict:
    return {"step_ms": result.step_ms, "fits_memory": result.fits_memory,
            "peak_gib": max(result.peak_memory_bytes) / 2**30}


def _cell(row: dict) -> str:
    return f"{row['step_ms']:.1f}" + ("" if row["fits_memory"] else "*")


def _transformer_cell(row: dict | None) -> str:
    return "-" if row is None else f"{row['step_ms']:.1f} / {row['peak_gib']:.1f}" + ("" if row["fits_memory"] else "*")


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.zoo_table", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["alexnet", "vgg16", "resnet101", "inception_v3"],
                        help=f"of: {', '.join(MODELS)}")
    parser.add_argument("--budget", type=positive_float("--budget"), default=60.0,
                        help="search seconds per model and machine")
    parser.add_argument("--seed", type=natural_int("--seed"), default=0)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        raise UsageError(f"--models: unknown model {unknown[0]!r}; known models: {', '.join(MODELS)}")
    if args.json:
        check_writable("--json", args.json)
    images = [model for model in args.models if not transformer(model)]
    transformers = [model for model in args.models if transformer(model)]
    results = []
    if images:
        results += _image_table(images, args.budget, args.seed)
    if transformers:
        results += _transformer_table(transformers, args.budget, args.seed)
    if args.json:
        write_atomic(args.json, json.dumps({"benchmark": "zoo_table", "budget_s": args.budget, "seed": args.seed,
                                            "rows": results}, indent=1))
    return 0


def _image_table(models: list[str], budget_s: float, seed: int) -> list[dict]:
    names = ("single", "data_parallel", "model_parallel", "owt", "searched")
    print(f"simulated step ms, {IMAGES_PER_GPU} images per GPU, ImageNet shapes, search budget {budget_s:g} s "
          f"(* over memory); FlexFlow: {FLEXFLOW_RANGE} over DP and expert strategies")
    print(f"{'model':<13} {'machine':<13} " + " ".join(f"{n:>14}" for n in names) + f" {'vs DP':>7} {'vs best':>8}")
    results = []
    for model in models:
        for preset, num_devices in MACHINES:
            result = run(model, preset, num_devices, budget_s, seed)
            results.append(result)
            rows = result["strategies"]
            best = result["speedup_over_best_baseline"]
            print(f"{model:<13} {f'{preset} x{num_devices}':<13} "
                  + " ".join(f"{_cell(rows[n]) if n in rows else '-':>14}" for n in names)
                  + f" {result['speedup_over_dp']:>6.2f}x {'-' if best is None else f'{best:.2f}x':>8}", flush=True)
    return results


def _transformer_table(models: list[str], budget_s: float, seed: int) -> list[dict]:
    print(f"simulated step ms / peak GiB per device, AdamW, {PER_GPU_TRANSFORMER} sequences of the context "
          f"(images of 224x224) per GPU, search budget {budget_s:g} s (* over memory; -: no such layout)")
    print(f"{'model':<13} {'machine':<13} " + " ".join(f"{n:>17}" for n in TRANSFORMER_STRATEGIES)
          + f" {'vs Megatron':>12}")
    results = []
    for model in models:
        for preset, num_devices in TRANSFORMER_MACHINES:
            result = run(model, preset, num_devices, budget_s, seed)
            results.append(result)
            rows = result["strategies"]
            megatron = [rows[n]["step_ms"] for n in ("megatron", "megatron_sp") if n in rows and rows[n]["fits_memory"]]
            gain = f"{min(megatron) / rows['searched']['step_ms']:.2f}x" if megatron else "-"
            print(f"{model:<13} {f'{preset} x{num_devices}':<13} "
                  + " ".join(f"{_transformer_cell(rows.get(n)):>17}" for n in TRANSFORMER_STRATEGIES)
                  + f" {gain:>12}", flush=True)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
