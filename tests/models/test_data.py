"""Data loaders on tiny fake folders in the real formats: labels, shapes, order, skipping, errors, threads.

The fake folders come from tests/fakedata.py (solid colours that encode label and number).
"""

import re
import threading

import numpy as np
import pytest

from models.data import IMAGENET_MEAN, IMAGENET_STD, measure_throughput, open_dataset
from models.errors import DataError
from tests.fakedata import WNIDS, write_jpeg as _write_jpeg, write_tiny_imagenet


def _pixels(images):
    """Normalized float32 images back to 0-255 RGB: the mean colour of each image, shape (N, 3)."""
    return ((images * IMAGENET_STD + IMAGENET_MEAN) * 255).mean(axis=(1, 2))


@pytest.fixture
def tiny_dir(tmp_path):
    return write_tiny_imagenet(tmp_path)


@pytest.fixture
def dogs_dir(tmp_path):
    """tmp/train: 2 cats and 3 dogs of different sizes (red = 80 * label)."""
    sizes = {"cat.0.jpg": (300, 200), "cat.1.jpg": (100, 150), "dog.0.jpg": (500, 375), "dog.1.jpg": (224, 224),
             "dog.2.jpg": (64, 90)}
    for name, size in sizes.items():
        _write_jpeg(tmp_path / "train" / name, size, (80 * name.startswith("dog"), 50, 50))
    return tmp_path


def _epoch(dataset, batch_size, seed=0, epoch=0):
    batches = list(dataset.batches(batch_size, seed=seed, epoch=epoch))
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


@pytest.mark.parametrize("subdir", [pytest.param("", id="parent"), pytest.param("tiny-imagenet-200", id="folder")])
def test_tiny_imagenet_train_labels_shapes_and_skipped(tiny_dir, subdir):
    dataset = open_dataset("tiny-imagenet", tiny_dir / subdir)
    assert (len(dataset), dataset.num_classes, dataset.image_shape) == (12, 200, (64, 64, 3))
    assert not dataset.synthetic and dataset.skipped == 1 and "1 unreadable skipped" in dataset.description
    images, labels = _epoch(dataset, batch_size=4)
    assert images.shape == (12, 64, 64, 3) and images.dtype == np.float32 and labels.dtype == np.int32
    colours = _pixels(images)
    np.testing.assert_array_equal(np.round(colours[:, 0] / 80), labels)
    assert sorted(labels) == [0] * 4 + [1] * 4 + [2] * 4
    assert len({tuple(np.round(c)) for c in colours}) == 12, "every image once per epoch"
    gray = colours[np.all(np.abs(colours - 160) < 3, axis=1)]
    assert len(gray) == 1, "the grayscale file is served as RGB with equal channels"


def test_tiny_imagenet_val_reads_annotations(tiny_dir):
    dataset = open_dataset("tiny-imagenet", tiny_dir, split="val")
    assert len(dataset) == 3 and dataset.skipped == 0
    images, labels = _epoch(dataset, batch_size=3)
    np.testing.assert_array_equal(np.round(_pixels(images)[:, 0] / 80), labels)
    assert sorted(labels) == [0, 1, 2]


@pytest.mark.parametrize("subdir", [pytest.param("", id="parent"), pytest.param("train", id="train")])
def test_dogs_vs_cats_resized_and_labelled(dogs_dir, subdir):
    dataset = open_dataset("dogs-vs-cats", dogs_dir / subdir)
    assert (len(dataset), dataset.num_classes) == (5, 2)
    images, labels = _epoch(dataset, batch_size=5)
    assert images.shape == (5, 224, 224, 3)
    np.testing.assert_array_equal(np.round(_pixels(images)[:, 0] / 80), labels)
    assert sorted(labels) == [0, 0, 1, 1, 1]


def test_order_fixed_by_seed_and_epoch_and_last_partial_batch_dropped(tiny_dir):
    dataset = open_dataset("tiny-imagenet", tiny_dir)
    first, again, other = (_epoch(dataset, 5, seed=3, epoch=e)[0] for e in (0, 0, 1))
    assert first.shape[0] == 10 and dataset.steps_per_epoch(5) == 2
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_truncated_image_is_a_zero_image_and_counted(tiny_dir):
    path = tiny_dir / "tiny-imagenet-200" / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_0.JPEG"
    path.write_bytes(path.read_bytes()[:-20])  # the header reads, the pixels do not
    dataset = open_dataset("tiny-imagenet", tiny_dir)
    assert len(dataset) == 12 and dataset.skipped == 1
    images, _ = _epoch(dataset, batch_size=12)
    assert dataset.skipped == 2 and path in dataset.skipped_files
    assert sum(not image.any() for image in images) == 1


def test_synthetic_shapes_labels_and_determinism():
    dataset = open_dataset("tiny-imagenet", None)
    assert dataset.synthetic and dataset.description == "tiny-imagenet train (synthetic, 100000 images)"
    stream = dataset.batches(8, seed=0, epoch=0)
    images, labels = next(stream)
    stream.close()
    assert images.shape == (8, 64, 64, 3) and images.dtype == np.float32 and labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < 200
    again, _ = next(open_dataset("tiny-imagenet", None).batches(8, seed=0, epoch=0))
    np.testing.assert_array_equal(images, again)
    assert open_dataset("imagenet", None, split="val").image_shape == (224, 224, 3)


def test_closing_the_stream_early_joins_the_threads(tiny_dir):
    dataset = open_dataset("tiny-imagenet", tiny_dir)
    before = threading.active_count()
    stream = dataset.batches(2, seed=0, epoch=0, ahead=3)
    next(stream)
    assert threading.active_count() > before
    stream.close()
    assert threading.active_count() == before


def test_measure_throughput_runs_past_one_epoch(tiny_dir):
    assert measure_throughput(open_dataset("tiny-imagenet", tiny_dir), batch_size=4, batches=5) > 0


def _bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("hello")
    (tmp_path / "corrupt" / "train").mkdir(parents=True)
    (tmp_path / "corrupt" / "train" / "cat.0.jpg").write_bytes(b"garbage")


@pytest.mark.parametrize("name, folder, message", [
    pytest.param("tiny-imagenet", "missing", "does not exist", id="missing"),
    pytest.param("tiny-imagenet", "empty", "is empty", id="empty"),
    pytest.param("tiny-imagenet", "other", "no wnids.txt in", id="tiny-layout"),
    pytest.param("dogs-vs-cats", "other", "no cat.N.jpg or dog.N.jpg in", id="dogs-layout"),
    pytest.param("dogs-vs-cats", "corrupt", "none of the 1 dogs-vs-cats train images in", id="all-corrupt"),
    pytest.param("imagenet", "other", "imagenet is synthetic-only", id="imagenet-dir"),
])
def test_bad_data_dir_is_a_one_line_data_error_naming_the_path(tmp_path, name, folder, message):
    _bad_folders(tmp_path)
    with pytest.raises(DataError, match=re.escape(message)) as error:
        open_dataset(name, tmp_path / folder)
    assert str(tmp_path / folder) in str(error.value) and "\n" not in str(error.value)


def test_bad_split_and_batch_size_are_data_errors(dogs_dir):
    with pytest.raises(DataError, match="dogs-vs-cats has no split 'val'; use one of: train"):
        open_dataset("dogs-vs-cats", dogs_dir, split="val")
    with pytest.raises(DataError, match=r"batch size 6 does not fit .*; use 1 to 5"):
        open_dataset("dogs-vs-cats", dogs_dir).batches(6, seed=0, epoch=0)


def test_rows_limit_decoding_to_the_rows_a_process_places(tiny_dir):
    dataset = open_dataset("tiny-imagenet", tiny_dir)
    whole = next(dataset.batches(4, seed=0, epoch=0))
    part = next(dataset.batches(4, seed=0, epoch=0, rows=np.array([0, 2])))
    np.testing.assert_array_equal(part[0][[0, 2]], whole[0][[0, 2]])
    assert not part[0][[1, 3]].any()
    np.testing.assert_array_equal(part[1], whole[1])  # labels are always whole
