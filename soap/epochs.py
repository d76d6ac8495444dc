"""Train a strategy for whole epochs over a dataset and time every epoch, as the seed's experiments did.

    result = train_epochs(graph, owt(graph, 2), open_dataset("tiny-imagenet", None), EpochConfig(epochs=20))
    result.compile_s, [(e.seconds, e.loss) for e in result.epochs]

Every process of a cluster calls this with the same arguments (SPMD). The initial parameters come from
the seed and the batches from the dataset's per-epoch order, so every strategy sees the same data in the
same order and learns the same weights (within float tolerance). Each process decodes only the batch rows
its devices hold (soap.step.TrainStep.local_batch_rows); the loader runs ahead in background threads.

Compile time is kept out of the epochs: one step is run and thrown away before epoch 1 (the step does
not consume its state), and its wall time is `compile_s`. An epoch's time runs from taking its first
batch to the end of its last step's update (waited for); the losses are read after the clock stops.
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
from soap.step import TrainStep, sgd_momentum
from soap.lowering import strategy_shardings
from soap.runner import to_host
from soap.strategy import Strategy


@dataclass(frozen=True)
class EpochConfig:
    """How long to train: `steps_per_epoch` None means the dataset's whole epoch (len // batch size)."""

    epochs: int = 20
    steps_per_epoch: int | None = None
    seed: int = 0
    learning_rate: float = 0.01
    momentum: float = 0.9
    prefetch_batches: int = 4


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


def steps_per_epoch(dataset: Dataset, batch_size: int, config: EpochConfig) -> int:
    full = dataset.steps_per_epoch(batch_size)
    return full if config.steps_per_epoch is None else min(config.steps_per_epoch, full)


def train_epochs(graph: OpGraph, strategy: Strategy, dataset: Dataset, config: EpochConfig,
                 on_epoch: Callable[[EpochRecord], None] | None = None) -> TrainingResult:
    """Train `strategy` for `config.epochs` epochs of `dataset`; `on_epoch` hears of each as it ends."""
    step = TrainStep(graph, strategy_shardings(graph, strategy), sgd_momentum(config.learning_rate, config.momentum))
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
    return TrainingResult(compile_s, tuple(records))
