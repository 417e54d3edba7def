#!/usr/bin/env bash
# The replication question (does RMT beat RPT here, and why not), on the validation split only: is
# RMT's gap to RPT one seed's collapse? Trains RPT and RMT for seeds 4 and 5 exactly as the
# replication does (into runs/replicate/runs/, so a later replication with --seeds 1 2 3 4 5 reuses
# them) and compares RMT with RPT under the B = 40 prompt over seeds 1-5, on the 400 validation
# positions of budget_floor_valid.sh (run that first: it evaluates seeds 1-3). From the repository
# root with the venv active (~35 min on 2 cores):
#   bash experiments/more_seeds_valid.sh
set -euo pipefail
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
python - <<'PY'
from rmt_megatron.study.design import arm
from rmt_megatron.study.replication import build_parser, settings_from_args, train

settings = settings_from_args(build_parser().parse_args(["--threads", "2"]))
for seed in (4, 5):
    for name in ("rpt", "rmt"):
        train(settings, arm(name), seed)
PY
B_T=$(python -m rmt_megatron.replicate --print-final-budget)  # the replication's B_T
DATA=runs/replicate/builtin_data
BASE=rmt_megatron/builtin/assets/tiny_base
OUT=runs/budget_floor
for seed in 4 5; do
  for arm in rmt rpt; do
    [ -f $OUT/eval_${arm}_seed${seed}_p$B_T.json ] || python -m rmt_megatron.evaluate \
      --load runs/replicate/runs/${arm}_seed$seed --data-path $DATA/arith_valid \
      --proxy-checkpoint $BASE/checkpoint --tokenizer-model $BASE/tokenizer.model \
      --prompt-budget $B_T --eval-positions 400 --builtin-data-dir $DATA \
      --output $OUT/eval_${arm}_seed${seed}_p$B_T.json > $OUT/eval_${arm}_seed${seed}_p$B_T.log 2>&1
  done
done
python experiments/more_seeds_valid.py $OUT $B_T
