#!/usr/bin/env bash
# Writes fuzz/seeds/checkpoint/: small checkpoints made by `edgekd train`, each packed the way
# the `checkpoint` target reads them (2-byte little-endian length of model.toml, model.toml,
# model.safetensors). Run from anywhere; builds the CLI in release.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=fuzz/seeds/checkpoint
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo build --release -q
bin="${CARGO_TARGET_DIR:-target}/release/edgekd"
for spec in mlp:4 mlp:3-5 cnn:c2-f8 cnn:c2-c3-f6; do
    "$bin" train --model "$spec" --dropout 0.1 --train-limit 64 --epochs 1 --batch-size 32 \
        -q --out "$tmp/m" >/dev/null
    python3 - "$tmp/m" "$out/${spec//[:]/-}.ckpt" <<'PY'
import struct, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
spec = (src / "model.toml").read_bytes()
dst.write_bytes(struct.pack("<H", len(spec)) + spec + (src / "model.safetensors").read_bytes())
PY
    rm -rf "$tmp/m"
done
echo "checkpoint seeds written under $out"
