"""Per-rank memory of an RMT run, planned from its config before anything is built.

    python -m rmt_megatron.plan [--rmt-preset qwen3_14b] [pretrain flags] --nodes N
        --gpus-per-node G [--gpu-memory-gib 80] [--distributed-optimizer]

For each pipeline stage (the heaviest rank of each), in bytes:

- parameters P of the stage (`stage_parameters`, exact for our GPTModel: counted from the layer
  shapes and checked against the real per-rank models in the tests);
- weights: P · bytes(params_dtype); gradients: P · 4 (the DDP buffer reduces in fp32);
- optimizer: Adam's m and v in fp32 (8 B/param) plus, for bf16/fp16, the fp32 master weights
  (4 B/param); divided by DP with the distributed optimizer;
- activations of one micro-batch in flight (an estimate, not a count: Korthikanti et al. 2022,
  bytes per layer of a 16-bit GPT layer with a 4h MLP, `activation_bytes_per_layer`; the
  `5·a·s/h` term is the attention scores, which megatron-core's local layers materialise and
  flash attention does not) times the layers of the stage and the micro-batches in flight (PP on
  the first stage under 1F1B, one on the last);
- the rollout KV cache of one step, rows · length · `kv_cache_bytes_per_position` with rows =
  (prompts per step / DP) · G and length = the longest prompt plus the rollout cap at the
  initial budget B_0 (`rollout_token_cap`), and what `mcore.generation` holds of it at once: the
  whole step, or chunks within the KV budget (`--rmt-rollout-kv-cache-gib`; by default the room
  that weights, gradients and optimizer state leave within 90% of the GPU, which the engine
  measures the same way when its rollouts start).

Weights, gradients and optimizer state live through the whole run; the rollout cache and the
training activations are not alive at the same time (rollouts, then the backward), so the peak is
the persistent part plus the larger of the activations and the chunk. Everything else (the CUDA
context, NCCL buffers, fragmentation, logits of the loss) is left out: a rank fits when its peak
is within 90% of the GPU's memory (`device.MEMORY_RESERVE`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rmt_megatron.cli import command
from rmt_megatron.config.flags import config_from_args, pretrain_parser
from rmt_megatron.config.sections import ModelConfig, RMTConfig
from rmt_megatron.errors import ConfigError
from rmt_megatron.mcore.device import MEMORY_RESERVE
from rmt_megatron.mcore.generation import kv_cache_bytes_per_position
from rmt_megatron.mcore.gpt_model import padded_vocab_size
from rmt_megatron.method.budget import rollout_token_cap
from rmt_megatron.run.step_builder import ANSWER_ALLOWANCE

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 2**30


def layer_parameters(model: ModelConfig) -> int:
    """Parameters of one transformer layer on one tensor-parallel rank (RMSNorm, SwiGLU MLP,
    GQA, no linear biases; the QKV bias with add_qkv_bias, the per-head q/k norms with
    qk_layernorm). Norm weights are whole on every TP rank."""
    tp, hidden, head = model.tensor_model_parallel_size, model.hidden_size, model.head_dim
    qkv_out = (model.num_attention_heads + 2 * model.query_groups) * head // tp
    count = 2 * hidden  # input and pre-MLP RMSNorm
    count += qkv_out * hidden + (qkv_out if model.add_qkv_bias else 0)
    count += 2 * head if model.qk_layernorm else 0
    count += hidden * model.num_attention_heads * head // tp  # output projection
    count += 2 * model.ffn_hidden_size // tp * hidden  # gate and up
    count += hidden * model.ffn_hidden_size // tp  # down
    return count


def stage_parameters(model: ModelConfig, vocab_size: int, stage: int) -> int:
    """Parameters of pipeline stage `stage` on one tensor-parallel rank: its layers, the
    embedding on the first stage, the final norm and the output layer on the last (with tied
    embeddings under PP, the last stage holds its own copy of the embedding, as megatron-core
    keeps it)."""
    pp = model.pipeline_model_parallel_size
    rows = padded_vocab_size(vocab_size, model) // model.tensor_model_parallel_size
    count = model.num_layers // pp * layer_parameters(model)
    first, last = stage == 0, stage == pp - 1
    if first:
        count += rows * model.hidden_size
    if last:
        count += model.hidden_size  # final RMSNorm
        if model.untie_embeddings_and_output_weights or not first:
            count += rows * model.hidden_size
    return count


@dataclass(frozen=True)
class Layout:
    nodes: int
    gpus_per_node: int
    distributed_optimizer: bool
    gpu_memory_gib: float

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def usable_bytes(self) -> int:
        """A GPU's memory less the MEMORY_RESERVE the plan does not count."""
        return int((1 - MEMORY_RESERVE) * self.gpu_memory_gib * GIB)


@dataclass(frozen=True)
class StagePlan:
    stage: int
    parameters: int
    weights: int
    gradients: int
    optimizer: int
    """Adam's state (and master weights) on this rank: sharded over DP with the distributed
    optimizer, whole without."""
    optimizer_unsharded: int
    activations: int
    activations_recomputed: int
    rollout_kv_cache: int
    """The cache of all of one step's rollouts on this rank."""
    rollout_kv_chunk: int
    """The cache held at once: the whole step's, or less under the KV budget
    (`--rmt-rollout-kv-cache-gib`, by default the room the persistent memory leaves)."""

    @property
    def persistent(self) -> int:
        return self.weights + self.gradients + self.optimizer

    @property
    def rollout_chunks(self) -> int:
        return -(-self.rollout_kv_cache // self.rollout_kv_chunk) if self.rollout_kv_chunk else 0

    def peak(self, recompute: bool) -> int:
        active = self.activations_recomputed if recompute else self.activations
        return self.persistent + max(active, self.rollout_kv_chunk)


def data_parallel_size(config: RMTConfig, layout: Layout) -> int:
    model = config.model
    split = model.tensor_model_parallel_size * model.pipeline_model_parallel_size
    if layout.world % split:
        raise ValueError(
            f"{layout.world} GPUs do not split into TP {model.tensor_model_parallel_size} × "
            f"PP {model.pipeline_model_parallel_size} replicas"
        )
    return layout.world // split


def activation_bytes_per_layer(config: RMTConfig, recompute: bool) -> int:
    """One micro-batch's saved activations in one layer on one TP rank (module docstring):
    Korthikanti et al.'s `s·b·h·(10 + 24/t + 5·a·s/(h·t))` under TP, `s·b·h·(34 + 5·a·s/h)/t` with
    sequence parallelism, and the layer input alone, `2·s·b·h` (`/t` with sequence parallelism),
    with full recomputation."""
    model = config.model
    s, b, h = model.seq_length, config.train.micro_batch_size, model.hidden_size
    a, t = model.num_attention_heads, model.tensor_model_parallel_size
    shard = t if model.sequence_parallel else 1
    if recompute:
        return 2 * s * b * h // shard
    if model.sequence_parallel:
        return int(s * b * h * (34 + 5 * a * s / h) / t)
    return int(s * b * h * (10 + 24 / t + 5 * a * s / (h * t)))


def rollout_rows_and_length(config: RMTConfig, dp: int) -> tuple[int, int]:
    """(rows, positions) of the rollout KV cache a rank allocates for one step."""
    prompts = -(-config.rollout.prompts_per_step // dp)
    response = config.rollout.max_response_length
    if config.budget.enabled:
        response = rollout_token_cap(config.budget.initial, response, ANSWER_ALLOWANCE)
    return prompts * config.rollout.group_size, config.rollout.max_prompt_length + response


def plan(config: RMTConfig, vocab_size: int, layout: Layout) -> list[StagePlan]:
    """The memory of the heaviest rank of each pipeline stage."""
    model = config.model
    dp = data_parallel_size(config, layout)
    dtype = DTYPE_BYTES[model.params_dtype]
    pp = model.pipeline_model_parallel_size
    layers = model.num_layers // pp
    rows, length = rollout_rows_and_length(config, dp)
    kv = rows * length * kv_cache_bytes_per_position(model)
    stages = []
    for stage in range(pp):
        params = stage_parameters(model, vocab_size, stage)
        unsharded = params * (8 + (4 if dtype < 4 else 0))
        optimizer = -(-unsharded // dp) if layout.distributed_optimizer else unsharded
        in_flight = pp - stage  # 1F1B: the first stage holds PP micro-batches
        weights, gradients = params * dtype, params * 4
        step_kv = kv if config.loss.rl_weight > 0 else 0
        room = layout.usable_bytes - (weights + gradients + optimizer)
        budget = room if config.rollout.kv_cache_bytes is None else config.rollout.kv_cache_bytes
        stages.append(
            StagePlan(
                stage=stage,
                parameters=params,
                weights=weights,
                gradients=gradients,
                optimizer=optimizer,
                optimizer_unsharded=unsharded,
                activations=layers * in_flight * activation_bytes_per_layer(config, False),
                activations_recomputed=layers
                * in_flight
                * activation_bytes_per_layer(config, True),
                rollout_kv_cache=step_kv,
                rollout_kv_chunk=min(step_kv, max(0, int(budget))),
            )
        )
    return stages


def _count(parameters: int) -> str:
    """14.77 B, 1.20 M, 950 K: a parameter count to three figures."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if parameters >= scale:
            return f"{parameters / scale:.3g} {unit}"
    return str(parameters)


def _gib(size: int | float) -> str:
    """GiB to one decimal, or to two significant figures below 1 GiB (a small model's sizes
    would all read 0.0)."""
    return f"{size / GIB:.1f}" if size >= GIB else f"{size / GIB:.2g}"


def report(config: RMTConfig, vocab_size: int, layout: Layout) -> list[str]:
    """The plan as a Markdown table, one row per stage, with what does not fit flagged."""
    model = config.model
    dp = data_parallel_size(config, layout)
    rows, length = rollout_rows_and_length(config, dp)
    lines = [
        f"{layout.nodes} × {layout.gpus_per_node} GPUs of {layout.gpu_memory_gib:g} GiB: "
        f"TP {model.tensor_model_parallel_size}, PP {model.pipeline_model_parallel_size}, "
        f"DP {dp}, micro-batch {config.train.micro_batch_size} × {model.seq_length} tokens, "
        f"{model.params_dtype}, distributed optimizer "
        f"{'on' if layout.distributed_optimizer else 'off'}; rollouts: {rows} rows × {length} "
        f"positions per rank",
        "",
        "| stage | parameters | weights | grads | optimizer (unsharded) | "
        "activations (recompute) | "
        "rollout KV of a step | held at once (chunks) | peak (recompute) | fits |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    limit = layout.usable_bytes
    for s in plan(config, vocab_size, layout):
        peak, peak_recomputed = s.peak(False), s.peak(True)
        fits = "yes" if peak <= limit else ("with recompute" if peak_recomputed <= limit else "NO")
        lines.append(
            f"| {s.stage} | {_count(s.parameters)} | {_gib(s.weights)} | "
            f"{_gib(s.gradients)} | {_gib(s.optimizer)} "
            f"({_gib(s.optimizer_unsharded)}) | {_gib(s.activations)} "
            f"({_gib(s.activations_recomputed)}) | {_gib(s.rollout_kv_cache)} | "
            f"{_gib(s.rollout_kv_chunk)} ({s.rollout_chunks}) | "
            f"{_gib(peak)} ({_gib(peak_recomputed)}) | {fits} |"
        )
    lines.append("")
    lines.append(
        "GiB per rank; optimizer as used (without the distributed optimizer); activations and "
        "peak without (with) full recomputation; rollouts hold one chunk's KV at a time, at most "
        "the budget (--rmt-rollout-kv-cache-gib, by default the room left after the weights, "
        f"gradients and optimizer state); fits: peak within {1 - MEMORY_RESERVE:.0%} of the GPU's "
        "memory."
    )
    return lines


@command
def main(argv: list[str] | None = None) -> int:
    """`python -m rmt_megatron.plan` (module docstring)."""
    parser = pretrain_parser("tiny_cpu")
    parser.prog = "python -m rmt_megatron.plan"
    group = parser.add_argument_group("layout")
    group.add_argument("--nodes", type=int, default=1)
    group.add_argument("--gpus-per-node", type=int, default=8)
    group.add_argument("--gpu-memory-gib", type=float, default=80.0, help="H100 80GB: 80.")
    group.add_argument(
        "--no-distributed-optimizer",
        action="store_true",
        help="Plan the plain optimizer (a GPU run uses megatron-core's distributed one).",
    )
    args = parser.parse_args(argv)
    config = config_from_args(args, "tiny_cpu")
    if config.model.vocab_size is None:
        raise ConfigError("the plan needs the model's vocabulary: give --vocab-size")
    layout = Layout(
        args.nodes, args.gpus_per_node, not args.no_distributed_optimizer, args.gpu_memory_gib
    )
    try:
        lines = report(config, config.model.vocab_size, layout)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    print("\n".join(lines))
    return 0
