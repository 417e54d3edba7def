"""The comparison line both validation experiments print: a paired difference of reasoning
accuracy over the same positions (± SE over positions), with each seed's difference and its SE
over seeds."""

import numpy as np

from rmt_megatron.run.replication_report import _seed_means, paired

REASONING = ("reasoning_accuracy", "reasoning_accuracy")


def print_paired(label: str, first: list[dict], second: list[dict]) -> None:
    """One line per kind of position (all, then sum digits) for `first` − `second`, both lists
    of evaluation reports, one per seed in the same seed order."""
    for kind in (None, "computed"):
        mean, se, n = paired(first, second, REASONING, kind)
        a, b = _seed_means(first, second, REASONING, kind)
        per_seed = np.array(a) - np.array(b)
        print(
            f"{label}, {kind or 'all'} (n={n}): {mean:+.3f} ± {se:.3f}; per seed "
            f"{', '.join(f'{d:+.3f}' for d in per_seed)} "
            f"(± {per_seed.std(ddof=1) / np.sqrt(len(per_seed)):.3f} over seeds)"
        )
