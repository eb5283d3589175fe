#!/usr/bin/env python3
"""edgekd's engines beside ONNX Runtime and LiteRT (TFLite + XNNPACK) on the same networks.

Driven by scripts/compare-runtimes.sh. Two steps, because PyTorch and TensorFlow rarely share
a virtual environment:

  compare_runtimes.py torch-models OUT      (needs torch, onnx, onnxruntime)
      PyTorch's CIFAR ResNet-20 and MobileNetV2 x0.5 (3x32x32, random weights, random batch
      norm statistics): f32 ONNX from torch.onnx.export with a dynamic batch, and int8 from
      ONNX Runtime's quantizer (quant_pre_process + quantize_static, QDQ, u8 activations, s8
      per-channel weights), the way users make them; and a second int8 file with
      `reduce_range` (seven-bit weights, what ONNX Runtime advises for CPUs without VNNI).

  compare_runtimes.py compare EDGEKD OUT PAIR... (needs tensorflow, ai-edge-litert, onnxruntime)
      Each PAIR is `NAME=F32.onnx,INT8.onnx[,INT8-7BIT.onnx]`. The f32 file's architecture is rebuilt in Keras
      with its very weights (copied from the ONNX initializers; the script checks the Keras
      model gives the ONNX model's outputs), converted to float32 and to full-integer int8
      TFLite (per-channel weights, calibrated on random inputs), and timed in LiteRT's
      interpreter (XNNPACK, one thread) at batch 1 and 64, in the same run as
      `edgekd bench --backend auto,ort` on the ONNX files. Prints one table of mean latencies
      and edgekd's ratio to the best of the others.
"""

import json
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np

BATCHES = (1, 64)


# --- step 1: PyTorch models ------------------------------------------------------------------


def torch_models(out):
    import torch
    from torch import nn
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    torch.manual_seed(0)

    def bn(c):
        b = nn.BatchNorm2d(c)
        with torch.no_grad():
            b.running_mean.uniform_(-0.2, 0.2)
            b.running_var.uniform_(0.5, 1.5)
        return b

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), bn(cout)
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

        def forward(self, x):
            y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
            return torch.relu(y + (x if self.short is None else self.short(x)))

    class ResNet20(nn.Module):
        """He et al. 2016, section 4.2: 3 stages of 3 basic blocks, 16/32/64 channels."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), bn(16), nn.ReLU())
            blocks, cin = [], 16
            for cout, stride in [(16, 1), (32, 2), (64, 2)]:
                for i in range(3):
                    blocks.append(Basic(cin, cout, stride if i == 0 else 1))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def mobilenet():
        import torchvision

        # The CIFAR adaptation: stride 1 in the stem and in the second stage (32x32 inputs).
        m = torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10)
        m.features[0][0].stride = (1, 1)
        m.features[2].conv[1][0].stride = (1, 1)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                with torch.no_grad():
                    mod.running_mean.uniform_(-0.2, 0.2)
                    mod.running_var.uniform_(0.5, 1.5)
        return m

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.it = iter([{"input": rng.standard_normal((8, 3, 32, 32)).astype(np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.it, None)

    try:
        models = {"resnet20": ResNet20(), "mobilenetv2-0.5": mobilenet()}
    except ImportError:
        print("torchvision is not installed: MobileNetV2 is left out", file=sys.stderr)
        models = {"resnet20": ResNet20()}
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        model.eval()
        f32 = out / f"torch-{name}.f32.onnx"
        torch.onnx.export(
            model, (torch.randn(1, 3, 32, 32),), str(f32), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
        pre = out / f"torch-{name}.pre.onnx"
        quant_pre_process(str(f32), str(pre))
        int8 = {}
        for suffix, reduce_range in [("", False), ("-7bit", True)]:
            int8[suffix] = out / f"torch-{name}.int8-ort-qdq{suffix}.onnx"
            quantize_static(
                str(pre), str(int8[suffix]), Reader(), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                reduce_range=reduce_range,
            )
        pre.unlink()
        print(f"{name}={f32},{int8['']},{int8['-7bit']}")


# --- step 2: Keras twins, LiteRT and edgekd ---------------------------------------------------


def keras_from_onnx(path):
    """The Keras model computing what the f32 ONNX graph does (NHWC inside), its input shape
    in ONNX order without the batch, and the ONNX model."""
    import onnx
    import tensorflow as tf
    from onnx import numpy_helper

    layers = tf.keras.layers
    model = onnx.load(str(path))
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    inits = set(consts)
    inp = next(i for i in g.input if i.name not in inits)
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
    image = len(dims) == 3
    x = tf.keras.Input((dims[1], dims[2], dims[0]) if image else tuple(dims), name="input")
    env = {inp.name: x}
    readers = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1

    def attr(n, name, default=None):
        for a in n.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    pending_bias = {}
    for n in g.node:
        op, ins = n.op_type, n.input
        if op == "Constant":
            continue
        if op in ("Conv",):
            w = consts[ins[1]]
            o, cg, kh, kw = w.shape
            b = consts[ins[2]] if len(ins) > 2 and ins[2] else None
            group = attr(n, "group", 1)
            strides = tuple(attr(n, "strides", [1, 1]))
            pads = attr(n, "pads", [0, 0, 0, 0])
            t = env[ins[0]]
            same = strides == (1, 1) and pads == [kh // 2, kw // 2, kh // 2, kw // 2]
            if not same and any(pads):
                t = layers.ZeroPadding2D(((pads[0], pads[2]), (pads[1], pads[3])))(t)
            padding = "same" if same else "valid"
            if group == 1:
                layer = layers.Conv2D(o, (kh, kw), strides, padding, use_bias=b is not None)
                y = layer(t)
                layer.set_weights([w.transpose(2, 3, 1, 0)] + ([b] if b is not None else []))
            elif cg == 1 and group == o:
                layer = layers.DepthwiseConv2D((kh, kw), strides, padding, use_bias=b is not None)
                y = layer(t)
                layer.set_weights([w.transpose(2, 3, 0, 1)] + ([b] if b is not None else []))
            else:
                raise SystemExit(f"{path}: grouped convolution with {group} groups")
            env[n.output[0]] = y
        elif op in ("Gemm", "MatMul"):
            w = consts[ins[1]]
            if op == "Gemm" and attr(n, "transB", 0):
                w = w.T
            b = consts[ins[2]] if op == "Gemm" and len(ins) > 2 and ins[2] else None
            layer = layers.Dense(w.shape[1], use_bias=True)
            y = layer(env[ins[0]])
            layer.set_weights([w, b if b is not None else np.zeros(w.shape[1], np.float32)])
            env[n.output[0]] = y
            if op == "MatMul":
                pending_bias[n.output[0]] = layer
        elif op == "Add" and any(i in consts for i in ins):
            src = next(i for i in ins if i not in consts)
            c = consts[next(i for i in ins if i in consts)]
            layer = pending_bias.get(src)
            if layer is None or readers.get(src) != 1:
                raise SystemExit(f"{path}: Add of a constant not after a MatMul")
            w, _ = layer.get_weights()
            layer.set_weights([w, np.broadcast_to(c, (w.shape[1],)).astype(np.float32)])
            env[n.output[0]] = env[src]
        elif op == "Add":
            env[n.output[0]] = layers.Add()([env[ins[0]], env[ins[1]]])
        elif op == "Relu":
            env[n.output[0]] = layers.ReLU()(env[ins[0]])
        elif op == "Clip":
            lo = float(consts[ins[1]]) if len(ins) > 1 and ins[1] else attr(n, "min", -np.inf)
            hi = float(consts[ins[2]]) if len(ins) > 2 and ins[2] else attr(n, "max", np.inf)
            if lo != 0.0:
                raise SystemExit(f"{path}: Clip from {lo}")
            env[n.output[0]] = layers.ReLU(max_value=hi)(env[ins[0]])
        elif op in ("GlobalAveragePool", "ReduceMean"):
            env[n.output[0]] = layers.GlobalAveragePooling2D(keepdims=op == "GlobalAveragePool" or attr(n, "keepdims", 1) == 1)(env[ins[0]])
        elif op == "MaxPool":
            k, s = attr(n, "kernel_shape"), attr(n, "strides", [1, 1])
            if any(attr(n, "pads", [0, 0, 0, 0])):
                raise SystemExit(f"{path}: padded MaxPool")
            env[n.output[0]] = layers.MaxPooling2D(tuple(k), tuple(s))(env[ins[0]])
        elif op in ("Flatten", "Reshape"):
            t = env[ins[0]]
            if len(t.shape) == 4 and t.shape[1] * t.shape[2] > 1:
                # ONNX flattens channel-major: channels before rows and columns.
                t = layers.Permute((3, 1, 2))(t)
            env[n.output[0]] = layers.Flatten()(t)
        else:
            raise SystemExit(f"{path}: no Keras twin for {op}")
    out = env[g.output[0].name]
    return tf.keras.Model(x, out), dims, model


def check_twin(keras_model, dims, onnx_path):
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((2, *dims)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path))
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    kx = x.transpose(0, 2, 3, 1) if len(dims) == 3 else x
    got = keras_model(kx).numpy()
    return float(np.abs(got - want).max()), float(np.abs(want).max())


def tflite_models(keras_model, dims):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    f32 = conv.convert()
    rng = np.random.default_rng(1)
    shape = (1, dims[1], dims[2], dims[0]) if len(dims) == 3 else (1, *dims)

    def representative():
        for _ in range(64):
            yield [rng.standard_normal(shape).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # Float input and output, as the ONNX files take and give: the (de)quantization is part
    # of the measured work on both sides.
    return f32, conv.convert()


def time_litert(content, dims, batch, seconds=1.0):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=1)
    i = it.get_input_details()[0]["index"]
    shape = [batch, dims[1], dims[2], dims[0]] if len(dims) == 3 else [batch, *dims]
    it.resize_tensor_input(i, shape)
    it.allocate_tensors()
    it.set_tensor(i, np.random.default_rng(2).standard_normal(shape).astype(np.float32))
    for _ in range(5):
        it.invoke()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 10:
        t = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t)
    return float(np.mean(times)), float(np.min(times))


def fmt(s):
    return f"{s * 1e6:,.0f} µs" if s < 1e-2 else f"{s * 1e3:,.1f} ms"


def cpu_model():
    """The CPU's name, with family and model where a virtual machine hides the rest (AMD
    family 25 model 1 is Zen 3, family 26 Zen 5)."""
    fields = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    name = fields.get("model name", platform.machine())
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


def ort_version():
    import onnxruntime

    return onnxruntime.__version__


def compare(edgekd, out, pairs):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    isa = "?"
    for pair in pairs:
        name, files = pair.split("=", 1)
        f32, int8, *int8_7bit = [pathlib.Path(f) for f in files.split(",")]
        keras_model, dims, _ = keras_from_onnx(f32)
        diff, scale = check_twin(keras_model, dims, f32)
        print(f"{name}: Keras twin of {f32.name} within {diff:.2e} of its outputs (max |logit| {scale:.2f})", file=sys.stderr)
        lite_f32, lite_int8 = tflite_models(keras_model, dims)
        (out / f"{name}.f32.tflite").write_bytes(lite_f32)
        (out / f"{name}.int8.tflite").write_bytes(lite_int8)
        report = out / f"{name}.bench.json"
        subprocess.run(
            [edgekd, "bench", "--teacher", str(f32), "--student", ",".join(map(str, [int8, *int8_7bit])), "--backend", "auto,ort",
             "--batch", ",".join(map(str, BATCHES)), "--time", "1", "--no-memory", "--json", str(report)],
            check=True, stdout=subprocess.DEVNULL,
        )
        bench = json.loads(report.read_text())
        ms = bench["measurements"]
        isa = (bench.get("platform") or {}).get("isa", isa)
        # LiteRT has no seven-bit variant: its int8 file stands beside both ONNX ones.
        variants = [("f32", f32, lite_f32), ("int8", int8, lite_int8)]
        variants += [("int8, 7-bit weights", path, lite_int8) for path in int8_7bit]
        # Each LiteRT file is timed once per batch, however many rows it stands beside.
        lite_times = {}
        for fmt_name, path, lite in variants:
            for batch in BATCHES:
                pick = lambda b: next(m for m in ms if pathlib.Path(m["path"]).name == path.name and m["backend"] == b and m["batch"] == batch)
                ours, ort_ = pick("auto"), pick("ort")
                if (id(lite), batch) not in lite_times:
                    lite_times[id(lite), batch] = time_litert(lite, dims, batch)
                lite_mean, lite_min = lite_times[id(lite), batch]
                best = min(ort_["latency"]["mean"], lite_mean)
                rows.append({
                    "model": name, "format": fmt_name, "batch": batch, "edgekd_engine": ours["engine"],
                    "edgekd": ours["latency"]["mean"], "edgekd_min": ours["latency"]["min"],
                    "ort": ort_["latency"]["mean"], "ort_min": ort_["latency"]["min"],
                    "litert": lite_mean, "litert_min": lite_min, "ratio": ours["latency"]["mean"] / best,
                })
    # The machines under these tables keep changing: each table names its own.
    table = [
        f"One thread, mean latency; {cpu_model()}, edgekd's kernels: {isa}; "
        f"ONNX Runtime {ort_version()}.",
        "",
        "| model | format | batch | edgekd (engine) | ONNX Runtime | LiteRT (XNNPACK) | edgekd / best |",
        "|---|---|---|---|---|---|---|",
    ] + [
        f"| {r['model']} | {r['format']} | {r['batch']} | {fmt(r['edgekd'])} ({r['edgekd_engine']}) | "
        f"{fmt(r['ort'])} | {fmt(r['litert'])} | {r['ratio']:.2f}x |"
        for r in rows
    ]
    (out / "comparison.md").write_text("\n".join(table) + "\n")
    (out / "comparison.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "torch-models":
        torch_models(sys.argv[2])
    elif len(sys.argv) >= 5 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        raise SystemExit(__doc__)
