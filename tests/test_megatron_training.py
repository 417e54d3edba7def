"""RMT's flags inside Megatron-LM's own argument parser (`megatron.training`, which megatron-core
ships from 0.17 on: the Python 3.12 stack). On the 0.16 stack the module does not exist and these
tests are skipped with that reason; CI runs them on the 3.12 stack (README)."""

import argparse

import pytest

arguments = pytest.importorskip(
    "megatron.training.arguments", reason="megatron.training ships with megatron-core >= 0.17"
)

from rmt_megatron.config.flags import RMT_FLAGS, add_rmt_args, config_from_args  # noqa: E402


def _megatron_lm_parser() -> argparse.ArgumentParser:
    """Megatron-LM's parser with `add_rmt_args` as its extra_args_provider, as `parse_args`
    builds it."""
    parser = arguments.add_megatron_arguments(argparse.ArgumentParser(allow_abbrev=False))
    return add_rmt_args(parser)  # a clash of option strings raises argparse.ArgumentError here


def test_every_rmt_flag_is_in_megatron_lm_s_help_and_none_clashes():
    parser = _megatron_lm_parser()
    ours = parser._action_groups[-1]
    assert ours.title == "RMT"
    formatter = parser._get_formatter()
    # our group alone: megatron-core 0.19.2's own --help fails on a bare % in the help of
    # --moe-paged-stash-buffer-size-factor-cuda (docs/megatron-core-on-cpu.md)
    formatter.add_arguments(ours._group_actions)
    text = formatter.format_help()
    missing = [f.flag for f in RMT_FLAGS if f.flag not in text]
    assert missing == [] and "--rmt-preset" in text and "--rmt-method" in text
    megatron_dests = {a.dest for a in parser._actions if a not in ours._group_actions}
    assert [a.dest for a in ours._group_actions if a.dest in megatron_dests] == []


def test_a_megatron_lm_namespace_gives_the_run_s_config():
    argv = ["--rmt-preset", "tiny_cpu", "--rmt-budget-min", "7", "--rmt-no-curriculum"]
    argv += ["--lr", "0.01", "--tensor-model-parallel-size", "2", "--seed", "5"]
    config = config_from_args(_megatron_lm_parser().parse_args(argv))
    assert config.budget.minimum == 7 and not config.curriculum.enabled
    assert config.train.lr == 0.01 and config.train.seed == 5
    assert config.model.tensor_model_parallel_size == 2
    # Megatron-LM's --num-query-groups (default 1) counts only with --group-query-attention
    assert config.model.num_query_groups is None
    gqa = ["--group-query-attention", "--num-query-groups", "2"]
    assert (
        config_from_args(_megatron_lm_parser().parse_args([*argv, *gqa])).model.num_query_groups
        == 2
    )


# ---- RMT inside megatron.training.pretrain() -------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from golden_run import GOLDEN, STEP_KEYS, golden_argv  # noqa: E402

from rmt_megatron.config.flags import megatron_lm_argv  # noqa: E402
from rmt_megatron.run import pretrain as pretrain_rmt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "megatron_lm_pretrain.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")
GOLDEN_RMT_FLAGS = (
    "--rmt-preset tiny_cpu --rmt-prompts-per-step 4 --rmt-group-size 4 "
    "--rmt-max-response-length 112"
).split()
"""The golden run's RMT settings (`golden_run.golden_argv`) as --rmt-* flags."""


def _golden_megatron_lm_argv(data: Path, tensor_parallel: int) -> list[str]:
    """Megatron-LM flags for the golden run's model, data and optimiser at `tensor_parallel`
    (one data-parallel replica): 4 prompts × 4 rollouts + 4 NTP windows = 5 micro-batches of 4."""
    argv = [*golden_argv(data), "--tensor-model-parallel-size", str(tensor_parallel)]
    config = config_from_args(pretrain_rmt.build_parser().parse_args(argv), "tiny_cpu")
    return megatron_lm_argv(config, global_batch_size=20, eval_interval=100, cpu=True)


def _run_example(argv: list[str], ranks: int, log: Path) -> subprocess.CompletedProcess:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [str(TORCHRUN), "--nproc-per-node", str(ranks), "--master-port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_DEVICE_MAX_CONNECTIONS": "1"}
    with log.open("w") as out:
        return subprocess.run(
            [*launcher, str(EXAMPLE), *argv], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, timeout=600, check=False,
        )  # fmt: skip


def _scalars(tensorboard_dir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for events in sorted(tensorboard_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values = [e.value for e in accumulator.Scalars(tag)]
    return values


@pytest.mark.parametrize("tensor_parallel", [1, 2])
def test_megatron_lm_pretrain_trains_rmt_with_the_golden_numbers(tmp_path, tensor_parallel):
    """examples/megatron_lm_pretrain.py, the real pretrain() with RMT's pieces, on the golden
    run's data and settings: TP=1 gives pretrain_rmt.py's golden losses, gradient norms and
    rollout statistics (B_t, rewards per tier, lengths) in Megatron-LM's TensorBoard log; TP=2
    the same up to the order of the tensor-parallel sums."""
    from golden_run import write_data

    data = write_data(tmp_path)
    argv = _golden_megatron_lm_argv(data, tensor_parallel) + GOLDEN_RMT_FLAGS
    argv += ["--tensorboard-dir", str(tmp_path / "tb"), "--save", str(tmp_path / "ckpt")]
    argv += ["--save-interval", "3", "--rerun-mode", "disabled"]
    job = _run_example(argv, tensor_parallel, tmp_path / "job.log")
    assert job.returncode == 0, (tmp_path / "job.log").read_text()[-4000:]
    golden = json.loads(GOLDEN.read_text())["steps"]
    tolerance = 1e-6 if tensor_parallel == 1 else 1e-4  # TensorBoard keeps float32
    for key in STEP_KEYS:  # the losses, the gradient norm and the rollouts' statistics
        got = _scalars(tmp_path / "tb", "grad-norm" if key == "grad_norm" else key)
        want = [s[key] for s in golden]
        assert got == pytest.approx(want, rel=tolerance, abs=tolerance, nan_ok=True), key
    assert (tmp_path / "ckpt" / "iter_0000003").is_dir()


@pytest.mark.parametrize(
    ("change", "ranks", "message"),
    [
        (["--pipeline-model-parallel-size", "2"], 2, "does not support pipeline parallelism"),
        (["--global-batch-size", "8"], 1, "use --global-batch-size 20"),
        (["--drop", "--calculate-per-token-loss"], 1, "add --calculate-per-token-loss"),
        (["--rmt-kl-beta", "0.1"], 1, "loss.kl_beta=0.1 is not supported yet"),
    ],
)
def test_what_the_loop_cannot_honour_stops_the_run_before_step_1(tmp_path, change, ranks, message):
    from golden_run import write_data

    argv = _golden_megatron_lm_argv(write_data(tmp_path), 1) + GOLDEN_RMT_FLAGS
    if change[0] == "--drop":
        argv.remove(change[1])
    else:
        argv += change
    job = _run_example(argv, ranks, tmp_path / "job.log")
    log = (tmp_path / "job.log").read_text()
    assert job.returncode != 0 and "rmt_megatron: error: " in log, log[-4000:]
    assert message in log and "iteration        1/" not in log, log[-4000:]


def test_checkpoints_cross_between_pretrain_rmt_and_megatron_lm_plain_pretraining(tmp_path):
    """pretrain_rmt.py saves step 1; Megatron-LM's plain GPT pretraining
    (tests/megatron_lm_gpt.py, mock data) resumes it with --load and saves step 3;
    pretrain_rmt.py starts from that with --pretrained-checkpoint."""
    from golden_run import write_data

    data = write_data(tmp_path)
    rmt_argv = [*golden_argv(data), "--train-iters", "1", "--eval-positions", "2"]
    rmt_argv[rmt_argv.index("--save") + 1] = str(tmp_path / "rmt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(
        [sys.executable, str(ROOT / "pretrain_rmt.py"), *rmt_argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    plain = _golden_megatron_lm_argv(data, 1)
    for flag in (
        "--dataloader-type",
        "--train-data-path",
        "--valid-data-path",
        "--pretrained-checkpoint",
    ):
        plain[plain.index(flag) : plain.index(flag) + 2] = []
    plain[plain.index("--train-iters") + 1] = "3"
    plain[plain.index("--global-batch-size") + 1] = "8"
    plain += ["--mock-data", "--load", str(tmp_path / "rmt"), "--save", str(tmp_path / "plain")]
    # RMT's run keeps its RNG states in its own files and counts its schedule in steps
    # (Megatron-LM: in samples): plain pretraining starts its own schedule and RNG
    plain += ["--no-load-rng", "--override-opt_param-scheduler", "--save-interval", "3"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    gpt = subprocess.run(
        [str(TORCHRUN), "--nproc-per-node", "1", "--master-port", port,
         str(ROOT / "tests" / "megatron_lm_gpt.py"), *plain],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    log = gpt.stdout + gpt.stderr
    assert gpt.returncode == 0 and "at iteration 1" in log, log[-3000:]
    assert "iteration        3/       3" in log and (tmp_path / "plain" / "iter_0000003").is_dir()
    rmt_argv[rmt_argv.index("--pretrained-checkpoint") + 1] = str(tmp_path / "plain")
    rmt_argv[rmt_argv.index("--save") + 1] = str(tmp_path / "rmt_again")
    again = subprocess.run(
        [sys.executable, str(ROOT / "pretrain_rmt.py"), *rmt_argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"starting from {tmp_path / 'plain'}" in again.stdout + again.stderr


def test_the_readme_shows_the_example_s_drop_in_lines():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Dropping RMT into a Megatron-LM loop") :]
    start = section.index("```python\n") + len("```python\n")
    block = section[start : section.index("\n```", start)]
    assert block.strip() and block in EXAMPLE.read_text()
