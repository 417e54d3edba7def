"""Public ops: per-token log-probability, entropy and a per-token objective over the vocabulary.

    token_logprob_entropy(logits, labels)            logits: [N, V_local]
    linear_logprob_entropy(hidden, weight, labels)   hidden: [N, H], weight: [V_local, H]
    linear_token_objective(hidden, weight, labels, objective)

All return fp32 `[N]` log-probabilities and entropies (see `stats.py` for the math) and are
differentiable with respect to their floating-point inputs. With `tp_group` each rank holds a
contiguous `V/TP` slice of the vocabulary (Megatron's vocab-parallel layout, padding included);
the statistics are exact over the whole vocabulary after one all-reduce MAX and one packed
all-reduce SUM, and the backward needs no collective. The linear ops never form the `[N, V]`
logits. They do not all-reduce `grad_hidden` over TP ranks: as in Megatron's ColumnParallelLinear,
pass `copy_to_tensor_model_parallel_region(hidden)` when TP > 1.

`linear_token_objective` evaluates `objective(logprob, entropy) -> scalar` (a sum of per-token
terms of the `[N]` statistics with constant weights, e.g. the RMT dual loss) in one pass: each
block of tokens is formed once, its statistics give the objective's per-token gradients
(g_lp, g_H), and the block is turned into its share of grad_hidden and grad_weight right away,
so the backward only scales them (three matmuls in all, not four). Its result is
`(loss, logprob, entropy)` with the last two detached.

Backend: `backend=` "triton" (Triton kernels; CUDA, or CPU under TRITON_INTERPRET=1), "chunked"
(pure torch, any device) or "reference" (unfused torch, logits op only). The environment variable
RMT_KERNEL_BACKEND sets the default; otherwise "triton" for CUDA tensors when triton imports,
else "chunked". The linear ops (`linear.py`) form the logits a block of tokens at a time with a
torch matmul (cuBLAS on a GPU) and give each block to the chosen backend's statistics and
gradient kernels.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from rmt_megatron.kernels import chunked, linear
from rmt_megatron.kernels.reference import token_logprob_entropy_reference
from rmt_megatron.kernels.stats import (
    GradInputs,
    combine,
    grad_coefficients,
    local_labels,
    tp_world_size,
    vocab_start,
)

BACKENDS = ("triton", "chunked", "reference")


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str | None, on_cuda: bool = False) -> str:
    """The backend to use: the argument, else $RMT_KERNEL_BACKEND, else the fastest present."""
    default = "triton" if on_cuda and _triton_available() else "chunked"
    chosen = backend or os.environ.get("RMT_KERNEL_BACKEND") or default
    if chosen not in BACKENDS:
        raise ValueError(
            f"kernel backend {chosen!r} is unknown: choose one of {BACKENDS} "
            "(argument backend= or RMT_KERNEL_BACKEND)"
        )
    return chosen


def _check(labels: torch.Tensor, n: int, vocab_local: int, temperature: float, tp_group) -> None:
    if labels.shape != (n,):
        raise ValueError(f"labels must be [N] = [{n}], got {tuple(labels.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    vocab = vocab_local * tp_world_size(tp_group)
    valid = labels[labels >= 0]
    if valid.numel() and int(valid.max()) >= vocab:
        raise ValueError(
            f"label {int(valid.max())} is outside the vocabulary of {vocab} "
            "tokens: tokenizer and model vocabularies disagree?"
        )


def _logits_impl(backend: str):
    """The module with `logits_partial_stats` and `logits_grad` for `backend`."""
    if backend == "triton":
        from rmt_megatron.kernels import triton_logits

        return triton_logits
    return chunked


class _LogitsOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, temperature, ignore_index, tp_group, impl):
        local, ignored = local_labels(
            labels, vocab_start(logits.shape[1], tp_group), logits.shape[1], ignore_index
        )
        stats = combine(impl.logits_partial_stats(logits, local, temperature), ignored, tp_group)
        ctx.save_for_backward(logits, local, ignored, stats.log_z, stats.mean_z)
        ctx.temperature = temperature
        ctx.impl = impl
        return stats.logprob, stats.entropy

    @staticmethod
    def backward(ctx, grad_logprob, grad_entropy):
        logits, local, ignored, log_z, mean_z = ctx.saved_tensors
        g_lp, g_h = grad_coefficients(
            grad_logprob, grad_entropy, ignored, logits.shape[0], logits.device
        )
        grad = ctx.impl.logits_grad(
            logits, GradInputs(local, log_z, mean_z, g_lp, g_h), ctx.temperature
        )
        return grad, None, None, None, None, None


class _LinearOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, temperature, ignore_index, tp_group, impl):
        local, ignored = local_labels(
            labels, vocab_start(weight.shape[0], tp_group), weight.shape[0], ignore_index
        )
        stats = combine(
            linear.linear_partial_stats(hidden, weight, local, temperature, impl), ignored, tp_group
        )
        ctx.save_for_backward(hidden, weight, local, ignored, stats.log_z, stats.mean_z)
        ctx.temperature = temperature
        ctx.impl = impl
        return stats.logprob, stats.entropy

    @staticmethod
    def backward(ctx, grad_logprob, grad_entropy):
        hidden, weight, local, ignored, log_z, mean_z = ctx.saved_tensors
        g_lp, g_h = grad_coefficients(
            grad_logprob, grad_entropy, ignored, hidden.shape[0], hidden.device
        )
        grad_hidden, grad_weight = linear.linear_grads(
            hidden, weight, GradInputs(local, log_z, mean_z, g_lp, g_h), ctx.temperature, ctx.impl
        )
        return grad_hidden, grad_weight, None, None, None, None, None


def _objective_coefficients(objective, logprob, entropy, ignored):
    """(objective value, g_lp, g_H) at the `[N]` statistics; g_lp = 0 where ignored."""
    with torch.enable_grad():
        logprob = logprob.detach().requires_grad_()
        entropy = entropy.detach().requires_grad_()
        loss = objective(logprob, entropy)
        g_lp, g_h = torch.autograd.grad(
            loss, [logprob, entropy], allow_unused=True, materialize_grads=True
        )
    return loss.detach(), torch.where(ignored, torch.zeros_like(g_lp), g_lp), g_h


class _LinearObjectiveOp(torch.autograd.Function):
    """The objective's gradients are formed in the forward, block by block (see
    `linear.linear_objective_grads`); the backward only scales them by the upstream gradient.
    Each block's coefficients come from the objective evaluated on the statistics known so far,
    which is exact for a sum of per-token terms; the forward checks this against the final
    coefficients and refuses an objective that couples tokens through their statistics."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, temperature, ignore_index, tp_group, objective, impl):
        local, ignored = local_labels(
            labels, vocab_start(weight.shape[0], tp_group), weight.shape[0], ignore_index
        )
        logprob, entropy, g_lp_used, g_h_used = (
            torch.zeros(hidden.shape[0], device=hidden.device) for _ in range(4)
        )

        def block_coefficients(block, stats):
            logprob[block], entropy[block] = stats.logprob, stats.entropy
            _, g_lp, g_h = _objective_coefficients(objective, logprob, entropy, ignored)
            g_lp_used[block], g_h_used[block] = g_lp[block], g_h[block]
            return g_lp[block], g_h[block]

        grad_hidden, grad_weight = linear.linear_objective_grads(
            hidden, weight, local, ignored, temperature, impl, block_coefficients, tp_group
        )
        loss, g_lp, g_h = _objective_coefficients(objective, logprob, entropy, ignored)
        if not (
            torch.allclose(g_lp, g_lp_used, rtol=1e-5, atol=1e-7)
            and torch.allclose(g_h, g_h_used, rtol=1e-5, atol=1e-7)
        ):
            raise ValueError(
                "linear_token_objective needs an objective that is a sum of "
                "per-token terms (its gradient for one token must not depend on "
                "other tokens' log-probabilities or entropies): use "
                "linear_logprob_entropy and build the objective on its outputs"
            )
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss, logprob, entropy

    @staticmethod
    def backward(ctx, grad_loss, *_):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            grad_hidden.mul_(grad_loss.to(grad_hidden.dtype)),
            grad_weight.mul_(grad_loss.to(grad_weight.dtype)),
            None,
            None,
            None,
            None,
            None,
            None,
        )


def token_logprob_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    tp_group=None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(logprob [N], entropy [N])` of `labels: [N]` under `softmax(logits / temperature)`."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V_local], got {tuple(logits.shape)}")
    _check(labels, logits.shape[0], logits.shape[1], temperature, tp_group)
    backend = resolve_backend(backend, logits.is_cuda)
    if backend == "reference":
        if tp_world_size(tp_group) > 1:
            raise ValueError(
                "the reference backend has no vocab-parallel path: use "
                "backend='chunked' with tp_group"
            )
        return token_logprob_entropy_reference(
            logits, labels, temperature=temperature, ignore_index=ignore_index
        )
    return _LogitsOp.apply(
        logits, labels, temperature, ignore_index, tp_group, _logits_impl(backend)
    )


def _linear_impl(hidden, weight, labels, temperature, tp_group, backend):
    """Check the linear ops' inputs; the logits backend module that processes each block."""
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"expected hidden [N, H] and weight [V_local, H], got "
            f"{tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden is {hidden.dtype} but weight is {weight.dtype}: cast one")
    _check(labels, hidden.shape[0], weight.shape[0], temperature, tp_group)
    backend = resolve_backend(backend, hidden.is_cuda)
    if backend == "reference":
        raise ValueError("the reference backend has no linear op: use 'chunked' or 'triton'")
    return _logits_impl(backend)


def linear_logprob_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    tp_group=None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(logprob [N], entropy [N])` of `labels` under `softmax(hidden @ weight.T / τ)`."""
    impl = _linear_impl(hidden, weight, labels, temperature, tp_group, backend)
    return _LinearOp.apply(hidden, weight, labels, temperature, ignore_index, tp_group, impl)


def linear_token_objective(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    tp_group=None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(objective(logprob, entropy), logprob, entropy)`, differentiable through the first."""
    impl = _linear_impl(hidden, weight, labels, temperature, tp_group, backend)
    return _LinearObjectiveOp.apply(
        hidden, weight, labels, temperature, ignore_index, tp_group, objective, impl
    )
