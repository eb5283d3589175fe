#!/usr/bin/env bash
# The MNIST pruning results (results/prune-mnist/): Hinton et al.'s 784-1200-1200-10 teacher
# pruned to 300-300 (75% of its neurons) and recovered by distillation from itself, beside
# fine-tuning the same pruned weights on labels and distilling the same shape from fresh
# weights, 3 seeds each; unstructured 92% magnitude pruning recovered with its zeros kept;
# f32 and int8 exports of each, timed by `edgekd bench` at batch 1 and 64 and drawn as
# accuracy against latency.
#
#   scripts/prune-experiment.sh        # reuses finished runs (--resume)
set -euo pipefail
cd "$(dirname "$0")/.."
EDGEKD=${EDGEKD:-${CARGO_TARGET_DIR:-target}/release/edgekd}
DATA=${DATA:-../shared/data/mnist}
RUNS=runs/prune-mnist
OUT=${OUT:-results/prune-mnist}
mkdir -p "$RUNS" "$OUT"

"$EDGEKD" train --config experiments/prune-mnist-teacher.toml --threads 1 --resume -q
[ -f "$RUNS/pruned/model.toml" ] ||
    "$EDGEKD" prune "$RUNS/teacher60" --ratio 0.75 --criterion taylor --channel-multiple 1 \
        --data "$DATA" --out "$RUNS/pruned" | tee "$OUT/prune.txt"
"$EDGEKD" distill --config experiments/prune-mnist-recover.toml --threads 1 --resume -q | tee "$OUT/recover.txt"
"$EDGEKD" distill --config experiments/prune-mnist-scratch.toml --threads 1 --resume -q | tee "$OUT/scratch.txt"
[ -f "$RUNS/sparse92/model.toml" ] ||
    "$EDGEKD" prune "$RUNS/teacher60" --unstructured --sparsity 0.92 --data "$DATA" \
        --out "$RUNS/sparse92" | tee "$OUT/sparse.txt"
"$EDGEKD" distill --config experiments/prune-mnist-sparse.toml --threads 1 --resume -q | tee "$OUT/sparse-recover.txt"

EDGEKD=$EDGEKD scripts/bench-exports.sh "$OUT" "$RUNS/onnx" "$DATA" teacher:"$RUNS/teacher60" \
    pruned-kd:"$RUNS/recovered" pruned-finetune:"$RUNS/recovered/runs/alone-seed0" \
    scratch-kd:"$RUNS/scratch" sparse92-kd:"$RUNS/sparse92-recovered"
