"""A synthetic training batch of a graph's shapes: `inputs, labels = synthetic_batch(graph, seed=0)`.

Host (numpy) arrays, so that every process of a cluster builds the same batch and places only its own
shards. Images are standard normal (NHWC) and their labels uniform over the classes of the graph's loss
(its last op). Token ids (a graph whose first op reads int32: an embedding, models.token_data.token_input)
are uniform over its vocabulary, one more per sample than the sequence, and each position's label is the
next id.
"""

from __future__ import annotations

import numpy as np

from models.graph import OpGraph
from models.network import loss_op
from models.token_data import token_input


def synthetic_batch(graph: OpGraph, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    first = graph.ops[0]
    tokens = token_input(graph)
    if tokens is not None:
        samples = first.input_shapes[0][0]
        text = rng.integers(0, tokens.vocab_size, size=(samples, tokens.sequence_tokens + 1), dtype=np.int32)
        return text[:, :-1], text[:, 1:]
    images = rng.standard_normal(first.input_shapes[0], dtype=np.float32)
    loss = loss_op(graph)
    return images, rng.integers(0, loss.input_shapes[0][-1], size=loss.output_shape, dtype=np.int32)
