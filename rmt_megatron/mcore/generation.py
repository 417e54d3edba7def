"""Budget-aware batched sampling from a megatron-core `GPTModel`, with a KV cache.

For P prompts and G samples each, in chunks of prompts whose cache fits the KV budget:

1. Prefill: the chunk's prompts, left-padded to a common length L, run once (batch P) through
   the model with a causal mask that also hides the padding. RoPE only sees relative positions,
   so left padding changes nothing but the mask. Transformer Engine's attention ignores that
   mask (causal for prefill, none for decoding), so under TE a chunk only holds prompts of one
   length: nothing is padded and nothing needs hiding.
2. The prompt's keys/values are copied to its G sample rows (batch P·G): samples share their
   prompt's prefill.
3. Decode one token per step for every unfinished row, feeding only that token; megatron-core's
   `StaticInferenceContext` holds the cache, `[L + max_new_tokens, P·G, ...]` per layer. A row
   stops at EOS or when its `\\boxed{...}` after `</think>` closes (`AnswerStop`), or at
   `max_new_tokens` (the caller derives it from the budget: nothing past 2·B_t earns a length
   reward). The stop rule runs on the host over the tokens' bytes, so the sampled tokens come
   to the host once every `stop_check_interval` steps, not every step; a row that stopped inside
   an interval keeps decoding until its end and its extra tokens are dropped. Finished rows then
   leave the batch: the cache rows of the active ones move to the front over the filled
   positions only, and the context only ever reads rows [0, active).

KV budget: a chunk's cache is rows · (L + max_new_tokens) · `kv_cache_bytes_per_position`;
prompts join a chunk (in order) while it stays within `kv_cache_bytes`, so the whole step never
has to fit at once. One prompt's G rows must fit.

Sampling (`mcore.sampling`): temperature, then top-p, over this TP rank's vocabulary columns,
with the caller's seeded generator, so every TP rank draws the same tokens without gathering the
logits. Under pipeline parallelism the hidden states travel stage to stage each step and the last
stage broadcasts the sampled tokens to all stages. With one chunk and `stop_check_interval` 1 the
generator is consumed as it always was; more chunks or a longer interval keep the distribution
but draw other tokens. Without `use_kv_cache` every step recomputes the whole sequence (for
benchmarks and checks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from megatron.core.inference.contexts import StaticInferenceContext
from megatron.core.models.gpt import GPTModel
from torch.utils.hooks import RemovableHandle

from rmt_megatron.config.sections import ModelConfig, RolloutConfig
from rmt_megatron.errors import ConfigError
from rmt_megatron.mcore import parallel, sampling
from rmt_megatron.mcore.cpu import built_with_transformer_engine
from rmt_megatron.mcore.device import compute_device, free_memory_room
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


class RowStop:
    """One rollout's stop rule: it ends at EOS or once its `\\boxed{...}` after `</think>`
    closes (`AnswerStop`, over the tokens' bytes)."""

    def __init__(self, eos_id: int, token_bytes: Callable[[Sequence[int]], list[bytes]]) -> None:
        self.eos_id = eos_id
        self.token_bytes = token_bytes
        self.answer = AnswerStop()
        self.stopped = False

    def take(self, tokens: Sequence[int], into: list[int]) -> bool:
        """Append `tokens` to `into` up to and including the one that stops the row (none once
        it has stopped); returns whether it has stopped."""
        for token in tokens:
            if self.stopped:
                break
            into.append(token)
            self.stopped = token == self.eos_id or self.answer.feed(self.token_bytes([token])[0])
        return self.stopped


def kv_cache_bytes_per_position(model: ModelConfig) -> int:
    """Bytes of keys and values that one batch row holds per position on the heaviest rank:
    2 · ⌈layers / PP⌉ · (query groups / TP) · head_dim · bytes(params_dtype)."""
    pp, tp = model.pipeline_model_parallel_size, model.tensor_model_parallel_size
    layers = -(-model.num_layers // pp)
    dtype_bytes = torch.empty((), dtype=DTYPES[model.params_dtype]).element_size()
    return 2 * layers * (model.query_groups // tp) * model.head_dim * dtype_bytes


def kv_budget(kv_cache_bytes: int | None) -> int | None:
    """The rollout KV budget on this rank, the same on every rank of the model replica:
    `kv_cache_bytes` when given, else the room `device.free_memory_room` finds now (the smallest
    over the model-parallel group); None for no limit (a CPU)."""
    if kv_cache_bytes is not None:
        return kv_cache_bytes
    room = free_memory_room()
    return None if room is None else parallel.model_parallel_min(room)


def _attention_mask(key_pad: torch.Tensor, queries: int) -> torch.Tensor:
    """`[b, 1, queries, keys]` bool, True = hidden: padding keys, and future keys among the
    last `queries` positions."""
    keys = key_pad.shape[1]
    device = key_pad.device
    future = torch.ones(queries, queries, dtype=torch.bool, device=device).triu(1)
    past = torch.zeros(queries, keys - queries, dtype=torch.bool, device=device)
    return torch.cat([past, future], dim=1)[None, None] | key_pad[:, None, None, :]


@contextlib.contextmanager
def output_layer_hooks(
    model: torch.nn.Module, attach: Callable[[torch.nn.Module], RemovableHandle]
) -> Iterator[None]:
    """Inside, the hook `attach(output_layer)` registers stays on the output layer of every
    last-stage `GPTModel` in `model`; it is removed on the way out."""
    handles = [
        attach(module.output_layer)
        for module in model.modules()
        if isinstance(module, GPTModel) and module.post_process
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _vocab_parallel_logits(model: torch.nn.Module):
    """Inside (a context manager), the output layer of every `GPTModel` in `model` returns this
    TP rank's vocabulary columns. megatron-core's GPTModel insists on gathering the logits
    whenever it runs with an inference context (an assertion on `runtime_gather_output`); a
    forward pre-hook turns the gather off where it happens, in the output layer's call."""

    def keep_shard(module, args, kwargs):
        return args, {**kwargs, "runtime_gather_output": False}

    return output_layer_hooks(
        model, lambda layer: layer.register_forward_pre_hook(keep_shard, with_kwargs=True)
    )


def _on_device(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """`generator` itself on its own device; on another, a generator there seeded from it (one
    draw), so every TP rank still samples the same tokens."""
    if generator.device.type == device.type:
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


@dataclass(frozen=True)
class Sampling:
    """How one `generate` call samples (the caller's settings)."""

    group_size: int
    max_new_tokens: int
    temperature: float
    top_p: float
    generator: torch.Generator
    use_kv_cache: bool


class RolloutEngine:
    """Generates rollouts from `model` (this rank's stage; eval mode is set while sampling).

    vocab_size: the tokenizer's (logits past it are Megatron's padding). token_bytes: maps ids to
    their bytes, for the answer stop. eos_id: stops a row. kv_cache_bytes: the KV budget of one
    chunk on this rank; None: the room `device.free_memory_room` finds at each call (the
    smallest over the model-parallel group, so every rank cuts the same chunks), which is no
    limit on a CPU. kv_bytes_per_position: what one row holds per position
    (`kv_cache_bytes_per_position`). stop_check_interval: decoding steps between looks at the
    stop rule. equal_length_chunks: chunks hold prompts of one length (what Transformer Engine's
    attention needs; the default where `model` holds TE's layers)."""

    def __init__(
        self,
        model,
        vocab_size: int,
        eos_id: int,
        token_bytes: Callable[[Sequence[int]], list[bytes]],
        hidden_size: int,
        params_dtype: torch.dtype = torch.float32,
        *,
        kv_cache_bytes: int | None = None,
        kv_bytes_per_position: int = 1,
        stop_check_interval: int = 1,
        equal_length_chunks: bool | None = None,
    ) -> None:
        if stop_check_interval < 1:
            raise ValueError(f"stop_check_interval must be >= 1, got {stop_check_interval}")
        if kv_bytes_per_position < 1:
            raise ValueError("the KV budget needs kv_bytes_per_position >= 1")
        self.model = model
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.token_bytes = token_bytes
        self.hidden_size = hidden_size
        self.params_dtype = params_dtype
        self.kv_cache_bytes = kv_cache_bytes
        self.kv_bytes_per_position = kv_bytes_per_position
        self.stop_check_interval = stop_check_interval
        self.equal_length_chunks = (
            model is not None and built_with_transformer_engine(model)
            if equal_length_chunks is None
            else equal_length_chunks
        )
        self.peak_kv_cache_bytes = 0
        """The largest chunk's cache allocated so far on this rank (for benchmarks)."""
        self.cache_bytes_moved = 0
        """Bytes the cache compaction has copied so far on this rank (for benchmarks)."""
        self.decoding_steps = 0
        """Batched decoding steps run so far (for benchmarks)."""

    @classmethod
    def for_model(
        cls, model, tokenizer: Tokenizer, config: ModelConfig, rollout: RolloutConfig
    ) -> RolloutEngine:
        """An engine over `model` (this rank's stage) that samples `tokenizer`'s vocabulary, with
        `rollout`'s KV budget and stop-check interval."""
        return cls(
            model,
            tokenizer.vocab_size,
            tokenizer.eos_id,
            tokenizer.token_bytes,
            config.hidden_size,
            DTYPES[config.params_dtype],
            kv_cache_bytes=rollout.kv_cache_bytes,
            kv_bytes_per_position=kv_cache_bytes_per_position(config),
            stop_check_interval=rollout.stop_check_interval,
        )

    def kv_budget(self) -> int | None:
        """This call's KV budget of one chunk on this rank (`kv_budget`)."""
        return kv_budget(self.kv_cache_bytes)

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
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        how = Sampling(
            group_size,
            max_new_tokens,
            temperature,
            top_p,
            _on_device(generator, compute_device()),
            use_kv_cache,
        )
        was_training = self.model.training
        self.model.eval()
        rollouts: list[Rollout] = []
        try:
            with _vocab_parallel_logits(self.model):
                budget = self.kv_budget()
                for chunk in self.chunks(prompts, group_size, max_new_tokens, budget):
                    rollouts += self._generate_chunk([prompts[i] for i in chunk], chunk, how)
        finally:
            self.model.train(was_training)
        return sorted(rollouts, key=lambda r: r.prompt_index)  # stable: G samples keep order

    def chunks(
        self,
        prompts: Sequence[Sequence[int]],
        group_size: int,
        max_new_tokens: int,
        budget: int | None,
    ) -> list[list[int]]:
        """Prompt indices of each chunk: in order (by length first with equal-length chunks),
        each chunk's cache within `budget` bytes (None: no limit). The same on every rank."""
        order = range(len(prompts))
        if self.equal_length_chunks:
            order = sorted(order, key=lambda i: len(prompts[i]))
        chunks: list[list[int]] = []
        for index in order:
            chunk = chunks[-1] if chunks else None
            if chunk is not None and self._joins(
                chunk, index, prompts, group_size, max_new_tokens, budget
            ):
                chunk.append(index)
                continue
            if budget is not None:
                alone = self.cache_bytes(1, group_size, len(prompts[index]) + max_new_tokens)
                if alone > budget:
                    raise ConfigError(
                        f"the rollout KV budget of {budget / 2**30:.3g} GiB per "
                        f"rank does not hold one prompt's {group_size} rollouts of "
                        f"{len(prompts[index])} + {max_new_tokens} tokens "
                        f"({alone / 2**30:.3g} GiB): raise "
                        "--rmt-rollout-kv-cache-gib, or lower --rmt-group-size or "
                        "--rmt-max-prompt-length"
                    )
            chunks.append([index])
        return chunks

    def _joins(self, chunk, index, prompts, group_size, max_new_tokens, budget) -> bool:
        if self.equal_length_chunks and len(prompts[index]) != len(prompts[chunk[0]]):
            return False
        if budget is None:
            return True
        length = max(len(prompts[i]) for i in (*chunk, index)) + max_new_tokens
        return self.cache_bytes(len(chunk) + 1, group_size, length) <= budget

    def cache_bytes(self, prompts: int, group_size: int, positions: int) -> int:
        """The KV cache of a chunk of `prompts` prompts, `group_size` rows each, `positions`
        long (the longest prompt plus the new tokens), on this rank."""
        return prompts * group_size * positions * self.kv_bytes_per_position

    def _generate_chunk(
        self, prompts: list[Sequence[int]], indices: list[int], how: Sampling
    ) -> list[Rollout]:
        device = compute_device()
        group_size = how.group_size
        length = max(len(p) for p in prompts)
        batch = len(prompts) * group_size
        tokens = torch.full((len(prompts), length), self.eos_id, dtype=torch.long)
        key_pad = torch.ones(len(prompts), length, dtype=torch.bool)  # True = padding
        for row, prompt in enumerate(prompts):
            tokens[row, length - len(prompt) :] = torch.tensor(list(prompt))
            key_pad[row, length - len(prompt) :] = False
        tokens, key_pad = tokens.to(device), key_pad.to(device)

        context = None
        if how.use_kv_cache:
            context = StaticInferenceContext(batch, length + how.max_new_tokens)
            self.peak_kv_cache_bytes = max(
                self.peak_kv_cache_bytes,
                self.cache_bytes(len(prompts), group_size, length + how.max_new_tokens),
            )
        logits = self._forward(tokens, _attention_mask(key_pad, length), context)
        if context is not None:
            self._expand_cache(context, len(prompts), group_size)
        if logits is not None:
            logits = logits.repeat_interleave(group_size, dim=0)
        key_pad = key_pad.repeat_interleave(group_size, dim=0)
        tokens = tokens.repeat_interleave(group_size, dim=0)

        active = list(range(batch))  # the rows of the batch slots still decoding
        generated: list[list[int]] = [[] for _ in range(batch)]
        stops = [RowStop(self.eos_id, self.token_bytes) for _ in range(batch)]
        finished = [False] * batch
        pending: list[torch.Tensor] = []  # tokens sampled since the last stop check
        for step in range(how.max_new_tokens):
            self.decoding_steps += 1
            sampled = self._next_tokens(logits, len(active), how)
            pending.append(sampled)
            last = step == how.max_new_tokens - 1
            keep = list(range(len(active)))
            if len(pending) == self.stop_check_interval or last:
                keep = self._check_stops(
                    torch.stack(pending, 1), active, generated, stops, finished
                )
                pending = []
            if not keep or last:
                break
            if len(keep) < len(active):
                active = [active[slot] for slot in keep]
                kept = torch.tensor(keep, device=device)
                sampled, key_pad = sampled[kept], key_pad[kept]
                if context is not None:
                    self._compact_cache(context, kept)
                else:
                    tokens = tokens[kept]
            fed = torch.zeros(len(active), 1, dtype=torch.bool, device=device)
            key_pad = torch.cat([key_pad, fed], dim=1)
            if context is not None:
                logits = self._forward(sampled[:, None], _attention_mask(key_pad, 1), context)
            else:
                tokens = torch.cat([tokens, sampled[:, None]], dim=1)
                logits = self._forward(tokens, _attention_mask(key_pad, tokens.shape[1]), None)
        return [
            Rollout(indices[row // group_size], generated[row], finished[row])
            for row in range(batch)
        ]

    def _check_stops(self, block, active, generated, stops, finished) -> list[int]:
        """Feed `block: [slots, k]` (the tokens of the last k steps, one host transfer) to each
        active row's stop rule. Returns the slots still decoding."""
        keep = []
        for slot, (row, row_tokens) in enumerate(zip(active, block.tolist(), strict=True)):
            finished[row] = stops[row].take(row_tokens, generated[row])
            if not finished[row]:
                keep.append(slot)
        return keep

    def _next_tokens(self, logits: torch.Tensor | None, rows: int, how: Sampling) -> torch.Tensor:
        """`[rows]` on the compute device: sampled on the last stage from this TP rank's
        vocabulary columns, shared with every pipeline stage."""
        device = compute_device()
        if logits is not None:
            tokens = sampling.sample(
                logits,
                vocab_start=parallel.tensor_parallel_rank() * logits.shape[1],
                vocab_size=self.vocab_size,
                temperature=how.temperature,
                top_p=how.top_p,
                generator=how.generator,
            )
        else:
            tokens = torch.empty(rows, dtype=torch.long, device=device)
        return parallel.broadcast_from_last_stage(tokens)

    def _forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, context: StaticInferenceContext | None
    ) -> torch.Tensor | None:
        """Run this stage on `tokens: [b, s]`; last-position logits `[b, V/TP]` (this TP rank's
        vocabulary columns) on the last stage, None on the others (which pass their hidden states
        on)."""
        rows, fed = tokens.shape
        device = compute_device()
        if not parallel.is_first_stage():
            hidden = torch.empty(
                fed, rows, self.hidden_size, dtype=self.params_dtype, device=device
            )
            self.model.set_input_tensor(parallel.receive_from_previous_stage(hidden))
        offset = 0 if context is None else context.sequence_len_offset
        positions = torch.arange(offset, offset + fed, device=device)[None].expand(rows, fed)
        output = self.model(
            tokens.to(device),
            positions,
            mask.to(device),
            inference_context=context,
            runtime_gather_output=True,  # megatron-core insists; _vocab_parallel_logits undoes it
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

    def _compact_cache(self, context: StaticInferenceContext, keep: torch.Tensor) -> None:
        """Move the cache rows of the batch slots in `keep` to the front, in order, over the
        positions filled so far (`[max_len, batch, groups, head_dim]` per layer; positions past
        `sequence_len_offset` hold nothing yet and are not read)."""
        filled = context.sequence_len_offset
        for key, value in context.key_value_memory_dict.values():
            for memory in (key, value):
                moved = memory[:filled, keep]
                memory[:filled, : len(keep)] = moved
                self.cache_bytes_moved += moved.numel() * moved.element_size()
