"""Budget-aware batched sampling from a megatron-core `GPTModel`, with a KV cache.

For P prompts and G samples each:

1. Prefill: the P prompts, left-padded to a common length L, run once (batch P) through the
   model with a causal mask that also hides the padding. RoPE only sees relative positions, so
   left padding changes nothing but the mask.
2. The prompt's keys/values are copied to its G sample rows (batch P·G): samples share their
   prompt's prefill.
3. Decode one token per step for every unfinished row, feeding only that token; megatron-core's
   `StaticInferenceContext` holds the cache, `[max_len, batch, ...]` per layer. A row stops at
   EOS or when its `\\boxed{...}` after `</think>` closes (`AnswerStop`), or at `max_new_tokens`
   (the caller derives it from the budget: nothing past 2·B_t earns a length reward). Finished
   rows leave the batch: the cache rows of the active ones are moved to the front, and the
   context only ever reads rows [0, active).

Sampling: temperature, then top-p, from the logits of the real vocabulary (the padded rows that
Megatron adds for TP are masked out), with a caller-seeded `torch.Generator`, so every TP rank
draws the same tokens from the same gathered logits. Under pipeline parallelism the hidden states
travel stage to stage each step and the last stage broadcasts the sampled tokens to all stages.
Without `use_kv_cache` every step recomputes the whole sequence (for benchmarks and checks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from megatron.core.inference.contexts import StaticInferenceContext

from rmt_megatron.config.sections import ModelConfig
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.device import compute_device
from rmt_megatron.mcore.gpt_model import DTYPES
from rmt_megatron.method.answer_format import AnswerStop
from rmt_megatron.method.tokenizer import Tokenizer


@dataclass
class Rollout:
    """One sampled response to one prompt."""

    prompt_index: int
    tokens: list[int]
    finished: bool
    """True if it stopped on its own (answer closed or EOS); False if cut at max_new_tokens."""


def _attention_mask(key_pad: torch.Tensor, queries: int) -> torch.Tensor:
    """`[b, 1, queries, keys]` bool, True = hidden: padding keys, and future keys among the
    last `queries` positions."""
    keys = key_pad.shape[1]
    future = torch.ones(queries, queries, dtype=torch.bool).triu(1)
    causal = torch.cat([torch.zeros(queries, keys - queries, dtype=torch.bool), future], dim=1)
    return causal[None, None] | key_pad[:, None, None, :]


def _sample(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> torch.Tensor:
    """`logits: [b, V]` fp32 -> `[b]` token ids; temperature 0 is greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _on_device(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """`generator` itself on its own device; on another, a generator there seeded from it (one
    draw), so every TP rank still samples the same tokens."""
    if generator.device.type == device.type:
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


class RolloutEngine:
    """Generates rollouts from `model` (this rank's stage; eval mode is set while sampling).

    vocab_size: the tokenizer's (logits past it are Megatron's padding). token_bytes: maps ids to
    their bytes, for the answer stop. eos_id: stops a row."""

    def __init__(
        self,
        model,
        vocab_size: int,
        eos_id: int,
        token_bytes: Callable[[Sequence[int]], list[bytes]],
        hidden_size: int,
        params_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = model
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.token_bytes = token_bytes
        self.hidden_size = hidden_size
        self.params_dtype = params_dtype

    @classmethod
    def for_model(cls, model, tokenizer: Tokenizer, config: ModelConfig) -> RolloutEngine:
        """An engine over `model` (this rank's stage) that samples `tokenizer`'s vocabulary."""
        return cls(
            model,
            tokenizer.vocab_size,
            tokenizer.eos_id,
            tokenizer.token_bytes,
            config.hidden_size,
            DTYPES[config.params_dtype],
        )

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        group_size: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        generator: torch.Generator,
        use_kv_cache: bool = True,
    ) -> list[Rollout]:
        """`group_size` rollouts per prompt, prompt-major: rollout i answers prompt i // G."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self._generate(
                prompts, group_size, max_new_tokens, temperature, top_p, generator, use_kv_cache
            )
        finally:
            self.model.train(was_training)

    def _generate(
        self, prompts, group_size, max_new_tokens, temperature, top_p, generator, use_kv_cache
    ) -> list[Rollout]:
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        length = max(len(p) for p in prompts)
        batch = len(prompts) * group_size
        tokens = torch.full((len(prompts), length), self.eos_id, dtype=torch.long)
        key_pad = torch.ones(len(prompts), length, dtype=torch.bool)  # True = padding
        for row, prompt in enumerate(prompts):
            tokens[row, length - len(prompt) :] = torch.tensor(list(prompt))
            key_pad[row, length - len(prompt) :] = False

        context = StaticInferenceContext(batch, length + max_new_tokens) if use_kv_cache else None
        logits = self._forward(tokens, _attention_mask(key_pad, length), context)
        if context is not None:
            self._expand_cache(context, len(prompts), group_size)
        if logits is not None:
            logits = logits.repeat_interleave(group_size, dim=0)
        key_pad = key_pad.repeat_interleave(group_size, dim=0)
        tokens = tokens.repeat_interleave(group_size, dim=0)

        generator = _on_device(generator, compute_device())
        active = torch.arange(batch)  # row ids of the batch slots still generating
        generated: list[list[int]] = [[] for _ in range(batch)]
        stops = [AnswerStop() for _ in range(batch)]
        finished = [False] * batch
        for step in range(max_new_tokens):
            sampled = self._next_tokens(logits, len(active), temperature, top_p, generator)
            keep = []
            for slot, (row, token) in enumerate(
                zip(active.tolist(), sampled.tolist(), strict=True)
            ):
                generated[row].append(token)
                finished[row] = token == self.eos_id or stops[row].feed(
                    self.token_bytes([token])[0]
                )
                if not finished[row]:
                    keep.append(slot)
            if not keep or step == max_new_tokens - 1:
                break
            keep = torch.tensor(keep)
            active = active[keep]
            key_pad = torch.cat([key_pad[keep], torch.zeros(len(keep), 1, dtype=torch.bool)], 1)
            if context is not None:
                if len(keep) < len(sampled):  # a row finished: close the gap it leaves
                    self._compact_cache(context, keep)
                logits = self._forward(sampled[keep][:, None], _attention_mask(key_pad, 1), context)
            else:
                tokens = torch.cat([tokens[keep], sampled[keep][:, None]], dim=1)
                logits = self._forward(tokens, _attention_mask(key_pad, tokens.shape[1]), None)
        return [Rollout(row // group_size, generated[row], finished[row]) for row in range(batch)]

    def _next_tokens(
        self,
        logits: torch.Tensor | None,
        rows: int,
        temperature: float,
        top_p: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Sample on the last stage and share the tokens with every pipeline stage."""
        if logits is not None:
            logits = logits.float()
            logits[:, self.vocab_size :] = float("-inf")
            tokens = _sample(logits, temperature, top_p, generator)
        else:
            tokens = torch.empty(rows, dtype=torch.long, device=compute_device())
        return parallel.broadcast_from_last_stage(tokens).cpu()

    def _forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, context: StaticInferenceContext | None
    ) -> torch.Tensor | None:
        """Run this stage on `tokens: [b, s]`; last-position logits `[b, V]` on the last stage,
        None on the others (which pass their hidden states on)."""
        rows, fed = tokens.shape
        device = compute_device()
        if not parallel.is_first_stage():
            hidden = torch.empty(
                fed, rows, self.hidden_size, dtype=self.params_dtype, device=device
            )
            self.model.set_input_tensor(parallel.receive_from_previous_stage(hidden))
        offset = 0 if context is None else context.sequence_len_offset
        positions = torch.arange(offset, offset + fed)[None].expand(rows, fed)
        output = self.model(
            tokens.to(device),
            positions.to(device),
            mask.to(device),
            inference_context=context,
            runtime_gather_output=True,
        )
        if context is not None:
            context.sequence_len_offset += fed
        if not parallel.is_last_stage():
            parallel.send_to_next_stage(output)
            return None
        return output[:, -1, :]

    @staticmethod
    def _expand_cache(context: StaticInferenceContext, prompts: int, group_size: int) -> None:
        for key, value in context.key_value_memory_dict.values():
            for memory in (key, value):
                memory[:, : prompts * group_size] = memory[:, :prompts].repeat_interleave(
                    group_size, dim=1
                )

    @staticmethod
    def _compact_cache(context: StaticInferenceContext, keep: torch.Tensor) -> None:
        """Move the cache rows of the batch slots in `keep` to the front, in order, over the
        positions filled so far (`[max_len, batch, groups, head_dim]` per layer; positions past
        `sequence_len_offset` hold nothing yet and are not read)."""
        filled = context.sequence_len_offset
        for key, value in context.key_value_memory_dict.values():
            for memory in (key, value):
                memory[:filled, : len(keep)] = memory[:filled, keep]
