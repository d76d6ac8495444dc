"""Token data for the token models: nanoGPT's train.bin / val.bin, a text file, or synthetic ids.

    python -m search.optimize --model gpt2 --dataset tokens --data-dir data/shakespeare_char --machine h100x8
    dataset = open_tokens(graph, "data/shakespeare_char", "train")  # or None: synthetic
    for ids, labels in dataset.batches(batch_size=8, seed=0, epoch=0): ...   # int32 [b s] each

Formats (`data_dir`): a folder holding train.bin and optionally val.bin, or one .bin file (that split):
flat uint16 token ids, as nanoGPT's prepare.py scripts write them (`np.array(ids, np.uint16).tofile(path)`),
read through np.memmap so that a file of billions of tokens costs no memory. Or a .txt file, read as bytes:
ids 0-255, a vocabulary of 256. Without `data_dir`, ids are uniform over the model's vocabulary
(SYNTHETIC_TOKENS of them per split, from the seed), and the description says "synthetic".

The sequence length s and the vocabulary come from the graph (its first op reads [b s] int32 ids; its
embedding's VOCAB label is the vocabulary). A sample is a window of s + 1 consecutive tokens: ids are its
first s, labels its last s (each position labelled with the next id). The stream is cut into
non-overlapping windows, window k starting at token k * s (consecutive windows share one token, so every
token after the first is a label exactly once); an epoch visits every window once, in a permutation drawn
from (seed, epoch), batch by batch, the last partial batch dropped, as an image epoch visits every image
once. The (n - 1) mod s tokens past the last whole window are never read. Rather than nanoGPT's random
window starts (with replacement, so an "epoch" repeats some windows and misses others), this keeps
epochs meaningful and the batches exactly reproducible: every process of a cluster builds the same host
arrays for the same (seed, epoch) and places only its own shards.

Every check runs when the data opens, before anything is measured, and a bad file is one DataError
line: the rule, the value, the fix (a missing or truncated file, an id over the vocabulary, data shorter
than one batch of windows).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.datasets import Split
from models.errors import DataError
from models.graph import OpGraph
from models.labels import Role
from models.prefetch import prefetch

TEXT_VOCAB = 256  # a text file is read as bytes
SYNTHETIC_TOKENS: dict[str, int] = {"train": 1 << 20, "val": 1 << 17}  # per split; each split its own stream
LAYOUT = ("a folder with train.bin (and val.bin) of uint16 token ids as nanoGPT's prepare.py writes them, "
          "one such .bin file, or a .txt file (read as bytes)")


@dataclass(frozen=True)
class TokenInput:
    """What a token model reads: `sequence_tokens` ids per sample (s), each below `vocab_size`."""

    sequence_tokens: int
    vocab_size: int


def token_input(graph: OpGraph) -> TokenInput | None:
    """The graph's token input, None when its first op does not read int32 ids (an image model)."""
    first = graph.ops[0]
    if first.spec.input_dtypes(first)[0] != "int32":
        return None
    vocab = next(label.size for label in first.config_labels if label.role is Role.VOCAB)
    return TokenInput(first.input_shapes[0][1], vocab)


@dataclass(eq=False)
class TokenDataset:
    """The token stream of one split, cut into windows of `sequence_tokens` + 1 (module docstring)."""

    tokens: np.ndarray  # 1-D: a uint16 or uint8 memmap of the file, or int32 synthetic ids
    sequence_tokens: int
    split: Split
    source: Path | None = None  # None: synthetic

    def __len__(self) -> int:
        """The number of windows (samples) in an epoch."""
        return (len(self.tokens) - 1) // self.sequence_tokens

    @property
    def synthetic(self) -> bool:
        return self.source is None

    @property
    def description(self) -> str:
        source = "synthetic" if self.synthetic else str(self.source)
        return (f"tokens {self.split} ({source}, {len(self.tokens)} tokens, {len(self)} windows of "
                f"{self.sequence_tokens} + 1)")

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self) // batch_size

    def order(self, seed: int, epoch: int) -> np.ndarray:
        """The epoch's permutation of window indices: the same for the same (seed, epoch)."""
        return np.random.default_rng([seed, epoch]).permutation(len(self))

    def require_batch(self, batch_size: int) -> None:
        """One DataError line unless a batch of `batch_size` windows fits the data."""
        if not 1 <= batch_size <= len(self):
            raise DataError(f"batch size {batch_size} is over the {len(self)} windows of {self.description}; "
                            f"use --batch-size {len(self)} or less, a shorter --seq-len, or more data")

    def batches(self, batch_size: int, seed: int, epoch: int, ahead: int = 4,
                rows: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of (ids, labels) batches, each int32 [batch_size, sequence_tokens], read up to `ahead`
        batches early in background threads (a memmap read may wait on the disk).

        `rows` (positions within a batch) are the ids a process places (soap.step.TrainStep.local_batch_rows);
        the other rows of ids are zero, as models.data's images are, so a strategy that read a row its process
        does not place would show in its loss. Labels are always whole: the loss may be split otherwise.
        """
        self.require_batch(batch_size)
        steps = self.steps_per_epoch(batch_size)
        chunks = self.order(seed, epoch)[: steps * batch_size].reshape(steps, batch_size)
        rows = np.arange(batch_size) if rows is None else np.asarray(rows)
        return prefetch(lambda chunk: self._batch(chunk, rows), chunks, ahead)

    def _batch(self, windows: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.tokens[windows[:, None] * self.sequence_tokens + np.arange(self.sequence_tokens + 1)]
        ids = np.zeros((len(windows), self.sequence_tokens), np.int32)
        ids[rows] = tokens[rows, :-1]
        return ids, tokens[:, 1:].astype(np.int32)


def open_tokens(graph: OpGraph, data_dir: str | Path | None, split: Split = "train", seed: int = 0) -> TokenDataset:
    """The `split` of the token data at `data_dir` (synthetic from `seed` if None), checked against `graph`:
    its vocabulary, its sequence length and its batch size."""
    shape = token_input(graph)
    if shape is None:
        raise DataError(f"{graph.model} reads images, not token ids; drop --dataset tokens and --data-dir, or pick "
                        f"a token model")
    if split not in SYNTHETIC_TOKENS:
        raise DataError(f"token data has no split {split!r}; use one of: {', '.join(SYNTHETIC_TOKENS)}")
    if data_dir is None:
        rng = np.random.default_rng([seed, list(SYNTHETIC_TOKENS).index(split)])
        tokens = rng.integers(0, shape.vocab_size, SYNTHETIC_TOKENS[split], dtype=np.int32)
        dataset = TokenDataset(tokens, shape.sequence_tokens, split)
    else:
        path = _split_file(Path(data_dir), split)
        tokens = _read_text(path, shape.vocab_size) if path.suffix == ".txt" else _read_bin(path, shape.vocab_size)
        _require_window(path, len(tokens), shape.sequence_tokens)
        dataset = TokenDataset(tokens, shape.sequence_tokens, split, path)
    dataset.require_batch(graph.batch_size)
    return dataset


def has_split(data_dir: str | Path | None, split: Split) -> bool:
    """Whether the token data at `data_dir` holds `split` apart from the other splits: synthetic data (each
    split its own stream) or a folder with <split>.bin. A single .bin or .txt file is one split only."""
    return data_dir is None or (Path(data_dir) / f"{split}.bin").is_file()


def _split_file(path: Path, split: Split) -> Path:
    """The file that holds `split`: `path` itself if a .bin or .txt file, else the folder's <split>.bin."""
    if not path.exists():
        raise DataError(f"token data {path} does not exist: expected {LAYOUT}")
    if path.is_dir():
        if not (path / f"{split}.bin").is_file():
            raise DataError(f"no {split}.bin in {path}: expected {LAYOUT}")
        return path / f"{split}.bin"
    if path.suffix not in (".bin", ".txt"):
        raise DataError(f"token data {path} is neither a .bin nor a .txt file: expected {LAYOUT}")
    return path


def _read_bin(path: Path, vocab_size: int) -> np.ndarray:
    """The file's uint16 ids, memory-mapped, after checking its size and its largest id."""
    num_bytes = path.stat().st_size
    if num_bytes == 0:
        raise DataError(f"{path} is empty: expected uint16 token ids (2 bytes each); write the file again")
    if num_bytes % 2:
        raise DataError(f"{path} has {num_bytes} bytes, an odd count, so it is not whole uint16 token ids (2 bytes "
                        f"each): the file is truncated or in another format; write it again with "
                        f"np.array(ids, np.uint16).tofile(path)")
    tokens = np.memmap(path, np.uint16, mode="r")
    largest = int(tokens.max())
    if largest >= vocab_size:
        raise DataError(f"{path} holds token id {largest}, outside the model's vocabulary of {vocab_size} (ids 0 to "
                        f"{vocab_size - 1}); pass --vocab {largest + 1} or more, or the tokenizer's own vocabulary")
    return tokens


def _read_text(path: Path, vocab_size: int) -> np.ndarray:
    """The file's bytes as ids 0-255, memory-mapped, when the model's vocabulary holds every byte."""
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty: a text file needs at least one window of --seq-len + 1 bytes")
    if vocab_size < TEXT_VOCAB:
        raise DataError(f"{path} is read as bytes (ids 0 to 255), but the model's vocabulary is {vocab_size}; "
                        f"pass --vocab {TEXT_VOCAB}")
    return np.memmap(path, np.uint8, mode="r")


def _require_window(path: Path, num_tokens: int, sequence_tokens: int) -> None:
    """One DataError line unless the data holds one window: s + 1 tokens (the ids and the last label)."""
    if num_tokens < sequence_tokens + 1:
        fix = f"use --seq-len {num_tokens - 1} or less, or more data" if num_tokens > 1 else "write more data"
        raise DataError(f"{path} holds {num_tokens} tokens, fewer than one sample of --seq-len {sequence_tokens} "
                        f"plus its next-token label ({sequence_tokens + 1}); {fix}")
