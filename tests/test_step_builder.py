"""One step's data side without a model or a process group: `score_groups` on hand-built
responses, and `StepBatchBuilder` with a scripted rollout engine and explicit DP rank/size."""

import numpy as np
import pytest
import torch

from rmt_megatron.builtin.corpus import arithmetic_documents
from rmt_megatron.builtin.datasets import ASSETS, TOKENIZER_FILE, encode_document
from rmt_megatron.config.presets import get_preset
from rmt_megatron.mcore.generation import Rollout
from rmt_megatron.method.budget import budget_at
from rmt_megatron.method.curriculum import tier_probabilities
from rmt_megatron.method.group_scores import STEP_STATS, score_groups
from rmt_megatron.method.tallies import Tally
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer
from rmt_megatron.run.step_builder import StepBatchBuilder


def _bytes(*pieces: str) -> list[bytes]:
    return [p.encode() for p in pieces]


def test_score_groups_rewards_advantages_filter_and_stats():
    config = get_preset("tiny_cpu")
    config.loss.filter_zero_variance_groups = True
    right = _bytes("a", "b", "</think>", "\\boxed{", " 7", "}")  # 2 reasoning tokens
    wrong = _bytes("a", "</think>", "\\boxed{", " 8", "}")  # 1 reasoning token
    cut = _bytes("a", "b", "c")  # no answer, truncated
    stats = Tally()
    scores = score_groups(
        [right, wrong, cut, cut],
        [True, True, False, False],
        [_bytes(" 7", " apples"), _bytes(" 9")],
        [2, 0],
        budget=2,
        config=config,
        stats=stats,
    )
    w = config.reward.length_weight
    assert scores.rewards.flatten().tolist() == pytest.approx(
        [(1 - w) + w * 1.0, w * 0.5, w * 0.5, w * 0.5]
    )
    assert scores.advantages[0, 0] > 0 > scores.advantages[0, 1]
    assert scores.advantages[1].tolist() == [0.0, 0.0]
    assert scores.keep.tolist() == [True, False]
    means = stats.means(STEP_STATS)
    assert means["match_reward"] == 0.25 and means["match_reward/hard"] == 0.5
    assert means["match_reward/easy"] == 0.0 and np.isnan(means["match_reward/medium"])
    assert means["valid_format"] == 0.5 and means["truncated"] == 0.5
    assert means["tier_share/hard"] == 0.5 and means["kept_groups"] == 0.5
    with pytest.raises(ValueError, match="equal groups"):
        score_groups([right] * 3, [True] * 3, [_bytes(" 7")] * 2, [0, 0], 2, config, Tally())


class ScriptedEngine:
    """Answers every prompt with its group: one boxed " 1" and one without an answer."""

    def __init__(self, tokenizer):
        self.answer = tokenizer.encode("so</think>\\boxed{ 1}")
        self.rambling = tokenizer.encode("so it goes on")
        self.prompts = []

    def generate(self, prompts, group_size, max_new_tokens, temperature, top_p, generator):
        self.prompts += [list(p) for p in prompts]
        return [
            Rollout(i // group_size, self.answer if i % 2 == 0 else self.rambling, i % 2 == 0)
            for i in range(len(prompts) * group_size)
        ]


def fixed(entropy: np.ndarray):
    """Scores of a corpus that is one candidate pool: `entropy` over all its tokens."""
    return lambda documents, part: entropy


@pytest.fixture(scope="module")
def setting():
    tokenizer = SentencePieceTokenizer(ASSETS / TOKENIZER_FILE)
    documents = [
        np.asarray(encode_document(tokenizer, d)) for d in arithmetic_documents(12, seed=5)
    ]
    entropy = np.full(sum(len(d) for d in documents), 1.2)  # every position is "medium"
    config = get_preset("tiny_cpu")
    config.rollout.prompts_per_step, config.rollout.group_size = 4, 2
    return config, tokenizer, documents, entropy


def _build(setting, rank, size):
    config, tokenizer, documents, entropy = setting
    engine = ScriptedEngine(tokenizer)
    batches = StepBatchBuilder(config, engine, tokenizer, documents, fixed(entropy), rank, size)
    batches = batches.build(step=3)
    return engine, batches


def test_the_builder_packs_rollouts_and_documents_with_the_step_s_weights(setting):
    config = setting[0]
    engine, batches = _build(setting, 0, 1)
    assert len(engine.prompts) == config.rollout.prompts_per_step
    means = batches.stats.means(STEP_STATS)
    assert means["valid_format"] == 0.5 and means["tier_share/medium"] == 1.0
    rl = sum(int(b["rl_mask"].sum()) for b in batches.micro_batches)
    ntp = sum(int(b["ntp_mask"].sum()) for b in batches.micro_batches)
    assert rl == config.rollout.prompts_per_step * (len(engine.answer) + len(engine.rambling))
    assert batches.loss_tokens == rl + ntp
    weight_rl = sum(float((b["loss_weight"] * b["rl_mask"]).sum()) for b in batches.micro_batches)
    weight_ntp = sum(float((b["loss_weight"] * b["ntp_mask"]).sum()) for b in batches.micro_batches)
    # token means over the whole step: Σ weights = w_RL·T and λ·T (T = all loss tokens)
    assert weight_rl == pytest.approx(config.loss.rl_weight * (rl + ntp))
    assert weight_ntp == pytest.approx(config.loss.ntp_weight * (rl + ntp))
    assert batches.budget == budget_at(3, config.train.train_iters, config.budget)
    assert batches.probs == tier_probabilities(3, config.train.train_iters, config.curriculum)
    shapes = {tuple(b["tokens"].shape) for b in batches.micro_batches}
    assert shapes == {(config.train.micro_batch_size, batches.seq_length)}


def test_data_parallel_replicas_split_the_same_draw(setting):
    whole, _ = _build(setting, 0, 1)
    first, _ = _build(setting, 0, 2)
    second, _ = _build(setting, 1, 2)
    assert len(first.prompts) == len(second.prompts) == 2
    assert sorted(first.prompts + second.prompts) == sorted(whole.prompts)
    with pytest.raises(Exception, match="divisible by the data-parallel size 3"):
        _build(setting, 0, 3)


def test_advantages_of_a_group_are_centred(setting):
    _, batches = _build(setting, 0, 1)
    advantages = torch.cat([b["advantages"][b["rl_mask"]] for b in batches.micro_batches])
    assert advantages.max() > 0 > advantages.min()


def test_documents_too_short_or_too_easy_for_rl_are_named(setting):
    from rmt_megatron.errors import DatasetError

    config, tokenizer, documents, entropy = setting
    short = [d[:5] for d in documents]
    with pytest.raises(DatasetError, match=r"no training position has curriculum\.min_context=8"):
        StepBatchBuilder(
            config,
            ScriptedEngine(tokenizer),
            tokenizer,
            short,
            fixed(np.full(sum(len(d) for d in short), 1.2)),
        )
    with pytest.raises(DatasetError, match=r"below the lowest tier threshold 0\.5"):
        StepBatchBuilder(
            config, ScriptedEngine(tokenizer), tokenizer, documents, fixed(entropy * 0.1)
        )


def test_a_cache_file_of_another_dataset_is_named(tmp_path):
    from rmt_megatron.errors import DatasetError
    from rmt_megatron.run.difficulty import cached_scores

    np.save(tmp_path / "scores.npy", np.zeros(7, dtype=np.float32))
    with pytest.raises(DatasetError, match=r"scores\.npy holds \(7,\) scores but the dataset"):
        cached_scores(tmp_path / "scores.npy", 9)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(DatasetError, match=r"bad\.npy is damaged"):
        cached_scores(tmp_path / "bad.npy", 9)
