//! Work killed with SIGKILL loses nothing: a distillation resumes to the weights an
//! uninterrupted run reaches, and an export leaves only complete ONNX files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{quick_export, quick_export_args, quick_train_on, stdout, subset};

fn edgekd_path() -> PathBuf {
    assert_cmd::cargo::cargo_bin("edgekd")
}

/// A distillation of three short epochs (about a second each) into `out`.
fn distill(teacher: &Path, out: &Path, resume: bool) -> Command {
    let mut c = Command::new(edgekd_path());
    c.args(["distill", "--teacher"])
        .arg(teacher)
        .args(["--student", "cnn:lenet5-half", "--train-limit", "1500"])
        .args(["--batch-size", "32", "--epochs", "3", "--jitter", "1"])
        .args(["--dropout", "0.1", "-q", "--data"])
        .arg(subset())
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if resume {
        c.arg("--resume");
    }
    c
}

fn epochs_done(out: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(out.join("train-state/progress.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["epochs_done"].as_u64()
}

/// SIGKILLs `child` (std's `kill` sends SIGKILL on Unix); true if it was still running.
fn kill(child: &mut Child) -> bool {
    let running = child.try_wait().unwrap().is_none();
    child.kill().ok();
    child.wait().unwrap();
    running
}

#[test]
fn sigkill_mid_epoch_then_resume_reaches_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = dir.path().join("teacher");
    stdout(&mut quick_train_on("mlp:64", &teacher, 1, 1500));

    let whole = dir.path().join("whole");
    let status = distill(&teacher, &whole, false).status().unwrap();
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("report.json")).unwrap()).unwrap();
    let epoch_secs = report["history"][1]["seconds"].as_f64().unwrap();

    // First kill: 40% into epoch 2, after epoch 1's checkpoint has landed. On a loaded
    // machine an epoch can run much faster than the one measured above; then epoch 2 may end
    // before the kill, and the cut is tried again from scratch, earlier into the epoch.
    let cut = dir.path().join("cut");
    let mut killed_in_epoch_2 = false;
    for fraction in [0.4, 0.2, 0.1] {
        let _ = std::fs::remove_dir_all(&cut);
        let mut child = distill(&teacher, &cut, false).spawn().unwrap();
        let started = Instant::now();
        while epochs_done(&cut) != Some(1) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before its first checkpoint"
            );
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "no checkpoint"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_secs_f64(fraction * epoch_secs));
        assert!(
            kill(&mut child),
            "the run finished before it could be killed"
        );
        if epochs_done(&cut) == Some(1) {
            killed_in_epoch_2 = true;
            break;
        }
    }
    assert!(killed_in_epoch_2, "every kill landed after epoch 2 ended");
    assert!(!cut.join("report.json").exists());

    // Then kill resumed runs at spread-out moments (some land in start-up, some in an epoch,
    // some in a checkpoint write), and finally let one finish.
    let mut kills = 1;
    for delay in [0.25, 0.6, 1.1, 1.7, 2.4] {
        let mut child = distill(&teacher, &cut, true).spawn().unwrap();
        std::thread::sleep(Duration::from_secs_f64(delay * epoch_secs));
        if kill(&mut child) {
            kills += 1;
        }
    }
    let status = distill(&teacher, &cut, true).status().unwrap();
    assert!(status.success(), "the last resume failed");
    assert!(kills >= 2, "only {kills} kill(s) landed while running");

    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(
        weights(&whole) == weights(&cut),
        "after {kills} kills and resumes the weights differ from the uninterrupted run's"
    );
    // Only the last epoch's state remains.
    let mut state: Vec<String> = std::fs::read_dir(cut.join("train-state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    state.sort();
    assert_eq!(
        state,
        [
            "optimizer-3.safetensors",
            "progress.json",
            "weights-3.safetensors"
        ]
    );
}

#[test]
fn sigkill_during_export_leaves_only_complete_onnx_files() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("student");
    stdout(&mut quick_train_on("cnn:lenet5-half", &ck, 1, 600));
    let whole = dir.path().join("whole");
    let started = Instant::now();
    stdout(&mut quick_export(
        &ck,
        &whole,
        "f32,f16,int8",
        "qoperator,qdq",
    ));
    let took = started.elapsed().as_secs_f64();
    let complete = onnx_files(&whole);
    assert_eq!(complete.len(), 4, "{complete:?}");

    let mut landed = 0;
    for k in 1..=8 {
        let out = dir.path().join(format!("cut{k}"));
        let mut child = Command::new(edgekd_path())
            .args(quick_export_args(
                &ck,
                &out,
                "f32,f16,int8",
                "qoperator,qdq",
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs_f64(took * k as f64 / 9.0));
        if kill(&mut child) {
            landed += 1;
        }
        for (name, bytes) in onnx_files(&out) {
            let whole_bytes = &complete
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("unexpected file {name}"))
                .1;
            assert!(
                bytes == *whole_bytes,
                "{name} after a kill at {k}/9 of the export differs from the complete file ({} vs {} bytes)",
                bytes.len(),
                whole_bytes.len()
            );
            edgekd_runtime::Model::load(&out.join(&name)).unwrap();
        }
    }
    assert!(landed >= 4, "only {landed} kills landed during the export");
    // A complete export over the killed ones sweeps up what the killed writers left.
    for k in 1..=8 {
        let out = dir.path().join(format!("cut{k}"));
        stdout(&mut quick_export(
            &ck,
            &out,
            "f32,f16,int8",
            "qoperator,qdq",
        ));
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "cut{k}: {leftovers:?}");
        assert_eq!(onnx_files(&out), complete);
    }
}

/// Every `.onnx` file under `dir` (recursively), by path relative to `dir`, with its bytes.
fn onnx_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|x| x == "onnx") {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
