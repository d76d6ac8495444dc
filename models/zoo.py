"""The models SOAP knows, by name: `build_graph("resnet50", "imagenet", 64)`.

    alexnet vgg16 resnet18 resnet50 resnet101 inception_v3

Each builds at every dataset whose images are large enough for it; a smaller one is one line naming the
model's minimum size (the smallest square image its graph builds at, found by bisection).
"""

from __future__ import annotations

import functools

from models.alexnet import alexnet
from models.datasets import DatasetShape, dataset_shape
from models.errors import ShapeError, SoapError, UnknownModelError
from models.graph import OpGraph
from models.inception import inception_v3
from models.resnet import resnet18, resnet50, resnet101
from models.vgg import vgg16

MODELS = {
    "alexnet": alexnet,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "inception_v3": inception_v3,
}
DEFAULT_BATCH_SIZE = 128  # as in Krizhevsky's one-weird-trick paper


def _require_known(model: str) -> None:
    if model not in MODELS:
        raise UnknownModelError(f"unknown model {model!r}; known models: {', '.join(MODELS)}")


def build_graph(model: str, dataset: str, batch_size: int = DEFAULT_BATCH_SIZE) -> OpGraph:
    _require_known(model)
    if batch_size < 1:
        raise SoapError(f"batch size must be a positive integer, got {batch_size}; try --batch-size 128")
    shape = dataset_shape(dataset)
    minimum = minimum_image_size(model)
    if min(shape.height, shape.width) < minimum:
        raise ShapeError(f"{model} needs images of at least {minimum}x{minimum}, but {dataset} has "
                         f"{shape.height}x{shape.width}; pick a dataset with larger images")
    return MODELS[model](shape, batch_size)


def default_dataset(model: str) -> str:
    """The benchmarks' dataset for `model`: Tiny ImageNet's shapes where it builds, else ImageNet at 299."""
    return "tiny-imagenet" if minimum_image_size(model) <= 64 else "imagenet-299"


@functools.cache
def minimum_image_size(model: str) -> int:
    """The smallest square image size `model` builds at (its graph has no empty output)."""
    _require_known(model)

    def builds(size: int) -> bool:
        try:
            MODELS[model](DatasetShape("probe", size, size, 3, 10), 1)
        except ShapeError:
            return False
        return True

    low, high = 1, 512  # builds(high) holds for every zoo model
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if builds(middle) else (middle + 1, high)
    return low
