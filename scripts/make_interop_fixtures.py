#!/usr/bin/env python3
"""ONNX files as other tools write them, for runtime/tests/interop.rs.

Every engine must run what users bring: files from PyPI's exporters and quantizers, with
their symbolic batch dimensions, `value_info`, opsets and operator patterns. The models are
small with random weights (operator coverage, not accuracy); batch norms get random running
statistics so that folding them matters. For each file the script also stores ONNX Runtime's
outputs for a fixed batch of 7 inputs, which the tests compare every engine against.

    python scripts/make_interop_fixtures.py            # torch, onnxscript, onnxruntime, skl2onnx
    python scripts/make_interop_fixtures.py --tf       # also tf2onnx (needs tensorflow-cpu, tf2onnx)

Writes runtime/tests/fixtures/interop/*.onnx and expected.json.
"""

import argparse
import json
import pathlib
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

OUT = pathlib.Path(__file__).resolve().parent.parent / "runtime" / "tests" / "fixtures" / "interop"
BATCH = 7


def inputs(shape, batch=BATCH):
    """The test input: ((i * 7919) mod 255) / 127.5 - 1 over the flattened batch, exactly
    representable, so Rust rebuilds the same values."""
    n = batch * int(np.prod(shape))
    i = np.arange(n, dtype=np.int64)
    return (((i * 7919) % 255).astype(np.float32) / np.float32(127.5) - np.float32(1.0)).reshape(batch, *shape)


def torch_models():
    import torch
    from torch import nn

    torch.manual_seed(0)

    def bn(c):
        b = nn.BatchNorm2d(c)
        with torch.no_grad():
            b.running_mean.uniform_(-0.5, 0.5)
            b.running_var.uniform_(0.5, 2.0)
            b.weight.uniform_(0.5, 1.5)
            b.bias.uniform_(-0.3, 0.3)
        return b

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), bn(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), bn(8), nn.ReLU())
            self.blocks = nn.Sequential(Basic(8, 8, 1), Basic(8, 16, 2))
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    class Inverted(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            h = cin * expand
            self.body = nn.Sequential(
                nn.Conv2d(cin, h, 1, bias=False), bn(h), nn.ReLU6(),
                nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), bn(h), nn.ReLU6(),
                nn.Conv2d(h, cout, 1, bias=False), bn(cout),
            )
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    class MobileNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), bn(8), nn.ReLU6())
            self.blocks = nn.Sequential(Inverted(8, 8, 1, 1), Inverted(8, 12, 2, 4), Inverted(12, 12, 1, 4))
            self.head = nn.Sequential(nn.Conv2d(12, 32, 1, bias=False), bn(32), nn.ReLU6())
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = self.head(self.blocks(self.stem(x)))
            return self.fc(x.mean((2, 3)))

    class Mlp(nn.Module):
        """Written with matmul rather than nn.Linear: exported as MatMul + Add, which ONNX
        Runtime's QOperator quantizer turns into QLinearMatMul (Gemm would become its
        com.microsoft.QGemm)."""

        def __init__(self):
            super().__init__()
            self.w1, self.b1 = nn.Parameter(torch.randn(64, 48) * 0.2), nn.Parameter(torch.randn(48) * 0.1)
            self.w2, self.b2 = nn.Parameter(torch.randn(48, 10) * 0.2), nn.Parameter(torch.randn(10) * 0.1)

        def forward(self, x):
            x = torch.relu(torch.flatten(x, 1) @ self.w1 + self.b1)
            return x @ self.w2 + self.b2

    return torch, {
        "resnet": (ResNet().eval(), (3, 16, 16)),
        "mobilenet": (MobileNet().eval(), (3, 16, 16)),
        "mlp": (Mlp().eval(), (1, 8, 8)),
    }


def export_torch(files):
    torch, models = torch_models()
    for name, (model, shape) in models.items():
        x = torch.from_numpy(inputs(shape, 2))
        path = OUT / f"torch-{name}-torchscript.onnx"
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=13,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
        files[path.name] = shape
        if name == "mlp":
            continue
        path = OUT / f"torch-{name}-dynamo.onnx"
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.onnx.export(
            model, (x,), dynamo=True, input_names=["input"], output_names=["logits"],
            dynamic_shapes={"x": {0: batch}},
        )
        program.save(str(path))
        files[path.name] = shape


class Reader:
    """Calibration batches for quantize_static."""

    def __init__(self, name, shape):
        rng = np.random.default_rng(1)
        self.batches = iter([{name: rng.uniform(-1, 1, (4, *shape)).astype(np.float32)} for _ in range(8)])

    def get_next(self):
        return next(self.batches, None)


def quantize_ort(files):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class R(Reader, CalibrationDataReader):
        pass

    tmp = pathlib.Path(tempfile.mkdtemp())
    jobs = [
        # (source, output, format, activations, weights, per channel, reduce range)
        ("resnet", "ort-resnet-qdq-u8s8-perchannel.onnx", QuantFormat.QDQ, QuantType.QUInt8, QuantType.QInt8, True, False),
        ("resnet", "ort-resnet-qdq-s8s8.onnx", QuantFormat.QDQ, QuantType.QInt8, QuantType.QInt8, False, False),
        # Seven-bit weights, as ONNX Runtime advises for CPUs without VNNI.
        ("resnet", "ort-resnet-qdq-u8s8-7bit.onnx", QuantFormat.QDQ, QuantType.QUInt8, QuantType.QInt8, True, True),
        ("mobilenet", "ort-mobilenet-qdq-u8s8-perchannel.onnx", QuantFormat.QDQ, QuantType.QUInt8, QuantType.QInt8, True, False),
        ("mlp", "ort-mlp-qoperator-u8s8.onnx", QuantFormat.QOperator, QuantType.QUInt8, QuantType.QInt8, False, False),
    ]
    for source, out, fmt, act, weight, per_channel, reduce_range in jobs:
        src = OUT / f"torch-{source}-torchscript.onnx"
        pre = tmp / f"{source}-pre.onnx"
        # quant_pre_process would fuse MatMul + Add into a Gemm, which QOperator cannot take.
        if fmt == QuantFormat.QOperator:
            pre = src
        else:
            quant_pre_process(str(src), str(pre))
        shape = files[src.name]
        # QOperator's Add is com.microsoft.QLinearAdd: only the MatMuls are quantized there.
        ops = ["MatMul"] if fmt == QuantFormat.QOperator else None
        quantize_static(
            str(pre), str(OUT / out), R("input", shape), quant_format=fmt,
            activation_type=act, weight_type=weight, per_channel=per_channel,
            op_types_to_quantize=ops, reduce_range=reduce_range,
        )
        files[out] = shape
    for source in ["mlp", "resnet"]:
        src = OUT / f"torch-{source}-torchscript.onnx"
        out = f"ort-{source}-dynamic.onnx"
        quantize_dynamic(str(src), str(OUT / out), weight_type=QuantType.QInt8)
        files[out] = files[src.name]


def export_sklearn(files):
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (200, 64)).astype(np.float32)
    y = (x[:, :8].sum(1) > 0).astype(np.int64) + 2 * (x[:, 8:16].sum(1) > 0)
    clf = MLPClassifier((32,), max_iter=200, random_state=0).fit(x, y)
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=15)
    # A symbolic batch, as skl2onnx writes it, over a 1x8x8 "image".
    path = OUT / "sklearn-mlp.onnx"
    path.write_bytes(onx.SerializeToString())
    files[path.name] = (64,)


def export_tf(files):
    import tensorflow as tf
    import tf2onnx

    tf.random.set_seed(3)
    inp = tf.keras.Input((16, 16, 3), name="input")
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = tf.keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = tf.keras.layers.BatchNormalization()(x, training=False)
    x = tf.keras.layers.ReLU(6.0)(x)
    x = tf.keras.layers.Conv2D(16, 1)(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    out = tf.keras.layers.Dense(10)(x)
    model = tf.keras.Model(inp, out)
    spec = (tf.TensorSpec((None, 16, 16, 3), tf.float32, name="input"),)
    onx, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=15)
    path = OUT / "tf2onnx-cnn-nhwc.onnx"
    path.write_bytes(onx.SerializeToString())
    files[path.name] = (16, 16, 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf", action="store_true", help="also export a Keras model with tf2onnx")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    expected_path = OUT / "expected.json"
    expected = json.loads(expected_path.read_text()) if expected_path.exists() else {}
    files = {}
    if args.tf:
        export_tf(files)
    else:
        export_torch(files)
        quantize_ort(files)
        export_sklearn(files)
    for name, shape in sorted(files.items()):
        model = onnx.load(str(OUT / name))
        onnx.checker.check_model(model)
        session = ort.InferenceSession(str(OUT / name), providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: inputs(shape)}
        outs = session.run(None, feed)
        ops = sorted({f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in model.graph.node})
        expected[name] = {
            "sample_shape": list(shape),
            "batch": BATCH,
            "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "operators": ops,
            "outputs": [
                {"name": o.name, "shape": list(v.shape), "values": np.asarray(v, dtype=np.float64).ravel().tolist()}
                for o, v in zip(session.get_outputs(), outs)
            ],
        }
        print(f"{name:45s} opset {expected[name]['opset']:2d}  {(OUT / name).stat().st_size:7d} bytes  {' '.join(ops)}")
    expected_path.write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
