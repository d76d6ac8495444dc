"""A trained model's mean loss and argmax accuracy on held-out batches, in eval mode, on one device.

    evaluation = evaluate(graph, params, open_dataset("tokens", data_dir, "val", graph=graph), batches=None)
    evaluation.loss, evaluation.accuracy   # mean next-token cross-entropy; share of argmax == the next id

Used by soap.epochs after the last epoch (benchmarks.epochs reports it for token models). Eval mode:
dropout passes its input through (the training step draws a mask every step). The loss is the graph's
own loss op (softmax_xent or token_xent) averaged over every sample (a token model: every token) of the
batches; the accuracy compares the argmax of the loss op's input (the logits) with the label. Batches
come in the dataset's order for (seed, epoch 0), whole (every row of ids). The parameters are host arrays
(op name -> {name -> array}), so any strategy's weights are read alike, gathered to one process.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from itertools import islice

import jax
import jax.numpy as jnp
import numpy as np

from models.data import Dataset
from models.errors import SoapError
from models.graph import OpGraph
from models.network import Params, apply_op, loss_op, op_params
from models.op import OpKind
from models.token_data import TokenDataset


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean per-sample (per-token) loss
    accuracy: float  # share of samples (tokens) whose argmax logit is the label
    batches: int


def evaluate(graph: OpGraph, params: Params, dataset: Dataset | TokenDataset, batches: int | None,
             seed: int = 0) -> Evaluation:
    """The graph's mean loss and accuracy with `params` over the first `batches` batches of `dataset`
    (None: all of its epoch), on this process's first device."""
    stateful = [op.name for op in graph.ops if op.state_shapes]
    if stateful:
        raise SoapError(f"evaluation runs without model state, but {graph.model} keeps some (batch norm "
                        f"running averages: {', '.join(stateful[:3])}); evaluate a model without batch norm")
    assert batches is None or batches >= 1, batches
    device = jax.local_devices()[0]
    metrics = jax.jit(_metrics(graph))
    params = jax.device_put(params, device)
    losses, accuracies = [], []
    with closing(dataset.batches(graph.batch_size, seed, 0)) as stream:
        for inputs, labels in islice(stream, batches):
            loss, accuracy = metrics(params, *jax.device_put((inputs, labels), device))
            losses.append(loss)
            accuracies.append(accuracy)
    return Evaluation(float(np.mean(losses)), float(np.mean(accuracies)), len(losses))


def _metrics(graph: OpGraph) -> Callable:
    """(params, inputs, labels) -> (mean loss, accuracy) of one batch, every op but the loss run in eval mode."""
    producers = {op.name: graph.producers(op.name) for op in graph.ops}
    last = loss_op(graph)

    def metrics(params, inputs, labels):
        values: dict[str, jax.Array] = {}
        for op in graph.ops[:-1]:
            reads = tuple(values[p] for p in producers[op.name]) or (inputs,)
            values[op.name] = reads[0] if op.kind is OpKind.DROPOUT else apply_op(op, op_params(op, params), reads)
        logits = values[producers[last.name][0]]
        losses = apply_op(last, None, (logits,), labels)
        return losses.mean(), (jnp.argmax(logits, axis=-1) == labels).mean()

    return metrics
