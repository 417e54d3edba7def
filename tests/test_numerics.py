"""No silent wrong numbers: precision settings, the schedule on resume, and the guard that keeps
non-finite values out of the weights and the checkpoints. Each run starts from the shipped base
model on the golden run's data."""

import math

import pytest
import torch
from golden_run import data_args
from ranks import run_ranks

from rmt_megatron.errors import ConfigError
from rmt_megatron.run import pretrain

STEPS = (
    "--train-iters 3 --lr-warmup-iters 0 --rmt-prompts-per-step 4 --rmt-group-size 4 "
    "--eval-positions 4 --micro-batch-size 4 --rmt-max-response-length 40"
).split()


def _train(argv):
    from rmt_megatron.config.flags import config_from_args
    from rmt_megatron.run.trainer import run_training

    config = config_from_args(pretrain.build_parser().parse_args(argv), "tiny_cpu")
    return run_training(config)["metrics"]


def _main(argv):
    return pretrain.main(argv)


def _ntp(metrics):
    return [m["loss_ntp"] for m in metrics]


def test_bf16_starts_from_the_loaded_weights_and_saves(corpus_data, tmp_path):
    """The mixed-precision optimizer's fp32 masters are re-made from the loaded base model, so
    bf16 training continues from it (a run that copied stale masters back would sit at ln 512 =
    6.24 after step 1); the first step's NTP loss is fp32's within bf16's rounding (2^-8 of the
    logits' scale, about 1e-2 here)."""
    fp32 = run_ranks(1, _train, [*data_args(corpus_data), *STEPS, "--save", str(tmp_path / "a")])
    bf16 = run_ranks(
        1, _train, [*data_args(corpus_data), *STEPS, "--bf16", "--save", str(tmp_path / "b")]
    )
    assert _ntp(bf16[0])[0] == pytest.approx(_ntp(fp32[0])[0], abs=1e-2)
    assert max(_ntp(bf16[0])) < 1.0
    assert (tmp_path / "b" / "latest_checkpointed_iteration.txt").read_text() == "3"


def test_fp16_trains_with_loss_scaling(corpus_data, tmp_path):
    metrics = run_ranks(
        1,
        _train,
        [
            *data_args(corpus_data),
            *STEPS,
            "--fp16",
            "--initial-loss-scale",
            "1024",
            "--save",
            str(tmp_path),
        ],
    )[0]
    assert all(m["finite"] == 1.0 for m in metrics)
    assert sum(m["skipped"] == 0.0 for m in metrics) >= 2
    assert all(math.isfinite(x) and x < 1.0 for x in _ntp(metrics))


def test_contradictory_precision_flags_are_refused():
    parser = pretrain.build_parser()
    from rmt_megatron.config.flags import config_from_args

    with pytest.raises(ConfigError, match="--bf16 and --fp16 contradict"):
        config_from_args(parser.parse_args(["--bf16", "--fp16"]), "tiny_cpu")


def test_a_changed_schedule_on_resume_is_refused_overridden_or_taken_from_the_checkpoint(
    corpus_data, tmp_path, capfd
):
    save = str(tmp_path / "save")
    run_ranks(1, _train, [*data_args(corpus_data), *STEPS, "--save", save, "--exit-interval", "1"])
    resume = [*data_args(corpus_data), *STEPS, "--save", save, "--load", save]
    assert run_ranks(1, _main, [*resume, "--lr", "1e-3"])[0] == 1
    err = capfd.readouterr().err
    assert "lr: checkpoint 5e-05, flags 0.001" in err and "--override-opt_param-scheduler" in err
    kept = run_ranks(
        1,
        _train,
        [*resume, "--lr", "1e-3", "--use-checkpoint-opt_param-scheduler", "--exit-interval", "2"],
    )[0]
    assert kept[-1]["lr"] == pytest.approx(5e-5)
    overridden = run_ranks(1, _train, [*resume, "--lr", "1e-3", "--override-opt_param-scheduler"])[
        0
    ]
    assert overridden[-1]["lr"] == pytest.approx(1e-3)


def _checkpoint_weights_are_finite(save, step):
    from rmt_megatron.config.presets import get_preset
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.checkpoint import load_checkpoint
    from rmt_megatron.mcore.gpt_model import build_gpt_model

    config = get_preset("tiny_cpu").model
    with parallel.process_group(config, 0):
        model = build_gpt_model(config, 512)
        load_checkpoint(save, model, step=step, restore_rng=False)
        return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.parametrize("clip", ["1.0", "0"])
def test_a_diverging_run_stops_before_non_finite_values_reach_a_checkpoint(
    corpus_data, tmp_path, capfd, clip
):
    """lr 1e30: step 1 is finite but leaves absurd weights (saved as iter_0000001); step 2's
    gradients are not finite, so it is not applied and the run stops. iter_0000001 is then no
    longer the latest checkpoint, and resuming with a sane lr trains."""
    save = str(tmp_path / "save")
    argv = [
        *data_args(corpus_data),
        *STEPS,
        "--lr",
        "1e30",
        "--clip-grad",
        clip,
        "--save",
        save,
        "--save-interval",
        "1",
    ]
    assert run_ranks(1, _main, argv)[0] == 1
    err = capfd.readouterr().err
    assert "not finite at step 2" in err and "iter_0000001 holds the weights" in err
    assert "No checkpoint of this run trained finitely" in err
    assert not (tmp_path / "save" / "latest_checkpointed_iteration.txt").exists()
    assert run_ranks(1, _checkpoint_weights_are_finite, save, 1)[0]
    resumed = run_ranks(
        1, _train, [*data_args(corpus_data), *STEPS, "--save", save, "--load", save]
    )[0]
    assert all(m["finite"] == 1.0 for m in resumed)


def _poison_and_load(save):
    from rmt_megatron.config.presets import get_preset
    from rmt_megatron.errors import CheckpointError
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.checkpoint import load_checkpoint, save_checkpoint
    from rmt_megatron.mcore.gpt_model import build_gpt_model

    config = get_preset("tiny_cpu").model
    with parallel.process_group(config, 0):
        model = build_gpt_model(config, 512)
        with torch.no_grad():
            next(model.parameters()).view(-1)[:3] = float("nan")
        try:
            save_checkpoint(save, 1, model)
        except CheckpointError as error:
            refused_save = str(error)
        # a file written by someone else: bypass our guard to plant the poisoned weights
        from rmt_megatron.mcore import checkpoint

        original = checkpoint.all_finite
        checkpoint.all_finite = lambda tensors: True
        try:
            save_checkpoint(save, 1, model, state={})
        finally:
            checkpoint.all_finite = original
        try:
            load_checkpoint(save, build_gpt_model(config, 512), restore_rng=False)
        except CheckpointError as error:
            return refused_save, str(error)


def test_non_finite_weights_are_never_saved_and_refused_on_load(tmp_path):
    refused_save, refused_load = run_ranks(1, _poison_and_load, str(tmp_path))[0]
    assert "non-finite weights" in refused_save
    assert "iter_0000001 holds non-finite weights" in refused_load


def test_a_dataset_built_with_another_tokenizer_is_refused(corpus_data, tmp_path, capfd):
    from rmt_megatron.builtin.corpus import arithmetic_documents, document_text
    from rmt_megatron.model_io import preprocess

    text = "\n\n".join(document_text(d) for d in arithmetic_documents(60, seed=3))
    (tmp_path / "corpus.txt").write_text(text)
    for name in ("train", "valid"):
        assert (
            preprocess.main(
                [
                    "--input",
                    str(tmp_path / "corpus.txt"),
                    "--output-prefix",
                    str(tmp_path / name),
                    "--train-tokenizer",
                    "400",
                ]
            )
            == 0
        )
    # ids of a 400-token vocabulary all fit the shipped 512-token one: only the record tells
    argv = [*data_args(tmp_path), *STEPS]
    assert run_ranks(1, _main, argv)[0] == 1
    assert "was built with another tokenizer" in capfd.readouterr().err


def test_the_difficulty_cache_is_keyed_by_the_data_itself(corpus_data, tmp_path):
    import shutil

    from rmt_megatron.run.difficulty import difficulty_cache_path, file_signature

    copy = tmp_path / "train"
    for suffix in (".bin", ".idx"):
        shutil.copy(f"{corpus_data / 'train'}{suffix}", f"{copy}{suffix}")
    key = {"data": file_signature(copy), "entropy_top_k": 16}
    before = difficulty_cache_path(copy, "policy", key)
    assert before == difficulty_cache_path(
        copy, "policy", {"entropy_top_k": 16, "data": file_signature(copy)}
    )
    (tmp_path / "train.bin").write_bytes((tmp_path / "train.bin").read_bytes()[::-1])
    assert difficulty_cache_path(copy, "policy", {**key, "data": file_signature(copy)}) != before
    assert difficulty_cache_path(copy, "policy", {**key, "entropy_top_k": 0}) != before
