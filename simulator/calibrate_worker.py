"""A calibration worker: `python -m simulator.calibrate_worker FOLDER PROCESS_ID`, started by calibrate.

Job (FOLDER/job.json): {"graph", "num_devices", "skip": [cost keys already cached], "optimizers": [names],
"ops": bool, "links": bool, "link_probe_bytes": int (optional)}. With "ops", every process times every
needed local op not in "skip" on its pinned core (all cores busy, as in a parallel step), measured again while it fails its checks
(simulator.measure.measure_entry); process 0 appends one JSON line per op ({"key", **the profile entry})
to FOLDER/ops.jsonl as it goes (the parent shows progress and keeps what was measured if stopped); an op's
entry holds each optimizer's update of its parameters, and the forward or backward writing the transposed
copies a step writes of it (calibration_plan.transposed_copies). With "links", all workers time resharding
(all-gather, split on the leading dim and on an inner dim), all-reduce, reduce-scatter and the pairs of a
combined all-reduce (measure.time_combined_allreduce_ms) over MESSAGE_SIZES and the overlap probe, and
compile a row-split dense to see whether XLA emits a reduce-scatter (measure.emits_reduce_scatter); process 0 writes FOLDER/links.json. With "link_probe_bytes" (optional; the drift check, simulator.drift), all workers time one
all-reduce of that many bytes each; process 0 writes FOLDER/link_probe.json ({"allreduce_ms"}).
"""

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path


def main(folder: Path, process_id: int) -> int:
    from soap.join import join_cluster

    job = json.loads(join_cluster(folder, process_id))
    import jax

    run_job(job, folder, reporter=process_id == 0)
    jax.distributed.shutdown()
    return 0


def run_job(job: dict, folder: Path, reporter: bool) -> None:
    """Measure what `job` asks on this process's devices (the first num_devices of them for the links);
    the reporter writes FOLDER/ops.jsonl and FOLDER/links.json. Every worker of a cluster runs it, or one
    process that drives all the devices (GPUs)."""
    from models.graph_file import graph_from_json
    from simulator import measure
    from simulator.cost import entry_to_json
    from simulator.calibration_plan import MESSAGE_SIZES, needed_local_ops, transposed_copies_by_key

    num_devices = job["num_devices"]
    if job["ops"]:  # every worker times the ops, so that the cores are as busy as in a parallel step
        graph = graph_from_json(job["graph"], "the calibration job's graph")
        skip = set(job["skip"])
        optimizers = tuple(job["optimizers"])
        transposed = transposed_copies_by_key(graph, num_devices)
        with open(folder / "ops.jsonl" if reporter else os.devnull, "a") as log:
            for op in needed_local_ops(graph, num_devices):
                if op.cost_key in skip:
                    continue
                entry = replace(measure.measure_entry(op, optimizers, transposed.get(op.cost_key, ())),
                                measured_at_s=time.time())
                log.write(json.dumps({"key": op.cost_key, **entry_to_json(entry)}) + "\n")
                log.flush()
    if job["links"]:
        links = {
            "sizes_bytes": list(MESSAGE_SIZES),
            "reshard_ms": [measure.time_reshard_ms(size, num_devices) for size in MESSAGE_SIZES],
            "inner_reshard_ms": [measure.time_reshard_ms(size, num_devices, inner_dim=True) for size in MESSAGE_SIZES],
            "allreduce_ms": [measure.time_allreduce_ms(size, num_devices) for size in MESSAGE_SIZES],
            "reduce_scatter_ms": [measure.time_reduce_scatter_ms(size, num_devices) for size in MESSAGE_SIZES],
            "combined_allreduce_ms": [measure.time_combined_allreduce_ms(size, num_devices) for size in MESSAGE_SIZES],
            "partial_sum_allreduce_ms": [measure.time_partial_sum_allreduce_ms(size, num_devices)
                                         for size in MESSAGE_SIZES],
            "emits_reduce_scatter": measure.emits_reduce_scatter(num_devices),
            "overlap": measure.time_overlap(num_devices),
        }
        if reporter:
            (folder / "links.json").write_text(json.dumps(links))
    if job.get("link_probe_bytes"):  # the drift check's link point (simulator.drift)
        allreduce_ms = measure.time_allreduce_ms(job["link_probe_bytes"], num_devices)
        if reporter:
            (folder / "link_probe.json").write_text(json.dumps({"allreduce_ms": allreduce_ms}))


if __name__ == "__main__":
    from soap.join import worker_main

    sys.exit(worker_main("python -m simulator.calibrate_worker", main))
