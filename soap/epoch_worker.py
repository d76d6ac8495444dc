"""An epoch-training worker: `python -m soap.epoch_worker FOLDER PROCESS_ID`, started by benchmarks.epochs.

Job (FOLDER/job.json): {"graph" (models.graph_file JSON), "dataset", "data_dir" (null: synthetic),
"evaluate" (whether to evaluate on the val split), "strategies": {name: strategy JSON}, "config":
soap.epochs.EpochConfig's fields}. Every worker trains every strategy in turn (soap.epochs.train_epochs);
process 0 appends one JSON line per event to FOLDER/epochs.jsonl as it happens, so that the parent shows
progress and keeps every finished epoch if the run is stopped: {"strategy", "epoch", "seconds", "loss",
"steps"} per epoch, then {"strategy", "compile_s"} once per strategy, with "eval_loss", "eval_accuracy"
and "eval_batches" when evaluated.
"""

import json
import os
import sys
from pathlib import Path


def main(folder: Path, process_id: int) -> int:
    from soap.join import barrier, join_cluster

    job = json.loads(join_cluster(folder, process_id))
    import dataclasses

    import jax

    from models.data import open_dataset
    from models.errors import SoapError
    from models.graph_file import graph_from_json
    from soap.epochs import EpochConfig, train_epochs
    from soap.strategy import strategy_from_json

    try:
        graph = graph_from_json(job["graph"], "the epoch job's graph")
        config = EpochConfig(**job["config"])
        dataset = open_dataset(job["dataset"], job["data_dir"], "train", config.seed, graph)
        held_out = open_dataset(job["dataset"], job["data_dir"], "val", config.seed, graph) if job["evaluate"] else None
        strategies = {name: strategy_from_json(text, graph, jax.device_count(), source=f"strategy {name} of the job")
                      for name, text in job["strategies"].items()}
        with open(folder / "epochs.jsonl" if process_id == 0 else os.devnull, "a") as log:
            def write(record: dict) -> None:
                log.write(json.dumps(record) + "\n")
                log.flush()

            for name, strategy in strategies.items():
                barrier(f"strategy {name}")
                result = train_epochs(graph, strategy, dataset, config,
                                      on_epoch=lambda record, name=name: write({"strategy": name,
                                                                                **dataclasses.asdict(record)}),
                                      evaluation_data=held_out)
                evaluated = ({f"eval_{k}": v for k, v in dataclasses.asdict(result.evaluation).items()}
                             if result.evaluation else {})
                write({"strategy": name, "compile_s": result.compile_s, **evaluated})
    except SoapError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    from soap.join import worker_main

    sys.exit(worker_main("python -m soap.epoch_worker", main))
