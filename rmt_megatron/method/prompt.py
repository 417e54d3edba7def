"""The next-token-reasoning prompt: RPT's v0 elements plus RMT's budget clause (docs/method.md,
"The prompt").

Layout of a prompt, as token ids:

    header(B_t) + context tokens τ_<pos (left-truncated) + "\\n<think>"

The header asks to continue the text under "### Context" by predicting the next token, to reason
step by step and box the single most probable next token, notes that a token may start with a
space and that \\text{} is not allowed, and (with the budget on) asks for exactly B_t thinking
tokens. The context is the document's own token ids, so the boundary token is exact. The prompt
ends by opening the think block, as a reasoning chat template does; the response continues it.

Where the tokenizer has a chat template (an instruct model), the header and context are the user
turn and the think block opens the assistant turn:

    template(user: header + [context]) + "<think>"

rendered once with a placeholder where the context goes, so the context ids are still the
document's own.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from rmt_megatron.errors import ConfigError
from rmt_megatron.method.answer_format import BOXED_CLOSE, BOXED_OPEN, THINK_CLOSE, THINK_OPEN
from rmt_megatron.method.tokenizer import Tokenizer

_BOX = BOXED_OPEN + BOXED_CLOSE
INSTRUCTION = (
    "Continue the text under ### Context by predicting its next token. Reason step by "
    f"step inside {THINK_OPEN}{THINK_CLOSE}, then put the single most probable next "
    f"token in {_BOX}. A token may start with a space, e.g. {BOXED_OPEN} the"
    f"{BOXED_CLOSE}; do not use \\text{{}}."
)
BUDGET_CLAUSE = (
    " Think for exactly {budget} tokens inside "
    + THINK_OPEN
    + THINK_CLOSE
    + ", then give the answer."
)
CONTEXT_HEADING = "\n### Context\n"
THINK_START = "\n" + THINK_OPEN
CONTEXT_SLOT = "\x00CONTEXT\x00"
"""Stands for the context while the chat template is rendered."""


def prompt_header(budget: int | None) -> str:
    """Instruction text (with the budget clause when `budget` is given) and the context heading."""
    clause = "" if budget is None else BUDGET_CLAUSE.format(budget=budget)
    return INSTRUCTION + clause + CONTEXT_HEADING


@functools.cache
def _chat_template(source: str):
    """A chat template compiled once (jinja2 sandbox, Hugging Face's settings)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    return environment.from_string(source)


def render_chat(tokenizer: Tokenizer, messages: list[dict[str, str]]) -> str:
    """The text of `messages` ([{"role", "content"}]) under the tokenizer's chat template, ending
    with the assistant turn's opening (Hugging Face's add_generation_prompt=True)."""
    if tokenizer.chat_template is None:
        raise ConfigError(f"{tokenizer.path} has no chat template to render")
    eos = tokenizer.decode([tokenizer.eos_id])
    return _chat_template(tokenizer.chat_template).render(
        messages=messages, add_generation_prompt=True, eos_token=eos, bos_token=tokenizer.bos_text
    )


def _frame(tokenizer: Tokenizer, header: str) -> tuple[list[int], list[int]]:
    """(ids before the context, ids after it)."""
    if tokenizer.chat_template is None:
        return tokenizer.encode(header), tokenizer.encode(THINK_START)
    text = render_chat(tokenizer, [{"role": "user", "content": header + CONTEXT_SLOT}])
    if text.count(CONTEXT_SLOT) != 1:
        raise ConfigError(
            f"the chat template of {tokenizer.path} does not place the user "
            "message once: the reasoning prompt cannot be framed by it"
        )
    before, after = text.split(CONTEXT_SLOT)
    return tokenizer.encode(before), tokenizer.encode(after + THINK_START.lstrip("\n"))


def build_prompt(
    tokenizer: Tokenizer, context: Sequence[int], budget: int | None, max_prompt_length: int
) -> list[int]:
    """Token ids of the prompt for predicting the token after `context`."""
    header, tail = _frame(tokenizer, prompt_header(budget))
    room = max_prompt_length - len(header) - len(tail)
    if room < 1:
        raise ConfigError(
            f"rollout.max_prompt_length={max_prompt_length} leaves no room for "
            f"context after the {len(header) + len(tail)}-token instruction: "
            "raise --rmt-max-prompt-length"
        )
    return header + list(context[-room:]) + tail
