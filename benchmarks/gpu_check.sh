#!/usr/bin/env bash
# The prepared run for a GPU machine (the `device` tool), under 8 minutes on one H200:
#   1. the card and the versions;
#   2. kernels: the compiled Triton kernels against float64 (cuda_check.py), then their benchmark;
#   3. trainer: the built-in default in bf16 with the distributed optimizer (and Transformer
#      Engine's layers where TE is installed), 4 steps straight and 2 + 2 resumed, equal bitwise
#      (resume_check.py);
#   4. the rollout engine's padding and chunking checks, the Transformer Engine one included
#      where TE is installed, and megatron-core's dynamic engine against the model's argmax
#      where flash-attn is installed (pytest);
#   5. rollouts of a random-weight ~1.2B Llama-shape model: tokens/s, and peak memory against the
#      plan's prediction, with our engine and megatron-core's dynamic engine side by side (the
#      latter's row says why not where flash-attn is missing) (rollout_scale.py).
# Prepare here, then run there with the wheels carried (CONTRIBUTING.md, "On a GPU"):
#   run: bash benchmarks/gpu_check.sh        (carry: wheels; timeout ~480 s)
# Everything lands in $OUT (or benchmarks/results when run by hand).
#
#   bash benchmarks/gpu_check.sh --dry       on a CPU with the README's install (.venv, or the
#                                             python $PYTHON names): every stage at tiny sizes,
#                                             results in a temporary folder, to check the script
#                                             itself end to end.
# Exits 1 if any stage fails; the stages after a failed one still run.
set -uo pipefail
dry=0
[ "${1:-}" = "--dry" ] && dry=1
if [ $dry = 1 ]; then out=$(mktemp -d); else out="${OUT:-benchmarks/results}"; fi
mkdir -p "$out"
python=${PYTHON:-python}
[ $dry = 1 ] && [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && python=.venv/bin/python
export BENCHMARK_RESULTS="$out"  # where the benchmarks write their CSVs (results_csv.py)
export PYTHONUNBUFFERED=1
status=0
stage() { echo "== $1" | tee -a "$out/gpu_check.txt"; }
fail() { echo "FAILED: $1" | tee -a "$out/gpu_check.txt"; status=1; }

stage "1. machine"
if [ $dry = 0 ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
    # Editable, as the README installs: pretrain_rmt.py imports the checkout's rmt_megatron.
    { "$python" -m pip install --no-deps --no-index wheels/*.whl \
        && "$python" -m pip install --no-deps --no-index --no-build-isolation -e .; } \
        >"$out/install.log" 2>&1 || { tail -20 "$out/install.log"; exit 1; }
fi
"$python" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
    | tee -a "$out/gpu_check.txt"

stage "2. kernels"
if [ $dry = 0 ]; then
    timeout 120 "$python" benchmarks/cuda_check.py 2>&1 | tee "$out/cuda_check.txt" || fail cuda_check
    timeout 150 "$python" benchmarks/vocab_ops.py --device cuda --n 8192 --h 4096 --v 131072 \
        --dtype bfloat16 --repeats 5 2>&1 | tee "$out/vocab_ops.txt" || fail vocab_ops
else
    TRITON_INTERPRET=1 timeout 300 "$python" benchmarks/cuda_check.py --device cpu --small 2>&1 \
        | tail -5 | tee "$out/cuda_check.txt" || fail cuda_check
fi

stage "3. trainer: bf16, distributed optimizer, save and bitwise resume"
train_flags=(--bf16 --eval-interval 1000)
if [ $dry = 1 ]; then  # the built-in default, smaller steps: bf16 runs on a CPU too
    train_flags+=(--rmt-prompts-per-step 2 --rmt-group-size 2 --eval-positions 4 --micro-batch-size 4)
else  # the loss from the hidden states through the Triton kernel
    train_flags+=(--rmt-fused-output-layer)
fi
timeout 210 "$python" benchmarks/resume_check.py "$(mktemp -d)" "${train_flags[@]}" 2>&1 \
    | tail -8 | tee "$out/resume_check.txt"
[ "${PIPESTATUS[0]}" = 0 ] || fail resume_check

stage "4. rollout padding and chunks (Transformer Engine, flash-attn where installed)"
timeout 150 "$python" -m pytest -q -p no:cacheprovider tests/test_rollout_and_step.py \
    -k "padding or equal_length or transformer_engine or chunk or compacted or stops or dynamic" \
    2>&1 \
    | tail -5 | tee "$out/rollout_checks.txt"
[ "${PIPESTATUS[0]}" = 0 ] || fail rollout_checks

stage "5. rollouts of a random-weight Llama-shape model"
if [ $dry = 0 ]; then
    timeout 120 "$python" benchmarks/rollout_scale.py --size 1b 2>&1 | tee "$out/rollout_scale.txt" \
        || fail rollout_scale
else
    timeout 120 "$python" benchmarks/rollout_scale.py --size tiny --prompts 4 --group-size 2 \
        --prompt-length 16 --new-tokens 8 --kv-cache-gib 0.00005 2>&1 \
        | tee "$out/rollout_scale.txt" || fail rollout_scale
fi

echo "gpu_check: $([ $status = 0 ] && echo passed || echo FAILED), results in $out"
exit $status
