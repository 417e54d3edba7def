"""megatron-core on CPU: the workarounds, the model provider, checkpoints and TP/PP layouts.

Every test forks its ranks (tests/ranks.py), so torch.distributed never starts in pytest itself.
"""

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import VOCAB, layout, save_small_model, schedule_step, tiny_step_micro_batches
from ranks import run_ranks


def _tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))


def _loss_after_load(directory: str, tp: int, pp: int):
    """Per-token loss of the checkpointed weights under a TP/PP layout (last stage), via
    Megatron's schedule."""
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.checkpoint import load_checkpoint
    from rmt_megatron.mcore.gpt_model import build_gpt_model
    from rmt_megatron.mcore.parallel import share_from_last_stage
    from rmt_megatron.mcore.teacher_forcing import forward_statistics

    # another seed than the saved model's: the checkpoint must win
    with parallel.process_group(layout(tp, pp), seed=99):
        model = build_gpt_model(layout(tp, pp), VOCAB)
        state = load_checkpoint(directory, model).state
        tokens = _tokens()
        batch = {"tokens": tokens, "position_ids": torch.arange(16)[None].expand(2, 16)}

        def log_softmax_of_next(logits, batch):
            from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

            full = gather_from_tensor_model_parallel_region(logits)
            return torch.log_softmax(full.float(), -1)

        values = share_from_last_stage(forward_statistics(model, [batch], log_softmax_of_next))
        stage = parallel.pipeline_stage()
    return values[0], state, stage


def test_device_mode_runs_cuda_flavoured_calls_on_cpu():
    from rmt_megatron.mcore import cpu

    with cpu.device_mode():
        made = torch.zeros(2, device="cuda")
        moved = made.cuda()
        kind = torch.ones(1).type()
    assert made.device.type == "cpu" and moved is made
    assert kind == "torch.cuda.FloatTensor"
    assert torch.ones(1).type() == "torch.FloatTensor"  # only inside the mode


def _tracker_job():
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    from rmt_megatron.mcore import parallel

    parallel.initialize(layout(), seed=5)
    tracker = get_cuda_rng_tracker()
    before = torch.rand(1)
    with tracker.fork():
        inside = torch.rand(2)
    with tracker.fork():
        inside_again = torch.rand(2)
    after = torch.rand(1)
    parallel.shutdown()
    torch.manual_seed(5)
    expected = torch.rand(2)
    return before, after, inside, inside_again, expected


def test_cpu_rng_tracker_forks_its_own_stream_and_restores_the_global_one():
    before, after, inside, inside_again, expected = run_ranks(1, _tracker_job)[0]
    assert torch.equal(torch.cat([before, after]), expected)
    assert not torch.equal(inside, inside_again)  # the forked stream advances


@pytest.mark.parametrize(("tp", "pp"), [(2, 1), (1, 2)])
def test_checkpoint_reloads_under_another_layout_with_equal_outputs(tmp_path, tp, pp):
    run_ranks(1, save_small_model, str(tmp_path))
    reference, state, _ = run_ranks(1, _loss_after_load, str(tmp_path), 1, 1)[0]
    results = run_ranks(tp * pp, _loss_after_load, str(tmp_path), tp, pp)
    assert state == {"note": "reference weights"}
    for values, _, _ in results:
        torch.testing.assert_close(values, reference, atol=1e-5, rtol=1e-5)


def _resume_with_the_distributed_optimizer(directory: str):
    """Step, save, load into a fresh model and optimizer, step both again: the parameters of
    the two (megatron-core's distributed optimizer, as GPU runs use it)."""
    from rmt_megatron.config.sections import LossConfig, TrainConfig
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.checkpoint import load_checkpoint, save_checkpoint
    from rmt_megatron.mcore.forward_step import make_forward_step
    from rmt_megatron.mcore.optimizer import build_training

    micro = tiny_step_micro_batches()

    def step(state):
        state.model.zero_grad_buffer()
        schedule_step(state.model, make_forward_step(LossConfig()), micro)
        state.optimizer.step()

    with parallel.process_group(layout(), seed=0):
        trained = build_training(layout(), TrainConfig(lr=1e-3), VOCAB, distributed_optimizer=True)
        step(trained)
        save_checkpoint(directory, 1, trained.module, trained.optimizer, {})
        resumed = build_training(layout(), TrainConfig(lr=1e-3), VOCAB, distributed_optimizer=True)
        load_checkpoint(directory, resumed.module, resumed.optimizer)
        step(trained)
        step(resumed)
        return [
            [p.detach().clone() for p in state.module.parameters()] for state in (trained, resumed)
        ]


def test_the_distributed_optimizer_resumes_exactly(tmp_path):
    """megatron-core 0.16's distributed optimizer over torch's AdamW could not write its state
    (its default sharding type), could not describe a fresh state for loading, and shared one
    Adam step count among all parameters after a load (a wrong bias correction)."""
    trained, resumed = run_ranks(1, _resume_with_the_distributed_optimizer, str(tmp_path))[0]
    for a, b in zip(trained, resumed, strict=True):
        assert torch.equal(a, b)


def test_an_interrupted_save_leaves_the_previous_checkpoint_in_charge(tmp_path):
    from rmt_megatron.mcore.checkpoint import latest_step, step_dir

    run_ranks(1, save_small_model, str(tmp_path))
    step_dir(tmp_path, 9).with_name("iter_0000009.tmp").mkdir()  # a save that died midway
    assert latest_step(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "iter_0000003",
        "iter_0000009.tmp",
        "latest_checkpointed_iteration.txt",
    ]


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from rmt_megatron.errors import CheckpointError
    from rmt_megatron.mcore.checkpoint import load_checkpoint

    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(tmp_path, model=None)


class _Planted:
    """An object whose unpickling would leave a file behind."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _resume_with_planted_rng(directory: str, marker: str):
    from rmt_megatron.errors import CheckpointError
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.checkpoint import load_checkpoint
    from rmt_megatron.mcore.gpt_model import build_gpt_model

    torch.save({"python": _Planted(marker)}, f"{directory}/iter_0000003/rng/rank_00000.pt")
    try:
        with parallel.process_group(layout(), seed=0):
            load_checkpoint(directory, build_gpt_model(layout(), VOCAB))
    except CheckpointError as error:
        return str(error)


def test_a_checkpoint_s_rng_file_is_never_unpickled(tmp_path):
    save_dir, marker = tmp_path / "save", tmp_path / "unpickled"
    run_ranks(1, save_small_model, str(save_dir))
    message = run_ranks(1, _resume_with_planted_rng, str(save_dir), str(marker))[0]
    assert "rank_00000.pt is not an RNG-state file this version writes" in message
    assert not marker.exists()


def _stopped_rank(timeout_minutes: float):
    import time

    import torch.distributed as dist

    from rmt_megatron.mcore import parallel

    parallel.initialize(layout(), seed=0, timeout_minutes=timeout_minutes)
    if dist.get_rank() == 1:
        time.sleep(8)  # a rank that stopped answering (SIGSTOP, a lost node)
        return "slept"
    started = time.time()
    try:
        dist.all_reduce(torch.zeros(1))
    except RuntimeError as error:
        return f"{time.time() - started:.1f} s: {error}"
    return "no error"


def test_a_collective_waiting_for_a_stopped_rank_fails_within_the_timeout():
    """--distributed-timeout-minutes 0.05 (3 s): the waiting rank's all-reduce fails after about
    3 s instead of hanging."""
    waiting, _ = run_ranks(2, _stopped_rank, 0.05)
    assert "timed out" in waiting.lower()
    assert float(waiting.split(" s:")[0]) < 7


def _load_error(directory: str, hidden_size: int | None = None):
    from rmt_megatron.errors import CheckpointError
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.checkpoint import load_checkpoint
    from rmt_megatron.mcore.gpt_model import build_gpt_model

    model = layout()
    if hidden_size is not None:
        model = replace(model, hidden_size=hidden_size)
    try:
        with parallel.process_group(model, seed=0):
            load_checkpoint(directory, build_gpt_model(model, VOCAB), restore_rng=False)
    except CheckpointError as error:
        return str(error)


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_a_damaged_checkpoint_file_is_named(tmp_path, damage):
    save_dir = tmp_path / "save"
    run_ranks(1, save_small_model, str(save_dir))
    for shard in (save_dir / "iter_0000003").glob("*.distcp"):
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 3] if damage == "truncate" else os.urandom(len(data)))
    message = run_ranks(1, _load_error, str(save_dir))[0]
    assert "could not load" in message and "iter_0000003" in message


def test_a_checkpoint_of_another_model_shape_is_named_as_such(tmp_path):
    run_ranks(1, save_small_model, str(tmp_path / "save"))
    message = run_ranks(1, _load_error, str(tmp_path / "save"), layout().hidden_size * 2)[0]
    assert "holds a model of another shape" in message and "--hidden-size" in message


def test_a_damaged_state_file_is_named(tmp_path):
    from rmt_megatron.errors import CheckpointError
    from rmt_megatron.mcore.checkpoint import read_state

    (tmp_path / "iter_0000002").mkdir()
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("2")
    (tmp_path / "iter_0000002" / "rmt_state.json").write_text('{"step": 2, "config": {')
    with pytest.raises(CheckpointError, match=r"rmt_state\.json is damaged"):
        read_state(tmp_path)


def test_cpu_threads_are_a_share_of_the_cores_and_never_raised(monkeypatch):
    from rmt_megatron.mcore.cpu import set_cpu_threads

    original = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4096")  # more ranks than cores: one each
        assert set_cpu_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # a share above the current count...
        assert set_cpu_threads() == 1  # ...is not taken: raising can deadlock after a fork
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_cpu_threads() == 1
    finally:
        torch.set_num_threads(original)


def _metadata_copy(tmp_path):
    """A copy of the shipped base checkpoint's step directory."""
    import shutil

    from rmt_megatron.builtin.datasets import ASSETS, CHECKPOINT_DIR

    source = next((ASSETS / CHECKPOINT_DIR).glob("iter_*"))
    return Path(shutil.copytree(source, tmp_path / source.name))


def test_checkpoint_metadata_is_vetted_before_torch_unpickles_it(tmp_path):
    import pickle

    from rmt_megatron.errors import CheckpointError
    from rmt_megatron.mcore.checkpoint_metadata import check_metadata

    directory = _metadata_copy(tmp_path)
    check_metadata(directory)  # what torch writes passes
    marker = tmp_path / "unpickled"
    (directory / ".metadata").write_bytes(pickle.dumps(_Planted(str(marker))))
    with pytest.raises(CheckpointError, match=r"asks to build _?io\.open.*refusing"):
        check_metadata(directory)
    assert not marker.exists()
    (directory / ".metadata").write_bytes(pickle.dumps(os.system))
    with pytest.raises(CheckpointError, match="refusing"):
        check_metadata(directory)


def test_a_damaged_or_missing_metadata_file_is_named(tmp_path):
    from rmt_megatron.errors import CheckpointError
    from rmt_megatron.mcore.checkpoint_metadata import check_metadata

    directory = _metadata_copy(tmp_path)
    metadata = directory / ".metadata"
    metadata.write_bytes(metadata.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"\.metadata is damaged \(UnpicklingError"):
        check_metadata(directory)
    metadata.unlink()
    with pytest.raises(CheckpointError, match=r"\.metadata is missing"):
        check_metadata(directory)


def test_packed_rows_are_refused_by_the_layers_the_model_holds_not_by_what_is_installed():
    """Megatron-LM picks the layers with --transformer-impl: the forward step looks at the model
    it is given (a stand-in holding a layer from megatron-core's TE extension, or not)."""
    from rmt_megatron.config.sections import LossConfig
    from rmt_megatron.errors import ConfigError
    from rmt_megatron.mcore.cpu import built_with_transformer_engine
    from rmt_megatron.mcore.forward_step import make_forward_step

    te_layer = type("TELinear", (torch.nn.Module,), {})
    te_layer.__module__ = "megatron.core.extensions.transformer_engine"
    with_te = torch.nn.Sequential(torch.nn.Linear(2, 2), te_layer())
    local = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert built_with_transformer_engine(with_te) and not built_with_transformer_engine(local)
    step = make_forward_step(LossConfig(pack_sequences=True))
    with pytest.raises(ConfigError, match="--rmt-pack-sequences"):
        step(iter([]), with_te)
    with pytest.raises(StopIteration):  # past the check: the (empty) data is read
        make_forward_step(LossConfig(pack_sequences=True))(iter([]), local)
