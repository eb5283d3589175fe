//! The export pipeline through its library API, on the shipped MNIST subset.

use std::path::Path;

use candle_core::Device;
use edgekd_distill::{checkpoint, Model, ModelSpec, Splits};
use edgekd_export::{export, Activations, Encoding, ExportOptions, Method, Variant};

fn subset() -> Splits {
    let mut s =
        Splits::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-subset")).unwrap();
    s.train = s.train.take(300);
    s.test = s.test.take(300);
    s
}

fn options(max_accuracy_drop: f64) -> ExportOptions {
    ExportOptions {
        variants: vec![
            Variant::F32,
            Variant::Int8 {
                encoding: Encoding::QOperator,
                activations: Activations::Static(Method::MinMax),
            },
        ],
        calibration_samples: 100,
        max_accuracy_drop,
        latency_budget: 0.0,
        stem: "m".into(),
    }
}

/// A fresh (untrained) model of `spec` saved as a checkpoint in `dir/ck`.
fn checkpoint_of(dir: &Path, spec: &str, seed: u64) -> std::path::PathBuf {
    let ck = dir.join("ck");
    let model = Model::new(&ModelSpec::parse(spec).unwrap(), seed, &Device::Cpu).unwrap();
    checkpoint::save_model(&ck, &model).unwrap();
    ck
}

#[test]
fn files_failing_the_accuracy_check_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint_of(dir.path(), "mlp:16", 3);
    let out = dir.path().join("onnx");
    // A negative allowance rejects everything, even the lossless f32 file.
    let report = export(&ck, &subset(), &out, &options(-1.0), &mut |_: &str| {}).unwrap();
    assert_eq!(report.rejected().len(), 2);
    let onnx: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".onnx"))
        .collect();
    assert!(onnx.is_empty(), "{onnx:?}");
    // The same export with the default allowance writes both, and nothing else but the report.
    let report = export(&ck, &subset(), &out, &options(0.5), &mut |_: &str| {}).unwrap();
    assert!(report.rejected().is_empty());
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["m.export.json", "m.f32.onnx", "m.int8-qop-minmax.onnx"]
    );
}

#[test]
fn exported_files_carry_their_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint_of(dir.path(), "cnn:c2-f8", 1);
    let out = dir.path().join("onnx");
    export(&ck, &subset(), &out, &options(100.0), &mut |_: &str| {}).unwrap();
    let m = edgekd_runtime::Model::load(&out.join("m.int8-qop-minmax.onnx")).unwrap();
    let info = m.info();
    assert_eq!((info.opset, info.ir_version), (13, 7));
    assert_eq!(info.inputs[0].name, "input");
    assert_eq!(info.inputs[0].shape_text(), "[N, 1, 28, 28]");
    assert_eq!(info.outputs[0].name, "logits");
    assert_eq!(info.outputs[0].shape_text(), "[N, 10]");
    let meta = &info.metadata;
    assert_eq!(meta["edgekd.model"], "cnn:c2-f8");
    assert_eq!(meta["edgekd.format"], "int8-qop-minmax");
    assert_eq!(meta["edgekd.input.layout"], "NCHW");
    assert_eq!(
        meta["edgekd.classes"],
        r#"["0","1","2","3","4","5","6","7","8","9"]"#
    );
    let q: serde_json::Value = serde_json::from_str(&meta["edgekd.quantization"]).unwrap();
    assert_eq!(q["calibration"], "minmax");
    assert_eq!(q["calibration_samples"], 100);
    let norm: serde_json::Value =
        serde_json::from_str(&meta["edgekd.input.normalization"]).unwrap();
    assert!((norm["mean"].as_f64().unwrap() - 0.1307).abs() < 1e-6);
    // The recorded hash is the weights file's.
    use sha2::Digest;
    let sum = sha2::Sha256::digest(std::fs::read(ck.join("model.safetensors")).unwrap());
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(meta["edgekd.source.weights_sha256"], hex);
    // Dynamic batch: the same file runs at batch 1 and batch 3.
    let x = vec![0.5f32; 3 * 784];
    assert_eq!(m.logits(&x[..784], 1).unwrap().shape, [1, 10]);
    assert_eq!(m.logits(&x, 3).unwrap().shape, [3, 10]);
    // A wrong input length is a typed error naming both shapes.
    let err = m.logits(&x[..700], 1).unwrap_err().to_string();
    assert!(
        err.contains("[N, 1, 28, 28]") && err.contains("700"),
        "{err}"
    );
}
