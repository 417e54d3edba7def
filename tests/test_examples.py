"""The examples run and print what their docstrings promise."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_rmt_step_walkthrough_runs():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "rmt_step_walkthrough.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    assert "budget B_t = 420 tokens" in out  # 800 · 0.2^0.4 = 420.2
    assert "ℓ= 420 match=1 r_len=1.00 r=1.00" in out
    assert "ℓ=1260 match=1 r_len=0.00 r=0.80" in out
    assert "dual loss L = " in out


def test_warm_start_command_runs_and_records_what_it_did(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rmt_megatron.builtin.warmstart",
            "--output",
            str(tmp_path),
            "--train-iters",
            "2",
            "--sequences-per-step",
            "8",
            "--micro-batch-size",
            "4",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "base.json").read_text())
    assert summary["train_iters"] == 2 and summary["worked_examples"] > 1000
    assert (tmp_path / "tokenizer.model").is_file()
    assert (tmp_path / "checkpoint" / "latest_checkpointed_iteration.txt").read_text() == "2"


def test_the_slurm_script_gives_flags_pretrain_rmt_accepts():
    """examples/slurm_rmt.sbatch cannot run here (no Slurm, no GPUs); its pretrain_rmt.py flags
    must at least parse and make a valid config of the layout the docs describe."""
    import shlex

    from rmt_megatron.config.flags import config_from_args
    from rmt_megatron.run import pretrain

    script = (EXAMPLES / "slurm_rmt.sbatch").read_text().replace("\\\n", " ")
    launch = next(line for line in script.splitlines() if "pretrain_rmt.py" in line)
    words = shlex.split(launch.split("pretrain_rmt.py", 1)[1])
    words = ["/placeholder" if word.startswith("$") else word for word in words]
    config = config_from_args(pretrain.build_parser().parse_args(words), "tiny_cpu")
    assert config.model.tensor_model_parallel_size == 8 and config.model.num_layers == 40
    assert config.train.save == config.train.load
    assert "--nnodes" in launch and "--rdzv-backend c10d" in launch
