"""Where training batches come from: a Tiny ImageNet or Kaggle Dogs vs Cats folder, or synthetic images;
token data for the token models (`open_dataset("tokens", data_dir, graph=graph)`) is models.token_data's.

    dataset = open_dataset("tiny-imagenet", args.data_dir)  # None: synthetic, "tiny-imagenet train (synthetic, ...)"
    for images, labels in dataset.batches(batch_size=256, seed=0, epoch=0): ...

`batches` yields float32 NHWC images and int32 labels, shuffled per epoch from (seed, epoch), the last partial
batch dropped, decoded by a thread pool a few batches ahead (PIL releases the GIL while decoding).

Normalization: RGB (grayscale files are converted), resized bilinear to the dataset's size if it differs,
then / 255, minus the ImageNet per-channel mean, over the ImageNet per-channel std (the torchvision
constants). Synthetic images are uniformly random pixels normalized the same way (a cheap stand-in with
the same value range; drawing standard-normal floats held Dogs vs Cats at 338 images/s).

Unreadable files are skipped, never fatal: a file whose header PIL cannot read is left out when the dataset
opens; one that opens but fails to decode (truncated) is served as a zero image, keeping the epoch's order.
Both are listed in `skipped_files`. A dataset with no readable image is a DataError.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image

from models.datasets import TOKEN_DATASETS, DatasetShape, Split, dataset_shape
from models.errors import DataError
from models.graph import OpGraph
from models.prefetch import prefetch
from models.token_data import TokenDataset, open_tokens

Batch = tuple[np.ndarray, np.ndarray]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# Images per split of the real datasets; the synthetic stand-ins have as many. Kaggle labels only train/.
SPLIT_IMAGES: dict[tuple[str, str], int] = {
    ("tiny-imagenet", "train"): 100_000, ("tiny-imagenet", "val"): 10_000,
    ("dogs-vs-cats", "train"): 25_000,
    ("imagenet", "train"): 1_281_167, ("imagenet", "val"): 50_000,
}
TINY_LAYOUT = "the tiny-imagenet-200 folder with wnids.txt, train/<wnid>/images/*.JPEG, val/val_annotations.txt"
DOGS_LAYOUT = "the Kaggle dogs-vs-cats folder with train/cat.N.jpg and train/dog.N.jpg, or that train/ folder"
_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(eq=False)
class Dataset:
    """The labelled images of one split: files on disk, or synthetic images when `root` is None.

    `num_classes` is the model's class count (DatasetShape.classes); a folder with fewer classes (a subset
    of the wnids) has labels below it. Synthetic image i is standard normal from (seed, i).
    """

    shape: DatasetShape
    split: Split
    labels: np.ndarray  # int32, one per image
    files: tuple[Path, ...] = ()  # one per image; () when synthetic
    root: Path | None = None
    seed: int = 0
    skipped_files: set[Path] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return self.shape.classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.shape.height, self.shape.width, self.shape.channels

    @property
    def synthetic(self) -> bool:
        return self.root is None

    @property
    def skipped(self) -> int:
        """How many distinct files were unreadable (left out at open, or zero images when decoded)."""
        return len(self.skipped_files)

    @property
    def description(self) -> str:
        source = "synthetic" if self.synthetic else str(self.root)
        skipped = f", {self.skipped} unreadable skipped" if self.skipped else ""
        return f"{self.shape.name} {self.split} ({source}, {len(self)} images{skipped})"

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self) // batch_size

    def order(self, seed: int, epoch: int) -> np.ndarray:
        """The epoch's permutation of image indices: the same for the same (seed, epoch)."""
        return np.random.default_rng([seed, epoch]).permutation(len(self))

    def batches(self, batch_size: int, seed: int, epoch: int, ahead: int = 4,
                rows: np.ndarray | None = None) -> Iterator[Batch]:
        """One epoch of (images, labels) batches, decoded up to `ahead` batches early in background threads.

        `rows` (positions within a batch) limits decoding to the images a process places; the other rows
        are zero (soap.step.TrainStep.local_batch_rows). Labels are always whole.
        """
        if not 1 <= batch_size <= len(self):
            raise DataError(f"batch size {batch_size} does not fit {self.description}; use 1 to {len(self)}")
        steps = self.steps_per_epoch(batch_size)
        chunks = self.order(seed, epoch)[: steps * batch_size].reshape(steps, batch_size)
        rows = np.arange(batch_size) if rows is None else np.asarray(rows)
        return self._count_skipped(prefetch(lambda chunk: self._batch(chunk, rows), chunks, ahead))

    def _count_skipped(self, stream: Iterator[tuple[np.ndarray, np.ndarray, list[Path]]]) -> Iterator[Batch]:
        # Runs in the consumer's thread, so `skipped_files` is only ever changed there.
        with closing(stream):
            for images, labels, failed in stream:
                self.skipped_files.update(failed)
                yield images, labels

    def _batch(self, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Path]]:
        images = np.zeros((len(indices), *self.image_shape), np.float32)
        if self.synthetic:
            num_bytes = math.prod(self.image_shape)
            for row in rows:
                pixels = np.random.default_rng([self.seed, indices[row]]).bytes(num_bytes)
                images[row] = normalize(np.frombuffer(pixels, np.uint8).reshape(self.image_shape))
            return images, self.labels[indices], []
        pixels = [_read_image(self.files[indices[row]], self.image_shape) for row in rows]
        failed = [self.files[indices[row]] for row, p in zip(rows, pixels) if p is None]
        for row, p in zip(rows, pixels):
            if p is not None:
                images[row] = normalize(p)
        return images, self.labels[indices], failed


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 NHWC RGB pixels -> float32: / 255, minus the ImageNet channel mean, over its channel std."""
    return (pixels.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def open_dataset(name: str, data_dir: str | Path | None, split: Split = "train", seed: int = 0,
                 graph: OpGraph | None = None) -> Dataset | TokenDataset:
    """The `split` of dataset `name` read from `data_dir`, or synthetic (deterministic from `seed`) if None.

    The token datasets (models.token_data) take their sequence length, vocabulary and batch size from the
    model's `graph` and are checked against it as they open; image datasets ignore it.
    """
    if name in TOKEN_DATASETS:
        if graph is None:
            raise TypeError(f"open_dataset({name!r}) needs the model's graph: its sequence length and vocabulary")
        return open_tokens(graph, data_dir, split, seed)
    shape = dataset_shape(name)
    if (name, split) not in SPLIT_IMAGES:
        splits = [s for n, s in SPLIT_IMAGES if n == name]
        raise DataError(f"dataset {name} has no split {split!r}; use one of: {', '.join(splits)}")
    if data_dir is None:
        labels = np.random.default_rng(seed).integers(0, shape.classes, SPLIT_IMAGES[name, split], dtype=np.int32)
        return Dataset(shape, split, labels, seed=seed)
    if name not in _LISTERS:
        raise DataError(f"{name} is synthetic-only (SOAP reads no {name} files), got data dir {data_dir}; "
                        f"drop the data dir, or use one of: {', '.join(_LISTERS)}")
    lister, layout = _LISTERS[name]
    root = _existing_folder(Path(data_dir), layout)
    pairs = lister(root, split, shape)
    return _readable(shape, split, root, pairs)


def measure_throughput(dataset: Dataset | TokenDataset, batch_size: int, batches: int) -> float:
    """Samples (images, or token windows) per second the input pipeline alone delivers over `batches` batches
    (epochs 0, 1, ... as needed)."""
    if batches < 1:
        raise DataError(f"measuring input throughput needs 1 or more batches, got {batches}")
    served, epoch = 0, 0
    start_s = time.perf_counter()
    while served < batches:
        with closing(dataset.batches(batch_size, seed=0, epoch=epoch)) as stream:
            served += sum(1 for _ in islice(stream, batches - served))
        epoch += 1
    return served * batch_size / (time.perf_counter() - start_s)


def _read_image(path: Path, image_shape: tuple[int, int, int]) -> np.ndarray | None:
    """The file's pixels as uint8 HWC RGB of `image_shape` (resized bilinear if needed), None if unreadable."""
    height, width, _ = image_shape
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except _UNREADABLE:
        return None
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(rgb)


def _header_reads(path: Path) -> bool:
    try:
        with Image.open(path):
            return True
    except _UNREADABLE:
        return False


def _existing_folder(path: Path, layout: str) -> Path:
    if not path.is_dir():
        problem = "is not a folder" if path.exists() else "does not exist"
        raise DataError(f"data dir {path} {problem}: expected {layout}")
    if next(path.iterdir(), None) is None:
        raise DataError(f"data dir {path} is empty: expected {layout}")
    return path


def _readable(shape: DatasetShape, split: Split, root: Path, pairs: list[tuple[Path, int]]) -> Dataset:
    """The dataset of `pairs` (file, label) whose headers PIL reads; the others are skipped."""
    with ThreadPoolExecutor() as pool:
        reads = list(pool.map(_header_reads, [path for path, _ in pairs]))
    kept = [pair for pair, ok in zip(pairs, reads) if ok]
    if not kept:
        raise DataError(f"none of the {len(pairs)} {shape.name} {split} images in {root} is a readable image "
                        f"(first: {pairs[0][0]}); check that the files are intact JPEGs")
    files, labels = zip(*kept)
    unreadable = {path for (path, _), ok in zip(pairs, reads) if not ok}
    return Dataset(shape, split, np.array(labels, np.int32), files, root, skipped_files=unreadable)


def _tiny_imagenet(root: Path, split: Split, shape: DatasetShape) -> list[tuple[Path, int]]:
    """(file, label) of a tiny-imagenet-200 folder (or its parent); the label is the wnid's line in wnids.txt."""
    if (root / "tiny-imagenet-200" / "wnids.txt").is_file():
        root = root / "tiny-imagenet-200"
    if not (root / "wnids.txt").is_file():
        raise DataError(f"no wnids.txt in {root}: expected {TINY_LAYOUT}")
    wnids = (root / "wnids.txt").read_text().split()
    if not 1 <= len(wnids) <= shape.classes:
        raise DataError(f"wnids.txt in {root} lists {len(wnids)} wnids; expected 1 to {shape.classes}, one a line")
    if split == "train":
        pairs = [(path, label) for label, wnid in enumerate(wnids)
                 for path in sorted((root / "train" / wnid / "images").glob("*.JPEG"))]
    else:
        pairs = _tiny_imagenet_val(root, {wnid: label for label, wnid in enumerate(wnids)})
    if not pairs:
        raise DataError(f"no {split} images in {root}: expected {TINY_LAYOUT}")
    return pairs


def _tiny_imagenet_val(root: Path, labels: dict[str, int]) -> list[tuple[Path, int]]:
    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DataError(f"no val/val_annotations.txt in {root}: expected {TINY_LAYOUT}")
    pairs = []
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in labels:
            raise DataError(f"{annotations} line {number} is {line!r}: expected filename<TAB>wnid<TAB>bbox, "
                            "with a wnid of wnids.txt")
        pairs.append((root / "val" / "images" / fields[0], labels[fields[1]]))
    return pairs


def _dogs_vs_cats(root: Path, split: Split, shape: DatasetShape) -> list[tuple[Path, int]]:
    """(file, label) of a Kaggle dogs-vs-cats folder (or its train/ folder): cat = 0, dog = 1."""
    folder = root / "train" if (root / "train").is_dir() else root
    pairs = [(path, label) for label, animal in enumerate(("cat", "dog"))
             for path in sorted(folder.glob(f"{animal}.*.jpg"))]
    if not pairs:
        raise DataError(f"no cat.N.jpg or dog.N.jpg in {folder}: expected {DOGS_LAYOUT}")
    return pairs


_LISTERS: dict[str, tuple[Callable[[Path, Split, DatasetShape], list[tuple[Path, int]]], str]] = {
    "tiny-imagenet": (_tiny_imagenet, TINY_LAYOUT),
    "dogs-vs-cats": (_dogs_vs_cats, DOGS_LAYOUT),
}
