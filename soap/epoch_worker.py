"""An epoch-training worker: `python -m soap.epoch_worker FOLDER PROCESS_ID`, started by benchmarks.epochs.

Job (FOLDER/job.json): {"model", "dataset", "batch_size", "data_dir" (null: synthetic), "strategies":
{name: strategy JSON}, "config": soap.epochs.EpochConfig's fields}. Every worker trains every strategy in
turn (soap.epochs.train_epochs); process 0 appends one JSON line per event to FOLDER/epochs.jsonl as it
happens, so that the parent shows progress and keeps every finished epoch if the run is stopped:
{"strategy", "compile_s"} once per strategy, then {"strategy", "epoch", "seconds", "loss", "steps"}.
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
    from models.zoo import build_graph
    from soap.epochs import EpochConfig, train_epochs
    from soap.strategy import strategy_from_json

    try:
        graph = build_graph(job["model"], job["dataset"], job["batch_size"])
        dataset = open_dataset(job["dataset"], job["data_dir"], "train", job["config"]["seed"])
        config = EpochConfig(**job["config"])
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
                                                                                **dataclasses.asdict(record)}))
                write({"strategy": name, "compile_s": result.compile_s})
    except SoapError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    from soap.join import worker_main

    sys.exit(worker_main("python -m soap.epoch_worker", main))
