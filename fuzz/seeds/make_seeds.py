"""Writes the fuzzers' seed corpora: small IDX files (raw and gzipped) and small ONNX graphs
covering the native engine's operator families, and images. Run with a Python that has `onnx`
and Pillow (e.g. ~/.cache/edgekd-venv/bin/python fuzz/seeds/make_seeds.py) from the repository root."""
import gzip
import struct
from pathlib import Path

import onnx
from onnx import TensorProto, helper, numpy_helper
import numpy as np

root = Path(__file__).parent

# IDX: 3 images of 4x4 u8, 3 labels, an f32 vector; each raw and gzipped.
images = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 3, 4, 4) + bytes(range(48))
labels = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3) + bytes([7, 2, 1])
floats = bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 2) + struct.pack(">ff", 1.5, -2.0)
for name, data in [("images", images), ("labels", labels), ("floats", floats)]:
    (root / "idx" / f"{name}.idx").write_bytes(data)
    (root / "idx" / f"{name}.idx.gz").write_bytes(gzip.compress(data, mtime=0))

rng = np.random.default_rng(0)


def save(name, nodes, inits, x_shape, x_type=TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", x_type, x_shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    (root / "model" / f"{name}.onnx").write_bytes(model.SerializeToString())


w = rng.standard_normal((6, 4)).astype(np.float32)
b = rng.standard_normal(4).astype(np.float32)
save("dense_relu", [helper.make_node("MatMul", ["x", "w"], ["h"]),
                    helper.make_node("Add", ["h", "b"], ["a"]),
                    helper.make_node("Relu", ["a"], ["out"])], {"w": w, "b": b}, ["N", 6])
save("gemm", [helper.make_node("Gemm", ["x", "w", "b"], ["out"], transB=1, alpha=0.5)],
     {"w": w.T.copy(), "b": b}, ["N", 6])
wc = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
save("conv_pool", [helper.make_node("Conv", ["x", "wc"], ["c"], pads=[1, 1, 1, 1]),
                   helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                   helper.make_node("Flatten", ["p"], ["out"])], {"wc": wc}, ["N", 1, 4, 4])
wq = rng.integers(-127, 128, (6, 4)).astype(np.int8)
save("matmul_integer", [
    helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
    helper.make_node("MatMulInteger", ["xq", "wq", "xz"], ["acc"]),
    helper.make_node("Cast", ["acc"], ["f"], to=TensorProto.FLOAT),
    helper.make_node("Mul", ["f", "xs"], ["out"])], {"wq": wq}, ["N", 6])
wcq = rng.integers(-127, 128, (2, 1, 3, 3)).astype(np.int8)
save("qdq_conv", [
    helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
    helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
    helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"], axis=0),
    helper.make_node("Conv", ["xd", "wd"], ["c"], strides=[2, 2]),
    helper.make_node("Relu", ["c"], ["out"])],
    {"s": np.array(0.05, np.float32), "z": np.array(128, np.uint8), "wq": wcq,
     "ws": np.array([0.01, 0.02], np.float32)}, ["N", 1, 5, 5])
save("f16_storage", [helper.make_node("Cast", ["wh"], ["w32"], to=TensorProto.FLOAT),
                     helper.make_node("MatMul", ["x", "w32"], ["h"]),
                     helper.make_node("Softmax", ["h"], ["out"], axis=-1)],
     {"wh": w.astype(np.float16)}, ["N", 6])

# Declared far beyond their data, for the load limits: 10^12 elements, and a product that
# overflows 64 bits (the engines must refuse both before allocating).
for name, dims in [("limit-trillion", [1_000_000, 1_000_000]), ("limit-overflow", [1 << 40, 1 << 40])]:
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims, raw_data=bytes(16))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["out"])],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    (root / "model" / f"{name}.onnx").write_bytes(model.SerializeToString())

# Images for the `image` target: a leading byte picks grayscale/RGB and the output size
# (see fuzz_targets/image.rs), then the file. PNG in each colour type, JPEG baseline and
# progressive. Needs Pillow.
from io import BytesIO

from PIL import Image

(root / "image").mkdir(exist_ok=True)
pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
rgb = Image.fromarray(pixels, "RGB")
variants = {
    "gray.png": (rgb.convert("L"), "PNG", {}),
    "rgb.png": (rgb, "PNG", {}),
    "rgba.png": (rgb.convert("RGBA"), "PNG", {}),
    "palette.png": (rgb.convert("P"), "PNG", {}),
    "gray16.png": (rgb.convert("I;16"), "PNG", {}),
    "interlaced.png": (rgb, "PNG", {"interlace": 1}),
    "rgb.jpg": (rgb, "JPEG", {"quality": 80}),
    "gray.jpg": (rgb.convert("L"), "JPEG", {}),
    "progressive.jpg": (rgb, "JPEG", {"progressive": True}),
}
for i, (name, (img, fmt, opts)) in enumerate(variants.items()):
    out = BytesIO()
    img.save(out, fmt, **opts)
    (root / "image" / name).write_bytes(bytes([i * 29 % 256]) + out.getvalue())
print("seeds written under", root)
