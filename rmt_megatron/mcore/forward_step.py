"""The RMT forward step for megatron-core's schedules (the drop-in piece).

`make_forward_step(loss_config)` returns `forward_step(data_iterator, model)` with the contract of
`megatron.core.pipeline_parallel.get_forward_backward_func()`: it runs the model on the next
micro-batch (a dict from `rmt_megatron.method.packing.collate`) and returns the output with a loss
function. On the last pipeline stage the model returns its vocab-parallel logits
`[b, s, V_local]`; the loss function takes per-token log-probabilities and entropies from them
with `rmt_megatron.kernels.token_logprob_entropy` (exact over the whole vocabulary under TP) and
returns

    (loss_sum, num_tokens, {"loss_rl": [Σ, N_RL], "loss_ntp": [Σ, N_NTP],
                            "rl_token_entropy": [Σ, N_RL]})

(the keys are the names the run's metrics give the per-token means: `loss_rl`, `loss_ntp`),
plus every `[Σ, N]` pair a micro-batch carries under a `REPORT_PREFIX` key (the step's rollout
statistics, which Megatron-LM's loop then logs as Σ/N over the step like the losses)

where loss_sum = Σ_n loss_weight_n · ℓ_n, ℓ_n the per-token RL loss (clipped surrogate and
entropy bonus, see `rmt_megatron.method.dual_loss`) on RL tokens and -logprob_n on NTP tokens.
The schedule must run with `calculate_per_token_loss=True`, so Megatron divides the gradients by
the step's total `num_tokens`; `packing.collate` chose the weights for that division.

With `loss.fused_output_layer` the `[b, s, V_local]` logits are never formed: during the step's
forward the model's output layer hands back its input (the final hidden states `[b, s, H]`,
TP-copied as ColumnParallelLinear would) and its weight `[V_local, H]`, and the loss function
evaluates the same loss_sum with `kernels.linear_token_objective`, which forms the logits a
block of tokens at a time and turns the objective's per-token gradients into weight and hidden
gradients in one more sweep.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial

import torch
from megatron.core.tensor_parallel import gather_from_sequence_parallel_region
from megatron.core.utils import unwrap_model

from rmt_megatron.config.sections import LossConfig
from rmt_megatron.errors import ConfigError
from rmt_megatron.kernels import linear_token_objective, token_logprob_entropy
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.cpu import built_with_transformer_engine
from rmt_megatron.mcore.device import to_compute_device
from rmt_megatron.method.dual_loss import TokenRoles, masked_token_losses

REPORT_PREFIX = "report/"
"""A micro-batch key `report/<name>` holding `[Σ, N]` is reported as `<name>` (module docstring)."""


def causal_mask(seq_length: int, device: torch.device | None = None) -> torch.Tensor:
    """`[1, 1, s, s]` bool, True where attention is not allowed (future keys)."""
    return torch.ones(1, 1, seq_length, seq_length, dtype=torch.bool, device=device).triu(1)


def attention_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The micro-batch's mask, True = hidden: causal `[1, 1, s, s]`; for packed rows (a
    `segments` key, `packing.collate`) `[b, 1, s, s]`, also hiding every other sequence of the
    row."""
    tokens = batch["tokens"]
    causal = causal_mask(tokens.shape[1], tokens.device)
    if "segments" not in batch:
        return causal
    segments = batch["segments"]
    return causal | (segments[:, None, :, None] != segments[:, None, None, :])


def dual_loss_func(batch: dict[str, torch.Tensor], loss_config: LossConfig, output: torch.Tensor):
    """Megatron loss function for one micro-batch; `output` is this TP rank's vocab-parallel
    logits `[b, s, V_local]`."""
    labels = batch["labels"]
    logprob, entropy = token_logprob_entropy(
        output.reshape(-1, output.shape[-1]),
        labels.reshape(-1),
        tp_group=parallel.tensor_parallel_group(),
    )
    return _dual_terms(batch, loss_config, logprob.view(labels.shape), entropy.view(labels.shape))


def fused_dual_loss_func(
    batch: dict[str, torch.Tensor],
    loss_config: LossConfig,
    output: tuple[torch.Tensor, torch.Tensor],
):
    """`dual_loss_func` from `output = (hidden [b, s, H], output weight [V_local, H])`."""
    hidden, weight = output
    labels = batch["labels"]

    def objective(logprob, entropy):
        return _dual_terms(
            batch, loss_config, logprob.view(labels.shape), entropy.view(labels.shape)
        )[0]

    # Megatron-LM's Float16Module hands the last stage's output back in fp32
    loss_sum, logprob, entropy = linear_token_objective(
        hidden.reshape(-1, hidden.shape[-1]).to(weight.dtype),
        weight,
        labels.reshape(-1),
        objective,
        tp_group=parallel.tensor_parallel_group(),
    )
    _, tokens, report = _dual_terms(
        batch, loss_config, logprob.view(labels.shape), entropy.view(labels.shape)
    )
    return loss_sum, tokens, report


def _dual_terms(
    batch: dict[str, torch.Tensor],
    loss_config: LossConfig,
    logprob: torch.Tensor,
    entropy: torch.Tensor,
):
    """(loss_sum, num_tokens, report) from per-token `[b, s]` log-probabilities/entropies."""
    rl_mask, ntp_mask = batch["rl_mask"], batch["ntp_mask"]
    roles = TokenRoles(rl_mask, ntp_mask, batch["advantages"])
    rl_loss, ntp_loss, _, _ = masked_token_losses(logprob, roles, loss_config, entropy)
    loss_sum = (batch["loss_weight"] * (rl_loss + ntp_loss)).sum()
    n_rl, n_ntp = rl_mask.sum(), ntp_mask.sum()
    report = {
        "loss_rl": torch.stack([rl_loss.sum().detach(), n_rl.float()]),
        "loss_ntp": torch.stack([ntp_loss.sum().detach(), n_ntp.float()]),
        "rl_token_entropy": torch.stack(
            [torch.where(rl_mask, entropy, 0.0).sum().detach(), n_rl.float()]
        ),
    }
    report.update(
        {
            key[len(REPORT_PREFIX) :]: value
            for key, value in batch.items()
            if key.startswith(REPORT_PREFIX)
        }
    )
    return loss_sum, (n_rl + n_ntp).int(), report


class _AllReduceGradient(torch.autograd.Function):
    """Identity forward; backward sums the gradient over the tensor-parallel group (what
    ColumnParallelLinear does to its input's gradient). megatron's
    copy_to_tensor_model_parallel_region would skip the sum for the non-contiguous gradient
    that GPTModel's final transpose hands back here (it all-reduces a contiguous copy)."""

    @staticmethod
    def forward(ctx, hidden):
        return hidden.view_as(hidden)

    @staticmethod
    def backward(ctx, grad):
        return parallel.tensor_parallel_all_reduce(grad.contiguous())


@contextlib.contextmanager
def hidden_states_out(model) -> Iterator[dict[str, torch.Tensor]]:
    """While active, the GPTModel's output layer returns its input instead of logits, prepared as
    ColumnParallelLinear prepares it (copy to the TP region, or the sequence-parallel gather),
    and records the weight it would have used under "weight"."""
    layer = unwrap_model(model).output_layer
    used: dict[str, torch.Tensor] = {}

    def forward(hidden, weight=None, runtime_gather_output=None):
        used["weight"] = layer.weight if weight is None else weight
        if layer.sequence_parallel:
            return gather_from_sequence_parallel_region(hidden, True), None
        return _AllReduceGradient.apply(hidden), None

    layer.forward = forward
    try:
        yield used
    finally:
        del layer.forward


def require_supported(loss_config: LossConfig) -> None:
    """Refuse loss settings the Megatron step cannot train yet (call before building anything)."""
    if loss_config.kl_beta > 0:
        raise ConfigError(
            f"loss.kl_beta={loss_config.kl_beta} is not supported yet: the Megatron step trains "
            "without a reference model; use --rmt-kl-beta 0",
            field="loss.kl_beta",
        )


def require_maskable(loss_config: LossConfig, transformer_engine: bool) -> None:
    """Refuse packed rows where the model's attention ignores our masks: `transformer_engine`
    says whether the model is (or will be) built from Transformer Engine's layers."""
    if loss_config.pack_sequences and transformer_engine:
        raise ConfigError(
            "loss.pack_sequences=True needs an attention that takes a mask per row "
            "(megatron-core's local layers); with Transformer Engine's layers packed (THD) "
            "sequences are not built yet: leave out --rmt-pack-sequences",
            field="loss.pack_sequences",
        )


def make_forward_step(loss_config: LossConfig) -> Callable:
    """`forward_step(data_iterator, model)` computing the RMT dual loss. The first call checks
    that `model`'s attention takes the packed rows' masks (`require_maskable`)."""
    require_supported(loss_config)
    checked = False

    def forward_step(data_iterator: Iterator[dict[str, torch.Tensor]], model):
        nonlocal checked
        if not checked:
            require_maskable(loss_config, built_with_transformer_engine(model))
            checked = True
        batch = to_compute_device(next(data_iterator))
        tokens = batch["tokens"]
        inputs = (tokens, batch["position_ids"], attention_mask(batch))
        if not (loss_config.fused_output_layer and unwrap_model(model).post_process):
            return model(*inputs), partial(dual_loss_func, batch, loss_config)
        with hidden_states_out(model) as used:
            hidden = model(*inputs)
        return (hidden, used["weight"]), partial(fused_dual_loss_func, batch, loss_config)

    return forward_step
