"""One worker of a local cluster: `python -m soap.worker FOLDER PROCESS_ID`, started by soap.devices.

Reads FOLDER/cluster.json (coordinator address, worker count, cores) and FOLDER/job.json (a ClusterJob,
with the initial parameters and state of a user's model beside it),
pins itself and joins the cluster (soap.join.join_cluster: jax.distributed, gloo on CPU), runs every
strategy of the job, and as process 0 writes the results into FOLDER and prints one line per strategy.
A SoapError is printed as one line ("error: ...") and exits 2, so that the parent can report it.
Started by hand (README: several hosts), FOLDER comes from python -m soap.cluster.
"""

import os
import sys
from pathlib import Path


def main(folder: Path, process_id: int) -> int:
    from soap.join import barrier, join_cluster

    job_json = join_cluster(folder, process_id)
    import jax

    from models.errors import SoapError
    from models.graph_file import graph_from_json
    from soap.devices import ClusterJob, write_results
    from soap.runner import run_strategy
    from soap.strategy import strategy_from_json

    try:
        job = ClusterJob.from_json(job_json, folder)
        graph = graph_from_json(job.graph, "the job's graph")
        strategies = [strategy_from_json(text, graph, jax.device_count(), source=f"strategy {k} of the job")
                      for k, text in enumerate(job.strategies)]
        results = []
        for k, strategy in enumerate(strategies):
            barrier(f"strategy {k}")
            results.append(run_strategy(graph, strategy, job.run, initial=job.initial))
    except SoapError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except jax.errors.JaxRuntimeError as error:
        # A collective that failed (another worker died) or a device error: one line, and out at once;
        # jax.distributed.shutdown would wait for the dead worker and then abort.
        print(f"error: {type(error).__name__}: {str(error).splitlines()[0]}", file=sys.stderr, flush=True)
        os._exit(1)
    if process_id == 0:
        write_results(folder, results)
        for k, result in enumerate(results):
            timed = f", median step {result.step_time.median_ms:.1f} ms" if result.step_time else ""
            print(f"strategy {k}: losses {', '.join(f'{loss:.6f}' for loss in result.losses)}{timed}; "
                  f"results in {folder / 'results.json'}", flush=True)
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    from soap.join import worker_main

    sys.exit(worker_main("python -m soap.worker", main))
