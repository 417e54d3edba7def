"""Every user mistake at an entry point ends in one short message and a non-zero exit status,
never a traceback (`rmt_megatron.cli.command`)."""

import subprocess
import sys
from pathlib import Path

import pytest
from golden_run import data_args
from ranks import run_ranks

from rmt_megatron.mcore.dynamic_generation import unavailable_reason
from rmt_megatron.run import pretrain

ROOT = Path(__file__).resolve().parents[1]


def _run_args(data, *extra, start=None):
    return [
        *data_args(data, start),
        *(
            "--train-iters 1 --lr-warmup-iters 0 --rmt-prompts-per-step 2 --rmt-group-size "
            "2 --eval-positions 2 --rmt-max-response-length 40"
        ).split(),
        *extra,
    ]


def _main(argv):
    return pretrain.main(argv)


CASES = {
    "missing --hf-checkpoint directory": (
        lambda data, tmp: _run_args(data, start=("--hf-checkpoint", str(tmp / "no_such_model"))),
        "no_such_model/config.json does not exist",
    ),
    "missing --tokenizer-model": (
        lambda data, tmp: _run_args(data, "--tokenizer-model", str(tmp / "missing.model")),
        "missing.model does not exist",
    ),
    "missing --load directory": (
        lambda data, tmp: _run_args(data, "--load", str(tmp / "typo_checkpoints")),
        "typo_checkpoints holds no checkpoint",
    ),
    "missing data prefix": (
        lambda data, tmp: _run_args(data, "--train-data-path", str(tmp / "nope")),
        "nope.idx does not exist",
    ),
    "a loss the trainer cannot train yet": (
        lambda data, tmp: _run_args(data, "--rmt-kl-beta", "0.1"),
        "loss.kl_beta=0.1 is not supported yet",
    ),
    "bad config value": (
        lambda data, tmp: _run_args(data, "--rmt-budget-decay", "1.5"),
        "budget.decay=1.5 is invalid",
    ),
}
if unavailable_reason() is not None:  # a machine without CUDA or flash-attn
    CASES["a rollout engine this machine cannot run"] = (
        lambda data, tmp: _run_args(data, "--rmt-rollout-engine", "mcore-dynamic"),
        "--rmt-rollout-engine mcore-dynamic: it needs",
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_user_mistake_ends_in_a_message_and_exit_status_1(case, corpus_data, tmp_path, capfd):
    make_argv, expected = CASES[case]
    assert run_ranks(1, _main, make_argv(corpus_data, tmp_path))[0] == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert expected in err
    assert err.count("error: ") == 1


def test_the_command_line_prints_the_message_without_a_traceback(corpus_data):
    """The real process: an unknown preset (argparse) and a bad value (ConfigError)."""
    for extra, status, expected in (
        (["--rmt-preset", "huge"], 2, "invalid choice: 'huge'"),
        (["--rmt-group-size", "1"], 1, "rollout.group_size=1"),
    ):
        result = subprocess.run(
            [sys.executable, str(ROOT / "pretrain_rmt.py"), *_run_args(corpus_data, *extra)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert result.returncode == status, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert "Warning" not in result.stderr  # megatron-core's import noise is silenced


def test_preprocess_mistakes_end_in_a_message(tmp_path, capsys):
    from rmt_megatron.model_io import preprocess

    (tmp_path / "corpus.txt").write_text("Ben has 7 apples.\n\nAna has 5 pens.\n")
    base = ["--input", str(tmp_path / "corpus.txt"), "--output-prefix", str(tmp_path / "d")]
    assert preprocess.main([*base, "--train-tokenizer", "100"]) == 1
    assert "cannot train a 100-token tokenizer" in capsys.readouterr().err
    assert preprocess.main([*base, "--tokenizer-model", str(tmp_path / "none.model")]) == 1
    assert "none.model does not exist" in capsys.readouterr().err
    assert not list(tmp_path.glob("d.*"))


BAD_INPUTS = {  # file name, bytes, what the message names
    "not UTF-8": (
        "corpus.txt",
        b"Ben has 7 apples.\n\xff\xfe broken\n",
        "corpus.txt:2 is not UTF-8",
    ),
    "null text": ("c.jsonl", b'{"text": "fine"}\n{"text": null}\n', "c.jsonl:2: 'text' is null"),
    "number text": ("c.jsonl", b'{"text": 7}\n', "c.jsonl:1: 'text' is 7, not a string"),
    "a line that is a string": ("c.jsonl", b'"just text"\n', "c.jsonl:1 is a JSON str, not an"),
    "a line that is an array": ("c.jsonl", b'["a", "b"]\n', "c.jsonl:1 is a JSON list"),
    "a JSON array file": ("c.json", b'[{"text": "a"},\n {"text": "b"}]\n', "c.json:1 is not valid"),
    "only empty documents": ("c.jsonl", b'{"text": ""}\n', "no non-empty document"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_preprocess_input_is_named_and_leaves_no_file(case, tmp_path, capsys):
    from rmt_megatron.builtin.datasets import ASSETS, TOKENIZER_FILE
    from rmt_megatron.model_io import preprocess

    name, content, expected = BAD_INPUTS[case]
    (tmp_path / name).write_bytes(content)
    argv = [
        "--input",
        str(tmp_path / name),
        "--output-prefix",
        str(tmp_path / "out" / "d"),
        "--tokenizer-model",
        str(ASSETS / TOKENIZER_FILE),
    ]
    assert preprocess.main(argv) == 1
    assert expected in capsys.readouterr().err
    out = tmp_path / "out"
    assert not out.exists() or not list(out.iterdir())  # no half-written .tmp file


def test_json_lines_in_a_json_file_and_empty_documents(tmp_path):
    from rmt_megatron.builtin.datasets import ASSETS, TOKENIZER_FILE
    from rmt_megatron.mcore.indexed_dataset import load_indexed_dataset
    from rmt_megatron.model_io import preprocess

    (tmp_path / "c.json").write_text(
        '{"text": "Ben has 7 apples."}\n{"text": ""}\n{"text": "Ana has 5 pens."}\n'
    )
    argv = [
        "--input",
        str(tmp_path / "c.json"),
        "--output-prefix",
        str(tmp_path / "d"),
        "--tokenizer-model",
        str(ASSETS / TOKENIZER_FILE),
    ]
    assert preprocess.main(argv) == 0
    assert len(load_indexed_dataset(tmp_path / "d", 512)) == 2  # the empty one left out


def test_a_data_path_that_is_a_directory_is_named(tmp_path):
    from rmt_megatron.errors import DatasetError
    from rmt_megatron.mcore.indexed_dataset import load_indexed_dataset

    with pytest.raises(DatasetError, match="is a directory: give the prefix"):
        load_indexed_dataset(tmp_path, 512)
