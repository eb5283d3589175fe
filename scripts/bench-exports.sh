#!/usr/bin/env bash
# Exports checkpoints to f32 and int8 ONNX, times every file against the teacher's f32 file
# with `edgekd bench` (batch 1 and 64, one thread) and draws accuracy against latency; the
# pruning experiments' last step.
#
#   scripts/bench-exports.sh OUT ONNX_DIR DATA teacher:CHECKPOINT [NAME:CHECKPOINT ...]
#
# Writes OUT/export-NAME.txt, OUT/bench.{txt,json}, OUT/accuracy-vs-latency.png and
# OUT/sizes.txt; the ONNX files go to ONNX_DIR. The first pair must be named `teacher`.
set -euo pipefail
cd "$(dirname "$0")/.."
EDGEKD=${EDGEKD:-${CARGO_TARGET_DIR:-target}/release/edgekd}
out=$1 onnx=$2 data=$3
shift 3
mkdir -p "$out" "$onnx"
for pair in "$@"; do
    name=${pair%%:*}
    "$EDGEKD" export "${pair#*:}" --format f32,int8 --data "$data" --stem "$name" \
        --out "$onnx" --latency 0 --max-accuracy-drop 100 > "$out/export-$name.txt"
done
students=$(ls "$onnx"/*.onnx | grep -v '/teacher.f32.onnx' | paste -sd, -)
"$EDGEKD" bench --teacher "$onnx/teacher.f32.onnx" --student "$students" --batch 1,64 \
    --threads 1 --data "$data" --json "$out/bench.json" --plot "$out/accuracy-vs-latency.png" \
    | tee "$out/bench.txt"
for f in "$onnx"/*.onnx; do
    printf '%s %s bytes, %s gzipped\n' "$(basename "$f")" "$(stat -c %s "$f")" "$(gzip -c "$f" | wc -c)"
done | tee "$out/sizes.txt"
