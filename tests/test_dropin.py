"""The drop-in forward_step under megatron-core's schedule, as a Megatron-LM loop drives it."""

import subprocess
import sys
from pathlib import Path

import torch
from helpers import VOCAB, layout
from ranks import run_ranks

from rmt_megatron.config.sections import RMTConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _schedule_like_megatron_lm(per_token_loss: bool, configured: bool):
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from rmt_megatron import dropin
    from rmt_megatron.mcore import cpu, parallel
    from rmt_megatron.mcore.optimizer import build_training
    from rmt_megatron.method.packing import collate, ntp_sequence, rl_sequence, token_weights

    parallel.initialize(layout(), seed=3)
    sequences = [
        rl_sequence([5, 6, 7], [8, 9], 1.0),
        rl_sequence([5, 6, 7], [10], -1.0),
        ntp_sequence([11, 12, 13, 14, 15], [3]),
    ]
    weights = token_weights(
        sum(s.rl_tokens for s in sequences), sum(s.ntp_tokens for s in sequences), 1.0, 0.1
    )
    micro = collate(sequences, 2, 4, 0, *weights)
    if configured:
        dropin.configure(RMTConfig())
    try:
        with cpu.device_mode():
            state = build_training(layout(), TrainConfig(lr=1e-3), VOCAB)
            state.model.config.calculate_per_token_loss = per_token_loss
            state.model.zero_grad_buffer()
            losses = get_forward_backward_func()(
                forward_step_func=dropin.forward_step,
                data_iterator=iter(micro),
                model=[state.model],
                num_microbatches=len(micro),
                seq_length=4,
                micro_batch_size=2,
                decoder_seq_length=None,
                forward_only=False,
            )
            grad_norm = state.optimizer.step()[1]
        return [{k: v.tolist() for k, v in x.items()} for x in losses], grad_norm
    except (RuntimeError, ValueError) as error:
        return str(error)
    finally:
        parallel.shutdown()


def test_forward_step_runs_through_get_forward_backward_func():
    losses, grad_norm = run_ranks(1, _schedule_like_megatron_lm, True, True)[0]
    assert [sorted(x) for x in losses] == [["ntp loss", "rl entropy", "rl loss"]] * 2
    assert sum(x["rl loss"][1] for x in losses) == 3  # three response tokens
    assert sum(x["ntp loss"][1] for x in losses) == 3  # four labels, one RL position
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
