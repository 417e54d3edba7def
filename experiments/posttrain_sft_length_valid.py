"""The comparison of `posttrain_sft_length_valid.sh`: per source checkpoint and SFT length, the
accuracy of greedy answers to the validation problems and where the wrong ones went wrong.

    python experiments/posttrain_sft_length_valid.py runs/posttrain_sft_length
"""

import json
import sys
from pathlib import Path

KINDS = ("correct", "copy", "working", "format")


def main(out: Path) -> None:
    print("| source | seed | SFT steps | accuracy | " + " | ".join(KINDS) + " | final SFT loss |")
    print("|---|---|---|---|" + "---|" * (len(KINDS) + 1))
    for seed, iters in ((1, 60), (2, 60), (1, 180), (2, 180)):
        for source in ("base", "ntp", "rpt", "rmt", "rmt_no_ntp"):
            report = json.loads((out / f"{source}_seed{seed}_sft{iters}.json").read_text())
            after = report["after_sft"]
            kinds = " | ".join(str(after["answer_kinds"].get(k, 0)) for k in KINDS)
            loss = sum(report["sft_loss"][-10:]) / 10
            print(
                f"| {source} | {seed} | {iters} | {after['accuracy']:.3f} | {kinds} | {loss:.3f} |"
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
