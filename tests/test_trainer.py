"""The training run end to end on a small slice of the corpus: resume, TP/PP, bad input.

Runs use the user-data path (`--train-data-path` etc.) with the shipped tokenizer and base
checkpoint, on 48 training documents, so each takes seconds. Ranks are forked (tests/ranks.py)
with torchrun's environment, as `torchrun pretrain_rmt.py ...` would start them.
"""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from golden_run import data_args
from helpers import arithmetic_datasets, child_processes, tiny_hugging_face_model
from ranks import run_ranks

from rmt_megatron.config.flags import config_from_args
from rmt_megatron.errors import CheckpointError
from rmt_megatron.run import pretrain
from rmt_megatron.run.metrics_log import read_metrics
from rmt_megatron.run.resume import check_save_directory

ROOT = Path(__file__).resolve().parents[1]

COMPARED = (
    "loss_rl",
    "loss_ntp",
    "grad_norm",
    "match_reward",
    "reasoning_length",
    "length_reward",
    "budget",
)


def _argv(data, *extra):
    return [
        *data_args(data),
        *(
            "--train-iters 4 --lr-warmup-iters 0 --rmt-prompts-per-step 2 --rmt-group-size "
            "2 --eval-positions 6 --micro-batch-size 4 --rmt-max-response-length 40 "
            "--log-interval 1 --save-interval 100 --eval-interval 100"
        ).split(),
        *extra,
    ]


def _train(argv):
    from rmt_megatron.config.flags import config_from_args
    from rmt_megatron.run.trainer import run_training

    config = config_from_args(pretrain.build_parser().parse_args(argv), "tiny_cpu")
    return run_training(config)


def _compared(metrics):
    return [{key: m[key] for key in COMPARED} for m in metrics]


@pytest.mark.parametrize("pool", [[], ["--rmt-pool-documents", "1"]], ids=["corpus", "pools"])
def test_resumed_run_matches_an_uninterrupted_one_bitwise(corpus_data, tmp_path, pool):
    """Also with candidate pools of one of the 48 documents, refilled before step 3."""
    straight = run_ranks(1, _train, _argv(corpus_data, "--save", str(tmp_path / "a"), *pool))[0]
    first = run_ranks(
        1, _train, _argv(corpus_data, "--save", str(tmp_path / "b"), "--exit-interval", "2", *pool)
    )[0]
    sampler = json.loads((tmp_path / "b" / "iter_0000002" / "rmt_state.json").read_text())
    assert sampler["sampler"]["refills"] >= (1 if pool else 0)
    metrics_file = tmp_path / "b" / "metrics.jsonl"
    with metrics_file.open("a") as stream:  # steps logged after the checkpoint, then a crash
        stream.write(json.dumps({"step": 3, "loss_tokens": 1, "rollout_tokens": 1}) + "\n")
        stream.write('{"step": 4, "loss_tok')  # torn as it was written
    resumed = run_ranks(
        1,
        _train,
        _argv(corpus_data, "--save", str(tmp_path / "b"), "--load", str(tmp_path / "b"), *pool),
    )[0]
    assert first["exited_at"] == 2 and len(first["metrics"]) == 2
    assert _compared(first["metrics"] + resumed["metrics"]) == _compared(straight["metrics"])
    assert [row["step"] for row in read_metrics(tmp_path / "b")] == [1, 2, 3, 4]
    assert _compared(read_metrics(tmp_path / "b")) == _compared(read_metrics(tmp_path / "a"))
    assert resumed["evaluations"][-1] == straight["evaluations"][-1]
    assert (tmp_path / "b" / "latest_checkpointed_iteration.txt").read_text() == "4"
    assert (tmp_path / "b" / "eval" / "latest.json").is_file()


def test_a_new_run_refuses_a_save_directory_that_holds_another_run(tmp_path):
    save = tmp_path / "old_run"
    save.mkdir()
    (save / "latest_checkpointed_iteration.txt").write_text("3")
    argv = ["--save", str(save)]
    config = config_from_args(pretrain.build_parser().parse_args(argv), "tiny_cpu")
    with pytest.raises(CheckpointError, match=r"already holds a run \(saved at step 3\).*--load"):
        check_save_directory(config)
    for allowed in (["--load", str(save)], ["--load", str(save), "--skip-train"]):
        parsed = pretrain.build_parser().parse_args([*argv, *allowed])
        check_save_directory(config_from_args(parsed, "tiny_cpu"))


@pytest.mark.parametrize(
    "layout", [["--tensor-model-parallel-size", "2"], ["--pipeline-model-parallel-size", "2"]]
)
def test_first_steps_match_the_single_process_run_under_tp_and_pp(corpus_data, tmp_path, layout):
    argv = _argv(corpus_data, "--train-iters", "2")
    reference = run_ranks(1, _train, [*argv, "--save", str(tmp_path / "one")])[0]["metrics"]
    parallel = run_ranks(2, _train, [*argv, *layout, "--save", str(tmp_path / "two")])
    for rank_result in parallel:
        for got, want in zip(rank_result["metrics"], reference, strict=True):
            assert got["match_reward"] == want["match_reward"]  # the same rollouts
            for key in ("loss_rl", "loss_ntp", "grad_norm"):
                assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key


def _expect_failure(argv):
    return pretrain.main(argv)


def test_bad_inputs_stop_with_a_clear_message(corpus_data, tmp_path, capfd):
    missing = _argv(corpus_data, "--train-data-path", str(tmp_path / "nope"))
    assert run_ranks(1, _expect_failure, missing)[0] == 1
    assert "nope.idx does not exist" in capfd.readouterr().err
    mismatch = _argv(corpus_data, "--vocab-size", "300")
    assert run_ranks(1, _expect_failure, mismatch)[0] == 1
    assert "tokenizer" in capfd.readouterr().err
    (tmp_path / "corrupt.idx").write_bytes(b"MMIDIDX\x00\x00garbage")
    (tmp_path / "corrupt.bin").write_bytes(b"")
    corrupt = _argv(corpus_data, "--train-data-path", str(tmp_path / "corrupt"))
    assert run_ranks(1, _expect_failure, corrupt)[0] == 1
    assert "corrupt" in capfd.readouterr().err


def _imported_run_argv(directory, tokenizer_model, *start):
    """Write small train/valid datasets with `tokenizer_model` into `directory`; the argv of a
    two-step run on them that starts with `start` (e.g. --hf-checkpoint DIR)."""
    arithmetic_datasets(directory, tokenizer_model, {"train": 20, "valid": 21})
    return [
        *start,
        "--train-data-path",
        str(directory / "train"),
        "--valid-data-path",
        str(directory / "valid"),
        *(
            "--train-iters 2 --lr-warmup-iters 0 --rmt-prompts-per-step 2 --rmt-group-size "
            "2 --eval-positions 4 --micro-batch-size 4 --rmt-max-response-length 40 "
            "--rmt-max-prompt-length 400 --rmt-min-context 4 --rmt-tier-thresholds 0.0 0.1 "
            "0.2"
        ).split(),
    ]


def test_a_run_can_start_from_a_hugging_face_checkpoint(tmp_path):
    tiny_hugging_face_model(tmp_path)
    argv = _imported_run_argv(tmp_path, tmp_path, "--hf-checkpoint", str(tmp_path))
    result = run_ranks(1, _train, argv)[0]
    assert len(result["metrics"]) == 2
    assert all(math.isfinite(m["loss_ntp"]) for m in result["metrics"])


def test_resume_may_change_the_layout_but_not_the_model(corpus_data, tmp_path, capfd):
    save = str(tmp_path / "s")
    run_ranks(1, _train, _argv(corpus_data, "--save", save, "--exit-interval", "2"))
    resumed = run_ranks(
        2,
        _train,
        _argv(corpus_data, "--save", save, "--load", save, "--tensor-model-parallel-size", "2"),
    )
    assert all(len(r["metrics"]) == 2 for r in resumed)  # steps 3 and 4 under TP=2
    other = _argv(corpus_data, "--save", save, "--load", save, "--num-layers", "2")
    assert run_ranks(1, _expect_failure, other)[0] == 1
    assert "num_layers differ" in capfd.readouterr().err


def test_a_run_can_start_from_a_gguf_file_and_score_with_a_proxy(tmp_path, capfd):
    import shutil

    import torch
    import transformers
    from gguf_files import write_gguf
    from helpers import byte_level_tokenizer, chat_vocabulary

    vocab_dir = tmp_path / "vocab"
    vocab_dir.mkdir()
    _, tokenizer = chat_vocabulary(vocab_dir)
    shape = dict(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    write_gguf(
        tmp_path / "policy.gguf",
        transformers.LlamaForCausalLM(transformers.LlamaConfig(num_hidden_layers=2, **shape)),
        tokenizer_dir=vocab_dir,
    )
    proxy = tmp_path / "proxy"
    transformers.LlamaForCausalLM(
        transformers.LlamaConfig(num_hidden_layers=1, **shape)
    ).save_pretrained(proxy)
    shutil.copy(vocab_dir / "tokenizer.json", proxy / "tokenizer.json")
    policy = tmp_path / "policy.gguf"
    argv = _imported_run_argv(
        tmp_path, policy, "--gguf-checkpoint", str(policy), "--rmt-proxy-checkpoint", str(proxy)
    )
    result = run_ranks(1, _train, argv)[0]
    assert all(math.isfinite(m["loss_ntp"]) for m in result["metrics"])
    (scores,) = tmp_path.glob("train_entropy_proxy_*.npy")  # named after the proxy
    assert str(proxy.resolve()) in scores.with_suffix(".json").read_text()

    byte_level_tokenizer(proxy)  # the vocabulary without the chat tokens
    scores.unlink()
    assert run_ranks(1, _expect_failure, [*argv, "--save", str(tmp_path / "second")])[0] == 1
    assert "another vocabulary than the run's tokenizer" in capfd.readouterr().err


def test_skip_train_evaluates_a_checkpoint_without_scoring_the_training_set(corpus_data, tmp_path):
    import json
    import shutil

    save = str(tmp_path / "s")
    run_ranks(1, _train, _argv(corpus_data, "--save", save, "--train-iters", "2"))
    fresh = tmp_path / "fresh"  # the datasets without any cached difficulty scores
    shutil.copytree(corpus_data, fresh, ignore=shutil.ignore_patterns("*entropy*"))
    result = run_ranks(1, _train, _argv(fresh, "--load", save, "--save", save, "--skip-train"))[0]
    assert result["metrics"] == [] and len(result["evaluations"]) == 1
    assert json.loads((tmp_path / "s" / "eval" / "latest.json").read_text())["step"] == 2
    assert list(fresh.glob("valid_entropy*.npy")) and not list(fresh.glob("train_entropy*"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; prctl is Linux's")
def test_a_killed_run_leaves_no_process_behind(corpus_data, tmp_path):
    """SIGKILL after the first checkpoint: the checkpoint writer's helper processes (a spawned
    multiprocessing manager and its resource tracker) end with the run."""
    save = tmp_path / "save"
    argv = _argv(corpus_data, "--train-iters", "200", "--save", str(save), "--save-interval", "1")
    run = subprocess.Popen(
        [sys.executable, str(ROOT / "pretrain_rmt.py"), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 300
    while not (save / "latest_checkpointed_iteration.txt").is_file():
        assert run.poll() is None and time.time() < deadline, "no checkpoint was written"
        time.sleep(0.5)
    helpers = child_processes(run.pid)
    assert helpers, "expected the checkpoint writer's helper processes"
    run.kill()
    run.wait()
    deadline = time.time() + 15
    while any(Path(f"/proc/{pid}").exists() for pid in helpers) and time.time() < deadline:
        time.sleep(0.2)
    left = [pid for pid in helpers if Path(f"/proc/{pid}").exists()]
    assert not left, f"processes outlived the killed run: {left}"


def test_activation_recomputation_trains_the_same_steps(corpus_data, tmp_path):
    """Megatron-LM's recomputation flags (full, uniform groups of one layer; selective) give the
    same losses, gradient norms and rollouts as keeping every activation."""
    argv = _argv(corpus_data, "--train-iters", "2")
    kept = run_ranks(1, _train, [*argv, "--save", str(tmp_path / "kept")])[0]["metrics"]
    for name, flags in (
        (
            "full",
            "--recompute-granularity full --recompute-method uniform --recompute-num-layers 1",
        ),
        ("selective", "--recompute-granularity selective"),
    ):
        recomputed = run_ranks(1, _train, [*argv, "--save", str(tmp_path / name), *flags.split()])
        assert _compared(recomputed[0]["metrics"]) == _compared(kept), name
