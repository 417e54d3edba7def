"""The torch reference token statistics and the dual RL + NTP loss."""

import math

import pytest
import torch

from rmt_megatron.config.sections import LossConfig
from rmt_megatron.kernels import token_logprob_entropy_reference, topk_entropy_reference
from rmt_megatron.method.dual_loss import TokenRoles, dual_loss


def test_reference_logprob_and_entropy_on_a_hand_case():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, -1e4, 1e4]])
    logprob, entropy = token_logprob_entropy_reference(logits, torch.tensor([2, 3]))
    torch.testing.assert_close(logprob, torch.tensor([-math.log(4.0), 0.0]))
    torch.testing.assert_close(entropy, torch.tensor([math.log(4.0), 0.0]))


def test_reference_temperature_ignore_index_and_bad_labels():
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    logprob, entropy = token_logprob_entropy_reference(
        logits, torch.tensor([0, -100]), temperature=2.0
    )
    expected = torch.log_softmax(logits / 2.0, dim=-1)
    torch.testing.assert_close(logprob, torch.tensor([expected[0, 0].item(), 0.0]))
    torch.testing.assert_close(entropy, -(expected.exp() * expected).sum(-1))
    with pytest.raises(ValueError, match="vocabularies disagree"):
        token_logprob_entropy_reference(logits, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="temperature"):
        token_logprob_entropy_reference(logits, torch.tensor([0, 1]), temperature=0.0)


def test_ignored_labels_give_no_gradient_through_logprob():
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    logprob, _ = token_logprob_entropy_reference(logits, torch.tensor([1, -100, 4]))
    logprob.sum().backward()
    assert torch.equal(logits.grad[1], torch.zeros(5))
    assert logits.grad[0].abs().sum() > 0


def test_topk_entropy_is_renormalised_over_the_top_k():
    logits = torch.tensor([[5.0, 5.0, -3.0, -9.0], [1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(topk_entropy_reference(logits, 2)[0], torch.tensor(math.log(2.0)))
    _, full = token_logprob_entropy_reference(logits, torch.tensor([0, 0]))
    torch.testing.assert_close(topk_entropy_reference(logits, 4), full)
    with pytest.raises(ValueError, match="k must be"):
        topk_entropy_reference(logits, 1)


def _masks(*flags: str) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor([f == "rl" for f in flags]), torch.tensor([f == "ntp" for f in flags]))


def test_dual_loss_value_on_a_hand_built_case():
    # Uniform logits over V = 3: every log-prob is -log 3.
    logits = torch.zeros(4, 3)
    logprob, _ = token_logprob_entropy_reference(logits, torch.tensor([0, 1, 2, 0]))
    rl_mask, ntp_mask = _masks("rl", "rl", "ntp", "none")
    terms = dual_loss(
        logprob,
        TokenRoles(
            rl_mask=rl_mask, ntp_mask=ntp_mask, advantages=torch.tensor([1.0, -0.5, 9.0, 9.0])
        ),
        LossConfig(),
    )
    # On-policy ρ = 1, so L_RL = -mean(A) = -(1 - 0.5) / 2 (the surrogate's value; its gradient
    # equals that of the paper's -mean(A log π)); L_NTP = log 3; L = L_RL + 0.1 L_NTP.
    torch.testing.assert_close(terms.rl, torch.tensor(-0.25))
    torch.testing.assert_close(terms.ntp, torch.tensor(math.log(3.0)))
    torch.testing.assert_close(terms.loss, torch.tensor(-0.25 + 0.1 * math.log(3.0)))
    assert (terms.rl_tokens, terms.ntp_tokens) == (2, 1)


def test_dual_loss_gradient_is_one_coefficient_per_token_times_onehot_minus_softmax():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=generator, dtype=torch.float32, requires_grad=True)
    labels = torch.tensor([0, 3, 6, 2, 5, 1])
    advantages = torch.tensor([0.7, -1.2, 0.4, 0.0, 0.0, 0.0])
    rl_mask, ntp_mask = _masks("rl", "rl", "rl", "ntp", "ntp", "none")
    config = LossConfig(ntp_weight=0.1)
    logprob, _ = token_logprob_entropy_reference(logits, labels)
    dual_loss(
        logprob, TokenRoles(rl_mask=rl_mask, ntp_mask=ntp_mask, advantages=advantages), config
    ).loss.backward()

    coefficient = torch.where(rl_mask, -advantages / 3, torch.zeros(6))
    coefficient = torch.where(ntp_mask, torch.full((6,), -0.1 / 2), coefficient)
    probs = torch.softmax(logits.detach(), dim=-1)
    one_hot = torch.nn.functional.one_hot(labels, 7).float()
    expected = coefficient[:, None] * (one_hot - probs)
    torch.testing.assert_close(logits.grad, expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(logits.grad[5], torch.zeros(7))


def test_clipped_ratio_stops_the_gradient_and_is_counted():
    logprob = torch.tensor([-1.0, -1.0], requires_grad=True)
    old = torch.tensor([-1.5, -1.0])  # ratio e^0.5 = 1.65 > 1.2 on token 0; 1 on token 1
    rl_mask, ntp_mask = _masks("rl", "rl")
    terms = dual_loss(
        logprob,
        TokenRoles(
            rl_mask=rl_mask, ntp_mask=ntp_mask, advantages=torch.tensor([1.0, 1.0]), old_logprob=old
        ),
        LossConfig(clip_eps=0.2),
    )
    terms.loss.backward()
    torch.testing.assert_close(terms.rl, torch.tensor(-(1.2 + 1.0) / 2))
    torch.testing.assert_close(logprob.grad, torch.tensor([0.0, -0.5]))
    assert terms.clip_fraction.item() == 0.5


def test_kl_and_entropy_terms():
    logprob = torch.tensor([-1.0, -2.0])
    ref = torch.tensor([-1.0, -1.0])
    entropy = torch.tensor([0.5, 1.5])
    rl_mask, ntp_mask = _masks("rl", "rl")
    zero_adv = torch.zeros(2)
    terms = dual_loss(
        logprob,
        TokenRoles(rl_mask=rl_mask, ntp_mask=ntp_mask, advantages=zero_adv, ref_logprob=ref),
        LossConfig(kl_beta=0.5, entropy_coeff=0.1),
        entropy=entropy,
    )
    kl = (0.0 + (math.e - 1.0 - 1.0)) / 2  # k3 = e^r - r - 1 with r = ref - logprob = 0, 1
    torch.testing.assert_close(terms.kl, torch.tensor(kl))
    torch.testing.assert_close(terms.rl, torch.tensor(0.5 * kl - 0.1 * 1.0))


def test_empty_sets_contribute_zero_and_bad_inputs_are_rejected():
    logprob = torch.tensor([-1.0, -2.0])
    none = torch.zeros(2, dtype=torch.bool)
    terms = dual_loss(
        logprob, TokenRoles(rl_mask=none, ntp_mask=none, advantages=torch.zeros(2)), LossConfig()
    )
    assert terms.loss.item() == 0.0
    with pytest.raises(ValueError, match="overlap"):
        dual_loss(
            logprob,
            TokenRoles(rl_mask=~none, ntp_mask=~none, advantages=torch.zeros(2)),
            LossConfig(),
        )
    with pytest.raises(ValueError, match="flat"):
        dual_loss(
            logprob,
            TokenRoles(rl_mask=none, ntp_mask=none, advantages=torch.zeros(3)),
            LossConfig(),
        )
    with pytest.raises(ValueError, match="ref_logprob"):
        dual_loss(
            logprob,
            TokenRoles(rl_mask=none, ntp_mask=none, advantages=torch.zeros(2)),
            LossConfig(kl_beta=0.1),
        )
    with pytest.raises(ValueError, match="entropy"):
        dual_loss(
            logprob,
            TokenRoles(rl_mask=none, ntp_mask=none, advantages=torch.zeros(2)),
            LossConfig(entropy_coeff=0.1),
        )
