"""Which held-out positions are evaluated."""

import numpy as np

from rmt_megatron.run.evaluation import sample_eval_positions


def test_eval_positions_are_eligible_above_the_threshold_and_fixed_by_their_own_seed():
    documents = [np.arange(10), np.arange(6)]
    entropy = np.linspace(0.0, 3.0, 16)
    eligible = np.ones(16, dtype=bool)
    eligible[[9, 15]] = False  # e.g. the end-of-text target of each document
    eligible[:3] = False  # too little context
    positions = sample_eval_positions(documents, entropy, eligible, 0.5, 100, seed=0)
    flat = [p.position + (10 if p.document else 0) for p in positions]
    assert flat == [i for i in range(16) if eligible[i] and entropy[i] > 0.5]
    some = sample_eval_positions(documents, entropy, eligible, 0.5, 4, seed=0)
    assert some == sample_eval_positions(documents, entropy, eligible, 0.5, 4, seed=0)
    assert some != sample_eval_positions(documents, entropy, eligible, 0.5, 4, seed=1)
