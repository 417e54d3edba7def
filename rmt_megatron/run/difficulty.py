"""Teacher-forced passes that compute per-token statistics, and difficulty scoring with them.

`forward_statistics` runs Megatron's schedule forward-only (so PP stages pass activations the
usual way) and applies a statistic to each micro-batch's vocab-parallel logits on the last stage.

`score_difficulty` stores, next to an indexed dataset, the entropy of the proxy model's next-token
distribution at every token: a flat float32 array aligned with the dataset's tokens, entry i of a
document being the entropy when predicting its token i from tokens < i (NaN at i = 0). Entropy is
the renormalised top-k entropy (spec §1.4) or, with k = 0, the full-vocabulary one. Documents
longer than the window are scored in windows of `seq_length + 1` tokens overlapping by one (the
context restarts at each window). Work goes in chunks; each finished chunk is appended to a
`.partial` file and recorded in a `.progress` file, so an interrupted pass resumes where it
stopped, and the final file appears only when complete (temporary name, then rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func
from tqdm import tqdm

from rmt_megatron.files import atomic_write
from rmt_megatron.kernels import token_logprob_entropy
from rmt_megatron.kernels.topk_entropy import vocab_parallel_topk_entropy
from rmt_megatron.mcore.forward_step import causal_mask
from rmt_megatron.mcore.parallel import share_from_last_stage

Statistic = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def _collect(statistic: Statistic, batch, output, non_loss_data=True):
    return statistic(output, batch)


def _forward_logits(statistic: Statistic, data_iterator, model):
    batch = next(data_iterator)
    logits = model(batch["tokens"], batch["position_ids"],
                   causal_mask(batch["tokens"].shape[1]))
    return logits, partial(_collect, statistic, batch)


@torch.no_grad()
def forward_statistics(model, micro_batches: list[dict[str, torch.Tensor]],
                       statistic: Statistic) -> list[torch.Tensor] | None:
    """`statistic(logits [b, s, V_local], batch)` for each micro-batch, on the last pipeline
    stage (None on the others). `model` is a GPTModel stage (or its DDP wrapper)."""
    was_training = model.training
    model.eval()
    try:
        outputs = get_forward_backward_func()(
            forward_step_func=partial(_forward_logits, statistic),
            data_iterator=iter(micro_batches), model=[model],
            num_microbatches=len(micro_batches), seq_length=micro_batches[0]["tokens"].shape[1],
            micro_batch_size=micro_batches[0]["tokens"].shape[0], forward_only=True,
            collect_non_loss_data=True)
    finally:
        model.train(was_training)
    return list(outputs) if parallel_state.is_pipeline_last_stage() else None


def entropy_statistic(top_k: int) -> Statistic:
    """Per-token entropy `[b, s]` of vocab-parallel logits (top-k renormalised, or full if 0)."""
    group = parallel_state.get_tensor_model_parallel_group()

    def statistic(logits: torch.Tensor, batch) -> torch.Tensor:
        flat = logits.reshape(-1, logits.shape[-1])
        if top_k:
            values = vocab_parallel_topk_entropy(flat, top_k, group)
        else:
            unlabelled = torch.full(flat.shape[:1], -100, dtype=torch.long)
            values = token_logprob_entropy(flat, unlabelled, tp_group=group)[1]
        return values.reshape(logits.shape[:2])

    return statistic


def _windows(document: np.ndarray, seq_length: int) -> list[tuple[int, np.ndarray]]:
    """(start, tokens) windows of at most seq_length + 1 tokens overlapping by one."""
    starts = range(0, max(len(document) - 1, 1), seq_length)
    return [(start, document[start:start + seq_length + 1]) for start in starts]


def score_difficulty(model, documents: Sequence[np.ndarray], output_path: str | os.PathLike,
                     top_k: int,
                     seq_length: int, micro_batch_size: int, pad_id: int,
                     chunk_documents: int = 256, show_progress: bool = True) -> np.ndarray:
    """Entropy at every token of `documents` (token-id arrays; see the module docstring),
    written to `output_path` (.npy) and returned. Collective over all ranks (data-parallel
    replicas share the windows); every rank returns it."""
    output_path = Path(output_path)
    if output_path.is_file():
        return np.load(output_path)
    lengths = np.asarray([len(d) for d in documents], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    partial_path = output_path.with_name(output_path.name + ".partial")
    progress_path = output_path.with_name(output_path.name + ".progress")
    done = json.loads(progress_path.read_text())["documents"] if progress_path.is_file() else 0
    scores = np.full(offsets[-1], np.nan, dtype=np.float32)
    if done:
        scores[:offsets[done]] = np.load(partial_path)[:offsets[done]]
    statistic = entropy_statistic(top_k)
    is_writer = dist.get_rank() == 0 if dist.is_initialized() else True
    bar = tqdm(total=len(lengths), initial=done, desc="difficulty", unit="doc",
               disable=not (show_progress and is_writer))
    for first in range(done, len(lengths), chunk_documents):
        last = min(first + chunk_documents, len(lengths))
        windows = [(doc, start, tokens) for doc in range(first, last)
                   for start, tokens in _windows(np.asarray(documents[doc]), seq_length)]
        for row, values in _score_windows(model, [w[2] for w in windows], statistic,
                                          micro_batch_size, seq_length, pad_id):
            doc, start, tokens = windows[row]
            span = len(tokens) - 1
            begin = offsets[doc] + start + 1
            scores[begin:begin + span] = values[:span]
        if is_writer:
            _atomic_save(partial_path, scores)
            atomic_write(progress_path, json.dumps({"documents": last}))
        bar.update(last - first)
    bar.close()
    if is_writer:
        _atomic_save(output_path, scores)
        partial_path.unlink(missing_ok=True)
        progress_path.unlink(missing_ok=True)
    return scores


def _score_windows(model, windows: list[np.ndarray], statistic: Statistic,
                   micro_batch_size: int, seq_length: int, pad_id: int):
    """(window index, per-position values) for every window; data-parallel replicas each
    score every DP-th window and exchange their results (one all-gather over the DP group)."""
    dp_rank, dp_size = 0, 1
    if parallel_state.model_parallel_is_initialized():
        dp_rank = parallel_state.get_data_parallel_rank()
        dp_size = parallel_state.get_data_parallel_world_size()
    mine = list(range(dp_rank, len(windows), dp_size))
    values = np.zeros((0, 0), dtype=np.float32)
    if mine:
        batches = _window_batches([windows[i] for i in mine], micro_batch_size, seq_length,
                                  pad_id)
        values = torch.cat(share_from_last_stage(forward_statistics(model, batches,
                                                                    statistic))).numpy()
    shares = [(mine, values)]
    if dp_size > 1:
        shares = [None] * dp_size
        dist.all_gather_object(shares, (mine, values),
                               group=parallel_state.get_data_parallel_group())
    for rows, share in shares:
        yield from zip(rows, share[:len(rows)], strict=True)


def _window_batches(windows: list[np.ndarray], micro_batch_size: int, seq_length: int,
                    pad_id: int) -> list[dict[str, torch.Tensor]]:
    width = min(seq_length, max(len(w) for w in windows) - 1) if windows else seq_length
    width = max(width, 1)
    rows = -(-len(windows) // micro_batch_size) * micro_batch_size
    tokens = torch.full((rows, width), pad_id, dtype=torch.long)
    for row, window in enumerate(windows):
        inputs = window[:-1] if len(window) > 1 else window
        tokens[row, :len(inputs)] = torch.as_tensor(inputs[:width], dtype=torch.long)
    positions = torch.arange(width)[None].expand(micro_batch_size, width).contiguous()
    return [{"tokens": tokens[i:i + micro_batch_size], "position_ids": positions}
            for i in range(0, rows, micro_batch_size)]


def _atomic_save(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(path.name + ".tmp.npy")
    np.save(temporary, array)
    temporary.replace(path)
