#!/usr/bin/env bash
# CPU time of one training step, edgekd against PyTorch, measured side by side in one run:
# the same models, batch (128), loss and optimizer (AdamW), on one thread each, then edgekd
# on every core for its threading speed-up.
#
#   scripts/compare-pytorch.sh            # PYTHON=/path/to/python if torch is not in python3
#
# Steps compared (compute only: edgekd's data and metrics phases are left out, as PyTorch's
# side reuses one random batch):
#   train  784-1200-1200-10 on labels (the Hinton teacher)
#   mlp    KD step: 800-800 student from the 1200-1200 teacher (teacher forward included)
#   cnn    KD step: LeNet-5-half student from LeNet-5
# Exits 0 with a message when PyTorch is not installed (it is a 5 GB install from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
    echo "compare-pytorch: skipped, PyTorch is not installed for $PYTHON (set PYTHON=...)"
    exit 0
fi
EDGEKD=${EDGEKD:-}
if [ -z "$EDGEKD" ]; then
    cargo build --release --quiet --bin edgekd
    EDGEKD="${CARGO_TARGET_DIR:-target}/release/edgekd"
fi
CORES=$(nproc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_WAIT_POLICY=PASSIVE

# ms per step of the compute phases in a `--profile` table.
compute_ms() {
    awk '/ms\/step/ && $1 != "data" && $1 != "metrics" { s += $(NF-2) } END { printf "%.2f", s }'
}

# Teachers only need to exist (a step costs the same whatever the weights learned).
"$EDGEKD" train -m mlp:1200-1200 --epochs 1 --train-limit 1280 --quiet --out "$work/mlp-teacher" >/dev/null 2>&1
"$EDGEKD" train -m cnn:lenet5 --epochs 1 --train-limit 1280 --quiet --out "$work/cnn-teacher" >/dev/null 2>&1

edgekd_step() { # pair threads
    local pair=$1 threads=$2 out="$work/run-$1-$2"
    # --jitter makes the teacher run every step, as in the PyTorch loop (without augmentation
    # edgekd computes the teacher's outputs once per run and the teacher phase vanishes).
    case $pair in
    train) RAYON_NUM_THREADS=$threads "$EDGEKD" train -m mlp:1200-1200 --epochs 1 --profile --quiet --out "$out" ;;
    mlp) RAYON_NUM_THREADS=$threads "$EDGEKD" distill --teacher "$work/mlp-teacher" --student mlp:800-800 \
        -T 4 --alpha 0.9 --jitter 2 --epochs 1 --profile --quiet --out "$out" ;;
    cnn) RAYON_NUM_THREADS=$threads "$EDGEKD" distill --teacher "$work/cnn-teacher" --student cnn:lenet5-half \
        -T 4 --alpha 0.9 --jitter 2 --epochs 1 --profile --quiet --out "$out" ;;
    esac 2>/dev/null | compute_ms
}

printf "%-6s %14s %14s %9s %16s %10s\n" step "edgekd 1 thr" "PyTorch 1 thr" ratio "edgekd $CORES thr" speed-up
for pair in train mlp cnn; do
    ours=$(edgekd_step "$pair" 1)
    theirs=$("$PYTHON" scripts/pytorch_kd_step.py --pair "$pair" --threads 1 2>/dev/null | awk '{ print $4 }')
    wide=$(edgekd_step "$pair" "$CORES")
    awk -v p="$pair" -v a="$ours" -v b="$theirs" -v w="$wide" -v c="$CORES" 'BEGIN {
        printf "%-6s %11.2f ms %11.2f ms %8.2fx %13.2f ms %9.2fx\n", p, a, b, a / b, w, a / w }'
done
echo "(ratio = edgekd / PyTorch time per step: below 1 means edgekd is faster)"
