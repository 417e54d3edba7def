"""The drop-in forward_step under megatron-core's schedule, as a Megatron-LM loop drives it."""

import subprocess
import sys
from pathlib import Path

import torch
from helpers import VOCAB, layout, schedule_step, tiny_step_micro_batches
from ranks import run_ranks

from rmt_megatron.config.sections import RMTConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _schedule_like_megatron_lm(per_token_loss: bool, configured: bool):
    from rmt_megatron import dropin
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.optimizer import build_training

    try:
        with parallel.process_group(layout(), seed=3):
            micro = tiny_step_micro_batches()
            if configured:
                dropin.configure(RMTConfig())
            state = build_training(layout(), TrainConfig(lr=1e-3), VOCAB)
            state.model.config.calculate_per_token_loss = per_token_loss
            state.model.zero_grad_buffer()
            losses = schedule_step(state.model, dropin.forward_step, micro)
            grad_norm = state.optimizer.step()[1]
        return [{k: v.tolist() for k, v in x.items()} for x in losses], grad_norm
    except (RuntimeError, ValueError) as error:
        return str(error)


def test_forward_step_runs_through_get_forward_backward_func():
    losses, grad_norm = run_ranks(1, _schedule_like_megatron_lm, True, True)[0]
    assert [sorted(x) for x in losses] == [["loss_ntp", "loss_rl", "rl_token_entropy"]] * 2
    assert sum(x["loss_rl"][1] for x in losses) == 3  # three response tokens
    assert sum(x["loss_ntp"][1] for x in losses) == 3  # four labels, one RL position
    assert torch.isfinite(torch.tensor(grad_norm)) and grad_norm > 0


def test_forward_step_needs_per_token_loss_and_settings():
    message = run_ranks(1, _schedule_like_megatron_lm, False, True)[0]
    assert "calculate_per_token_loss" in message
    message = run_ranks(1, _schedule_like_megatron_lm, True, False)[0]
    assert "configure(config)" in message


def test_megatron_lm_style_example_runs():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "megatron_lm_dropin.py"),
            "--documents",
            "16",
            "--steps",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert len(lines) == 2 and "L_NTP" in lines[0]
