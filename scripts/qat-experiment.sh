#!/usr/bin/env bash
# Quantization-aware training against post-training int8, for the student whose int8 loses
# most: mobilenetv2:0.25 (depthwise convolutions) on Fashion-MNIST. Per seed:
#   1. float training (SGD + Nesterov, warm-up, cosine; ±2 px crops and flips);
#   2. post-training int8 of it (percentile calibration on 1,000 training images);
#   3. QAT: two epochs of quantization-aware distillation from that float model, starting from
#      its weights (`distill --teacher F --student F --qat`), exported with its learned ranges.
# Writes results/qat/summary.md (and the export reports beside it).
#
#   scripts/qat-experiment.sh                      # all of Fashion-MNIST's 60,000 images
#   LIMIT=12000 scripts/qat-experiment.sh          # the first 12,000 (what results/qat used)
set -euo pipefail
cd "$(dirname "$0")/.."
EDGEKD=${EDGEKD:-${CARGO_TARGET_DIR:-target}/release/edgekd}
DATA=${DATA:-../shared/data/fashion-mnist}
OUT=${OUT:-runs/qat}
RESULTS=${RESULTS:-results/qat}
LIMIT=${LIMIT:-60000}
SEEDS=${SEEDS:-"0 1 2"}
MODEL=${MODEL:-mobilenetv2:0.25}
mkdir -p "$OUT" "$RESULTS"
common=(--data "$DATA" --train-limit "$LIMIT" --threads 1 --resume -q --optimizer sgd --nesterov
        --weight-decay 5e-4 --crop-pad 2 --flip)
for seed in $SEEDS; do
    f="$OUT/float-seed$seed"
    q="$OUT/qat-seed$seed"
    "$EDGEKD" train --model "$MODEL" "${common[@]}" --epochs 5 --warmup-epochs 1 --lr 0.05 \
        --seed "$seed" --out "$f"
    "$EDGEKD" distill --teacher "$f" --student "$f" "${common[@]}" --epochs 2 --lr 0.005 \
        --qat --seed "$seed" --out "$q"
    for run in float qat; do
        dir="$OUT/$run-seed$seed"
        cal=percentile
        [ "$run" = qat ] && cal=qat
        "$EDGEKD" export "$dir" --format f32,int8 --calibration "$cal" --data "$DATA" \
            --latency 0 --max-accuracy-drop 100 --json > "$RESULTS/$run-seed$seed.export.json"
    done
done
python3 - "$RESULTS" $SEEDS <<'PY'
import json, statistics, sys
results, seeds = sys.argv[1], sys.argv[2:]
rows = []
for s in seeds:
    f = json.load(open(f"{results}/float-seed{s}.export.json"))["export"]
    q = json.load(open(f"{results}/qat-seed{s}.export.json"))["export"]
    acc = lambda r, v: next(x["verification"]["accuracy"] for x in r["files"] if x["variant"] == v)
    rows.append((s, f["reference_accuracy"], acc(f, "int8-qop-percentile"), q["reference_accuracy"], acc(q, "int8-qop-qat")))
def ms(xs):
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"
lines = ["| seed | float f32 | post-training int8 | Δ pp | QAT model f32 | QAT int8 | Δ pp vs float f32 |", "|---|---|---|---|---|---|---|"]
for s, f32, ptq, qf, qat in rows:
    lines.append(f"| {s} | {f32:.2f}% | {ptq:.2f}% | {ptq - f32:+.2f} | {qf:.2f}% | {qat:.2f}% | {qat - f32:+.2f} |")
cols = list(zip(*rows))
lines.append(f"| mean | {ms(cols[1])} | {ms(cols[2])} | {statistics.mean(p - f for f, p in zip(cols[1], cols[2])):+.2f} | {ms(cols[3])} | {ms(cols[4])} | {statistics.mean(q - f for f, q in zip(cols[1], cols[4])):+.2f} |")
open(f"{results}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
