"""A synthetic training batch of a graph's shapes: `images, labels = synthetic_batch(graph, seed=0)`.

Host (numpy) arrays, so that every process of a cluster builds the same batch and places only its own
shards. Images are standard normal (NHWC), labels uniform over the classes of the graph's loss (its last op).
"""

from __future__ import annotations

import numpy as np

from models.graph import OpGraph
from models.network import loss_op


def synthetic_batch(graph: OpGraph, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.standard_normal(graph.ops[0].input_shapes[0], dtype=np.float32)
    labels = rng.integers(0, loss_op(graph).input_shapes[0][1], size=graph.batch_size, dtype=np.int32)
    return images, labels
