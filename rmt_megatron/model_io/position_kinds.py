"""Position kinds: an optional label for every token of an indexed dataset, stored beside it.

`PREFIX.kinds.npz` holds `names` (a string array, e.g. ["computed", "operand", "text"]) and
`codes` (uint8, flat over the dataset's tokens in document order, entry i being the index in
`names` of the kind of token i). The evaluation reports accuracy per kind when the file exists;
the built-in datasets write one (the kind of each token's source in the corpus). Plain arrays
only: loading never unpickles.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from rmt_megatron.errors import DatasetError
from rmt_megatron.files import atomic_write


def kinds_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{prefix}.kinds.npz")


def write_position_kinds(
    prefix: str | os.PathLike, names: tuple[str, ...], codes: np.ndarray
) -> None:
    """Store the kinds of a dataset's tokens (`codes` flat over all tokens)."""
    if codes.size and int(codes.max()) >= len(names):
        raise ValueError(f"kind code {int(codes.max())} has no name among {names}")
    buffer = io.BytesIO()
    np.savez(buffer, names=np.array(names), codes=codes.astype(np.uint8))
    atomic_write(kinds_path(prefix), buffer.getvalue())


def load_position_kinds(
    prefix: str | os.PathLike, token_count: int
) -> tuple[list[str], np.ndarray] | None:
    """(names, flat codes) of the dataset at `prefix`, or None where it has no kinds file;
    a file that does not fit the dataset is an error naming how to fix it."""
    path = kinds_path(prefix)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            names, codes = [str(n) for n in stored["names"]], stored["codes"]
    except (OSError, ValueError, KeyError) as error:
        raise DatasetError(f"{path} is damaged ({error}): delete it or rewrite it") from None
    if codes.shape != (token_count,) or (codes.size and int(codes.max()) >= len(names)):
        raise DatasetError(
            f"{path} labels {codes.size} tokens but {prefix} holds {token_count}: it belongs "
            "to another version of the dataset; delete it or rewrite it"
        )
    return names, codes
