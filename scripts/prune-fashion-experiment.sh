#!/usr/bin/env bash
# The Fashion-MNIST pruning results (results/fashion/prune/): the ResNet-20 teacher
# (experiments/fashion-teacher-resnet20.toml, committed in results/fashion/teacher-resnet20)
# pruned by taylor scores to 0.45x its MACs, then recovered by distillation from the unpruned
# teacher beside fine-tuning the same pruned weights on labels alone, 3 seeds each
# (experiments/prune-fashion-recover.toml, and again at T = 2, alpha 0.5); f32 and int8 exports of the teacher and of seed 0
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
# The second KD setting (T = 2, alpha 0.5) is compared with the same fine-tuned runs: their
# identity holds no KD setting, so --resume reuses the copies instead of training them again.
mkdir -p "$OUT/recovered-t2/runs"
for d in "$OUT"/recovered/runs/alone-seed*; do
    [ -e "$OUT/recovered-t2/runs/$(basename "$d")" ] || cp -r "$d" "$OUT/recovered-t2/runs/"
done
"$EDGEKD" distill --config experiments/prune-fashion-recover.toml -T 2 --alpha 0.5 \
    --out "$OUT/recovered-t2" --threads 2 --resume -q | tee "$OUT/recover-t2.txt"

EDGEKD=$EDGEKD scripts/bench-exports.sh "$OUT" runs/prune-fashion/onnx "$DATA" \
    teacher:results/fashion/teacher-resnet20 pruned-kd:"$OUT/recovered" \
    pruned-kd-t2:"$OUT/recovered-t2" pruned-finetune:"$OUT/recovered/runs/alone-seed0"
