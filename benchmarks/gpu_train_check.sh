#!/usr/bin/env bash
# The trainer on one GPU: four RMT steps of the built-in default through the fused output layer,
# in fp32 and in bf16, each stopped after step 2 with a checkpoint and resumed from it. Prepared
# like gpu_check.sh (wheels carried; see CONTRIBUTING.md, "On a GPU"):
#   run: bash benchmarks/gpu_train_check.sh        (carry: wheels)
# Logs land in $OUT (or benchmarks/results when run by hand); exits 1 if any run fails.
set -uo pipefail
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
# Editable, as the README installs: pretrain_rmt.py imports the checkout's rmt_megatron.
{ python -m pip install --no-deps --no-index wheels/megatron_core-*.whl \
    && python -m pip install --no-deps --no-index --no-build-isolation -e .; } \
    >"$out/install.log" 2>&1 || { tail -20 "$out/install.log"; exit 1; }
export PYTHONUNBUFFERED=1
status=0
scratch=$(mktemp -d)  # each call starts over (a new run refuses a used --save)
for dtype in fp32 bf16; do
    flags=(--train-iters 4 --rmt-fused-output-layer --eval-interval 2 --save "$scratch/$dtype")
    [ "$dtype" = bf16 ] && flags+=(--bf16)
    echo "== $dtype: steps 1-2, then stop" | tee -a "$out/train_check.txt"
    timeout 150 python pretrain_rmt.py "${flags[@]}" --exit-interval 2 2>&1 \
        | tee -a "$out/train_check.txt" || status=1
    echo "== $dtype: resume, steps 3-4" | tee -a "$out/train_check.txt"
    timeout 120 python pretrain_rmt.py "${flags[@]}" --load "$scratch/$dtype" 2>&1 \
        | tee -a "$out/train_check.txt" || status=1
done
exit $status
