#!/usr/bin/env bash
# edgekd's inference engine beside ONNX Runtime and LiteRT (TFLite's interpreter with XNNPACK),
# one thread, batch 1 and 64, measured in one run on the same networks:
#   - PyTorch's CIFAR ResNet-20 and MobileNetV2 x0.5 (3x32x32): f32 from torch.onnx.export
#     (dynamic batch), int8 from ONNX Runtime's quantizer (QDQ, per-channel weights, and again
#     with reduce_range: seven-bit weights, which edgekd's AVX2 kernel runs without its sign trick);
#   - edgekd's own students, exported by `edgekd export` (f32 and int8 QOperator): mlp:64 and
#     cnn:lenet5-half on MNIST, resnet:8 and mobilenetv2:0.25 on Fashion-MNIST shapes.
# Each network is rebuilt in Keras with the ONNX file's weights, checked against it, converted
# to float32 and full-integer int8 TFLite and timed in LiteRT; `edgekd bench --backend auto,ort`
# times edgekd's default engine and ONNX Runtime on the ONNX files. The weights are trained
# for a moment only: latency does not depend on what they learned.
#
#   scripts/compare-runtimes.sh [OUT]        # default OUT: results/runtimes
#
# Needs network access to PyPI the first time: it makes two virtual environments under
# ${VENVS:-$HOME/.cache/edgekd-compare} (PyTorch and TensorFlow rarely share one).
# Prints a markdown table and writes OUT/comparison.json and OUT/comparison.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-results/runtimes}")
venvs=${VENVS:-$HOME/.cache/edgekd-compare}
mkdir -p "$out" "$venvs"

venv() {
    local dir="$venvs/$1"
    shift
    [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
    echo "$dir/bin/python"
}
torch_py=$(venv torch torch torchvision onnx onnxscript "onnxruntime>=1.31" numpy)
tf_py=$(venv tf tensorflow-cpu ai-edge-litert onnx "onnxruntime>=1.31" numpy)

# The ort backend loads the very ONNX Runtime the comparison imports.
ORT_DYLIB_PATH=$("$tf_py" -c "import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*')))[0])")
export ORT_DYLIB_PATH
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin edgekd --features edgekd-runtime/ort
edgekd="$target/release/edgekd"

# Full datasets when they sit beside the checkout, else the shipped MNIST subset (digits only:
# the Fashion-MNIST students then train on digits, which changes nothing about their speed).
mnist=../shared/data/mnist
[ -d "$mnist" ] || mnist=data/mnist-subset
fashion=../shared/data/fashion-mnist
[ -d "$fashion" ] || fashion=$mnist

work="$out/models"
mkdir -p "$work"
student() { # NAME SPEC DATA [train flags...]
    local name=$1 spec=$2 data=$3
    shift 3
    if [ ! -f "$work/$name/$name.int8-qop-percentile.onnx" ]; then
        "$edgekd" train -m "$spec" -o "$work/ck/$name" --data "$data" --train-limit 2000 \
            --epochs 1 --quiet "$@" >&2
        # Near-chance weights (one short epoch) may lose more than export's default 0.5 pp
        # in int8; latency does not depend on it, so any accuracy is kept.
        "$edgekd" export "$work/ck/$name" --format f32,int8 --int8-format qoperator \
            --data "$data" --out "$work/$name" --max-accuracy-drop 100 >&2
    fi
    echo "$name=$work/$name/$name.f32.onnx,$work/$name/$name.int8-qop-percentile.onnx"
}
pairs=()
for m in resnet20 mobilenetv2-0.5; do
    pairs+=("$m=$work/torch-$m.f32.onnx,$work/torch-$m.int8-ort-qdq.onnx,$work/torch-$m.int8-ort-qdq-7bit.onnx")
done
[ -f "$work/torch-mobilenetv2-0.5.int8-ort-qdq-7bit.onnx" ] || "$torch_py" scripts/compare_runtimes.py torch-models "$work"
pairs+=("$(student mlp64 mlp:64 "$mnist")")
pairs+=("$(student lenet5-half cnn:lenet5-half "$mnist")")
pairs+=("$(student resnet8 resnet:8 "$fashion" --optimizer sgd --lr 0.05)")
pairs+=("$(student mobilenetv2-0.25 mobilenetv2:0.25 "$fashion" --optimizer sgd --lr 0.05)")

# TensorFlow's converter logs at length; the log keeps it, the table is printed at the end.
"$tf_py" scripts/compare_runtimes.py compare "$edgekd" "$out" "${pairs[@]}" >"$out/compare.log" 2>&1 || {
    tail -30 "$out/compare.log" >&2
    exit 1
}
cat "$out/comparison.md"
