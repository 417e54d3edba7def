"""Budget schedule and length/combined rewards against hand-computed numbers."""

import itertools

import pytest

from rmt_megatron.config.sections import BudgetConfig, RewardConfig
from rmt_megatron.method.budget import (
    budget_at,
    combined_reward,
    final_budget,
    length_reward,
    rollout_token_cap,
)

SPEC_TABLE = [800, 681, 579, 493, 420, 357, 304, 259, 220, 187, 160]


def test_budget_table_matches_spec_section_3():
    config = BudgetConfig(initial=800, minimum=1, decay=0.2)
    assert [budget_at(step, 1000, config) for step in range(0, 1001, 100)] == SPEC_TABLE


def test_budget_is_monotone_and_stays_at_the_end_value_past_t():
    config = BudgetConfig()
    budgets = [budget_at(step, 50, config) for step in range(0, 60)]
    assert all(a >= b for a, b in itertools.pairwise(budgets))
    assert budgets[-1] == budgets[50] == 160


def test_budget_minimum_binds():
    config = BudgetConfig(initial=100, minimum=40, decay=0.1)
    assert budget_at(0, 10, config) == 100
    assert budget_at(10, 10, config) == 40


def test_exponent_power_one_is_the_default_form_and_other_powers_bend_the_curve():
    plain = BudgetConfig(exponent_power=1.0)
    bent = BudgetConfig(exponent_power=2.0)
    assert budget_at(500, 1000, bent) == 534  # floor(800 * 0.2 ** (0.5 ** 2)) = floor(534.99)
    assert budget_at(500, 1000, plain) == 357
    assert budget_at(1000, 1000, bent) == budget_at(1000, 1000, plain) == 160


@pytest.mark.parametrize(("step", "total"), [(-1, 10), (0, 0)])
def test_budget_rejects_bad_steps(step, total):
    with pytest.raises(ValueError, match="step"):
        budget_at(step, total, BudgetConfig())


@pytest.mark.parametrize(
    ("ell", "expected"),
    [
        (0, 0.0),
        (100, 0.5),
        (200, 1.0),
        (300, 0.5),
        (400, 0.0),
        (600, 0.0),
    ],
)
def test_triangular_length_reward_at_spec_points(ell, expected):
    # B = 200: ℓ = 0, B/2, B, 1.5B, 2B, 3B
    assert length_reward(ell, 200) == pytest.approx(expected, abs=1e-12)


def test_length_reward_scales_with_r_max_and_rejects_bad_input():
    assert length_reward(10, 10, max_reward=2.5) == 2.5
    with pytest.raises(ValueError, match="budget"):
        length_reward(5, 0)
    with pytest.raises(ValueError, match="length"):
        length_reward(-1, 10)


def test_combined_reward_is_a_convex_mix():
    config = RewardConfig(length_weight=0.2)
    assert combined_reward(1.0, 1.0, config) == pytest.approx(1.0)
    assert combined_reward(0.0, 1.0, config) == pytest.approx(0.2)
    assert combined_reward(1.0, 0.0, config) == pytest.approx(0.8)
    assert combined_reward(1.0, 0.5, RewardConfig(length_weight=0.0)) == 1.0


def test_rollout_cap_is_twice_the_budget_plus_answer_room_within_the_max():
    assert rollout_token_cap(160, 2048, 32) == 352
    assert rollout_token_cap(800, 2048, 32) == 1632
    assert rollout_token_cap(1200, 2048, 32) == 2048


def test_final_budget_is_the_budget_at_the_last_step_of_any_run():
    for config in (BudgetConfig(initial=96, minimum=40, decay=0.42), BudgetConfig()):
        assert all(final_budget(config) == budget_at(t, t, config) for t in (1, 7, 100, 1000))
    assert final_budget(BudgetConfig(initial=96, minimum=40, decay=0.42)) == 40
