#!/usr/bin/env bash
# The Fashion-MNIST pruning results (results/fashion/prune/): the ResNet-20 teacher
# (experiments/fashion-teacher-resnet20.toml, committed in results/fashion/teacher-resnet20)
# pruned by taylor scores to 0.45x its MACs, then recovered by distillation from the unpruned
# teacher beside fine-tuning the same pruned weights on labels alone, 3 seeds each
# (experiments/prune-fashion-recover.toml); f32 and int8 exports of the teacher and of seed 0
# of each recovery, timed by `edgekd bench` at batch 1 and 64 on one thread and drawn as
# accuracy against latency.
#
#   scripts/prune-fashion-experiment.sh        # reuses finished runs (--resume)
set -euo pipefail
cd "$(dirname "$0")/.."
EDGEKD=${EDGEKD:-${CARGO_TARGET_DIR:-target}/release/edgekd}
DATA=${DATA:-../shared/data/fashion-mnist}
OUT=results/fashion/prune
mkdir -p "$OUT"

[ -f "$OUT/pruned/model.toml" ] ||
    "$EDGEKD" prune results/fashion/teacher-resnet20 --target-macs 15500000 --criterion taylor \
        --data "$DATA" --out "$OUT/pruned" | tee "$OUT/prune.txt"
"$EDGEKD" distill --config experiments/prune-fashion-recover.toml --threads 2 --resume -q |
    tee "$OUT/recover.txt"

EDGEKD=$EDGEKD scripts/bench-exports.sh "$OUT" runs/prune-fashion/onnx "$DATA" \
    teacher:results/fashion/teacher-resnet20 pruned-kd:"$OUT/recovered" \
    pruned-finetune:"$OUT/recovered/runs/alone-seed0"
