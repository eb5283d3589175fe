//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub fn edgekd() -> Command {
    Command::cargo_bin("edgekd").unwrap()
}

pub fn subset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist-subset")
}

pub fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn quick_train_on(model: &str, out: &Path, epochs: usize, images: usize) -> Command {
    let mut c = edgekd();
    c.args([
        "train",
        "--model",
        model,
        "--train-limit",
        &images.to_string(),
        "--batch-size",
        "32",
        "--epochs",
        &epochs.to_string(),
        "-q",
        "--out",
    ])
    .arg(out);
    c
}

/// A quick export (percentile calibration on 200 images, no latency, no accuracy gate) of
/// the checkpoint `ck` into `out`.
pub fn quick_export(ck: &Path, out: &Path, formats: &str, int8_formats: &str) -> Command {
    let mut c = edgekd();
    c.arg("export")
        .arg(ck)
        .args(["--format", formats, "--int8-format", int8_formats])
        .args(["--calibration", "percentile", "--calib", "200"])
        .args(["--latency", "0", "--max-accuracy-drop", "100", "--out"])
        .arg(out);
    c
}
