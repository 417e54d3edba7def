"""Vet a distributed checkpoint's `.metadata` before torch reads it.

torch's distributed-checkpoint reader loads `.metadata` with plain `pickle.load`, which runs
whatever code the file names: a checkpoint directory from someone else could execute code on
`--load` or `--pretrained-checkpoint`. `check_metadata` first reads the same file with an unpickler
that only builds the classes torch itself writes there (the checkpoint's metadata and save-plan
records, `torch.Size`, dtypes, layouts, memory formats, `OrderedDict`) and refuses anything else
with a `CheckpointError` naming what the file asked for; only then may torch read it. A damaged or
missing `.metadata` is reported here too, before torch prints a traceback of its own.
"""

from __future__ import annotations

import collections
import importlib
import pickle
from pathlib import Path

import torch

from rmt_megatron.errors import CheckpointError

METADATA_FILE = ".metadata"
TORCH_RECORD_MODULES = (
    "torch.distributed.checkpoint.metadata",
    "torch.distributed.checkpoint.planner",
    "torch.distributed.checkpoint.filesystem",
)
"""Modules whose own classes (defined there, not imported) may appear in `.metadata`."""


class _VettingUnpickler(pickle.Unpickler):
    """Builds only what `_allowed` accepts; anything else raises `CheckpointError`."""

    def __init__(self, stream, path: Path) -> None:
        super().__init__(stream)
        self.path = path

    def find_class(self, module: str, name: str):
        found = _allowed(module, name)
        if found is None:
            raise CheckpointError(
                f"{self.path} asks to build {module}.{name}, which a distributed checkpoint's "
                "metadata never holds: refusing to read it (loading it could run code from the "
                "file); use a checkpoint written by rmt_megatron or Megatron-LM"
            )
        return found


def _allowed(module: str, name: str):
    """The object `module.name` when a checkpoint's metadata may build it, else None."""
    if module in TORCH_RECORD_MODULES:
        found = getattr(importlib.import_module(module), name, None)
        defined_here = getattr(found, "__module__", None) == module
        return found if isinstance(found, type) and defined_here else None
    if module == "torch":
        found = getattr(torch, name, None)
        return found if found is torch.Size or isinstance(found, torch.dtype) else None
    if (module, name) == ("torch.serialization", "_get_layout"):
        return torch.serialization._get_layout
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    return None


def check_metadata(directory: Path) -> None:
    """Raise `CheckpointError` unless `directory/.metadata` is present, complete and builds
    only torch's checkpoint records."""
    path = directory / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: {directory} is not a complete distributed checkpoint; load an "
            "earlier iter_* directory or the checkpoint it was copied from"
        )
    try:
        with path.open("rb") as stream:
            _VettingUnpickler(stream, path).load()
    except CheckpointError:
        raise
    except Exception as error:  # truncated or garbled pickle: many exception kinds
        raise CheckpointError(
            f"{path} is damaged ({type(error).__name__}: {error}); load an earlier iter_* "
            "directory or the checkpoint it was copied from"
        ) from None
