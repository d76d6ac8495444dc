"""Train a strategy for whole epochs over a dataset and time every epoch, as the seed's experiments did.

    result = train_epochs(graph, owt(graph, 2), open_dataset("tiny-imagenet", None), EpochConfig(epochs=20))
    result.compile_s, [(e.seconds, e.loss) for e in result.epochs]
    train_epochs(gpt, megatron(gpt, 2), open_dataset("tokens", d, "train", graph=gpt),
                 EpochConfig(optimizer="adamw"), evaluation_data=open_dataset("tokens", d, "val", graph=gpt))

Every process of a cluster calls this with the same arguments (SPMD). The initial parameters come from
the seed and the batches from the dataset's per-epoch order, so every strategy sees the same data in the
same order and learns the same weights (within float tolerance). Each process decodes only the batch rows
its devices hold (soap.step.TrainStep.local_batch_rows); the loader runs ahead in background threads.
A dataset is images (models.data.Dataset) or token windows (models.token_data.TokenDataset): both serve
`steps_per_epoch(batch_size)` and `batches(batch_size, seed, epoch, ahead, rows)`. Random ops (dropout)
draw a new mask every step from (seed, the state's step count), the same on every strategy.

Compile time is kept out of the epochs: one step is run and thrown away before epoch 1 (the step does
not consume its state), and its wall time is `compile_s`. An epoch's time runs from taking its first
batch to the end of its last step's update (waited for); the losses are read after the clock stops.
With `evaluation_data`, the trained parameters are gathered to process 0 after the last epoch and
evaluated there (soap.evaluate: mean loss and argmax accuracy, dropout off), outside every clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from itertools import islice

import jax
import numpy as np

from models.data import Dataset
from models.graph import OpGraph
from models.network import init_params
from models.token_data import TokenDataset
from soap.evaluate import Evaluation, evaluate
from soap.lowering import strategy_shardings
from soap.optimizer import Optimizer
from soap.runner import to_host
from soap.step import TrainStep
from soap.strategy import Strategy


@dataclass(frozen=True)
class EpochConfig:
    """How long and how to train: `steps_per_epoch` None means the dataset's whole epoch (len // batch size);
    `optimizer` is a soap.optimizer.Optimizer value at `learning_rate` (None: its usual one, 0.01 for SGD
    with momentum 0.9, the seed's; 1e-3 for AdamW); `eval_batches` None evaluates the whole held-out split."""

    epochs: int = 20
    steps_per_epoch: int | None = None
    seed: int = 0
    optimizer: str = Optimizer.SGD.value
    learning_rate: float | None = None
    prefetch_batches: int = 4
    eval_batches: int | None = None


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based, as in the seed's tables
    seconds: float
    loss: float  # mean training loss over the epoch's steps (NaN on processes other than 0)
    steps: int


@dataclass(frozen=True)
class TrainingResult:
    compile_s: float  # the thrown-away first step: compilation plus one step
    epochs: tuple[EpochRecord, ...]
    evaluation: Evaluation | None = None  # on process 0, when asked for; None elsewhere


def steps_per_epoch(dataset: Dataset | TokenDataset, batch_size: int, config: EpochConfig) -> int:
    full = dataset.steps_per_epoch(batch_size)
    return full if config.steps_per_epoch is None else min(config.steps_per_epoch, full)


def train_epochs(graph: OpGraph, strategy: Strategy, dataset: Dataset | TokenDataset, config: EpochConfig,
                 on_epoch: Callable[[EpochRecord], None] | None = None,
                 evaluation_data: Dataset | TokenDataset | None = None) -> TrainingResult:
    """Train `strategy` for `config.epochs` epochs of `dataset`; `on_epoch` hears of each as it ends. With
    `evaluation_data` (a held-out split), the trained model is evaluated on it at the end."""
    step = TrainStep(graph, strategy_shardings(graph, strategy),
                     Optimizer(config.optimizer).transformation(config.learning_rate), seed=config.seed)
    state = step.init(jax.tree.map(np.asarray, init_params(graph, config.seed)))
    rows = step.local_batch_rows()
    steps = steps_per_epoch(dataset, graph.batch_size, config)

    started = time.perf_counter()
    with closing(dataset.batches(graph.batch_size, config.seed, 0, 1, rows)) as stream:
        jax.block_until_ready(step(state, *step.place_batch(*next(stream))))
    compile_s = time.perf_counter() - started

    records = []
    for epoch in range(1, config.epochs + 1):
        losses = []
        started = time.perf_counter()
        stream = dataset.batches(graph.batch_size, config.seed, epoch - 1, config.prefetch_batches, rows)
        with closing(stream):
            for images, labels in islice(stream, steps):
                loss, state = step(state, *step.place_batch(images, labels))
                losses.append(loss)
            jax.block_until_ready(state)
        seconds = time.perf_counter() - started
        values = [to_host(loss) for loss in losses]
        mean_loss = float(np.mean(values)) if values[0] is not None else float("nan")
        record = EpochRecord(epoch, seconds, mean_loss, steps)
        records.append(record)
        if on_epoch is not None:
            on_epoch(record)
    if evaluation_data is None:
        return TrainingResult(compile_s, tuple(records))
    params = jax.tree.map(to_host, state.params)  # every process takes part; process 0 gets the values
    evaluation = (evaluate(graph, params, evaluation_data, config.eval_batches, config.seed)
                  if jax.process_index() == 0 else None)
    return TrainingResult(compile_s, tuple(records), evaluation)
