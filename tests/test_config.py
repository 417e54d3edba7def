"""Config defaults, validation messages, presets and serialisation."""

import dataclasses

import pytest

from rmt_megatron.config.presets import PRESETS, apply_method, get_preset
from rmt_megatron.config.sections import (
    BudgetConfig,
    CurriculumConfig,
    LossConfig,
    ModelConfig,
    RewardConfig,
    RMTConfig,
    RolloutConfig,
    TrainConfig,
    field_docs,
)
from rmt_megatron.errors import ConfigError


def test_defaults_are_the_spec_recommendations():
    config = RMTConfig()
    assert (config.budget.initial, config.budget.minimum, config.budget.decay) == (800, 1, 0.2)
    assert (config.reward.length_reward_max, config.reward.length_weight) == (1.0, 0.2)
    assert config.reward.match_rule == "exact"
    assert config.curriculum.tier_thresholds == (0.5, 1.0, 1.5)
    assert config.curriculum.start_probs == (0.6, 0.3, 0.1)
    assert config.curriculum.end_probs == (0.1, 0.3, 0.6)
    assert (config.curriculum.transition_start, config.curriculum.transition_end) == (0.3, 0.7)
    assert (config.curriculum.min_context, config.curriculum.entropy_top_k) == (16, 16)
    assert (config.loss.ntp_weight, config.loss.kl_beta, config.loss.clip_eps) == (0.1, 0.0, 0.2)
    assert not config.loss.filter_zero_variance_groups
    assert (config.rollout.group_size, config.rollout.prompts_per_step) == (8, 128)
    assert config.rollout.temperature == 0.8
    assert (config.rollout.max_response_length, config.rollout.max_prompt_length) == (2048, 4096)
    assert (config.train.lr, config.train.weight_decay) == (1e-6, 0.01)
    assert (config.train.adam_beta1, config.train.adam_beta2) == (0.9, 0.999)


BAD_VALUES = [
    (BudgetConfig, {"decay": 0.0}, "budget.decay=0.0"),
    (BudgetConfig, {"decay": 1.0}, "budget.decay=1.0"),
    (BudgetConfig, {"decay": -0.5}, "budget.decay=-0.5"),
    (BudgetConfig, {"initial": 100, "minimum": 200}, "budget.minimum=200"),
    (BudgetConfig, {"initial": 0}, "budget.initial=0"),
    (BudgetConfig, {"exponent_power": 0.0}, "budget.exponent_power=0.0"),
    (RewardConfig, {"length_weight": 1.5}, "reward.length_weight=1.5"),
    (RewardConfig, {"match_rule": "fuzzy"}, "reward.match_rule='fuzzy'"),
    (RewardConfig, {"length_reward_max": 0.0}, "reward.length_reward_max=0.0"),
    (
        CurriculumConfig,
        {"transition_start": 0.7, "transition_end": 0.3},
        "curriculum.transition_start=0.7",
    ),
    (
        CurriculumConfig,
        {"transition_start": 0.5, "transition_end": 0.5},
        "curriculum.transition_start=0.5",
    ),
    (CurriculumConfig, {"transition_end": 1.0}, "curriculum.transition_end=1.0"),
    (CurriculumConfig, {"start_probs": (0.5, 0.3, 0.1)}, "sum to 1"),
    (CurriculumConfig, {"end_probs": (1.2, -0.1, -0.1)}, "curriculum.end_probs"),
    (CurriculumConfig, {"start_probs": (0.5, 0.5)}, "one probability per tier"),
    (CurriculumConfig, {"tier_thresholds": (1.0, 0.5, 1.5)}, "strictly increasing"),
    (CurriculumConfig, {"entropy_top_k": 1}, "curriculum.entropy_top_k=1"),
    (LossConfig, {"ntp_weight": -0.1}, "loss.ntp_weight=-0.1"),
    (LossConfig, {"kl_beta": -1.0}, "loss.kl_beta=-1.0"),
    (LossConfig, {"rl_weight": 0.0, "ntp_weight": 0.0}, "nothing would be trained"),
    (LossConfig, {"clip_eps": 0.0}, "loss.clip_eps=0.0"),
    (LossConfig, {"advantage_eps": 0.0}, "loss.advantage_eps=0.0"),
    (RolloutConfig, {"group_size": 1}, "rollout.group_size=1"),
    (RolloutConfig, {"temperature": 0.0}, "rollout.temperature=0.0"),
    (RolloutConfig, {"top_p": 0.0}, "rollout.top_p=0.0"),
    (ModelConfig, {"hidden_size": 66, "num_attention_heads": 4}, "model.hidden_size=66"),
    (ModelConfig, {"num_attention_heads": 4, "num_query_groups": 3}, "model.num_query_groups=3"),
    (
        ModelConfig,
        {"num_query_groups": 2, "tensor_model_parallel_size": 4},
        "model.tensor_model_parallel_size=4",
    ),
    (
        ModelConfig,
        {"num_layers": 3, "pipeline_model_parallel_size": 2},
        "model.pipeline_model_parallel_size=2",
    ),
    (ModelConfig, {"seq_length": 8192, "max_position_embeddings": 4096}, "model.seq_length"),
    (ModelConfig, {"recompute_granularity": "layers"}, "model.recompute_granularity='layers'"),
    (ModelConfig, {"recompute_granularity": "full"}, "model.recompute_method=None"),
    (
        ModelConfig,
        {"recompute_granularity": "full", "recompute_method": "uniform"},
        "model.recompute_num_layers=None",
    ),
    (ModelConfig, {"recompute_method": "block"}, "model.recompute_method='block'"),
    (CurriculumConfig, {"pool_documents": 0}, "curriculum.pool_documents=0"),
    (TrainConfig, {"train_iters": 0}, "train.train_iters=0"),
    (TrainConfig, {"lr": -1.0}, "train.lr=-1.0"),
    (TrainConfig, {"lr_warmup_iters": 1000}, "train.lr_warmup_iters=1000"),
    (TrainConfig, {"adam_beta2": 1.0}, "train.adam_beta2=1.0"),
    (TrainConfig, {"clip_grad": -1.0}, "train.clip_grad=-1.0"),
]


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    BAD_VALUES,
    ids=[f"{c.__name__}-{'-'.join(v)}" for c, v, _ in BAD_VALUES],
)
def test_bad_values_raise_a_message_naming_the_field_and_value(cls, values, message):
    with pytest.raises(ConfigError, match="is invalid") as error:
        cls(**values)
    assert message in str(error.value)


def test_replace_revalidates():
    with pytest.raises(ConfigError, match=r"budget\.decay"):
        dataclasses.replace(BudgetConfig(), decay=2.0)


def test_cross_section_check_response_length_against_the_budget_floor():
    with pytest.raises(ConfigError, match=r"rollout\.max_response_length"):
        RMTConfig(
            budget=BudgetConfig(initial=64, minimum=32),
            rollout=RolloutConfig(max_response_length=16),
        )


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip_through_dicts(name):
    config = get_preset(name)
    assert RMTConfig.from_dict(config.to_dict()) == config


def test_from_dict_rejects_unknown_names():
    data = RMTConfig().to_dict()
    data["budget"]["decay_rate"] = 0.3
    with pytest.raises(ConfigError, match="decay_rate"):
        RMTConfig.from_dict(data)
    with pytest.raises(ConfigError, match="known sections"):
        RMTConfig.from_dict({"optimizer": {}})


def test_unknown_preset_and_method_list_the_choices():
    with pytest.raises(ConfigError, match="tiny_cpu"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="rpt"):
        apply_method(RMTConfig(), "dpo")


def test_methods_switch_off_the_right_parts():
    rpt = apply_method(RMTConfig(), "rpt")
    assert not rpt.budget.enabled and not rpt.curriculum.enabled
    assert rpt.loss.ntp_weight == 0.0 and rpt.loss.rl_weight == 1.0
    ntp = apply_method(RMTConfig(), "ntp")
    assert ntp.loss.rl_weight == 0.0 and ntp.loss.ntp_weight > 0
    assert apply_method(RMTConfig(), "rmt") == RMTConfig()


@pytest.mark.parametrize(
    "cls",
    [
        BudgetConfig,
        RewardConfig,
        CurriculumConfig,
        LossConfig,
        RolloutConfig,
        ModelConfig,
        TrainConfig,
    ],
)
def test_every_field_has_a_docstring(cls):
    docs = field_docs(cls)
    assert {f.name for f in dataclasses.fields(cls)} == set(docs)
    assert all(len(doc) > 10 for doc in docs.values())
