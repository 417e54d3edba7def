"""Megatron indexed datasets (`PREFIX.bin` + `PREFIX.idx`): written and read with megatron-core's
own `IndexedDatasetBuilder` / `IndexedDataset`, one sequence per document.

Writing goes to temporary files that are renamed into place only when both are complete, so a
crash never leaves a half-written pair. Reading checks that both files exist, that the index is
readable and consistent with the data, and that every token id fits the tokenizer's vocabulary.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import overload

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import (
    _INDEX_HEADER,
    DType,
    IndexedDataset,
    IndexedDatasetBuilder,
    get_bin_path,
    get_idx_path,
)

from rmt_megatron.errors import DatasetError


def write_indexed_dataset(
    prefix: str | os.PathLike, documents: Iterable[list[int]], vocab_size: int
) -> int:
    """Write `documents` (token-id lists) as `prefix.bin/.idx`; returns the document count."""
    prefix = str(prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    temporary = prefix + ".tmp"
    builder = IndexedDatasetBuilder(get_bin_path(temporary), dtype=DType.optimal_dtype(vocab_size))
    count = 0
    try:
        for tokens in documents:
            if not tokens:
                continue
            builder.add_document(torch.tensor(tokens, dtype=torch.int64), [len(tokens)])
            count += 1
        if count == 0:
            raise DatasetError(f"no non-empty document to write to {prefix}")
        builder.finalize(get_idx_path(temporary))
    except BaseException:  # a bad input line, Ctrl-C: leave no half-written file behind
        builder.data_file.close()
        for path in (get_bin_path(temporary), get_idx_path(temporary)):
            Path(path).unlink(missing_ok=True)
        raise
    os.replace(get_bin_path(temporary), get_bin_path(prefix))
    os.replace(get_idx_path(temporary), get_idx_path(prefix))
    return count


def load_indexed_dataset(prefix: str | os.PathLike, vocab_size: int) -> IndexedDataset:
    """Open `prefix.bin/.idx`, checking that it exists, is intact and fits `vocab_size`."""
    prefix = str(prefix)
    if Path(prefix).is_dir():
        raise DatasetError(
            f"{prefix} is a directory: give the prefix of a dataset, PREFIX for PREFIX.bin and "
            f"PREFIX.idx (e.g. {Path(prefix) / 'train'})"
        )
    for path in (get_idx_path(prefix), get_bin_path(prefix)):
        if not os.path.isfile(path):
            raise DatasetError(
                f"{path} does not exist: build the dataset with `rmt-preprocess "
                f"--input FILE --output-prefix {prefix}`"
            )
    with open(get_idx_path(prefix), "rb") as index_file:
        header = index_file.read(len(_INDEX_HEADER))
    if header != _INDEX_HEADER:
        raise DatasetError(
            f"{get_idx_path(prefix)} is not a Megatron index (bad header): it is "
            "corrupt or another format; rebuild it with rmt-preprocess"
        )
    try:  # documents are read from the .bin per access (a memory map would keep the pages
        # around every document read resident: about 64 KiB each)
        dataset = IndexedDataset(prefix, mmap=False)
    except (AssertionError, ValueError, OSError, struct.error) as error:
        raise DatasetError(
            f"{get_idx_path(prefix)} is corrupt ({error or type(error).__name__}):"
            " rebuild it with rmt-preprocess"
        ) from None
    index = dataset.index  # the last document's end: two entries read, not every length
    expected = (
        int(index.sequence_pointers[-1]) + int(index.sequence_lengths[-1]) * index.dtype_size
        if len(index)
        else 0
    )
    actual = os.path.getsize(get_bin_path(prefix))
    if actual != expected:
        raise DatasetError(
            f"{get_bin_path(prefix)} has {actual} bytes but its index describes "
            f"{expected}: the .bin and .idx do not belong together (rebuild both)"
        )
    largest = _largest_token(get_bin_path(prefix), dataset.index.dtype)
    if largest >= vocab_size:
        raise DatasetError(
            f"{prefix} holds token id {largest}, but the tokenizer has only "
            f"{vocab_size} tokens: the dataset was built with another tokenizer"
        )
    return dataset


def _largest_token(bin_path: str, dtype, chunk_tokens: int = 1 << 24) -> int:
    """The largest token id in `bin_path`, read in chunks of `chunk_tokens`: memory stays at
    one chunk whatever the corpus size (a memory map of the whole file would keep every page
    it read resident)."""
    largest = 0
    with open(bin_path, "rb") as tokens:
        while (chunk := np.fromfile(tokens, dtype=dtype, count=chunk_tokens)).size:
            largest = max(largest, int(chunk.max()))
    return largest


class Documents(Sequence[np.ndarray]):
    """The documents of an indexed dataset as int64 token-id arrays, each read from the `.bin`
    when it is asked for: nothing per token stays in memory. `lengths` is the index's
    per-document token counts (memory-mapped, as the whole `.idx`)."""

    def __init__(self, dataset: IndexedDataset) -> None:
        self._dataset = dataset
        self.lengths: np.ndarray = dataset.index.sequence_lengths

    def __len__(self) -> int:
        return len(self.lengths)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"document {index} of {len(self)}")
        return np.asarray(self._dataset[index], dtype=np.int64)


def documents_of(dataset: IndexedDataset) -> Documents:
    """The documents of `dataset`, read on access (`Documents`)."""
    return Documents(dataset)


def document_lengths(documents: Sequence[np.ndarray]) -> np.ndarray:
    """Token counts of `documents` (int64): the index's for `Documents`, else measured."""
    if isinstance(documents, Documents):
        return np.asarray(documents.lengths, dtype=np.int64)
    return np.asarray([len(d) for d in documents], dtype=np.int64)
