"""Crash-safe file writes: a temporary file beside the target, then an atomic rename."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np


def atomic_save_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """`np.save(path, array)` through `atomic_write` (`path` keeps its own name, e.g. a
    `.partial` file)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write(path, buffer.getvalue())


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    if isinstance(data, bytes):
        temporary.write_bytes(data)
    else:
        temporary.write_text(data)
    temporary.replace(path)
