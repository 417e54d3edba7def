#!/usr/bin/env bash
# The replication question (does RMT beat RPT here, and why not), on the validation split only: are
# the RL-trained checkpoints' post-training losses broken addition or slower adaptation to the
# question format? SFT alone (no GRPO) for 60 steps (the replication's) and for 180 from the base
# and from the NTP, RPT, RMT and RMT-without- NTP-term checkpoints of the replication, seeds 1 and
# 2 (the post-training seed is the run's), then greedy answers to 200 validation problems, each
# wrong one classified (builtin.questions.answer_kind). Needs the replication's main and ablation
# runs. From the repository root with the venv active (~60 min on 2 cores):
#   bash experiments/posttrain_sft_length_valid.sh
set -euo pipefail
OUT=runs/posttrain_sft_length
mkdir -p $OUT
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
for seed in 1 2; do
  for iters in 60 180; do
    for source in base ntp rpt rmt rmt_no_ntp; do
      load=runs/replicate/runs/${source}_seed$seed
      [ $source = base ] && load=rmt_megatron/builtin/assets/tiny_base/checkpoint
      name=${source}_seed${seed}_sft$iters
      [ -f $OUT/$name.json ] || python -m rmt_megatron.posttrain --load $load \
        --output $OUT/$name.json --sft-iters $iters --grpo-iters 0 --eval-split valid \
        --seed $seed > $OUT/$name.log 2>&1
    done
  done
done
python experiments/posttrain_sft_length_valid.py $OUT
