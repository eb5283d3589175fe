//! `edgekd prune` end to end: a pruned checkpoint is an ordinary one (it distils, fine-tunes,
//! exports and runs), and every impossible request ends in one line with nothing written.

mod common;

use std::path::Path;

use common::{edgekd, fails, json, outputs, quick_export, quick_train_on, stdout, subset};

fn recover(teacher: &Path, student: &Path, out: &Path, baseline: bool) -> String {
    let mut c = edgekd();
    c.args(["distill", "--train-limit", "300", "--epochs", "1", "-q"])
        .arg("--teacher")
        .arg(teacher)
        .arg("--student")
        .arg(student)
        .arg("--out")
        .arg(out);
    if baseline {
        c.arg("--baseline");
    }
    stdout(&mut c)
}

#[test]
fn a_pruned_checkpoint_recovers_exports_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (spec, criterion, extra) in [
        ("mlp:64-32", "l1", vec![]),
        (
            "resnet:8-w4",
            "taylor",
            vec![
                "--data".to_string(),
                subset().display().to_string(),
                "--batches".into(),
                "2".into(),
            ],
        ),
        ("mobilenetv2:0.25", "bn-scale", vec![]),
    ] {
        let name = spec.replace([':', '.'], "-");
        let teacher = d.join(format!("{name}-teacher"));
        stdout(&mut quick_train_on(spec, &teacher, 1, 200));
        let before = json(&teacher.join("report.json"));

        // The plan alone writes nothing.
        let planned = d.join(format!("{name}-planned"));
        let plan = stdout(
            edgekd()
                .arg("prune")
                .arg(&teacher)
                .args([
                    "--ratio",
                    "0.5",
                    "--criterion",
                    criterion,
                    "--dry-run",
                    "--out",
                ])
                .arg(&planned)
                .args(&extra),
        );
        assert!(
            plan.contains("parameters") && plan.contains("MACs/sample"),
            "{plan}"
        );
        assert!(!planned.exists());

        let pruned = d.join(format!("{name}-pruned"));
        let (out, _) = outputs(
            edgekd()
                .arg("prune")
                .arg(&teacher)
                .args(["--ratio", "0.5", "--criterion", criterion, "--out"])
                .arg(&pruned)
                .args(&extra),
        );
        assert!(out.contains("pruned checkpoint written"), "{out}");
        let record = json(&pruned.join("prune.json"));
        assert_eq!(record["criterion"], criterion);
        for g in record["groups"].as_array().unwrap() {
            let (before, kept) = (
                g["before"].as_u64().unwrap(),
                g["kept"].as_array().unwrap().len() as u64,
            );
            // Half of each layer, moved to a multiple of 8 (the default) where wider than 8.
            let half = ((before as f64 * 0.5).round() as u64).max(1);
            if before <= 8 {
                assert_eq!(kept, half, "{g}");
            } else {
                assert!(kept % 8 == 0 || kept == before, "{g}");
                assert!(kept.abs_diff(half) <= 4, "{g}");
            }
        }

        // Distilled from the original, with the same pruned weights fine-tuned on labels beside it.
        let recovered = d.join(format!("{name}-recovered"));
        recover(&teacher, &pruned, &recovered, true);
        let r = json(&recovered.join("report.json"));
        assert!(
            r["parameters"].as_u64() < before["parameters"].as_u64(),
            "{spec}"
        );
        let start = r["identity"]["start"]
            .as_str()
            .expect("the start weights are part of the run");
        let alone = json(&recovered.join("runs/alone-seed0/report.json"));
        assert_eq!(alone["identity"]["start"].as_str(), Some(start));
        assert!(recovered.join("kd-gain.json").is_file());

        // The same shape from fresh weights: the architecture file alone.
        let scratch = d.join(format!("{name}-scratch"));
        recover(&teacher, &pruned.join("model.toml"), &scratch, false);
        let s = json(&scratch.join("report.json"));
        assert_eq!(s["parameters"], r["parameters"]);
        assert!(s["identity"].get("start").is_none());

        // Exported (verified by the native engine and tract inside export) and run.
        let onnx = d.join(format!("{name}-onnx"));
        stdout(&mut quick_export(&recovered, &onnx, "f32,int8", "qdq"));
        let model = std::fs::read_dir(&onnx)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.to_string_lossy().ends_with("int8.onnx") || p.to_string_lossy().contains("int8")
            })
            .expect("an int8 file");
        let run = stdout(
            edgekd()
                .arg("run")
                .arg(&model)
                .arg("--input")
                .arg(subset().join("t10k-images-idx3-ubyte.gz"))
                .args(["--limit", "20"]),
        );
        assert!(!run.is_empty());
    }
}

#[test]
fn unstructured_pruning_keeps_shapes_and_says_it_is_no_faster() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = dir.path().join("t");
    stdout(&mut quick_train_on("mlp:64", &teacher, 1, 200));
    let out = dir.path().join("sparse");
    let text = stdout(
        edgekd()
            .arg("prune")
            .arg(&teacher)
            .args([
                "--unstructured",
                "--sparsity",
                "0.8",
                "--scope",
                "global",
                "--data",
            ])
            .arg(subset())
            .arg("--out")
            .arg(&out),
    );
    assert!(
        text.contains("no faster") && text.contains("gzipped"),
        "{text}"
    );
    let record = json(&out.join("sparsity.json"));
    let (n, z) = record["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .fold((0, 0), |(n, z), t| {
            (n + t[1].as_u64().unwrap(), z + t[2].as_u64().unwrap())
        });
    assert!((z as f64 / n as f64 - 0.8).abs() < 0.01, "{z} of {n}");
    assert_eq!(
        std::fs::read_to_string(out.join("model.toml")).unwrap(),
        std::fs::read_to_string(teacher.join("model.toml")).unwrap()
    );

    // Recovered with --keep-zeros, the removed weights stay removed.
    let recovered = dir.path().join("recovered");
    let mut c = edgekd();
    c.args([
        "distill",
        "--train-limit",
        "300",
        "--epochs",
        "2",
        "-q",
        "--keep-zeros",
    ])
    .arg("--teacher")
    .arg(&teacher)
    .arg("--student")
    .arg(&out)
    .arg("--out")
    .arg(&recovered);
    stdout(&mut c);
    let zeros = |dir: &Path| {
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let w = t.tensor("fc1.weight").unwrap();
        let v: Vec<f32> = w
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (v.iter().filter(|x| **x == 0.0).count(), v.len())
    };
    let (before, n) = zeros(&out);
    let (after, _) = zeros(&recovered);
    assert!(
        before > n / 2 && after == before,
        "{before} -> {after} of {n}"
    );
}

#[test]
fn impossible_prunes_end_in_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let teacher = d.join("t");
    stdout(&mut quick_train_on("mlp:16", &teacher, 1, 100));
    let minimal = d.join("m");
    stdout(&mut quick_train_on("mlp:1-1", &minimal, 1, 100));
    let linear = d.join("l");
    stdout(&mut quick_train_on("mlp:", &linear, 1, 100));
    let file = d.join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = d.join("out");
    let cases: Vec<(Vec<&std::ffi::OsStr>, &str)> = vec![
        (vec![teacher.as_os_str(), "--ratio=0".as_ref()], "(0, 1)"),
        (vec![teacher.as_os_str(), "--ratio=1".as_ref()], "(0, 1)"),
        (vec![teacher.as_os_str(), "--ratio=1.5".as_ref()], "(0, 1)"),
        (
            vec![file.as_os_str(), "--ratio=0.5".as_ref()],
            "not a directory",
        ),
        (vec![minimal.as_os_str(), "--ratio=0.5".as_ref()], "minimum"),
        (
            vec![linear.as_os_str(), "--ratio=0.5".as_ref()],
            "no hidden",
        ),
        (
            vec![teacher.as_os_str(), "--ratio=0.01".as_ref()],
            "removes nothing",
        ),
        (
            vec![teacher.as_os_str(), "--target-macs=5".as_ref()],
            "cannot reach",
        ),
        (
            vec![
                teacher.as_os_str(),
                "--ratio=0.5".as_ref(),
                "--criterion=taylor".as_ref(),
            ],
            "--data",
        ),
        (
            vec![
                teacher.as_os_str(),
                "--ratio=0.5".as_ref(),
                "--criterion=bn-scale".as_ref(),
            ],
            "bn-scale",
        ),
        (
            vec![
                teacher.as_os_str(),
                "--unstructured".as_ref(),
                "--sparsity=1".as_ref(),
            ],
            "(0, 1)",
        ),
    ];
    for (args, needle) in cases {
        let err = fails(edgekd().arg("prune").args(&args).arg("--out").arg(&out));
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    let err = fails(
        edgekd()
            .arg("prune")
            .arg(&teacher)
            .args(["--ratio", "0.5", "--out"])
            .arg(&teacher),
    );
    assert!(err.contains("is the checkpoint being pruned"), "{err}");
}

#[test]
fn gradual_pruning_reaches_the_ratio_in_rounds_of_prune_and_distil() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = dir.path().join("t");
    stdout(&mut quick_train_on("mlp:48-32", &teacher, 1, 200));
    let out = dir.path().join("g");
    let mut c = edgekd();
    c.args([
        "distill",
        "--train-limit",
        "200",
        "--epochs",
        "1",
        "-q",
        "--baseline",
    ])
    .args([
        "--prune-ratio",
        "0.75",
        "--prune-steps",
        "2",
        "--prune-criterion",
        "taylor",
        "--prune-channel-multiple",
        "1",
    ])
    .arg("--teacher")
    .arg(&teacher)
    .arg("--student")
    .arg(&teacher)
    .arg("--out")
    .arg(&out);
    let text = stdout(&mut c);
    assert!(text.contains("step 2:"), "{text}");
    // 48-32 keeps half (rounded) per round: 24-16, then 12-8.
    let widths = |d: &Path| {
        let spec: toml::Value =
            toml::from_str(&std::fs::read_to_string(d.join("model.toml")).unwrap()).unwrap();
        spec["architecture"]["hidden"].clone()
    };
    assert_eq!(
        widths(&out.join("step1")),
        toml::Value::try_from(vec![24, 16]).unwrap()
    );
    assert_eq!(widths(&out), toml::Value::try_from(vec![12, 8]).unwrap());
    assert!(out.join("kd-gain.json").is_file() && !out.join("step1/kd-gain.json").exists());

    let err = fails(
        edgekd()
            .args([
                "distill",
                "--student",
                "mlp:8",
                "--prune-ratio",
                "0.5",
                "--teacher",
            ])
            .arg(&teacher)
            .arg("--out")
            .arg(dir.path().join("x")),
    );
    assert!(err.contains("--student DIR"), "{err}");
}
