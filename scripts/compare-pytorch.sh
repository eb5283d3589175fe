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
#   resnet, mobilenetv2 (at 3x32x32 and 1x28x28): KD step of resnet:20 / mobilenetv2:0.5 from
#          a teacher of the same architecture, SGD with momentum (teacher forward included)
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
# Random images in the IDX layout for the CNN pairs: 3x32x32 (CIFAR-sized) and 1x28x28.
"$PYTHON" - "$work" <<'PY'
import gzip, os, struct, sys
import numpy as np
rng = np.random.default_rng(0)
for name, shape in (("rgb32", (3, 32, 32)), ("gray28", (28, 28))):
    d = os.path.join(sys.argv[1], name)
    os.makedirs(d)
    for split, n in (("train", 1280), ("t10k", 256)):
        x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        dims = (n, *shape)
        with gzip.open(os.path.join(d, f"{split}-images-idx3-ubyte.gz"), "wb") as f:
            f.write(struct.pack(">HBB", 0, 8, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + x.tobytes())
        with gzip.open(os.path.join(d, f"{split}-labels-idx1-ubyte.gz"), "wb") as f:
            f.write(struct.pack(">HBBI", 0, 8, 1, n) + y.tobytes())
PY
for data in rgb32 gray28; do
    "$EDGEKD" train -m resnet:20 --epochs 1 --data "$work/$data" --quiet --out "$work/resnet-$data" >/dev/null 2>&1
    "$EDGEKD" train -m mobilenetv2:0.5 --epochs 1 --data "$work/$data" --quiet --out "$work/mobilenetv2-$data" >/dev/null 2>&1
done

edgekd_step() { # pair threads [data]
    local pair=$1 threads=$2 data=${3:-} out="$work/run-$1-$2-${3:-}"
    # --jitter makes the teacher run every step, as in the PyTorch loop (without augmentation
    # edgekd computes the teacher's outputs once per run and the teacher phase vanishes).
    case $pair in
    train) RAYON_NUM_THREADS=$threads "$EDGEKD" train -m mlp:1200-1200 --epochs 1 --profile --quiet --out "$out" ;;
    mlp) RAYON_NUM_THREADS=$threads "$EDGEKD" distill --teacher "$work/mlp-teacher" --student mlp:800-800 \
        -T 4 --alpha 0.9 --jitter 2 --epochs 1 --profile --quiet --out "$out" ;;
    cnn) RAYON_NUM_THREADS=$threads "$EDGEKD" distill --teacher "$work/cnn-teacher" --student cnn:lenet5-half \
        -T 4 --alpha 0.9 --jitter 2 --epochs 1 --profile --quiet --out "$out" ;;
    resnet | mobilenetv2)
        local spec=resnet:20
        [ "$pair" = mobilenetv2 ] && spec=mobilenetv2:0.5
        RAYON_NUM_THREADS=$threads "$EDGEKD" distill --teacher "$work/$pair-$data" --student "$spec" \
            --data "$work/$data" -T 4 --alpha 0.9 --jitter 2 --optimizer sgd --lr 0.05 --momentum 0.9 \
            --weight-decay 5e-4 --epochs 1 --profile --quiet --out "$out" ;;
    esac 2>/dev/null | compute_ms
}

printf "%-20s %14s %14s %9s %16s %16s %9s\n" step "edgekd 1 thr" "PyTorch 1 thr" ratio "edgekd $CORES thr" "PyTorch $CORES thr" ratio
row() { # label pair [data image]
    local label=$1 pair=$2 data=${3:-} image=${4:-1x28x28} steps=100
    case $pair in resnet | mobilenetv2) steps=10 ;; esac
    ours=$(edgekd_step "$pair" 1 "$data")
    theirs=$("$PYTHON" scripts/pytorch_kd_step.py --pair "$pair" --image "$image" --steps $steps --threads 1 2>/dev/null | awk '{ print $4 }')
    wide=$(edgekd_step "$pair" "$CORES" "$data")
    theirs_wide=$("$PYTHON" scripts/pytorch_kd_step.py --pair "$pair" --image "$image" --steps $steps --threads "$CORES" 2>/dev/null | awk '{ print $4 }')
    awk -v p="$label" -v a="$ours" -v b="$theirs" -v w="$wide" -v bw="$theirs_wide" 'BEGIN {
        printf "%-20s %11.2f ms %11.2f ms %8.2fx %13.2f ms %13.2f ms %8.2fx\n", p, a, b, a / b, w, bw, w / bw }'
}
for pair in train mlp cnn; do
    row "$pair" "$pair"
done
row "resnet 3x32x32" resnet rgb32 3x32x32
row "resnet 1x28x28" resnet gray28 1x28x28
row "mobilenetv2 3x32x32" mobilenetv2 rgb32 3x32x32
row "mobilenetv2 1x28x28" mobilenetv2 gray28 1x28x28
echo "(ratio = edgekd / PyTorch time per step: below 1 means edgekd is faster)"
