"""What the method needs from a tokenizer (implemented by `rmt_megatron.model_io.tokenizers`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol


class Tokenizer(Protocol):
    """Ids <-> text, the exact bytes of every id (the match rewards compare bytes), the
    end-of-sequence id, and the chat template the prompt is framed with (None: plain text)."""

    path: Path
    chat_template: str | None
    bos_text: str
    """What a chat template's `bos_token` renders as ("" where the model adds none)."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def token_bytes(self, ids: Iterable[int]) -> list[bytes]: ...
