"""A worker of benchmarks.op_breakdown: `python -m benchmarks.op_breakdown_worker FOLDER PROCESS_ID`.

Job: {"model", "dataset", "batch_size", "steps", "strategy"}. Trains 2 warm-up steps, then profiles
`steps` steps (jax.profiler, Perfetto trace) and writes FOLDER/breakdown{PROCESS_ID}.json: milliseconds
per step by "op/phase" on this process's device.
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
    from soap.step import TrainStep, sgd_momentum
    from models.zoo import build_graph
    from soap.lowering import strategy_shardings
    from soap.strategy import strategy_from_json

    graph = build_graph(job["model"], job["dataset"], job["batch_size"])
    strategy = strategy_from_json(job["strategy"], graph, jax.device_count())
    step = TrainStep(graph, strategy_shardings(graph, strategy), sgd_momentum())
    if len(step.stages) > 1:
        print(f"error: the strategy runs {len(step.stages)} stages (several programs a step); the breakdown "
              f"reads one program's instruction names: give a single-stage strategy", file=sys.stderr)
        return 2
    state = step.init(jax.tree.map(np.asarray, init_params(graph, 0)))
    images, labels = step.place_batch(*synthetic_batch(graph, 0))
    for _ in range(2):
        _, state = jax.block_until_ready(step(state, images, labels))
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
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2])))
