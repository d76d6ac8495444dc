"""The models SOAP knows, by name: `build_graph("alexnet", "tiny-imagenet", 128)`."""

from __future__ import annotations

from models.alexnet import alexnet
from models.datasets import dataset_shape
from models.errors import SoapError, UnknownModelError
from models.graph import OpGraph

MODELS = {"alexnet": alexnet}
DEFAULT_BATCH_SIZE = 128  # as in Krizhevsky's one-weird-trick paper


def build_graph(model: str, dataset: str, batch_size: int = DEFAULT_BATCH_SIZE) -> OpGraph:
    if model not in MODELS:
        raise UnknownModelError(f"unknown model {model!r}; known models: {', '.join(MODELS)}")
    if batch_size < 1:
        raise SoapError(f"batch size must be a positive integer, got {batch_size}; try --batch-size 128")
    return MODELS[model](dataset_shape(dataset), batch_size)
