"""Training sequences and micro-batches of one step (layout and loss weights)."""

import pytest
import torch

from rmt_megatron.method.packing import (
    TrainingSequence,
    collate,
    ntp_batches,
    ntp_sequence,
    pack_rows,
    rl_sequence,
    token_weights,
)


def test_rl_sequence_marks_only_response_labels():
    sequence = rl_sequence([10, 11, 12], [20, 21], advantage=0.5)
    (batch,) = collate([sequence], 1, 4, pad_id=0, rl_token_weight=1.0, ntp_token_weight=0.0)
    assert batch["tokens"].tolist() == [[10, 11, 12, 20]]
    assert batch["labels"].tolist() == [[11, 12, 20, 21]]
    assert batch["rl_mask"].tolist() == [[False, False, True, True]]
    assert batch["advantages"].tolist() == [[0.0, 0.0, 0.5, 0.5]]
    assert not batch["ntp_mask"].any()
    assert sequence.rl_tokens == 2 and sequence.ntp_tokens == 0


def test_ntp_sequence_excludes_rl_positions_from_its_labels():
    sequence = ntp_sequence([1, 2, 3, 4, 5], rl_positions=[2, 4])
    (batch,) = collate([sequence], 1, 4, pad_id=0, rl_token_weight=0.0, ntp_token_weight=2.0)
    # label j predicts token j+1: tokens 2 and 4 are labels 1 and 3
    assert batch["ntp_mask"].tolist() == [[True, False, True, False]]
    assert batch["loss_weight"].tolist() == [[2.0, 0.0, 2.0, 0.0]]
    assert sequence.ntp_tokens == 2


def test_ntp_batches_weigh_every_kept_label_one_and_fit_the_longest_sequence():
    sequences = [ntp_sequence([1, 2, 3, 4, 5], rl_positions=[2]), ntp_sequence([6, 7], ())]
    batches, width = ntp_batches(sequences, micro_batch_size=1, pad_id=0)
    assert width == 4 and len(batches) == 2
    assert batches[0]["loss_weight"].tolist() == [[1.0, 0.0, 1.0, 1.0]]
    assert batches[1]["loss_weight"].tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert not any(batch["rl_mask"].any() for batch in batches)


def test_collate_pads_rows_and_the_last_micro_batch():
    sequences = [
        rl_sequence([1], [2, 3], 1.0),
        ntp_sequence([4, 5], ()),
        rl_sequence([6, 7], [8], -1.0),
    ]
    batches = collate(sequences, 2, 3, pad_id=9, rl_token_weight=1.0, ntp_token_weight=1.0)
    assert [b["tokens"].shape for b in batches] == [torch.Size([2, 3])] * 2
    assert batches[1]["tokens"][1].tolist() == [9, 9, 9]
    assert not batches[1]["rl_mask"][1].any() and not batches[1]["ntp_mask"][1].any()
    assert batches[0]["position_ids"].tolist() == [[0, 1, 2], [0, 1, 2]]


def test_packed_rows_keep_each_sequence_s_labels_positions_and_own_segment():
    rl = rl_sequence([1, 2], [3, 4], 0.5)  # 4 tokens
    ntp = ntp_sequence([5, 6, 7], rl_positions=[2])  # 3 tokens
    short = rl_sequence([8], [9], -1.0)  # 2 tokens
    assert pack_rows([short, ntp, rl], 7) == [[rl, ntp], [short]]  # longest first, first fit
    (batch,) = collate([short, ntp, rl], 2, 6, 0, 1.0, 2.0, pack=True)
    assert batch["tokens"].tolist() == [[1, 2, 3, 4, 5, 6], [8, 9, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[2, 3, 4, 5, 6, 7], [9, 0, 0, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 3, 4, 5]]
    assert batch["segments"].tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, -1, -1, -1, -1]]
    # label 3 would predict the NTP document's first token from the RL response: no loss
    assert batch["rl_mask"].tolist()[0] == [False, True, True, False, False, False]
    # the document's token 7 (position 2) is an RL position: label 5 is out of the NTP loss
    assert batch["ntp_mask"].tolist()[0] == [False, False, False, False, True, False]
    assert batch["advantages"].tolist()[1][:2] == [-1.0, 0.0]
    assert batch["loss_weight"].tolist()[0] == [0.0, 1.0, 1.0, 0.0, 2.0, 0.0]
    assert "segments" not in collate([rl], 1, 3, 0, 1.0, 1.0)[0]


def test_collate_rejects_sequences_longer_than_the_window():
    with pytest.raises(ValueError, match="seq_length"):
        collate([ntp_sequence(list(range(10)), ())], 1, 4, 0, 1.0, 1.0)


def test_token_weights_make_each_term_a_token_mean_after_dividing_by_the_total():
    rl, ntp = token_weights(rl_tokens=30, ntp_tokens=70, rl_weight=1.0, ntp_weight=0.1)
    # Megatron divides Σ w·ℓ by T = 100: RL tokens then weigh 1/30, NTP tokens 0.1/70.
    assert rl / 100 == pytest.approx(1 / 30) and ntp / 100 == pytest.approx(0.1 / 70)
    assert token_weights(0, 10, 1.0, 0.1) == (0.0, pytest.approx(0.1))


def test_bad_sequences_are_rejected():
    with pytest.raises(ValueError):
        rl_sequence([], [1], 0.0)
    with pytest.raises(ValueError):
        ntp_sequence([1], ())
    assert TrainingSequence([1, 2], excluded={1}).ntp_tokens == 0
