"""The RMT mid-training run: setup, the step loop, evaluation and checkpoints.

One step (spec §6): B_t and p_t from the schedules; `prompts_per_step` RL positions from the
curriculum sampler (every rank draws the same set, each data-parallel replica takes its share);
prompts with the budget clause; G rollouts each, cut at 2·B_t plus room for the answer; rewards
and GRPO advantages; one forward/backward of w_RL·L_RL + λ·L_NTP over the rollouts and the
documents that own the positions, through megatron-core's schedule; one optimizer step.
Method switches (`rmt_megatron.presets.apply_method`) turn it into RPT or plain NTP.

Everything that makes a step random is seeded from (seed, step, data-parallel rank), and the
sampler's state is checkpointed, so a resumed run draws what an uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state

from rmt_megatron import distributed, megatron_cpu
from rmt_megatron.advantages import grpo_advantages, informative_groups
from rmt_megatron.batches import (
    TrainingSequence,
    collate,
    ntp_sequence,
    rl_sequence,
    token_weights,
)
from rmt_megatron.budget import budget_at, rollout_token_cap
from rmt_megatron.builtin import prepare_builtin_data
from rmt_megatron.checkpointing import latest_step, load_checkpoint, save_checkpoint
from rmt_megatron.config import TIER_NAMES, ConfigError, RMTConfig
from rmt_megatron.curriculum import CurriculumSampler, assign_tiers, tier_probabilities
from rmt_megatron.data import load_indexed_dataset
from rmt_megatron.evaluation import evaluate, sample_eval_positions
from rmt_megatron.metrics import MetricsWriter, SumsAndCounts, progress_line
from rmt_megatron.model import DTYPES
from rmt_megatron.prompt import build_prompt
from rmt_megatron.rewards import score_rollout
from rmt_megatron.rollout import RolloutEngine
from rmt_megatron.scoring import score_difficulty
from rmt_megatron.step import make_forward_step
from rmt_megatron.tokenizer import SentencePieceTokenizer
from rmt_megatron.training import build_training, train_step

ANSWER_ALLOWANCE = 16
"""Tokens allowed past 2·B_t for `</think>` and the boxed answer."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN)."""


@dataclass
class RunData:
    tokenizer: SentencePieceTokenizer
    train_prefix: Path
    valid_prefix: Path
    pretrained: Path | None


def resolve_data(config: RMTConfig) -> RunData:
    """The built-in corpus and base model, or the user's datasets, tokenizer and checkpoint."""
    data = config.data
    if data.train_data_path is None:
        if distributed.is_main_rank():
            prepare_builtin_data(data.builtin_data_dir)
        if dist.is_initialized():
            dist.barrier()
        builtin = prepare_builtin_data(data.builtin_data_dir)
        pretrained = (Path(data.pretrained_checkpoint) if data.pretrained_checkpoint
                      else builtin.base_checkpoint)
        return RunData(SentencePieceTokenizer(builtin.tokenizer_model), builtin.train_prefix,
                       builtin.valid_prefix, pretrained)
    return RunData(SentencePieceTokenizer(data.tokenizer_model), Path(data.train_data_path),
                   Path(data.valid_data_path),
                   Path(data.pretrained_checkpoint) if data.pretrained_checkpoint else None)


def documents_of(dataset) -> list[np.ndarray]:
    return [np.asarray(dataset[i], dtype=np.int64) for i in range(len(dataset))]


def eligible_positions(documents: list[np.ndarray], tokenizer: SentencePieceTokenizer,
                       min_context: int) -> np.ndarray:
    """Flat bool over all tokens: enough context and a target that has text (spec §11 #8)."""
    empty = np.array([len(b) == 0 for b in tokenizer.token_bytes(range(tokenizer.vocab_size))])
    flags = []
    for tokens in documents:
        doc = ~empty[tokens]
        doc[:min_context] = False
        flags.append(doc)
    return np.concatenate(flags)


def document_window(document: np.ndarray, positions: list[int],
                    seq_length: int) -> tuple[np.ndarray, list[int]]:
    """At most `seq_length + 1` tokens of `document` that contain the last RL position, and the
    positions re-based to the window."""
    start = max(0, min(max(positions) + 1, len(document)) - seq_length - 1)
    window = document[start:start + seq_length + 1]
    return window, [p - start for p in positions if p - start >= 0]


class Run:
    """One training run on this rank (construct inside `megatron_cpu.device_mode()`)."""

    def __init__(self, config: RMTConfig) -> None:
        self.config = config
        self.rl = config.loss.rl_weight > 0
        self.data = resolve_data(config)
        tokenizer = self.data.tokenizer
        if config.model.vocab_size not in (None, tokenizer.vocab_size):
            raise ConfigError(f"model.vocab_size={config.model.vocab_size} but the tokenizer "
                              f"{tokenizer.path} has {tokenizer.vocab_size} tokens: drop "
                              "--vocab-size or use the tokenizer the model was trained with")
        self.train_docs = documents_of(load_indexed_dataset(self.data.train_prefix,
                                                            tokenizer.vocab_size))
        self.valid_docs = documents_of(load_indexed_dataset(self.data.valid_prefix,
                                                            tokenizer.vocab_size))
        self.offsets = np.concatenate([[0], np.cumsum([len(d) for d in self.train_docs])])
        self.state = build_training(config.model, config.train, tokenizer.vocab_size)
        self.forward_step = make_forward_step(config.loss)
        self.engine = RolloutEngine(self.state.module, tokenizer.vocab_size, tokenizer.eos_id,
                                    tokenizer.token_bytes, config.model.hidden_size,
                                    DTYPES[config.model.params_dtype])
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.dp_size = parallel_state.get_data_parallel_world_size()
        if config.rollout.prompts_per_step % self.dp_size:
            raise ConfigError(f"rollout.prompts_per_step={config.rollout.prompts_per_step} "
                              f"must be divisible by the data-parallel size {self.dp_size}")
        self.start_step = self._load_weights()
        self.sampler = self._build_sampler()
        self.eval_positions = self._eval_positions()
        self.writer = MetricsWriter(config.train.tensorboard_dir, distributed.is_main_rank())
        self.last_checkpoint: Path | None = None
        if self.resume_state is not None:
            self.state.scheduler.load_state_dict(self.resume_state["scheduler"])
            self.sampler.load_state_dict(self.resume_state["sampler"])

    # ---- setup -------------------------------------------------------------------------------

    def _load_weights(self) -> int:
        """Resume from --load if it holds a checkpoint, else start from the pretrained one."""
        self.resume_state = None
        load = self.config.train.load
        if load and latest_step(load) is not None:
            loaded = load_checkpoint(load, self.state.module, self.state.optimizer)
            saved_model = loaded.state["config"]["model"]
            if saved_model != self.config.to_dict()["model"]:
                raise ConfigError(f"{load} was trained with another model config "
                                  f"({saved_model}); resume with the same model flags")
            self.resume_state = loaded.state
            self._log(f"resumed from {load} at step {loaded.step}")
            return loaded.step
        if self.data.pretrained is not None:
            load_checkpoint(self.data.pretrained, self.state.module, restore_rng=False)
            self._log(f"starting from {self.data.pretrained}")
        return 0

    def _difficulty(self, prefix: Path, documents) -> np.ndarray:
        """Proxy-model entropies (the starting policy is the proxy), cached next to the data."""
        top_k = self.config.curriculum.entropy_top_k
        path = prefix.with_name(f"{prefix.name}_entropy_{f'top{top_k}' if top_k else 'full'}"
                                ".npy")
        dataset = load_indexed_dataset(prefix, self.data.tokenizer.vocab_size)
        return score_difficulty(self.state.module, dataset, path, top_k,
                                self.config.model.seq_length, self.config.train.micro_batch_size,
                                self.data.tokenizer.eos_id)

    def _build_sampler(self) -> CurriculumSampler:
        seed = self.config.train.seed
        if not self.rl:  # NTP only: walk the documents without replacement
            return CurriculumSampler(np.zeros(len(self.train_docs), dtype=np.int8), seed)
        self.train_entropy = self._difficulty(self.data.train_prefix, self.train_docs)
        eligible = eligible_positions(self.train_docs, self.data.tokenizer,
                                      self.config.curriculum.min_context)
        tiers = assign_tiers(self.train_entropy, self.config.curriculum.tier_thresholds,
                             eligible)
        self._log("RL positions per tier: " + ", ".join(
            f"{name} {int((tiers == k).sum())}" for k, name in enumerate(TIER_NAMES)))
        return CurriculumSampler(tiers, seed)

    def _eval_positions(self):
        entropy = self._difficulty(self.data.valid_prefix, self.valid_docs)
        return sample_eval_positions(self.valid_docs, entropy,
                                     self.config.curriculum.tier_thresholds[0],
                                     self.config.curriculum.min_context,
                                     self.config.data.eval_positions, self.config.train.seed)

    # ---- one step ----------------------------------------------------------------------------

    def _locate(self, flat: np.ndarray) -> list[tuple[int, int]]:
        docs = np.searchsorted(self.offsets, flat, side="right") - 1
        return [(int(d), int(f - self.offsets[d])) for d, f in zip(docs, flat, strict=True)]

    def _budget(self, step: int) -> int | None:
        if not self.config.budget.enabled:
            return None
        return budget_at(step, self.config.train.train_iters, self.config.budget)

    def _generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(
            self.config.train.seed * 1_000_003 + step * 7919 + self.dp_rank)

    def step(self, step: int) -> dict[str, float]:
        started = time.time()
        config = self.config
        stats = SumsAndCounts()
        budget = self._budget(step)
        probs = (tier_probabilities(step, config.train.train_iters, config.curriculum)
                 if config.curriculum.enabled else None)
        drawn, drawn_tiers = self.sampler.sample(config.rollout.prompts_per_step, probs)
        mine = slice(self.dp_rank, None, self.dp_size)
        sequences: list[TrainingSequence] = []
        rollout_tokens, rollout_seconds = 0, 0.0
        if self.rl:
            sequences, rollout_tokens, rollout_seconds = self._rl_sequences(
                step, budget, self._locate(drawn[mine]), drawn_tiers[mine], stats)
        else:
            for doc in drawn[mine]:
                window, _ = document_window(self.train_docs[doc], [0], config.model.seq_length)
                sequences.append(ntp_sequence(window.tolist(), ()))
        counts = torch.tensor([sum(s.rl_tokens for s in sequences),
                               sum(s.ntp_tokens for s in sequences)], dtype=torch.float64)
        if self.dp_size > 1:
            dist.all_reduce(counts, group=parallel_state.get_data_parallel_group())
        weights = token_weights(int(counts[0]), int(counts[1]), config.loss.rl_weight,
                                config.loss.ntp_weight)
        if not sequences:  # every group filtered out: still join the collective step
            sequences = [TrainingSequence([self.data.tokenizer.eos_id] * 2, excluded={1})]
        width = max(len(s.tokens) for s in sequences) - 1
        micro = collate(sequences, config.train.micro_batch_size, width,
                        self.data.tokenizer.eos_id, *weights)
        train_started = time.time()
        output = train_step(self.state, self.forward_step, micro, width)
        train_seconds = time.time() - train_started
        losses = self._share_losses(output.reports)
        metrics = stats.means(_STAT_NAMES)
        metrics.update(losses)
        metrics.update({
            "budget": math.nan if budget is None else budget,
            "grad_norm": output.grad_norm,
            "lr": self.state.optimizer.param_groups[0]["lr"],
            "step_time": time.time() - started,
            "rollout_tokens_per_s": rollout_tokens / rollout_seconds if rollout_seconds else
            math.nan,
            "train_tokens_per_s": float(counts.sum()) / max(train_seconds, 1e-9),
        })
        if probs is not None:
            metrics.update({f"p_t/{n}": p for n, p in zip(TIER_NAMES, probs, strict=True)})
        return metrics

    def _rl_sequences(self, step, budget, positions, tiers, stats):
        config, tokenizer = self.config, self.data.tokenizer
        prompts = [build_prompt(tokenizer, self.train_docs[d][:p].tolist(), budget,
                                config.rollout.max_prompt_length) for d, p in positions]
        cap = (config.rollout.max_response_length if budget is None else
               rollout_token_cap(budget, config.rollout.max_response_length, ANSWER_ALLOWANCE))
        started = time.time()
        rollouts = self.engine.generate(prompts, config.rollout.group_size, cap,
                                        config.rollout.temperature, config.rollout.top_p,
                                        self._generator(step))
        seconds = time.time() - started
        group = config.rollout.group_size
        rewards = torch.zeros(len(prompts), group)
        for index, rollout in enumerate(rollouts):
            doc, pos = positions[rollout.prompt_index]
            score = score_rollout(tokenizer.token_bytes(rollout.tokens),
                                  tokenizer.token_bytes(self.train_docs[doc][pos:].tolist()),
                                  budget, config.reward)
            rewards[rollout.prompt_index, index % group] = score.total
            tier = TIER_NAMES[tiers[rollout.prompt_index]]
            stats.add("match_reward", score.match)
            stats.add(f"match_reward/{tier}", score.match)
            stats.add("length_reward", score.length)
            stats.add("reasoning_length", score.reasoning_tokens)
            stats.add("valid_format", float(score.valid_format))
            stats.add("over_twice_budget",
                      float(budget is not None and score.reasoning_tokens > 2 * budget))
            stats.add("truncated", float(not rollout.finished))
            stats.add("response_length", len(rollout.tokens))
        for k, name in enumerate(TIER_NAMES):
            stats.add(f"tier_share/{name}", float((tiers == k).sum()), len(tiers))
        advantages = grpo_advantages(rewards, config.loss.advantage_eps)
        keep = (informative_groups(rewards) if config.loss.filter_zero_variance_groups
                else torch.ones(len(prompts), dtype=torch.bool))
        stats.add("kept_groups", float(keep.sum()), len(prompts))
        sequences = [rl_sequence(prompts[r.prompt_index], r.tokens,
                                 float(advantages[r.prompt_index, i % group]))
                     for i, r in enumerate(rollouts) if keep[r.prompt_index]]
        if config.loss.ntp_weight > 0:
            by_doc: dict[int, list[int]] = {}
            for doc, pos in positions:
                by_doc.setdefault(doc, []).append(pos)
            for doc, doc_positions in sorted(by_doc.items()):
                window, rebased = document_window(self.train_docs[doc], doc_positions,
                                                  config.model.seq_length)
                sequences.append(ntp_sequence(window.tolist(), rebased))
        return sequences, sum(len(r.tokens) for r in rollouts), seconds

    def _share_losses(self, reports) -> dict[str, float]:
        """Loss sums and token counts from the last pipeline stage, known on every stage."""
        values = [float(reports.get(key, torch.zeros(2))[i]) for key in ("rl loss", "ntp loss")
                  for i in (0, 1)]
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            box = [values]
            dist.broadcast_object_list(
                box, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                group=parallel_state.get_pipeline_model_parallel_group())
            values = box[0]
        rl_sum, rl_count, ntp_sum, ntp_count = values
        return {"loss_rl": rl_sum / rl_count if rl_count else math.nan,
                "loss_ntp": ntp_sum / ntp_count if ntp_count else math.nan,
                "loss_sums_finite": float(math.isfinite(rl_sum) and math.isfinite(ntp_sum))}

    def _check_finite(self, step: int, metrics: dict[str, float]) -> None:
        grad_ok = math.isfinite(metrics["grad_norm"]) or self.config.train.clip_grad == 0
        if not metrics["loss_sums_finite"] or not grad_ok:
            raise TrainingError(
                f"the loss or gradient norm is not finite at step {step} (L_RL "
                f"{metrics['loss_rl']}, L_NTP {metrics['loss_ntp']}, grad norm "
                f"{metrics['grad_norm']}); lower --lr or check the data. The last good "
                f"checkpoint is {self.last_checkpoint or 'none (nothing was saved yet)'}")

    # ---- evaluation, checkpoints, loop -------------------------------------------------------

    def evaluate(self, step: int) -> dict:
        total = self.config.train.train_iters
        report = evaluate(self.state.module, self.engine, self.data.tokenizer, self.valid_docs,
                          self.eval_positions, self.config, self._budget(total),
                          self.config.train.seed)
        report["step"] = step
        flat = {f"{key}/{split}": value[key] for split, value in report["splits"].items()
                for key in ("reasoning_accuracy", "ntp_accuracy")}
        flat["mean_reasoning_length"] = report["mean_reasoning_length"]
        self.writer.scalars(step, flat, "eval")
        if self.config.train.save and distributed.is_main_rank():
            directory = Path(self.config.train.save) / "eval"
            directory.mkdir(parents=True, exist_ok=True)
            for name in (f"iter_{step:07d}.json", "latest.json"):
                temporary = directory / (name + ".tmp")
                temporary.write_text(json.dumps(report, indent=1))
                temporary.replace(directory / name)
        avg = report["average"]
        self._log(f"eval at step {step}: reasoning accuracy {avg['reasoning_accuracy']:.3f}, "
                  f"NTP accuracy {avg['ntp_accuracy']:.3f}, mean reasoning length "
                  f"{report['mean_reasoning_length']:.1f} (B_T {report['budget']})")
        return report

    def save(self, step: int) -> None:
        if not self.config.train.save:
            return
        self.last_checkpoint = save_checkpoint(
            self.config.train.save, step, self.state.module, self.state.optimizer,
            {"step": step, "config": self.config.to_dict(),
             "scheduler": self.state.scheduler.state_dict(),
             "sampler": self.sampler.state_dict()})

    def train(self) -> dict:
        """Run from the start (or resume) step to train_iters; returns the final eval report."""
        config = self.config.train
        evaluations = []
        if self.start_step == 0:
            evaluations.append(self.evaluate(0))
        for step in range(self.start_step, config.train_iters):
            metrics = self.step(step)
            self._check_finite(step + 1, metrics)
            self.writer.scalars(step + 1, metrics, "train")
            if (step + 1) % config.log_interval == 0 or step == 0:
                self._log(progress_line(step + 1, config.train_iters, metrics))
            done = step + 1 == config.train_iters
            if config.save_interval and (step + 1) % config.save_interval == 0 and not done:
                self.save(step + 1)
            if config.eval_interval and (step + 1) % config.eval_interval == 0 and not done:
                evaluations.append(self.evaluate(step + 1))
        if self.start_step < config.train_iters or self.config.train.save:
            self.save(config.train_iters)
        evaluations.append(self.evaluate(config.train_iters))
        self.writer.close()
        return {"first": evaluations[0], "final": evaluations[-1]}

    @staticmethod
    def _log(message: str) -> None:
        if distributed.is_main_rank():
            print(message, flush=True)


_STAT_NAMES = (["match_reward", "length_reward", "reasoning_length", "valid_format",
                "over_twice_budget", "truncated", "response_length", "kept_groups"]
               + [f"match_reward/{t}" for t in TIER_NAMES]
               + [f"tier_share/{t}" for t in TIER_NAMES])


def run_training(config: RMTConfig) -> dict:
    """Initialise the process groups, train, and tear down; returns first/final eval reports."""
    distributed.initialize(config.model, config.train.seed)
    try:
        with megatron_cpu.device_mode():
            return Run(config).train()
    finally:
        distributed.shutdown()

