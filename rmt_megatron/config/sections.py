"""Typed configuration for an RMT run.

One dataclass per concern (budget, reward, curriculum, loss, rollout, model, train), gathered in
`RMTConfig`. Every field has a type, a default and a docstring (the docstring is also the
command-line help, see `rmt_megatron.config.flags`). Defaults are the paper's values and, where
it is silent, the choices in docs/method.md, unless the field says otherwise. `__post_init__`
rejects bad values with a `ConfigError` that names the field, the value seen and the fix;
`dataclasses.replace` re-runs it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from rmt_megatron.errors import ConfigError

TIER_NAMES = ("easy", "medium", "hard")
"""Curriculum difficulty tiers, from low to high proxy-model entropy."""


def require(ok: bool, name: str, value: Any, fix: str) -> None:
    """Raise `ConfigError("<name>=<value> ...: <fix>", field=name)` unless `ok`."""
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: {fix}", field=name)


def _three_floats(values) -> tuple[float, float, float]:
    """A validated 3-sequence (one entry per tier) as a tuple of floats."""
    first, second, third = (float(x) for x in values)
    return first, second, third


def _require_probabilities(name: str, probs: tuple[float, ...]) -> None:
    require(
        len(probs) == len(TIER_NAMES), name, probs, f"give one probability per tier {TIER_NAMES}"
    )
    require(
        all(math.isfinite(p) and p >= 0 for p in probs),
        name,
        probs,
        "probabilities must be finite and >= 0",
    )
    require(
        abs(sum(probs) - 1.0) <= 1e-6,
        name,
        probs,
        f"probabilities must sum to 1 (they sum to {sum(probs):.6g})",
    )


@dataclass
class BudgetConfig:
    """Dynamic token budget: B_t = max(B_min, floor(B_0 * γ^((t/T)^k)))."""

    enabled: bool = True
    """Use the budget: the budget clause in the prompt, the length reward and the rollout cut at
    2*B_t. Off gives plain RPT rollouts (no length reward, no budget clause)."""

    initial: int = 800
    """B_0: the reasoning budget in tokens at step 0."""

    minimum: int = 1
    """B_min: the budget never falls below this many tokens."""

    decay: float = 0.2
    """γ: the budget at the end of training is B_0 * γ (before the floor at B_min)."""

    exponent_power: float = 1.0
    """k in γ^((t/T)^k); 1 gives the default γ^(t/T) form."""

    def __post_init__(self) -> None:
        require(self.initial >= 1, "budget.initial", self.initial, "B_0 must be >= 1 token")
        require(self.minimum >= 1, "budget.minimum", self.minimum, "B_min must be >= 1 token")
        require(
            self.minimum <= self.initial,
            "budget.minimum",
            self.minimum,
            f"B_min must be <= B_0 ({self.initial}); lower B_min or raise B_0",
        )
        require(
            0.0 < self.decay < 1.0,
            "budget.decay",
            self.decay,
            "γ must lie strictly between 0 and 1 (the default is 0.2)",
        )
        require(
            math.isfinite(self.exponent_power) and self.exponent_power > 0,
            "budget.exponent_power",
            self.exponent_power,
            "k must be > 0 (1 = default form)",
        )


@dataclass
class RewardConfig:
    """Rewards: r = (1 - w) * r_match + w * r_len."""

    match_rule: Literal["exact", "prefix"] = "exact"
    """"exact": the boxed prediction equals the next token's bytes (RMT). "prefix": RPT's
    byte-prefix rule, which also accepts multi-token predictions ending on a token boundary."""

    length_weight: float = 0.2
    """w: weight of the triangular length reward in the convex mix with the match reward."""

    length_reward_max: float = 1.0
    """r_max: the length reward at ℓ = B_t, its peak."""

    def __post_init__(self) -> None:
        require(
            self.match_rule in ("exact", "prefix"),
            "reward.match_rule",
            self.match_rule,
            "use 'exact' or 'prefix'",
        )
        require(
            0.0 <= self.length_weight <= 1.0,
            "reward.length_weight",
            self.length_weight,
            "w mixes two rewards convexly and must lie in [0, 1]",
        )
        require(
            math.isfinite(self.length_reward_max) and self.length_reward_max > 0,
            "reward.length_reward_max",
            self.length_reward_max,
            "r_max must be > 0",
        )


@dataclass
class CurriculumConfig:
    """Curriculum adaptive sampling: entropy tiers and tier probabilities over time."""

    enabled: bool = True
    """Draw RL positions tier by tier with the scheduled probabilities p_t. Off draws uniformly
    from all positions at or above the lowest threshold (RPT's entropy filter)."""

    tier_thresholds: tuple[float, float, float] = (0.5, 1.0, 1.5)
    """Entropy (nats) where the easy, medium and hard tiers start; below the first one a position
    is used for NTP only."""

    start_probs: tuple[float, float, float] = (0.6, 0.3, 0.1)
    """p_{t1}: (easy, medium, hard) probabilities before the transition starts."""

    end_probs: tuple[float, float, float] = (0.1, 0.3, 0.6)
    """p_{t2}: (easy, medium, hard) probabilities after the transition ends."""

    transition_start: float = 0.3
    """t_1 / T: the fraction of training where p_t starts moving from p_{t1} to p_{t2}."""

    transition_end: float = 0.7
    """t_2 / T: the fraction of training where p_t reaches p_{t2}."""

    min_context: int = 16
    """Positions with fewer context tokens than this are never drawn for RL."""

    entropy_top_k: int = 16
    """Difficulty is the entropy of the proxy model's top-k distribution renormalised over those
    k tokens (RPT); 0 uses the full-vocabulary entropy."""

    proxy_checkpoint: str | None = None
    """The proxy model that scores difficulty: a Hugging Face checkpoint directory or a .gguf
    file with the run's tokenizer (the paper used a smaller model of the same family); None
    scores with the starting policy."""

    pool_documents: int = 4096
    """Documents in the candidate pool RL positions are drawn from: the corpus is walked in a
    seeded random order, D documents at a time, each pool scored by the proxy when it is filled,
    so memory and scoring grow with D, not with the corpus (docs/method.md, "Where positions
    come from"). A corpus of at most D documents is one pool scored once."""

    def __post_init__(self) -> None:
        require(
            self.pool_documents >= 1,
            "curriculum.pool_documents",
            self.pool_documents,
            "the pool needs at least one document",
        )
        th = tuple(self.tier_thresholds)
        require(
            len(th) == len(TIER_NAMES),
            "curriculum.tier_thresholds",
            th,
            f"give one threshold per tier {TIER_NAMES}",
        )
        require(
            all(math.isfinite(x) and x >= 0 for x in th),
            "curriculum.tier_thresholds",
            th,
            "thresholds are entropies in nats and must be finite and >= 0",
        )
        require(
            all(a < b for a, b in itertools.pairwise(th)),
            "curriculum.tier_thresholds",
            th,
            "thresholds must be strictly increasing",
        )
        _require_probabilities("curriculum.start_probs", tuple(self.start_probs))
        _require_probabilities("curriculum.end_probs", tuple(self.end_probs))
        require(
            0.0 < self.transition_start < 1.0,
            "curriculum.transition_start",
            self.transition_start,
            "t_1/T must lie strictly between 0 and 1",
        )
        require(
            0.0 < self.transition_end < 1.0,
            "curriculum.transition_end",
            self.transition_end,
            "t_2/T must lie strictly between 0 and 1",
        )
        require(
            self.transition_start < self.transition_end,
            "curriculum.transition_start",
            self.transition_start,
            f"t_1 must come before t_2 (t_2/T = {self.transition_end}); swap them or lower t_1",
        )
        require(
            self.min_context >= 1,
            "curriculum.min_context",
            self.min_context,
            "a position needs at least one context token",
        )
        require(
            self.entropy_top_k == 0 or self.entropy_top_k >= 2,
            "curriculum.entropy_top_k",
            self.entropy_top_k,
            "use 0 (full vocabulary) or k >= 2 (top-1 entropy is always 0)",
        )
        self.tier_thresholds = _three_floats(th)
        self.start_probs = _three_floats(self.start_probs)
        self.end_probs = _three_floats(self.end_probs)


@dataclass
class LossConfig:
    """Dual objective: L = rl_weight * L_RL + λ * L_NTP."""

    ntp_weight: float = 0.1
    """λ: weight of the next-token-prediction loss on the non-RL positions; 0 turns NTP off."""

    rl_weight: float = 1.0
    """Weight of the GRPO loss; 0 turns RL off (plain continued pre-training)."""

    kl_beta: float = 0.0
    """β: weight of the KL(π_θ ‖ π_ref) penalty on RL tokens (k3 estimator); 0 needs no
    reference model."""

    clip_eps: float = 0.2
    """ε of the clipped surrogate min(ρA, clip(ρ, 1-ε, 1+ε)A); inert while updates are exactly
    on-policy (ρ = 1)."""

    entropy_coeff: float = 0.0
    """Weight of an entropy bonus on RL tokens (subtracted from the loss)."""

    advantage_eps: float = 1e-6
    """δ in A_i = (r_i - mean r) / (std r + δ)."""

    filter_zero_variance_groups: bool = False
    """Dynamic sampling: drop groups whose G rewards are all equal (they carry no signal)."""

    fused_output_layer: bool = False
    """Compute the loss from the final hidden states and the output layer's weight without
    forming the [tokens, vocabulary] logits (kernels.linear_token_objective): the same loss and
    gradients in far less memory on a large vocabulary."""

    pack_sequences: bool = False
    """Pack the step's training sequences several to a row (first fit, longest first, rows as
    long as the model's seq_length), each attending only to itself, instead of one per row padded
    to the step's longest: the same losses over fewer padded tokens. Needs megatron-core's local
    layers (an attention mask per row)."""

    def __post_init__(self) -> None:
        for name in ("ntp_weight", "rl_weight", "kl_beta", "entropy_coeff"):
            value = getattr(self, name)
            require(
                math.isfinite(value) and value >= 0,
                f"loss.{name}",
                value,
                "loss weights must be finite and >= 0",
            )
        require(
            self.ntp_weight > 0 or self.rl_weight > 0,
            "loss.rl_weight",
            self.rl_weight,
            "both loss.rl_weight and loss.ntp_weight are 0: nothing would be trained",
        )
        require(
            0.0 < self.clip_eps < 1.0,
            "loss.clip_eps",
            self.clip_eps,
            "ε must lie strictly between 0 and 1 (the default is 0.2)",
        )
        require(
            self.advantage_eps > 0,
            "loss.advantage_eps",
            self.advantage_eps,
            "δ must be > 0 so a zero-variance group does not divide by zero",
        )


@dataclass
class RolloutConfig:
    """Sampling of reasoning rollouts."""

    prompts_per_step: int = 128
    """RL positions (prompts) drawn per training step; each gets `group_size` rollouts."""

    group_size: int = 8
    """G: rollouts per prompt; GRPO normalises rewards within these G."""

    temperature: float = 0.8
    """Sampling temperature of the rollouts."""

    top_p: float = 1.0
    """Nucleus sampling mass; 1 samples from the full distribution."""

    max_response_length: int = 2048
    """Hard cap on generated tokens per rollout (the budget cut at 2*B_t may stop it earlier)."""

    max_prompt_length: int = 4096
    """Prompts are left-truncated to this many tokens (the most recent context is kept)."""

    kv_cache_gib: float | None = None
    """KV cache of one rollout chunk on one rank, in GiB: a step's rollouts run in chunks of
    prompts whose cache fits it, one chunk after another. None: on a GPU, the room the memory
    plan leaves for rollouts (90% of the GPU's memory less what is allocated when they start); on
    a CPU, no limit (one chunk)."""

    engine: Literal["rmt", "mcore-dynamic"] = "rmt"
    """Which engine samples the rollouts: "rmt" (`mcore.generation`: runs everywhere, chunks
    under the KV budget) or "mcore-dynamic" (megatron-core's dynamic engine: paged KV cache and
    continuous batching in a buffer of the KV budget; needs a CUDA device and flash-attn)."""

    stop_check_interval: int = 1
    """Decoding steps between looks at the stop rule (EOS, the closed answer): the sampled tokens
    reach the host once per interval instead of every step, and a row that stopped inside one
    decodes to its end (those tokens are dropped). 1 stops rows at once and is the only value
    that draws, for a seed, the tokens of a single-chunk run; on a GPU 16 saves most host
    synchronisations."""

    @property
    def kv_cache_bytes(self) -> int | None:
        """`kv_cache_gib` in bytes; None for the default."""
        return None if self.kv_cache_gib is None else int(self.kv_cache_gib * 2**30)

    def __post_init__(self) -> None:
        require(
            self.kv_cache_gib is None
            or (math.isfinite(self.kv_cache_gib) and self.kv_cache_gib > 0),
            "rollout.kv_cache_gib",
            self.kv_cache_gib,
            "give a positive size in GiB, or leave it out for the default",
        )
        require(
            self.stop_check_interval >= 1,
            "rollout.stop_check_interval",
            self.stop_check_interval,
            "check the stop rule at least every decoding step: give an interval >= 1",
        )
        require(
            self.prompts_per_step >= 1,
            "rollout.prompts_per_step",
            self.prompts_per_step,
            "draw at least one RL position per step",
        )
        require(
            self.group_size >= 2,
            "rollout.group_size",
            self.group_size,
            "GRPO compares rollouts within a group: G must be >= 2 (the paper uses 8)",
        )
        require(
            math.isfinite(self.temperature) and self.temperature > 0,
            "rollout.temperature",
            self.temperature,
            "temperature must be > 0",
        )
        require(0.0 < self.top_p <= 1.0, "rollout.top_p", self.top_p, "top_p must be in (0, 1]")
        require(
            self.max_response_length >= 1,
            "rollout.max_response_length",
            self.max_response_length,
            "allow at least one generated token",
        )
        require(
            self.max_prompt_length >= 1,
            "rollout.max_prompt_length",
            self.max_prompt_length,
            "allow at least one prompt token",
        )


@dataclass
class ParallelConfig:
    """How one model replica is split over ranks and which activations it keeps (Megatron-LM
    names). `ModelConfig` builds on it as megatron-core's `TransformerConfig` builds on
    `ModelParallelConfig`; a checkpoint reloads under any layout and recomputation, so these
    fields are not part of the model's shape (`model_shape`)."""

    tensor_model_parallel_size: int = 1
    """Tensor-parallel ranks per model replica."""

    pipeline_model_parallel_size: int = 1
    """Pipeline stages per model replica."""

    sequence_parallel: bool = False
    """Megatron sequence parallelism (with TP > 1); needs Transformer Engine or apex norms, so
    GPU only."""

    recompute_granularity: str | None = None
    """Activation recomputation (Megatron-LM's): "full" recomputes whole transformer layers in
    the backward pass (which ones: --recompute-method, --recompute-num-layers), "selective" only
    the core attention; None keeps every activation."""

    recompute_method: str | None = None
    """With full recomputation: "uniform" checkpoints the layers in groups of
    --recompute-num-layers, "block" the first --recompute-num-layers layers of each stage."""

    recompute_num_layers: int | None = None
    """With full recomputation: the group size ("uniform") or the layer count ("block")."""

    def __post_init__(self) -> None:
        for name in ("tensor_model_parallel_size", "pipeline_model_parallel_size"):
            value = getattr(self, name)
            require(value >= 1, f"model.{name}", value, "must be a positive integer")
        require(
            self.recompute_granularity in (None, "full", "selective"),
            "model.recompute_granularity",
            self.recompute_granularity,
            'must be "full" or "selective"',
        )
        full = self.recompute_granularity == "full"
        require(
            (self.recompute_method in ("uniform", "block"))
            if full
            else self.recompute_method is None,
            "model.recompute_method",
            self.recompute_method,
            'give "uniform" or "block" with --recompute-granularity full, nothing otherwise',
        )
        require(
            (self.recompute_num_layers or 0) >= 1 if full else self.recompute_num_layers is None,
            "model.recompute_num_layers",
            self.recompute_num_layers,
            "give a positive layer count with --recompute-granularity full, nothing otherwise",
        )


SCHEDULE_FIELDS = ("lr", "lr_warmup_iters", "train_iters", "weight_decay")
"""`TrainConfig` fields that make up the learning-rate and weight-decay schedule (and, for
train_iters, the budget and curriculum schedules) a checkpoint was trained with: a resumed run
must keep them (`run.resume`)."""

TRAINING_FIELDS = (*SCHEDULE_FIELDS, "micro_batch_size", "seed")
"""`TrainConfig` fields that change what a run learns (its paths and intervals do not): a
finished run of the replication is reused only if they are the same."""


def model_shape(model: dict[str, Any]) -> dict[str, Any]:
    """A `ModelConfig` as a dict (`to_dict()["model"]`) without its parallel layout: what must
    agree between a checkpoint and the model that loads it."""
    layout = {f.name for f in dataclasses.fields(ParallelConfig)}
    return {key: value for key, value in model.items() if key not in layout}


@dataclass
class ModelConfig(ParallelConfig):
    """A Llama-style megatron-core GPTModel (RMSNorm, SwiGLU, RoPE, GQA); Megatron-LM names."""

    num_layers: int = 2
    """Transformer layers."""

    hidden_size: int = 64
    """Model width."""

    ffn_hidden_size: int = 256
    """Width of the MLP's hidden layer (per gate/up branch with SwiGLU)."""

    num_attention_heads: int = 4
    """Query heads."""

    num_query_groups: int | None = None
    """Key/value heads for grouped-query attention; None means one per query head."""

    kv_channels: int | None = None
    """Width of one head; None means hidden_size / num_attention_heads."""

    seq_length: int = 256
    """Training sequence length in tokens."""

    max_position_embeddings: int = 4096
    """Longest sequence RoPE is set up for (prompt + response during rollouts)."""

    vocab_size: int | None = None
    """Vocabulary size; None takes the tokenizer's. Padded for TP as Megatron does."""

    make_vocab_size_divisible_by: int = 128
    """Pad the vocabulary to a multiple of this times the tensor-parallel size."""

    norm_epsilon: float = 1e-5
    """ε of RMSNorm."""

    rotary_base: float = 10000.0
    """RoPE base frequency θ."""

    use_rope_scaling: bool = False
    """Llama 3.x RoPE frequency scaling (megatron-core's: low/high frequency factors 1 and 4,
    original context 8192)."""

    rope_scaling_factor: float = 8.0
    """Factor of the Llama 3.x RoPE scaling (with --use-rope-scaling)."""

    rotary_seq_len_interpolation_factor: float | None = None
    """Linear RoPE scaling (position interpolation): positions are divided by this factor."""

    qk_layernorm: bool = False
    """Per-head RMSNorm on queries and keys (Qwen3)."""

    add_qkv_bias: bool = False
    """Bias on the QKV projection (Qwen2)."""

    untie_embeddings_and_output_weights: bool = False
    """Separate input embedding and output layer weights."""

    params_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype (Megatron-LM's --bf16 / --fp16)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "num_layers",
            "hidden_size",
            "ffn_hidden_size",
            "num_attention_heads",
            "seq_length",
            "max_position_embeddings",
            "make_vocab_size_divisible_by",
        ):
            value = getattr(self, name)
            require(value >= 1, f"model.{name}", value, "must be a positive integer")
        require(
            math.isfinite(self.rotary_base) and self.rotary_base > 1,
            "model.rotary_base",
            self.rotary_base,
            "RoPE's θ must be a finite number > 1",
        )
        groups = self.query_groups
        heads, tp = self.num_attention_heads, self.tensor_model_parallel_size
        require(
            self.ffn_hidden_size % tp == 0,
            "model.ffn_hidden_size",
            self.ffn_hidden_size,
            f"must be divisible by tensor_model_parallel_size={tp} (each rank holds a slice)",
        )
        require(
            self.kv_channels is not None or self.hidden_size % heads == 0,
            "model.hidden_size",
            self.hidden_size,
            f"must be divisible by num_attention_heads={heads}, or set kv_channels",
        )
        require(
            groups >= 1 and heads % groups == 0,
            "model.num_query_groups",
            groups,
            f"must divide num_attention_heads={heads}",
        )
        require(
            heads % tp == 0 and groups % tp == 0,
            "model.tensor_model_parallel_size",
            tp,
            f"must divide num_attention_heads={heads} and num_query_groups={groups}",
        )
        require(
            self.num_layers % self.pipeline_model_parallel_size == 0,
            "model.pipeline_model_parallel_size",
            self.pipeline_model_parallel_size,
            f"must divide num_layers={self.num_layers}",
        )
        require(
            self.seq_length <= self.max_position_embeddings,
            "model.seq_length",
            self.seq_length,
            f"must be <= max_position_embeddings={self.max_position_embeddings}",
        )
        require(
            self.vocab_size is None or self.vocab_size >= 2,
            "model.vocab_size",
            self.vocab_size,
            "a vocabulary needs at least 2 tokens (or None: tokenizer's)",
        )
        require(self.norm_epsilon > 0, "model.norm_epsilon", self.norm_epsilon, "must be > 0")
        require(
            self.rope_scaling_factor > 0,
            "model.rope_scaling_factor",
            self.rope_scaling_factor,
            "must be > 0",
        )
        require(
            self.rotary_seq_len_interpolation_factor is None
            or self.rotary_seq_len_interpolation_factor > 0,
            "model.rotary_seq_len_interpolation_factor",
            self.rotary_seq_len_interpolation_factor,
            "must be > 0 (or unset)",
        )
        require(
            self.params_dtype in ("float32", "bfloat16", "float16"),
            "model.params_dtype",
            self.params_dtype,
            "use 'float32', 'bfloat16' or 'float16'",
        )

    @property
    def query_groups(self) -> int:
        """Key/value heads, with None resolved to one per query head."""
        return self.num_query_groups or self.num_attention_heads

    @property
    def head_dim(self) -> int:
        """Width of one attention head, with kv_channels=None resolved."""
        return self.kv_channels or self.hidden_size // self.num_attention_heads


@dataclass
class TrainConfig:
    """The optimisation loop (Megatron-LM names)."""

    train_iters: int = 1000
    """T: total training steps; drives the budget and curriculum schedules."""

    micro_batch_size: int = 1
    """Sequences per micro-batch in the forward/backward schedule."""

    lr: float = 1e-6
    """Learning rate (constant unless lr_warmup_iters > 0)."""

    lr_warmup_iters: int = 0
    """Linear warm-up steps before the constant learning rate."""

    weight_decay: float = 0.01
    """AdamW weight decay."""

    adam_beta1: float = 0.9
    """AdamW β1, decay of the first-moment estimate."""

    adam_beta2: float = 0.999
    """AdamW β2, decay of the second-moment estimate."""

    adam_eps: float = 1e-8
    """AdamW ε, added to the second-moment root."""

    clip_grad: float = 1.0
    """Gradient-norm clipping threshold; 0 disables clipping."""

    initial_loss_scale: float = 2.0**32
    """fp16 only: the dynamic loss scale to start from (halved after overflowing steps, which
    are skipped, as in Megatron-LM)."""

    seed: int = 1234
    """Seed for weights, sampling and the curriculum."""

    save: str | None = None
    """Directory for checkpoints; None saves nothing."""

    load: str | None = None
    """Directory to resume from."""

    save_interval: int | None = None
    """Steps between checkpoints (a checkpoint is also written at exit)."""

    skip_train: bool = False
    """Only evaluate the loaded (or pretrained) model on the held-out positions and write the
    eval JSON; no training step."""

    exit_interval: int | None = None
    """Stop (with a checkpoint) when the step count is a multiple of this; resume with --load."""

    log_interval: int = 1
    """Steps between console progress lines."""

    eval_interval: int | None = None
    """Steps between held-out evaluations; None evaluates only at the end."""

    tensorboard_dir: str | None = None
    """Directory for TensorBoard event files; None disables TensorBoard."""

    distributed_timeout_minutes: float = 10.0
    """A collective that waits this long for another rank (stopped, dead, or on a lost node)
    fails, and the job ends with an error instead of hanging."""

    override_opt_param_scheduler: bool = False
    """On resume, take the learning-rate schedule (lr, warm-up, train_iters, weight decay) from
    the flags, not from the checkpoint."""

    use_checkpoint_opt_param_scheduler: bool = False
    """On resume, take the learning-rate schedule from the checkpoint, whatever the flags say.
    Without either flag, a schedule that differs from the checkpoint's is refused."""

    def __post_init__(self) -> None:
        for name in ("train_iters", "micro_batch_size", "log_interval"):
            value = getattr(self, name)
            require(value >= 1, f"train.{name}", value, "must be a positive integer")
        for name in ("save_interval", "eval_interval", "exit_interval"):
            value = getattr(self, name)
            require(
                value is None or value >= 1,
                f"train.{name}",
                value,
                "must be a positive integer, or None",
            )
        require(math.isfinite(self.lr) and self.lr > 0, "train.lr", self.lr, "must be > 0")
        require(
            0 <= self.lr_warmup_iters < self.train_iters,
            "train.lr_warmup_iters",
            self.lr_warmup_iters,
            f"must be in [0, train_iters={self.train_iters})",
        )
        require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "must be >= 0")
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            require(0.0 <= value < 1.0, f"train.{name}", value, "must lie in [0, 1)")
        require(self.adam_eps > 0, "train.adam_eps", self.adam_eps, "must be > 0")
        require(
            self.clip_grad >= 0,
            "train.clip_grad",
            self.clip_grad,
            "must be >= 0 (0 disables clipping)",
        )
        require(
            math.isfinite(self.distributed_timeout_minutes)
            and self.distributed_timeout_minutes > 0,
            "train.distributed_timeout_minutes",
            self.distributed_timeout_minutes,
            "must be a positive number of minutes",
        )
        require(
            math.isfinite(self.initial_loss_scale) and self.initial_loss_scale >= 1,
            "train.initial_loss_scale",
            self.initial_loss_scale,
            "must be a finite number >= 1",
        )
        require(
            not (self.override_opt_param_scheduler and self.use_checkpoint_opt_param_scheduler),
            "train.override_opt_param_scheduler",
            True,
            "take the schedule from the flags or from the checkpoint, not both",
        )


@dataclass
class DataConfig:
    """Where the run's data, tokenizer and starting weights come from (Megatron-LM names)."""

    train_data_path: str | None = None
    """Prefix of the training indexed dataset (PREFIX.bin/.idx); None: the built-in corpus."""

    valid_data_path: str | None = None
    """Prefix of the held-out indexed dataset used for evaluation; None: the built-in one."""

    tokenizer_model: str | None = None
    """Tokenizer the datasets were built with: a SentencePiece .model, a Hugging Face
    tokenizer.json or a directory holding one, or a .gguf file; None: the built-in tokenizer (or
    the imported checkpoint's)."""

    hf_checkpoint: str | None = None
    """Start from this Hugging Face checkpoint directory (Llama, Qwen2, Qwen3): its config.json
    sets the model shape, its weights are loaded sharded, and its tokenizer.json is the tokenizer
    unless --tokenizer-model says otherwise."""

    gguf_checkpoint: str | None = None
    """Start from this llama-family GGUF file (llama.cpp), dequantised to the model's dtype: its
    metadata sets the model shape and its embedded vocabulary is the tokenizer unless
    --tokenizer-model says otherwise."""

    pretrained_checkpoint: str | None = None
    """Checkpoint directory to start from (model weights only); None with the built-in corpus
    starts from the shipped warm-started base model, otherwise from random weights."""

    builtin_data_dir: str = "runs/builtin_data"
    """Where the built-in corpus, its datasets and difficulty scores are written."""

    eval_positions: int = 200
    """Held-out positions per evaluation (the paper evaluates on 200 documents)."""

    eval_seed: int = 0
    """Seed of the held-out positions' sample. Kept apart from --seed, so that runs that differ
    in their training seed (or method) are evaluated on the same positions."""

    def __post_init__(self) -> None:
        require(
            self.eval_positions >= 1,
            "data.eval_positions",
            self.eval_positions,
            "evaluate at least one position",
        )
        require(
            self.train_data_path is None
            or self.tokenizer_model is not None
            or self.imported_checkpoint is not None,
            "data.tokenizer_model",
            self.tokenizer_model,
            "--train-data-path needs the --tokenizer-model it was built with",
        )
        starts = [
            s
            for s in (self.hf_checkpoint, self.gguf_checkpoint, self.pretrained_checkpoint)
            if s is not None
        ]
        require(
            len(starts) <= 1,
            "data.hf_checkpoint",
            self.hf_checkpoint,
            "give one of --hf-checkpoint, --gguf-checkpoint and --pretrained-checkpoint",
        )
        require(
            self.imported_checkpoint is None or self.train_data_path is not None,
            "data.hf_checkpoint",
            self.imported_checkpoint,
            "an imported model needs --train-data-path/--valid-data-path built with its "
            "tokenizer (rmt-preprocess --tokenizer-model DIR_OR_GGUF)",
        )
        require(
            (self.train_data_path is None) == (self.valid_data_path is None),
            "data.valid_data_path",
            self.valid_data_path,
            "give --train-data-path and --valid-data-path together (or neither, for the "
            "built-in corpus)",
        )

    @property
    def imported_checkpoint(self) -> str | None:
        """The Hugging Face directory or GGUF file the run starts from, if any."""
        return self.hf_checkpoint or self.gguf_checkpoint


SECTIONS: dict[str, type] = {
    "budget": BudgetConfig,
    "reward": RewardConfig,
    "curriculum": CurriculumConfig,
    "loss": LossConfig,
    "rollout": RolloutConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "data": DataConfig,
}
"""The sections of `RMTConfig`, by attribute name."""


@dataclass
class RMTConfig:
    """Everything one RMT run needs; sections as in `SECTIONS`."""

    budget: BudgetConfig = field(default_factory=BudgetConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            require(
                isinstance(getattr(self, name), cls),
                name,
                type(getattr(self, name)),
                f"must be a {cls.__name__}",
            )
        if self.budget.enabled and self.loss.rl_weight > 0:
            require(
                self.rollout.max_response_length >= self.budget.minimum,
                "rollout.max_response_length",
                self.rollout.max_response_length,
                f"must allow at least budget.minimum={self.budget.minimum} tokens",
            )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (JSON-serialisable), e.g. for checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, Any]]) -> RMTConfig:
        """Inverse of `to_dict`; unknown sections or fields raise `ConfigError`."""
        unknown = set(data) - set(SECTIONS)
        require(not unknown, "config", sorted(unknown), f"known sections are {list(SECTIONS)}")
        sections = {}
        for name, values in data.items():
            section_cls = SECTIONS[name]
            known = {f.name for f in dataclasses.fields(section_cls)}
            extra = set(values) - known
            require(not extra, name, sorted(extra), f"known fields are {sorted(known)}")
            sections[name] = section_cls(**values)
        return cls(**sections)


@cache
def field_docs(section_cls: type) -> dict[str, str]:
    """The docstrings written under each field of a config dataclass (and of the dataclasses it
    builds on), each joined into one line."""
    docs = {}
    for cls in reversed(section_cls.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        definition = ast.parse(inspect.getsource(cls)).body[0]
        assert isinstance(definition, ast.ClassDef)
        for node, following in itertools.pairwise(definition.body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
            ):
                docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs
