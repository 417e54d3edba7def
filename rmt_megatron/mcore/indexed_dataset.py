"""Megatron indexed datasets (`PREFIX.bin` + `PREFIX.idx`): written and read with megatron-core's
own `IndexedDatasetBuilder` / `IndexedDataset`, one sequence per document.

Writing goes to temporary files that are renamed into place only when both are complete, so a
crash never leaves a half-written pair. Reading checks that both files exist, that the index is
readable and consistent with the data, and that every token id fits the tokenizer's vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

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
    try:
        dataset = IndexedDataset(prefix, mmap=True)
    except (AssertionError, ValueError, OSError) as error:
        raise DatasetError(
            f"{get_idx_path(prefix)} is corrupt ({error or type(error).__name__}):"
            " rebuild it with rmt-preprocess"
        ) from None
    expected = int(dataset.index.sequence_lengths.sum()) * dataset.index.dtype_size
    actual = os.path.getsize(get_bin_path(prefix))
    if actual != expected:
        raise DatasetError(
            f"{get_bin_path(prefix)} has {actual} bytes but its index describes "
            f"{expected}: the .bin and .idx do not belong together (rebuild both)"
        )
    tokens = np.memmap(get_bin_path(prefix), dtype=dataset.index.dtype, mode="r")
    largest = int(tokens.max())
    if largest >= vocab_size:
        raise DatasetError(
            f"{prefix} holds token id {largest}, but the tokenizer has only "
            f"{vocab_size} tokens: the dataset was built with another tokenizer"
        )
    return dataset


def documents_of(dataset: IndexedDataset) -> list[np.ndarray]:
    """Every document of `dataset` as an int64 token-id array."""
    return [np.asarray(dataset[i], dtype=np.int64) for i in range(len(dataset))]
