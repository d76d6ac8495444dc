"""A worker of benchmarks.op_breakdown: `python -m benchmarks.op_breakdown_worker FOLDER PROCESS_ID`.

Job: {"graph" (models.graph_file JSON), "steps", "strategy", "optimizer" (soap.optimizer: sgd or adamw)}. Trains 2 warm-up steps, then writes
FOLDER/breakdown{PROCESS_ID}.json, milliseconds per step on this process's device: for a single-program
step, by "op/phase" from `steps` profiled steps (jax.profiler, Perfetto trace); for a staged step, by
program (soap.step.TrainStep.program_times), averaged over `steps` steps.
"""

import gzip
import json
import sys
from pathlib import Path


def main(folder: Path, process_id: int) -> int:
    from soap.join import join_cluster

    job = json.loads(join_cluster(folder, process_id))
    import jax
    import numpy as np

    from benchmarks.op_breakdown import instruction_phases, measured_breakdown
    from models.batch import synthetic_batch
    from models.network import init_params
    from soap.optimizer import Optimizer
    from soap.step import TrainStep
    from models.graph_file import graph_from_json
    from soap.lowering import strategy_shardings
    from soap.strategy import strategy_from_json

    graph = graph_from_json(job["graph"], "the breakdown job's graph")
    strategy = strategy_from_json(job["strategy"], graph, jax.device_count())
    step = TrainStep(graph, strategy_shardings(graph, strategy), Optimizer(job["optimizer"]).transformation())
    state = step.init(jax.tree.map(np.asarray, init_params(graph, 0)))
    images, labels = step.place_batch(*synthetic_batch(graph, 0))
    for _ in range(2):
        _, state = jax.block_until_ready(step(state, images, labels))
    if len(step.stages) > 1:
        totals: dict[str, float] = {}
        for _ in range(job["steps"]):
            _, state, times = step.program_times(state, images, labels)
            for label, ms in times:
                totals[label] = totals.get(label, 0.0) + ms / job["steps"]
        (folder / f"breakdown{process_id}.json").write_text(json.dumps(totals))
        jax.distributed.shutdown()
        return 0
    trace_dir = folder / f"trace{process_id}"
    jax.profiler.start_trace(str(trace_dir), create_perfetto_trace=True)
    for _ in range(job["steps"]):
        _, state = jax.block_until_ready(step(state, images, labels))
    jax.profiler.stop_trace()
    path = next(trace_dir.rglob("*perfetto_trace.json.gz"))
    events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    phases = instruction_phases(step.lower(state, images, labels).compile().as_text())
    breakdown = measured_breakdown(events, phases, job["steps"])
    (folder / f"breakdown{process_id}.json").write_text(json.dumps(breakdown))
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    from soap.join import worker_main

    sys.exit(worker_main("python -m benchmarks.op_breakdown_worker", main))
