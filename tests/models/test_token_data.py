"""Token data (models.token_data) on tiny train.bin / val.bin / .txt files: windows, order, errors.

The model is a one-block GPT-2 of vocabulary 64 reading 4 tokens per sample, 2 samples per batch; the
fake train.bin holds ids 0, 1, ..., 20, so window k is ids 4k..4k+3 with labels 4k+1..4k+4.
"""

import numpy as np
import pytest

from models.data import open_dataset
from models.errors import DataError
from models.token_data import SYNTHETIC_TOKENS, has_split, open_tokens, token_input
from models.zoo import FamilyOptions, build_graph

SEQUENCE, VOCAB, BATCH = 4, 64, 2


def gpt2(vocab=VOCAB, sequence=SEQUENCE, batch=BATCH):
    options = FamilyOptions(depth=1, width=32, heads=2, vocab=vocab, seq_len=sequence)
    return build_graph("gpt2", "tokens", batch, options)


@pytest.fixture(scope="module")
def graph():
    return gpt2()


@pytest.fixture
def folder(tmp_path):
    """tmp/train.bin: ids 0..20 (5 windows of 4 + 1); tmp/val.bin: ids 40..49 (2 windows)."""
    np.arange(21, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(40, 50, dtype=np.uint16).tofile(tmp_path / "val.bin")
    return tmp_path


def epoch(dataset, seed=0, number=0):
    return list(dataset.batches(BATCH, seed=seed, epoch=number))


def test_token_input_is_the_graphs_sequence_and_vocabulary(graph):
    assert (token_input(graph).sequence_tokens, token_input(graph).vocab_size) == (SEQUENCE, VOCAB)
    assert token_input(build_graph("alexnet", "tiny-imagenet", 2)) is None


def test_an_epoch_is_every_window_once_as_ids_and_next_id_labels(graph, folder):
    dataset = open_dataset("tokens", folder, "train", 0, graph)
    assert len(dataset) == 5 and dataset.steps_per_epoch(BATCH) == 2
    assert dataset.description == f"tokens train ({folder / 'train.bin'}, 21 tokens, 5 windows of 4 + 1)"
    batches = epoch(dataset)
    assert len(batches) == 2  # the fifth window: the dropped partial batch
    starts = []
    for ids, labels in batches:
        assert ids.dtype == labels.dtype == np.int32 and ids.shape == labels.shape == (BATCH, SEQUENCE)
        assert type(ids) is np.ndarray  # a host copy, not a view of the memory-mapped file
        for row_ids, row_labels in zip(ids, labels):
            assert row_ids[0] % SEQUENCE == 0  # window k starts at token k * s
            np.testing.assert_array_equal(row_ids, np.arange(row_ids[0], row_ids[0] + SEQUENCE))
            np.testing.assert_array_equal(row_labels, row_ids + 1)
            starts.append(int(row_ids[0]))
    order = dataset.order(0, 0)
    assert starts == [int(k) * SEQUENCE for k in order[:4]] and len(set(starts)) == 4


def test_batches_are_the_same_for_the_same_seed_and_epoch_and_differ_otherwise(graph, folder):
    first, again = open_tokens(graph, folder), open_tokens(graph, folder)
    same = epoch(first, seed=3, number=1)
    for (ids, labels), (ids_again, labels_again) in zip(same, epoch(again, seed=3, number=1)):
        np.testing.assert_array_equal(ids, ids_again)
        np.testing.assert_array_equal(labels, labels_again)
    orders = {tuple(first.order(seed, number)) for seed in range(3) for number in range(3)}
    assert len(orders) > 1
    assert not np.array_equal(first.order(0, 0), first.order(0, 1))


def test_val_is_val_bin_and_a_bin_file_is_the_split_it_is_opened_as(graph, folder):
    val = open_tokens(graph, folder, "val")
    assert len(val) == 2 and epoch(val)[0][0].min() >= 40
    as_val = open_tokens(graph, folder / "train.bin", "val")
    assert as_val.split == "val" and len(as_val) == 5


def test_a_text_file_is_its_bytes(tmp_path):
    text = tmp_path / "input.txt"
    text.write_bytes(b"to be or not to be")  # 18 bytes: 4 windows of 4 + 1
    dataset = open_tokens(gpt2(vocab=256), text)
    ids, labels = epoch(dataset)[0]
    for row_ids, row_labels in zip(ids, labels):
        start = text.read_bytes().index(bytes(row_ids.astype(np.uint8)))
        assert start % SEQUENCE == 0 and bytes(row_labels.astype(np.uint8)) == text.read_bytes()[start + 1:start + 5]


def test_synthetic_tokens_say_so_and_cover_the_vocabulary(graph):
    dataset = open_dataset("tokens", None, "train", 0, graph)
    assert dataset.synthetic and "synthetic" in dataset.description
    assert len(dataset) == (SYNTHETIC_TOKENS["train"] - 1) // SEQUENCE
    ids, labels = next(dataset.batches(BATCH, seed=0, epoch=0))
    assert ids.max() < VOCAB and ids.dtype == np.int32
    np.testing.assert_array_equal(ids[:, 1:], labels[:, :-1])
    np.testing.assert_array_equal(open_tokens(graph, None).tokens, dataset.tokens)
    assert not np.array_equal(open_tokens(graph, None, seed=1).tokens[:100], dataset.tokens[:100])


def test_the_tokens_dataset_needs_the_models_graph():
    with pytest.raises(TypeError, match="needs the model's graph"):
        open_dataset("tokens", None)


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


# Each bad input: what to write in tmp_path (returns the --data-dir), the model, and pieces of the message.
BAD = [
    pytest.param(lambda tmp: tmp / "none", {}, ["none does not exist", "expected a folder with train.bin"],
                 id="missing-path"),
    pytest.param(lambda tmp: tmp, {}, ["no train.bin in", "expected a folder with train.bin"], id="no-train-bin"),
    pytest.param(lambda tmp: _write(tmp / "ids.npy", b"\0\0"), {}, ["is neither a .bin nor a .txt file"],
                 id="other-extension"),
    pytest.param(lambda tmp: _write(tmp / "train.bin", b""), {}, ["train.bin is empty"], id="empty-bin"),
    pytest.param(lambda tmp: _write(tmp / "train.bin", bytes(21)), {},
                 ["has 21 bytes, an odd count", "truncated", "np.array(ids, np.uint16).tofile(path)"], id="odd-bytes"),
    pytest.param(lambda tmp: _write(tmp / "train.bin", np.array([1] * 20 + [99], np.uint16).tobytes()), {},
                 ["holds token id 99, outside the model's vocabulary of 64 (ids 0 to 63)", "pass --vocab 100 or more"],
                 id="id-over-vocab"),
    pytest.param(lambda tmp: _write(tmp / "train.bin", np.arange(4, dtype=np.uint16).tobytes()), {},
                 ["holds 4 tokens, fewer than one sample of --seq-len 4 plus its next-token label (5)",
                  "use --seq-len 3 or less"], id="shorter-than-a-window"),
    pytest.param(lambda tmp: _write(tmp / "train.bin", np.arange(6, dtype=np.uint16).tobytes()), {},
                 ["batch size 2 is over the 1 windows", "use --batch-size 1 or less"], id="shorter-than-a-batch"),
    pytest.param(lambda tmp: _write(tmp / "input.txt", b""), {"vocab": 256}, ["input.txt is empty"],
                 id="empty-text"),
    pytest.param(lambda tmp: _write(tmp / "input.txt", b"to be or not to be"), {},
                 ["is read as bytes (ids 0 to 255), but the model's vocabulary is 64", "pass --vocab 256"],
                 id="text-over-vocab"),
]


@pytest.mark.parametrize("write, model, pieces", BAD)
def test_bad_token_data_is_one_line_naming_rule_value_and_fix(tmp_path, write, model, pieces):
    data_dir = write(tmp_path)
    with pytest.raises(DataError) as raised:
        open_dataset("tokens", data_dir, "train", 0, gpt2(**model))
    message = str(raised.value)
    assert "\n" not in message
    for piece in pieces:
        assert piece in message, message


def test_a_folder_without_val_bin_has_no_val_split(graph, folder):
    (folder / "val.bin").unlink()
    with pytest.raises(DataError, match="no val.bin in"):
        open_tokens(graph, folder, "val")


def test_an_image_model_reads_no_tokens(folder):
    with pytest.raises(DataError, match="alexnet reads images, not token ids"):
        open_tokens(build_graph("alexnet", "tiny-imagenet", 2), folder)


def test_a_process_reads_the_ids_of_the_rows_it_places_and_every_label(graph, folder):
    dataset = open_dataset("tokens", folder, "train", 0, graph)
    (whole_ids, whole_labels), _ = epoch(dataset)
    (ids, labels), _ = list(dataset.batches(BATCH, seed=0, epoch=0, ahead=1, rows=np.array([1])))
    np.testing.assert_array_equal(ids[1], whole_ids[1])
    assert not ids[0].any()  # another process's row: never read, left zero
    np.testing.assert_array_equal(labels, whole_labels)  # the loss may be split otherwise than the ids


def test_a_split_of_its_own_is_a_folders_bin_or_synthetic(folder):
    assert has_split(folder, "val") and has_split(None, "val")
    (folder / "val.bin").unlink()
    assert not has_split(folder, "val") and not has_split(folder / "train.bin", "val")
