"""Checks one ONNX file the way a strict consumer would, for `edgekd export --onnxruntime`.

Usage: onnxruntime_check.py MODEL INPUTS.f32 SHAPE OUT.f32 LATENCY_SECONDS

INPUTS.f32 holds row-major little-endian float32 values of shape SHAPE (comma-separated,
batch first). Runs onnx.checker with full_check, checks the opset imports, runs the model in
ONNX Runtime (CPU, one thread, all graph optimizations) in batches of 500, writes the first
output as float32 to OUT.f32, times batch 1 for LATENCY_SECONDS, and prints a JSON report.
"""
import json
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def main():
    model_path, inputs_path, shape, out_path, budget = sys.argv[1:6]
    shape = [int(d) for d in shape.split(",")]
    budget = float(budget)
    report = {"onnx": onnx.__version__, "onnxruntime": ort.__version__}

    model = onnx.load(model_path)
    try:
        onnx.checker.check_model(model, full_check=True)
        report["checker"] = "ok"
    except Exception as e:  # the checker raises several exception types
        report["checker"] = f"{type(e).__name__}: {e}"
    report["opset_imports"] = [[o.domain, o.version] for o in model.opset_import]
    report["op_domains"] = sorted({n.domain for n in model.graph.node})
    report["metadata"] = {p.key: p.value for p in model.metadata_props}

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    x = np.fromfile(inputs_path, dtype="<f4").reshape(shape).astype(dtype)
    outs = [session.run(None, {inp.name: x[i:i + 500]})[0] for i in range(0, len(x), 500)]
    np.concatenate(outs).astype("<f4").tofile(out_path)

    one = x[:1]
    for _ in range(20):
        session.run(None, {inp.name: one})
    times = []
    start = time.perf_counter()
    while len(times) < 10 or (time.perf_counter() - start < budget and len(times) < 10000):
        t = time.perf_counter()
        session.run(None, {inp.name: one})
        times.append(time.perf_counter() - t)
    report["latency_seconds"] = times if budget > 0 else []
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
