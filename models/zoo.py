"""The models SOAP knows, by name: `build_graph("resnet50", "imagenet", 64)`, `build_graph("gpt2", "tokens", 8)`.

    alexnet vgg16 resnet18 resnet50 resnet101 inception_v3 vit_b16        (images)
    gpt2 gpt2_medium gpt2_large gpt2_xl bert_base                          (token ids)

Each image model builds at every image dataset whose images are large enough for it; a smaller one is one
line naming the model's minimum size (the smallest square image its graph builds at, found by bisection).
A token model reads the `tokens` dataset; `FamilyOptions` (the commands' --depth, --width, --heads,
--vocab, --seq-len) build a smaller member of its family. Every misfit is one line: rule, value, fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

from models.alexnet import alexnet
from models.cli import positive_int
from models.datasets import DatasetShape, TOKEN_DATASETS, dataset_shape
from models.errors import ShapeError, SoapError, UnknownModelError
from models.bert import SIZES as BERT_SIZES, bert
from models.gpt2 import SIZES as GPT2_SIZES, gpt2
from models.graph import OpGraph
from models.inception import inception_v3
from models.resnet import resnet18, resnet50, resnet101
from models.transformer import TransformerSize
from models.vgg import vgg16
from models.vit import vit_b16

IMAGE_MODELS = {
    "alexnet": alexnet,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "inception_v3": inception_v3,
    "vit_b16": vit_b16,
}


@dataclass(frozen=True)
class TokenModel:
    """A member of a transformer family: its builder (name, size, dataset, sequence, batch) and its size."""

    build: Callable[[str, TransformerSize, str, int, int], OpGraph]
    size: TransformerSize


TOKEN_MODELS = {**{name: TokenModel(gpt2, size) for name, size in GPT2_SIZES.items()},
                **{name: TokenModel(bert, size) for name, size in BERT_SIZES.items()}}
MODELS = (*IMAGE_MODELS, *TOKEN_MODELS)
DEFAULT_BATCH_SIZE = 128  # as in Krizhevsky's one-weird-trick paper


@dataclass(frozen=True)
class FamilyOptions:
    """A smaller (or larger) member of a transformer family: each size left None is the member's own."""

    depth: int | None = None
    width: int | None = None
    heads: int | None = None
    vocab: int | None = None
    seq_len: int | None = None  # the tokens dataset's sequence length (default: the model's context)

    def given(self) -> dict[str, int]:
        """The options set, by field name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


FAMILY_FLAGS = {  # FamilyOptions' fields, with their help
    "depth": "layers of a transformer family's member (default: the model's)",
    "width": "its hidden width",
    "heads": "its attention heads (must divide the width)",
    "vocab": "its vocabulary",
    "seq_len": "the tokens' sequence length (default and maximum: the model's context)",
}


def add_family_flags(parser: argparse.ArgumentParser) -> None:
    """--depth, --width, --heads, --vocab and --seq-len: a transformer family's member (`FamilyOptions`)."""
    for field, what in FAMILY_FLAGS.items():
        parser.add_argument(flag(field), type=positive_int(flag(field)), help=what)


def family_options(args: argparse.Namespace) -> FamilyOptions:
    return FamilyOptions(**{field: getattr(args, field) for field in FAMILY_FLAGS})



def _require_known(model: str) -> None:
    if model not in MODELS:
        raise UnknownModelError(f"unknown model {model!r}; known models: {', '.join(MODELS)}")


def build_graph(model: str, dataset: str, batch_size: int = DEFAULT_BATCH_SIZE,
                options: FamilyOptions = FamilyOptions()) -> OpGraph:
    _require_known(model)
    if batch_size < 1:
        raise SoapError(f"batch size must be a positive integer, got {batch_size}; try --batch-size 128")
    if model in TOKEN_MODELS:
        return _token_graph(model, dataset, batch_size, options)
    sizes = _image_family_sizes(model, options)
    if dataset in TOKEN_DATASETS:
        raise SoapError(f"{model} reads images, not token ids ({dataset}); pick an image dataset such as imagenet")
    shape = dataset_shape(dataset)
    minimum = minimum_image_size(model)
    if min(shape.height, shape.width) < minimum:
        raise ShapeError(f"{model} needs images of at least {minimum}x{minimum}, but {dataset} has "
                         f"{shape.height}x{shape.width}; pick a dataset with larger images")
    return IMAGE_MODELS[model](shape, batch_size, **sizes)


# Image models that are a family's member: the sizes the commands may give them.
IMAGE_FAMILIES = {"vit_b16": ("depth", "width", "heads")}


def _image_family_sizes(model: str, options: FamilyOptions) -> dict[str, int]:
    """The --depth/--width/--heads of an image family's member (ViT); one line for another option, or for a
    model without a family."""
    allowed = IMAGE_FAMILIES.get(model)
    if allowed is None:
        require_no_family_options(model, options)
        return {}
    sizes = options.given()
    for field in sizes:
        if field not in allowed:
            raise SoapError(f"{flag(field)} does not size {model} (an image model: {', '.join(map(flag, allowed))} "
                            f"do); drop {flag(field)}")
    if "width" in sizes or "heads" in sizes:
        _, width, heads = IMAGE_MODELS[model].__defaults__  # (depth, width, heads)
        width, heads = sizes.get("width", width), sizes.get("heads", heads)
        if width % heads:
            raise SoapError(f"{model}: --heads {heads} does not divide the width {width}; use a number of heads "
                            f"that divides {width}, or another --width")
    return sizes


def require_no_family_options(model: str, options: FamilyOptions) -> None:
    """One line if a family's size option is given for a model that has none (a CNN, a user's module)."""
    given = options.given()
    if given:
        name = flag(next(iter(given)))
        raise SoapError(f"{name} sizes the transformer families ({', '.join((*TOKEN_MODELS, *IMAGE_FAMILIES))}), "
                        f"not {model}; drop {name}")


def _token_graph(model: str, dataset: str, batch_size: int, options: FamilyOptions) -> OpGraph:
    if dataset not in TOKEN_DATASETS:
        dataset_shape(dataset)  # an unknown name is its own line
        raise SoapError(f"{model} reads token ids, not images ({dataset}); use --dataset tokens")
    sizes = {k: v for k, v in options.given().items() if k != "seq_len"}
    member = TOKEN_MODELS[model]
    size = dataclasses.replace(member.size, **sizes)
    sequence = size.context if options.seq_len is None else options.seq_len
    if sequence > size.context:
        raise SoapError(f"{model}: --seq-len {sequence} is over the model's context of {size.context} tokens; "
                        f"use --seq-len {size.context} or less")
    if size.width % size.heads:
        raise SoapError(f"{model}: --heads {size.heads} does not divide the width {size.width}; use a number of "
                        f"heads that divides {size.width}, or another --width")
    return member.build(model, size, dataset, sequence, batch_size)


def default_dataset(model: str) -> str:
    """The benchmarks' dataset for `model`: tokens for a token model; Tiny ImageNet's shapes where an image
    model builds, else ImageNet at 299."""
    if model in TOKEN_MODELS:
        return TOKEN_DATASETS[0]
    return "tiny-imagenet" if minimum_image_size(model) <= 64 else "imagenet-299"


@functools.cache
def minimum_image_size(model: str) -> int:
    """The smallest square image size image model `model` builds at (its graph has no empty output)."""
    _require_known(model)
    if model in TOKEN_MODELS:
        raise SoapError(f"{model} reads token ids, not images; it has no image size")

    def builds(size: int) -> bool:
        try:
            IMAGE_MODELS[model](DatasetShape("probe", size, size, 3, 10), 1)
        except ShapeError:
            return False
        return True

    low, high = 1, 512  # builds(high) holds for every zoo model
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if builds(middle) else (middle + 1, high)
    return low
