"""GRPO group-normalised advantages."""

import pytest
import torch

from rmt_megatron.method.advantages import grpo_advantages, informative_groups


def test_constant_groups_get_zero_advantage_exactly():
    rewards = torch.tensor([[0.1, 0.1, 0.1, 0.1], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.equal(grpo_advantages(rewards), torch.zeros(3, 4))


def test_advantages_are_centred_and_scaled_by_the_sample_std():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    # mean 0.25, sample std sqrt(0.25) = 0.5
    expected = torch.tensor([[1.5, -0.5, -0.5, -0.5]])
    torch.testing.assert_close(grpo_advantages(rewards, eps=0.0), expected)
    assert grpo_advantages(rewards).sum().abs() < 1e-6


def test_rows_are_independent():
    rewards = torch.tensor([[1.0, 0.0], [0.3, 0.3], [0.2, 0.8]])
    advantages = grpo_advantages(rewards)
    torch.testing.assert_close(advantages[0], grpo_advantages(rewards[:1])[0])
    assert torch.equal(advantages[1], torch.zeros(2))
    assert advantages[2, 1] > 0 > advantages[2, 0]


def test_informative_groups_marks_groups_with_any_reward_spread():
    rewards = torch.tensor([[1.0, 1.0], [0.0, 0.2], [0.5, 0.5]])
    assert informative_groups(rewards).tolist() == [False, True, False]


@pytest.mark.parametrize("rewards", [torch.zeros(4), torch.zeros(3, 1)])
def test_bad_shapes_are_rejected(rewards):
    with pytest.raises(ValueError, match="group_size"):
        grpo_advantages(rewards)


def test_nan_rewards_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        grpo_advantages(torch.tensor([[0.0, float("nan")]]))
