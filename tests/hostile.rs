//! Every subcommand given a missing file, a directory instead of a file (or the reverse), a
//! file of the wrong format, or nonsense flag values: one clear line naming the problem, a
//! non-zero exit, no panic. And NaN/Inf in inputs, teacher outputs and training, reported
//! with where they came from instead of trained on.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use common::{edgekd, fails, quick_export, quick_train_on, stdout};
use edgekd_runtime::proto::{
    data_type, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};
use prost::Message;

/// The files the cases point at, in one temporary directory.
struct Fixtures {
    dir: tempfile::TempDir,
}

impl Fixtures {
    fn new() -> Fixtures {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::create_dir(p("a-directory")).unwrap();
        std::fs::write(p("garbage"), b"hello, I am not what you think\n").unwrap();
        std::fs::write(p("empty"), b"").unwrap();
        image::GrayImage::from_pixel(28, 28, image::Luma([40]))
            .save(p("digit.png"))
            .unwrap();
        stdout(&mut quick_train_on("mlp:8", &p("checkpoint"), 1, 64));
        stdout(&mut quick_export(
            &p("checkpoint"),
            &p("onnx"),
            "f32",
            "qdq",
        ));
        std::fs::copy(p("onnx/checkpoint.f32.onnx"), p("model.onnx")).unwrap();
        let onnx = std::fs::read(p("model.onnx")).unwrap();
        std::fs::write(p("truncated.onnx"), &onnx[..onnx.len() / 2]).unwrap();
        std::fs::write(p("trillion.onnx"), trillion_element_model()).unwrap();
        let nan: Vec<u8> = (0..784)
            .flat_map(|i| if i == 5 { f32::NAN } else { 0.0 }.to_le_bytes())
            .collect();
        std::fs::write(p("nan.f32"), nan).unwrap();
        std::fs::write(p("short.f32"), [0u8; 6]).unwrap();
        std::fs::write(p("other.json"), br#"{"a": 1}"#).unwrap();
        std::fs::write(p("bad.toml"), "epochs = 3\nlr = \"fast\"\n").unwrap();
        std::fs::write(p("typo.toml"), "epoch = 3\n").unwrap();
        // An IDX header claiming 2^32 - 1 images of 2^32 - 1 x 2^32 - 1 bytes, and no data.
        let mut idx = vec![0, 0, 8, 3];
        for _ in 0..3 {
            idx.extend(u32::MAX.to_be_bytes());
        }
        std::fs::write(p("huge.idx"), idx).unwrap();
        // A test set whose images are a flat vector (rank 1), not [N, rows, cols].
        std::fs::create_dir(p("flat-test-set")).unwrap();
        let flat = [0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3, 4];
        std::fs::write(p("flat-test-set/t10k-images-idx3-ubyte"), flat).unwrap();
        std::fs::write(p("flat-test-set/t10k-labels-idx1-ubyte"), flat).unwrap();
        Fixtures { dir }
    }

    /// `@name` stands for the fixture `name`; anything else is passed as is.
    fn args(&self, args: &[&str]) -> Vec<OsString> {
        args.iter()
            .map(|a| match a.strip_prefix('@') {
                Some(name) => self.dir.path().join(name).into_os_string(),
                None => a.into(),
            })
            .collect()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A valid ONNX file of about 150 bytes whose one initializer declares 10^12 floats.
fn trillion_element_model() -> Vec<u8> {
    let value = |name: &str, n: i64| ValueInfoProto::float_tensor(name, &[Some(1), Some(n)]);
    ModelProto::opset13(GraphProto {
        node: vec![NodeProto {
            op_type: "MatMul".into(),
            input: vec!["x".into(), "w".into()],
            output: vec!["y".into()],
            ..Default::default()
        }],
        initializer: vec![TensorProto {
            name: "w".into(),
            dims: vec![1_000_000, 1_000_000],
            data_type: data_type::FLOAT,
            raw_data: vec![0; 16],
            ..Default::default()
        }],
        input: vec![value("x", 1_000_000)],
        output: vec![value("y", 1_000_000)],
        ..Default::default()
    })
    .encode_to_vec()
}

/// (arguments, a fragment the error line must hold).
#[rustfmt::skip]
const CASES: &[(&[&str], &str)] = &[
    // data
    (&["data", "verify", "--dir", "@missing"], "no such directory"),
    (&["data", "verify", "--dir", "@garbage"], "not a directory"),
    (&["data", "verify", "--dir", "@a-directory"], "missing"),
    (&["data", "info", "--dir", "@a-directory"], "no train-images-idx3-ubyte"),
    (&["data", "fetch", "mnist", "--dir", "@garbage"], "is a file, not a directory"),
    (&["data", "fetch", "cifar", "--dir", "@a-directory"], "invalid value 'cifar'"),
    (&["data", "subset", "--from", "@missing", "--out", "@x"], "no such directory"),
    (&["data", "subset", "--from", "@checkpoint", "--out", "@x"], "no train-images"),
    (&["data", "subset", "--from", "@a-directory", "--out", "@x", "--train", "-5"], "invalid value '-5'"),
    // train
    (&["train", "--model", "mlp:8", "--out", "@o", "--data", "@missing"], "no such directory"),
    (&["train", "--model", "mlp:8", "--out", "@o", "--data", "@garbage"], "not a directory"),
    (&["train", "--model", "mlp:8", "--out", "@o", "--config", "@missing"], "No such file"),
    (&["train", "--model", "mlp:8", "--out", "@o", "--config", "@a-directory"], "Is a directory"),
    (&["train", "--model", "mlp:8", "--out", "@o", "--config", "@garbage"], "line 1, column"),
    (&["train", "--model", "mlp:8", "--out", "@o", "--config", "@bad.toml"], "line 2, `lr`: invalid type: string \"fast\", expected f64"),
    (&["train", "--model", "mlp:8", "--out", "@o", "--config", "@typo.toml"], "line 1, `epoch`: unknown field `epoch`"),
    (&["train", "--model", "mlp:8", "--out", "@o", "--epochs", "many"], "invalid value 'many'"),
    (&["train", "--model", "mlp:8", "--out", "@o", "--epochs", "0"], "at least 1"),
    (&["train", "--model", "mlp:8", "--out", "@o", "--lr", "nan"], "optimizer settings"),
    (&["train", "--model", "mlp:8", "--out", "@o", "--dropout", "1.5"], "dropout"),
    (&["train", "--model", "mlp:8", "--out", "@o", "--train-limit", "0"], "--train-limit"),
    (&["train", "--model", "rnn:8", "--out", "@o"], "rnn:8"),
    (&["train", "--model", "mlp:99999999999999999999", "--out", "@o"], "99999999999999999999"),
    (&["train", "--model", "mlp:8", "--out", "@garbage", "--train-limit", "16", "--epochs", "1"], "is a file, not a directory"),
    // distill
    (&["distill", "--teacher", "@missing", "--student", "mlp:4", "--out", "@o"], "no such directory"),
    (&["distill", "--teacher", "@garbage", "--student", "mlp:4", "--out", "@o"], "not a valid ONNX model"),
    (&["distill", "--teacher", "@digit.png", "--student", "mlp:4", "--out", "@o"], "not a valid ONNX model"),
    (&["distill", "--teacher", "@truncated.onnx", "--student", "mlp:4", "--out", "@o"], "not a valid ONNX model"),
    (&["distill", "--teacher", "@trillion.onnx", "--student", "mlp:4", "--out", "@o"], "over the limit"),
    (&["distill", "--teacher", "@model.onnx", "--student", "mlp:4", "--out", "@o", "--teacher-outputs", "probs"], "pass --teacher-outputs logits"),
    (&["distill", "--teacher", "@model.onnx", "--student", "mlp:4", "--out", "@o", "--teacher-output", "nope"], "no output named `nope`"),
    (&["distill", "--teacher", "@model.onnx", "--student", "mlp:4", "--out", "@o", "--teacher-backend", "gpu"], "--teacher-backend"),
    (&["distill", "--teacher", "@model.onnx", "--student", "mlp:4", "--out", "@o", "--teacher-std", "0"], "std non-zero"),
    (&["distill", "--teacher", "@model.onnx", "--student", "self", "--out", "@o"], "an ONNX teacher does not give"),
    (&["distill", "--teacher", "@model.onnx", "--student", "mlp:4", "--out", "@o", "--hint-weight", "1"], "whose internals edgekd does not read"),
    (&["distill", "--teacher", "@model.onnx", "--student", "mlp:4", "--out", "@o", "--unlabeled", "@missing"], "no such directory"),
    (&["distill", "--teacher", "@model.onnx", "--student", "mlp:4", "--out", "@o", "--unlabeled", "@a-directory"], "holds no png/jpg/jpeg file"),
    (&["distill", "--teacher", "@model.onnx", "--student", "mlp:4", "--out", "@o", "--unlabeled", "@onnx", "--baseline"], "which --unlabeled images do not have"),
    (&["teacher-logits", "--teacher", "@missing"], "no such directory"),
    (&["train", "--model", "mlp:4", "--out", "@o", "--threads", "0"], "--threads must be at least 1"),
    (&["train", "--model", "mlp:4", "--out", "@o", "--normalize", "0.5"], "--normalize takes MEAN,STD"),
    (&["train", "--model", "mlp:4", "--out", "@o", "--normalize", "0.5,0"], "with a positive STD"),
    (&["train", "--model", "mlp:4", "--out", "@o", "--split-seed", "-1"], "invalid value '-1'"),
    (&["teacher-logits", "--teacher", "@model.onnx", "--no-logit-cache"], "nowhere to write"),
    (&["teacher-logits", "--teacher", "@model.onnx", "--logit-cache", "@garbage"], "is a file, not a directory"),
    (&["distill", "--teacher", "@a-directory", "--student", "mlp:4", "--out", "@o"], "model.toml"),
    (&["distill", "--teacher", "@onnx", "--student", "mlp:4", "--out", "@o"], "model.toml"),
    (&["distill", "--teacher", "@checkpoint", "--student", "mlp:4", "--out", "@o", "-T", "-1"], "temperature must be positive, got -1"),
    (&["distill", "--teacher", "@checkpoint", "--student", "mlp:4", "--out", "@o", "--alpha", "1.5"], "alpha"),
    (&["distill", "--teacher", "@checkpoint", "--student", "mlp:4", "--out", "@o", "--seeds", "0"], "--seeds"),
    (&["distill", "--teacher", "@checkpoint", "--student", "mlp:4", "--out", "@o", "--soft-loss", "l1"], "invalid value 'l1'"),
    (&["distill", "--teacher", "@checkpoint", "--student", "mlp:4", "--out", "@o", "--teacher-weights", "1,2"], "2 teacher weights for 1 teachers"),
    // eval
    (&["eval", "@missing"], "no such directory"),
    (&["eval", "@garbage"], "not a directory"),
    (&["eval", "@a-directory"], "model.toml"),
    (&["eval", "@checkpoint", "--data", "@garbage"], "not a directory"),
    // export
    (&["export", "@missing", "--out", "@o"], "not a checkpoint directory"),
    (&["export", "@model.onnx", "--out", "@o"], "not a checkpoint directory"),
    (&["export", "@a-directory", "--out", "@o"], "model.toml"),
    (&["export", "@checkpoint", "--out", "@o", "--format", "int4"], "invalid value 'int4'"),
    (&["export", "@checkpoint", "--out", "@o", "--calib", "0"], "calibration sample"),
    (&["export", "@checkpoint", "--out", "@o", "--max-accuracy-drop", "-1"], "--max-accuracy-drop"),
    (&["export", "@checkpoint", "--out", "@garbage", "--format", "f32", "--latency", "0"], "is a file, not a directory"),
    // run
    (&["run", "@missing.onnx", "-i", "@digit.png"], "No such file"),
    (&["run", "@a-directory", "-i", "@digit.png"], "is a directory"),
    (&["run", "@garbage", "-i", "@digit.png"], "not a valid ONNX model"),
    (&["run", "@empty", "-i", "@digit.png"], "not a valid ONNX model"),
    (&["run", "@digit.png", "-i", "@digit.png"], "not a valid ONNX model"),
    (&["run", "@truncated.onnx", "-i", "@digit.png"], "not a valid ONNX model"),
    (&["run", "@trillion.onnx", "-i", "@digit.png"], "1000000000000 elements"),
    (&["run", "@model.onnx", "-i", "@missing.png"], "No such file"),
    (&["run", "@model.onnx", "-i", "@a-directory"], "is a directory"),
    (&["run", "@model.onnx", "-i", "@garbage"], "not a PNG, JPEG or IDX file"),
    (&["run", "@model.onnx", "-i", "@nan.f32"], "value 5 of sample 0 is NaN"),
    (&["run", "@model.onnx", "-i", "@short.f32"], "not a whole number of samples"),
    (&["run", "@model.onnx", "-i", "@huge.idx"], "elements"),
    (&["run", "@model.onnx", "-i", "@digit.png", "--threads", "0"], "--threads"),
    (&["run", "@model.onnx", "-i", "@digit.png", "--top-k", "0"], "--top-k"),
    (&["run", "@model.onnx", "-i", "@digit.png", "--backend", "gpu"], "unknown backend `gpu`"),
    (&["run", "@model.onnx", "-i", "@digit.png", "--max-model-bytes", "100"], "max-model-bytes"),
    (&["run", "@model.onnx", "-i", "@digit.png", "--max-tensor-elements", "10"], "max-tensor-elements"),
    (&["run", "@model.onnx", "-i", "@digit.png", "--max-tensor-elements", "lots"], "invalid value 'lots'"),
    // bench
    (&["bench", "--teacher", "@missing.onnx", "--student", "@model.onnx"], "no such file"),
    (&["bench", "--teacher", "@model.onnx", "--student", "@a-directory"], "is a directory"),
    (&["bench", "--teacher", "@garbage", "--student", "@model.onnx"], "not a valid ONNX model"),
    (&["bench", "--teacher", "@model.onnx", "--student", "@trillion.onnx"], "max-tensor-elements"),
    (&["bench", "--teacher", "@model.onnx", "--student", "@model.onnx", "--batch", "0"], "positive"),
    (&["bench", "--teacher", "@model.onnx", "--student", "@model.onnx", "--time", "-1"], "--time must be positive"),
    (&["bench", "--teacher", "@model.onnx", "--student", "@model.onnx", "--data", "@garbage"], "t10k-images"),
    (&["bench", "--teacher", "@model.onnx", "--student", "@model.onnx", "--data", "@flat-test-set"], "expected images of shape [N, rows, cols], found [4]"),
    // soak
    (&["soak", "@missing.onnx"], "No such file"),
    (&["soak", "@a-directory"], "is a directory"),
    (&["soak", "@truncated.onnx"], "not a valid ONNX model"),
    (&["soak", "@model.onnx", "--runs", "0"], "--runs"),
    (&["soak", "@model.onnx", "--runs", "10", "--max-growth", "nan"], "--max-growth"),
    (&["soak", "@model.onnx", "--runs", "10", "--max-growth", "-1"], "--max-growth"),
    // compare
    (&["compare", "@missing.json", "@missing.json"], "No such file"),
    (&["compare", "@a-directory", "@a-directory"], "Is a directory"),
    (&["compare", "@garbage", "@garbage"], "not an `edgekd bench --json` report"),
    (&["compare", "@other.json", "@other.json"], "not an `edgekd bench --json` report"),
    // demo
    (&["demo", "--out", "@garbage", "--quiet"], "is a file, not a directory"),
];

#[test]
fn every_subcommand_refuses_hostile_input_with_one_clear_line() {
    let f = Fixtures::new();
    let mut failures = Vec::new();
    for (args, fragment) in CASES {
        let line = fails(edgekd().args(f.args(args)));
        // The list of what was tried and what it said, for `--nocapture`.
        println!("{}  ->  {line}", args.join(" "));
        if !line.contains(fragment) {
            failures.push(format!("{args:?}: {line:?} lacks {fragment:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The offset and length of tensor `name` in a safetensors file.
fn tensor_span(bytes: &[u8], name: &str) -> (usize, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let o = &header[name]["data_offsets"];
    let (a, b) = (
        o[0].as_u64().unwrap() as usize,
        o[1].as_u64().unwrap() as usize,
    );
    (8 + n + a, b - a)
}

/// Copies checkpoint `from` to `to` with every value of tensor `name` set to `value`.
fn with_weights(from: &Path, to: &Path, name: &str, value: f32) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("model.toml"), to.join("model.toml")).unwrap();
    let mut bytes = std::fs::read(from.join("model.safetensors")).unwrap();
    let (at, len) = tensor_span(&bytes, name);
    for chunk in bytes[at..at + len].chunks_exact_mut(4) {
        chunk.copy_from_slice(&value.to_le_bytes());
    }
    std::fs::write(to.join("model.safetensors"), bytes).unwrap();
}

#[test]
fn non_finite_values_are_reported_with_where_they_came_from() {
    let f = Fixtures::new();
    let ck = f.path("checkpoint");
    let distill = |teacher: &Path| {
        let mut c = edgekd();
        c.args([
            "distill",
            "--student",
            "mlp:4",
            "--train-limit",
            "64",
            "--epochs",
            "1",
        ])
        .args(["-q", "--teacher"])
        .arg(teacher)
        .arg("--out")
        .arg(f.path("student"));
        c
    };
    // Weights that are NaN are refused when the checkpoint is read, naming tensor and element.
    with_weights(&ck, &f.path("nan-teacher"), "fc1.weight", f32::NAN);
    let err = fails(&mut distill(&f.path("nan-teacher")));
    assert!(
        err.contains("tensor `fc1.weight` holds NaN at element 0"),
        "{err}"
    );
    // Finite weights whose outputs overflow: the teacher's logits are infinite, and the
    // distillation stops at the first training sample they are computed for.
    with_weights(&ck, &f.path("overflowing-teacher"), "out.weight", 3e38);
    let err = fails(&mut distill(&f.path("overflowing-teacher")));
    assert!(
        err.contains("teacher mlp:8 gives a non-finite logit (")
            && err.contains("for sample ")
            && err.contains("of the training set"),
        "{err}"
    );
    assert!(!f.path("student/model.safetensors").exists());
    // The same teacher under augmentation (logits computed batch by batch) names the sample too.
    let err = fails(distill(&f.path("overflowing-teacher")).args(["--jitter", "1"]));
    assert!(
        err.contains("non-finite logit") && err.contains("sample "),
        "{err}"
    );
    // A student that diverges: stopped at the batch, with the samples in it.
    let err =
        fails(common::quick_train_on("mlp:8", &f.path("diverged"), 3, 640).args(["--lr", "1e30"]));
    assert!(
        err.contains("non-finite")
            && err.contains("epoch 1, batch ")
            && err.contains("training samples "),
        "{err}"
    );
}
