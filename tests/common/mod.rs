//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The binary, with its teacher-logit cache in a directory of this test process's own (the
/// default is under ~/.cache, which tests must neither read nor fill).
pub fn edgekd() -> Command {
    let mut c = Command::cargo_bin("edgekd").unwrap();
    c.env(
        "EDGEKD_CACHE_DIR",
        std::env::temp_dir().join(format!("edgekd-test-cache-{}", std::process::id())),
    );
    c
}

/// An ONNX teacher made by another tool, from tests/fixtures/teachers/.
pub fn teacher_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/teachers")
        .join(name)
}

/// A JSON file's contents.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
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

/// Runs `cmd`, which must succeed; returns what it printed on stdout and on stderr.
pub fn outputs(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "failed: {stdout}\n{stderr}");
    (stdout, stderr)
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
    c.args(quick_export_args(ck, out, formats, int8_formats));
    c
}

/// The arguments of [`quick_export`], for callers that spawn the process themselves.
pub fn quick_export_args(
    ck: &Path,
    out: &Path,
    formats: &str,
    int8_formats: &str,
) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec!["export".into(), ck.into()];
    a.extend(
        [
            "--format",
            formats,
            "--int8-format",
            int8_formats,
            "--calibration",
            "percentile",
            "--calib",
            "200",
            "--latency",
            "0",
            "--max-accuracy-drop",
            "100",
            "--out",
        ]
        .map(Into::into),
    );
    a.push(out.into());
    a
}

/// Runs a command that must fail and returns its error line, checking that it is one clear
/// line: `error: ` once, after any progress lines, with no panic or backtrace, and nothing
/// after it but clap's usage hints when clap itself refused the flags (exit status 2).
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        !out.status.success(),
        "should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE") && !err.contains("backtrace"),
        "{err}"
    );
    let at = err
        .find("error: ")
        .unwrap_or_else(|| panic!("no `error: ` line: {err}"));
    assert!(err[..at].is_empty() || err[..at].ends_with('\n'), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    let line = err[at..].lines().next().unwrap().to_string();
    let rest = err[at + line.len()..].trim();
    let from_clap = out.status.code() == Some(2);
    assert!(
        rest.is_empty() || from_clap,
        "more than one line after the error: {err}"
    );
    line
}
