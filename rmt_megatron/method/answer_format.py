"""The answer format, in one place: `<think> reasoning </think> ... \\boxed{prediction}`.

- `extract_prediction`: the content of the last complete `\\boxed{...}` after the first
  `</think>` (braces may nest); no `</think>`, or no box after it, is an invalid answer (None).
- `AnswerStop`: the stop rule while sampling, fed token bytes one token at a time; a response is
  done once a `\\boxed{...}` after `</think>` closes, so nothing is generated past the answer.
- `worked_answer`: the text that closes the reasoning and boxes an answer (warm-start examples).

Text is compared as bytes decoded with `surrogateescape` (`decode_bytes` / `encode_text`), so a
prediction re-encodes to exactly the bytes the model produced, even where a byte-level token holds
half of a UTF-8 character.
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
BOXED_OPEN = "\\boxed{"
BOXED_CLOSE = "}"
FORMAT_SYMBOLS = (THINK_OPEN, THINK_CLOSE, BOXED_OPEN)
"""The pieces a tokenizer trained here keeps as single tokens."""


def decode_bytes(data: bytes) -> str:
    """Bytes -> str, losslessly (undecodable bytes become surrogates and re-encode exactly)."""
    return data.decode("utf-8", errors="surrogateescape")


def encode_text(text: str) -> bytes:
    """Inverse of `decode_bytes`."""
    return text.encode("utf-8", errors="surrogateescape")


def worked_answer(reasoning: str, answer: str) -> str:
    """`reasoning</think>\\boxed{answer}`: the rest of a response whose think block is open."""
    return f"{reasoning}{THINK_CLOSE}{BOXED_OPEN}{answer}{BOXED_CLOSE}"


def extract_prediction(response: str) -> str | None:
    """Content of the last complete `\\boxed{...}` after `</think>`, or None if there is none."""
    close = response.find(THINK_CLOSE)
    if close < 0:
        return None
    answer = response[close + len(THINK_CLOSE) :]
    start = answer.rfind(BOXED_OPEN)
    while start >= 0:
        content = _balanced_content(answer, start + len(BOXED_OPEN))
        if content is not None:
            return content
        start = answer.rfind(BOXED_OPEN, 0, start)
    return None


def _balanced_content(text: str, begin: int) -> str | None:
    """`text[begin:end]` where `text[end]` is the `}` that closes an already-open brace."""
    depth = 1
    for index in range(begin, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == BOXED_CLOSE:
            depth -= 1
            if depth == 0:
                return text[begin:index]
    return None


class AnswerStop:
    """Per-response byte-level state machine: done once a `\\boxed{...}` after `</think>`
    closes (the same rule as `extract_prediction`, read left to right)."""

    _CLOSE = encode_text(THINK_CLOSE)
    _BOX = encode_text(BOXED_OPEN)

    def __init__(self) -> None:
        self._tail = b""
        self._after_think = False
        self._depth = 0
        self.done = False

    def feed(self, data: bytes) -> bool:
        """Consume the next token's bytes; returns `self.done`."""
        for value in data:
            char = bytes([value])
            if self._depth:
                self._depth += {b"{": 1, b"}": -1}.get(char, 0)
                if self._depth == 0:
                    self.done = True
                    break
                continue
            self._tail = (self._tail + char)[-max(len(self._BOX), len(self._CLOSE)) :]
            if not self._after_think:
                self._after_think = self._tail.endswith(self._CLOSE)
            elif self._tail.endswith(self._BOX):
                self._depth = 1
        return self.done
