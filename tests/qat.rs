//! Quantization-aware training end to end: a `--qat` run simulates the int8 export, keeps its
//! learned ranges, and the exported int8 file computes what training measured.

mod common;

use std::path::Path;

use common::{edgekd, fails, json, quick_export, quick_train_on, stdout, teacher_fixture};

fn qat_train(model: &str, out: &Path, epochs: usize, qat_epochs: usize) -> assert_cmd::Command {
    let mut c = quick_train_on(model, out, epochs, 300);
    c.args(["--qat", "--qat-epochs", &qat_epochs.to_string()]);
    c
}

#[test]
fn the_int8_export_of_a_qat_run_scores_what_training_measured() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["cnn:lenet5-half", "resnet:8-w4"] {
        let ck = dir.path().join(model.replace(':', "-"));
        stdout(&mut qat_train(model, &ck, 3, 2));
        let ranges = json(&ck.join("qat.json"));
        let taps = ranges["taps"].as_array().unwrap();
        assert!(
            taps.len() >= 3 && taps.iter().all(|t| t["hi"].as_f64().unwrap() > 0.0),
            "{ranges}"
        );
        let report = json(&ck.join("report.json"));
        assert_eq!(report["train"]["qat"]["epochs"], 2);

        // No --calibration: a QAT checkpoint exports with its learned ranges.
        let onnx = dir.path().join(format!("{}-onnx", model.replace(':', "-")));
        let mut export = edgekd();
        export
            .arg("export")
            .arg(&ck)
            .args([
                "--format",
                "int8",
                "--int8-format",
                "qoperator",
                "--latency",
                "0",
                "--max-accuracy-drop",
                "100",
                "--json",
                "--out",
            ])
            .arg(&onnx);
        let out: serde_json::Value = serde_json::from_str(&stdout(&mut export)).unwrap();
        let file = &out["export"]["files"][0];
        assert_eq!(file["variant"], "int8-qop-qat");
        // Training evaluated with the same grids the file uses: the accuracies agree to a
        // few samples of the 2,000 (bias rounding to int32 is the one difference). This
        // two-epoch model is near chance and many of its logits nearly tie: after the
        // training convolutions' rework changed the last bits of training, the two came out
        // 3 samples apart.
        let (trained, exported) = (
            report["test_accuracy"].as_f64().unwrap() * 100.0,
            file["verification"]["accuracy"].as_f64().unwrap(),
        );
        assert!(
            (trained - exported).abs() <= 0.25,
            "{model}: {trained} vs {exported}"
        );
        let meta = std::fs::read(onnx.join(format!(
            "{}.int8-qop-qat.onnx",
            ck.file_name().unwrap().to_string_lossy()
        )))
        .unwrap();
        assert!(
            String::from_utf8_lossy(&meta).contains("quantization-aware"),
            "metadata records the learned ranges"
        );
    }
}

#[test]
fn a_resumed_qat_run_continues_its_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, cut) = (dir.path().join("whole"), dir.path().join("cut"));
    stdout(&mut qat_train("mlp:32", &whole, 4, 3));
    stdout(qat_train("mlp:32", &cut, 4, 3).args(["--stop-after", "2"]));
    stdout(qat_train("mlp:32", &cut, 4, 3).arg("--resume"));
    assert_eq!(json(&whole.join("qat.json")), json(&cut.join("qat.json")));
    assert_eq!(
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        std::fs::read(cut.join("model.safetensors")).unwrap()
    );
}

#[test]
fn qat_distils_from_an_onnx_teacher_and_refuses_what_cannot_be() {
    let dir = tempfile::tempdir().unwrap();
    let student = dir.path().join("s");
    stdout(
        edgekd()
            .args([
                "distill",
                "--student",
                "mlp:32",
                "--train-limit",
                "300",
                "--epochs",
                "2",
                "--qat",
                "-q",
                "--teacher",
            ])
            .arg(teacher_fixture("torch-lenet.onnx"))
            .arg("--out")
            .arg(&student),
    );
    assert!(student.join("qat.json").is_file());

    let out = dir.path().join("x");
    let err = fails(&mut qat_train("mlp:8", &out, 2, 3));
    assert!(err.contains("--qat-epochs"), "{err}");
    assert!(!out.join("model.toml").exists());

    let plain = dir.path().join("plain");
    stdout(&mut quick_train_on("mlp:8", &plain, 1, 100));
    let mut c = quick_export(&plain, &dir.path().join("o"), "int8", "qoperator");
    c.args(["--calibration", "qat"]);
    let err = fails(&mut c);
    assert!(err.contains("--qat") && err.contains("qat.json"), "{err}");
}
