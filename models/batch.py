"""A synthetic training batch of a graph's shapes: `inputs, labels = synthetic_batch(graph, seed=0)`.

Host (numpy) arrays, so that every process of a cluster builds the same batch and places only its own
shards. Images are standard normal (NHWC); token ids (a graph whose first op reads int32, an embedding)
uniform over its vocabulary; labels uniform over the classes (the vocabulary) of the graph's loss (its
last op), one per sample or per token.
"""

from __future__ import annotations

import numpy as np

from models.graph import OpGraph
from models.labels import Role
from models.network import loss_op


def synthetic_batch(graph: OpGraph, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    first = graph.ops[0]
    shape = first.input_shapes[0]
    if first.spec.input_dtypes(first)[0] == "int32":
        vocab = next(label.size for label in first.config_labels if label.role is Role.VOCAB)
        inputs = rng.integers(0, vocab, size=shape, dtype=np.int32)
    else:
        inputs = rng.standard_normal(shape, dtype=np.float32)
    loss = loss_op(graph)
    labels = rng.integers(0, loss.input_shapes[0][-1], size=loss.output_shape, dtype=np.int32)
    return inputs, labels
