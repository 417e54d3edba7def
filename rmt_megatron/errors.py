"""The errors a user can fix, under one base class.

Every entry point (`pretrain_rmt.py`, `rmt-preprocess`, `rmt-export-hf`, `rmt-warmstart`) turns
an `RMTError` into one line on stderr, `error: <message>`, and a non-zero exit status, with no
traceback (`rmt_megatron.cli.command`). The message says what is wrong, the value or file seen,
and how to fix it. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class RMTError(Exception):
    """A problem with the user's input (flags, files, data) that the message explains."""


class ConfigError(RMTError, ValueError):
    """A configuration value is out of range or inconsistent with another one.

    `field` is the config field at fault (`"section.name"`), when one is; the flag parser uses it
    to name the command-line flag that sets it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DatasetError(RMTError, ValueError):
    """An indexed dataset or a text input is missing, corrupt, or does not fit the tokenizer."""


class TokenizerError(RMTError, ValueError):
    """A tokenizer file is missing, unreadable, or lacks what the run needs."""


class CheckpointError(RMTError, RuntimeError):
    """A checkpoint (ours, Hugging Face or GGUF) is missing, incomplete or does not fit the run."""


class TrainingError(RMTError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN)."""
