"""Entropy tiers, tier probabilities over time and the two-stage sampler."""

import json

import numpy as np
import pytest
import torch

from rmt_megatron.config.sections import CurriculumConfig
from rmt_megatron.method.curriculum import (
    NTP_ONLY,
    CurriculumSampler,
    assign_tiers,
    tier_probabilities,
)


def test_assign_tiers_uses_half_open_intervals():
    entropy = torch.tensor([0.0, 0.49, 0.5, 0.99, 1.0, 1.49, 1.5, 7.0])
    tiers = assign_tiers(entropy, (0.5, 1.0, 1.5))
    assert tiers.tolist() == [NTP_ONLY, NTP_ONLY, 0, 0, 1, 1, 2, 2]


def test_assign_tiers_respects_eligibility_and_rejects_nan():
    tiers = assign_tiers(np.array([2.0, 2.0]), (0.5, 1.0, 1.5), eligible=np.array([True, False]))
    assert tiers.tolist() == [2, NTP_ONLY]
    with pytest.raises(ValueError, match="NaN at eligible position 1"):
        assign_tiers(np.array([1.0, np.nan]), (0.5, 1.0, 1.5))
    unscored_first = assign_tiers(
        np.array([np.nan, 1.2]), (0.5, 1.0, 1.5), eligible=np.array([False, True])
    )
    assert unscored_first.tolist() == [NTP_ONLY, 1]


def test_tier_probabilities_before_midpoint_and_after_the_transition():
    config = CurriculumConfig()  # t1 = 0.3 T, t2 = 0.7 T, (0.6, 0.3, 0.1) -> (0.1, 0.3, 0.6)
    assert tier_probabilities(0, 1000, config) == (0.6, 0.3, 0.1)
    assert tier_probabilities(299, 1000, config) == (0.6, 0.3, 0.1)
    assert tier_probabilities(500, 1000, config) == pytest.approx((0.35, 0.3, 0.35))
    assert tier_probabilities(400, 1000, config) == pytest.approx((0.475, 0.3, 0.225))
    assert tier_probabilities(700, 1000, config) == (0.1, 0.3, 0.6)
    assert tier_probabilities(999, 1000, config) == (0.1, 0.3, 0.6)
    for step in range(0, 1000, 37):
        assert sum(tier_probabilities(step, 1000, config)) == pytest.approx(1.0)


def _tiers(easy: int, medium: int, hard: int, ntp: int = 3) -> np.ndarray:
    return np.array([0] * easy + [1] * medium + [2] * hard + [NTP_ONLY] * ntp)


def test_sampler_draws_without_replacement_within_an_epoch():
    tiers = _tiers(5, 6, 7)
    sampler = CurriculumSampler(tiers, seed=0)
    indices, drawn = sampler.sample(18, (0.2, 0.3, 0.5))
    assert sorted(indices.tolist()) == list(range(18))  # every eligible position exactly once
    assert (tiers[indices] == drawn).all()
    assert sampler.epoch == 0
    more, _ = sampler.sample(4, (0.2, 0.3, 0.5))
    assert sampler.epoch == 1 and len(set(more.tolist())) == 4


def test_sampler_follows_tier_probabilities():
    sampler = CurriculumSampler(_tiers(10000, 10000, 10000), seed=1)
    _, drawn = sampler.sample(6000, (0.6, 0.3, 0.1))
    shares = np.bincount(drawn, minlength=3) / 6000
    np.testing.assert_allclose(shares, (0.6, 0.3, 0.1), atol=0.03)


def test_sampler_renormalises_over_tiers_that_are_empty_or_used_up():
    sampler = CurriculumSampler(_tiers(0, 50, 2), seed=2)
    _, drawn = sampler.sample(40, (0.9, 0.05, 0.05))
    assert (drawn != 0).all()  # empty easy tier never drawn
    assert (drawn == 2).sum() == 2  # hard used up after its 2 positions
    only_easy = CurriculumSampler(_tiers(1, 5, 0), seed=3)
    _, drawn = only_easy.sample(3, (1.0, 0.0, 0.0))
    assert drawn.tolist()[0] == 0 and (drawn[1:] == 1).all()  # no mass left: uniform


def test_sampler_is_deterministic_under_a_seed():
    tiers = _tiers(30, 30, 30)
    a = CurriculumSampler(tiers, seed=7).sample(20, (0.5, 0.3, 0.2))
    b = CurriculumSampler(tiers, seed=7).sample(20, (0.5, 0.3, 0.2))
    c = CurriculumSampler(tiers, seed=8).sample(20, (0.5, 0.3, 0.2))
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])


def test_sampler_state_resumes_the_same_draws_across_epochs():
    tiers = _tiers(7, 5, 3)
    reference = CurriculumSampler(tiers, seed=11)
    first = reference.sample(10, (0.4, 0.4, 0.2))[0]
    state = json.loads(json.dumps(reference.state_dict()))  # survives a JSON checkpoint
    expected = np.concatenate(
        [reference.sample(12, (0.1, 0.3, 0.6))[0], reference.sample(12, None)[0]]
    )
    resumed = CurriculumSampler(tiers, seed=999)
    resumed.load_state_dict(state)
    got = np.concatenate([resumed.sample(12, (0.1, 0.3, 0.6))[0], resumed.sample(12, None)[0]])
    assert np.array_equal(got, expected)
    assert len(first) == 10 and resumed.epoch == reference.epoch >= 1


def test_sampler_rejects_a_state_from_other_pools_and_empty_pools():
    state = CurriculumSampler(_tiers(3, 3, 3), seed=0).state_dict()
    with pytest.raises(ValueError, match="sizes"):
        CurriculumSampler(_tiers(3, 3, 4), seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="no position is eligible"):
        CurriculumSampler(np.full(5, NTP_ONLY), seed=0)


def test_uniform_sampling_without_curriculum_covers_all_tiers_in_proportion():
    sampler = CurriculumSampler(_tiers(2000, 1000, 1000), seed=4)
    _, drawn = sampler.sample(2000, None)
    np.testing.assert_allclose(np.bincount(drawn, minlength=3) / 2000, (0.5, 0.25, 0.25), atol=0.03)
