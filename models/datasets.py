"""Dataset shapes the models are built for: images (size, channels, classes) or token ids.

Image datasets are NHWC float images with one integer class per image. The `tokens` dataset is [b s]
int32 token ids over the model's vocabulary, each position labelled with the next id: nanoGPT's
train.bin / val.bin, a text file, or synthetic (models.token_data); its sequence length is the model's
context unless a command's --seq-len says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.errors import UnknownModelError


@dataclass(frozen=True)
class DatasetShape:
    name: str
    height: int
    width: int
    channels: int
    classes: int


DATASETS: dict[str, DatasetShape] = {
    "tiny-imagenet": DatasetShape("tiny-imagenet", 64, 64, 3, 200),
    "dogs-vs-cats": DatasetShape("dogs-vs-cats", 224, 224, 3, 2),
    "imagenet": DatasetShape("imagenet", 224, 224, 3, 1000),
    "imagenet-299": DatasetShape("imagenet-299", 299, 299, 3, 1000),  # Inception-v3's input size
}


TOKEN_DATASETS = ("tokens",)
Split = Literal["train", "val"]


def dataset_shape(name: str) -> DatasetShape:
    if name not in DATASETS:
        raise UnknownModelError(f"unknown dataset {name!r}; known datasets: {', '.join((*DATASETS, *TOKEN_DATASETS))}")
    return DATASETS[name]
