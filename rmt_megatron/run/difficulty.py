"""Difficulty scoring: the proxy model's entropy at every token of a dataset, cached beside it.

`score_difficulty` stores, next to an indexed dataset, the entropy of the proxy model's next-token
distribution at every token: a flat float32 array aligned with the dataset's tokens, entry i of a
document being the entropy when predicting its token i from tokens < i (NaN at i = 0). Entropy is
the renormalised top-k entropy (docs/method.md, "Difficulty") or, with k = 0, the full-vocabulary
one. Documents longer than the window are scored in windows of `seq_length + 1` tokens overlapping
by one (the context restarts at each window). Work goes in chunks; each finished chunk is appended
to a `.partial` file (raw float32, written once: the I/O grows with the corpus, not with its
square) and recorded in a `.progress` file, so an interrupted pass resumes where it stopped, and
the final file appears only when complete (temporary name, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rmt_megatron.config.sections import RMTConfig
from rmt_megatron.errors import DatasetError
from rmt_megatron.files import atomic_save_array, atomic_write
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.indexed_dataset import document_lengths
from rmt_megatron.mcore.teacher_forcing import (
    Statistic,
    entropy_statistic,
    forward_statistics,
)
from rmt_megatron.model_io.own_checkpoint import load_fixed_model
from rmt_megatron.model_io.tokenizers import fingerprint
from rmt_megatron.run.sharding import replica_share


def file_signature(path: str | os.PathLike) -> list:
    """What identifies the files at `path` (a file, a directory, or a dataset PREFIX whose
    .bin/.idx are meant): resolved path, size and modification time of each, so that a rebuilt
    dataset or a retrained checkpoint never reuses another one's scores."""
    path = Path(path)
    files = (
        sorted(p for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else [p for p in (path, Path(f"{path}.bin"), Path(f"{path}.idx")) if p.is_file()]
    )
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def difficulty_cache_path(prefix: Path, proxy_name: str, key: dict) -> Path:
    """`PREFIX_entropy_<proxy name>_<digest of key>.npy`; `key` names the data, the proxy's
    weights and the scoring settings, and is written beside the scores as `.json`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return prefix.with_name(f"{prefix.name}_entropy_{proxy_name}_{digest}.npy")


def proxy_label(path: str | os.PathLike) -> str:
    """A readable name of a proxy checkpoint for cache file names: its file or directory name,
    or its parent's where the directory is a generic `checkpoint` (e.g. tiny_base/checkpoint)."""
    path = Path(path).resolve()
    return path.parent.name if path.name == "checkpoint" else path.stem


def cached_scores(path: Path, tokens: int) -> np.ndarray:
    """Difficulty scores from the cache, which must hold one float per token of the dataset."""
    try:
        scores = np.load(path)
    except (ValueError, OSError, EOFError) as error:
        raise DatasetError(f"{path} is damaged ({error}): delete it to rescore") from None
    if scores.shape != (tokens,):
        raise DatasetError(
            f"{path} holds {scores.shape} scores but the dataset has {tokens} tokens: it "
            "belongs to another dataset; delete it to rescore"
        )
    return scores


def cached_difficulty(
    prefix: Path,
    documents: Sequence[np.ndarray],
    proxy_name: str,
    proxy_signature,
    load_model: Callable[[], torch.nn.Module],
    tokenizer,
    config: RMTConfig,
    part: dict | None = None,
) -> np.ndarray:
    """The proxy's entropy at every token of `documents`, the dataset at `prefix` or the `part`
    of it that `part` names: from the cache beside it when one matches the key (the data, the
    part, the proxy's weights `proxy_signature`, the tokenizer and the scoring settings), else
    scored with `load_model()` (called only then) and cached as
    `difficulty_cache_path(prefix, proxy_name, key)` with the key beside it as `.json`."""
    key = {
        "data": file_signature(prefix),
        "proxy": proxy_signature,
        "tokenizer": fingerprint(tokenizer),
        "entropy_top_k": config.curriculum.entropy_top_k,
        "seq_length": config.model.seq_length,
    }
    if part is not None:
        key["part"] = part
    path = difficulty_cache_path(prefix, proxy_name, key)
    if path.is_file():
        return cached_scores(path, int(document_lengths(documents).sum()))
    scores = score_difficulty(
        load_model(),
        documents,
        path,
        config.curriculum.entropy_top_k,
        config.model.seq_length,
        config.train.micro_batch_size,
        tokenizer.eos_id,
    )
    if parallel.is_main_rank():
        atomic_write(path.with_suffix(".json"), json.dumps(key, indent=1))
    return scores


class DifficultyScorer:
    """Difficulty scores of datasets under one proxy, each cached beside its dataset
    (`cached_difficulty`). The proxy is a fixed model at `proxy` (a checkpoint of ours or a
    Hugging Face directory / GGUF file), loaded on the first dataset that is not cached and kept
    while this object lives; without one, `policy` scores (the run's starting policy, named
    "policy" in the cache and keyed by `policy_signature`, what it started from)."""

    def __init__(
        self,
        config: RMTConfig,
        tokenizer,
        proxy: str | os.PathLike | None,
        policy: torch.nn.Module | None = None,
        policy_signature=None,
    ) -> None:
        if proxy is None and policy is None:
            raise ValueError("a DifficultyScorer needs a proxy path or a policy model")
        self.config, self.tokenizer, self.proxy = config, tokenizer, proxy
        self._model = policy if proxy is None else None
        self._signature = policy_signature if proxy is None else file_signature(proxy)
        self._label = "policy" if proxy is None else proxy_label(proxy)

    def _load(self) -> torch.nn.Module:
        if self._model is None:
            self._model = load_fixed_model(self.proxy, self.config.model, self.tokenizer)
        return self._model

    def pool_scores(self, prefix: Path, run_dir: str | os.PathLike | None):
        """`score(documents, part)` for the candidate pools of the dataset at `prefix`
        (`candidate_pool.Scores`). A pool filled after step 0 with the policy as proxy is
        scored by the policy as trained so far; its cache key then also names the run's
        checkpoint directory `run_dir`, which with the pool fixes the step it was scored at.
        `run_dir` None: pools scored before any training (the held-out positions)."""

        def score(documents: Sequence[np.ndarray], part: dict | None) -> np.ndarray:
            if part is not None and self.proxy is None and run_dir is not None:
                part = {**part, "run": str(Path(run_dir).resolve())}
            return self.scores(prefix, documents, part)

        return score

    def scores(
        self, prefix: Path, documents: Sequence[np.ndarray], part: dict | None = None
    ) -> np.ndarray:
        """The proxy's entropy at every token of `documents` (flat, float32): the dataset at
        `prefix`, or with `part` the part of it that `part` names (a candidate pool), cached
        under its own key."""
        return cached_difficulty(
            prefix,
            documents,
            self._label,
            self._signature,
            self._load,
            self.tokenizer,
            self.config,
            part,
        )


def _windows(document: np.ndarray, seq_length: int) -> list[tuple[int, np.ndarray]]:
    """(start, tokens) windows of at most seq_length + 1 tokens overlapping by one."""
    starts = range(0, max(len(document) - 1, 1), seq_length)
    return [(start, document[start : start + seq_length + 1]) for start in starts]


def score_difficulty(
    model,
    documents: Sequence[np.ndarray],
    output_path: str | os.PathLike,
    top_k: int,
    seq_length: int,
    micro_batch_size: int,
    pad_id: int,
    chunk_documents: int = 256,
    show_progress: bool = True,
) -> np.ndarray:
    """Entropy at every token of `documents` (token-id arrays; see the module docstring),
    written to `output_path` (.npy) and returned. Collective over all ranks (data-parallel
    replicas share the windows); every rank returns it."""
    output_path = Path(output_path)
    if output_path.is_file():
        return np.load(output_path)
    lengths = document_lengths(documents)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    partial_path = output_path.with_name(output_path.name + ".partial")
    progress_path = output_path.with_name(output_path.name + ".progress")
    done = json.loads(progress_path.read_text())["documents"] if progress_path.is_file() else 0
    scores = np.full(offsets[-1], np.nan, dtype=np.float32)
    if done:
        scores[: offsets[done]] = np.fromfile(partial_path, dtype=np.float32, count=offsets[done])
    statistic = entropy_statistic(top_k)
    is_writer = parallel.is_main_rank()
    bar = tqdm(
        total=len(lengths),
        initial=done,
        desc="difficulty",
        unit="doc",
        disable=not (show_progress and is_writer),
    )
    for first in range(done, len(lengths), chunk_documents):
        last = min(first + chunk_documents, len(lengths))
        windows = [
            (doc, start, tokens)
            for doc in range(first, last)
            for start, tokens in _windows(np.asarray(documents[doc]), seq_length)
        ]
        for row, values in _score_windows(
            model, [w[2] for w in windows], statistic, micro_batch_size, seq_length, pad_id
        ):
            doc, start, tokens = windows[row]
            span = len(tokens) - 1
            begin = offsets[doc] + start + 1
            scores[begin : begin + span] = values[:span]
        if is_writer:  # append this chunk's scores; bytes past the recorded documents (a
            # chunk cut short by a crash) are dropped first
            with open(partial_path, "ab") as partial:
                partial.truncate(int(offsets[first]) * scores.itemsize)
                scores[offsets[first] : offsets[last]].tofile(partial)
            atomic_write(progress_path, json.dumps({"documents": last}))
        bar.update(last - first)
    bar.close()
    if is_writer:
        atomic_save_array(output_path, scores)
        partial_path.unlink(missing_ok=True)
        progress_path.unlink(missing_ok=True)
    return scores


def _score_windows(
    model,
    windows: list[np.ndarray],
    statistic: Statistic,
    micro_batch_size: int,
    seq_length: int,
    pad_id: int,
):
    """(window index, per-position values) for every window; data-parallel replicas each
    score every DP-th window and exchange their results (one all-gather over the DP group)."""
    mine = list(replica_share(len(windows), *parallel.data_parallel_rank_and_size()))
    values = np.zeros((0, 0), dtype=np.float32)
    if mine:
        batches = _window_batches([windows[i] for i in mine], micro_batch_size, seq_length, pad_id)
        values = torch.cat(
            parallel.share_from_last_stage(forward_statistics(model, batches, statistic))
        ).numpy()
    for rows, share in parallel.data_parallel_all_gather_object((mine, values)):
        yield from zip(rows, share[: len(rows)], strict=True)


def _window_batches(
    windows: list[np.ndarray], micro_batch_size: int, seq_length: int, pad_id: int
) -> list[dict[str, torch.Tensor]]:
    width = min(seq_length, max(len(w) for w in windows) - 1) if windows else seq_length
    width = max(width, 1)
    rows = -(-len(windows) // micro_batch_size) * micro_batch_size
    tokens = torch.full((rows, width), pad_id, dtype=torch.long)
    for row, window in enumerate(windows):
        inputs = window[:-1] if len(window) > 1 else window
        tokens[row, : len(inputs)] = torch.as_tensor(inputs[:width], dtype=torch.long)
    positions = torch.arange(width)[None].expand(micro_batch_size, width).contiguous()
    return [
        {"tokens": tokens[i : i + micro_batch_size], "position_ids": positions}
        for i in range(0, rows, micro_batch_size)
    ]
