//! The device build cross-compiled by `targets/build.sh` for 64-bit ARM (glibc and static
//! musl), 32-bit ARM and static x86_64, run under qemu-user through the runners in
//! `.cargo/config.toml` (the x86_64 one natively), must give the host's answers: bit for bit
//! against the host's native engine with `--exact-float`, within the stated tolerances against
//! the host's default (fast) engine, and the same top-1 on every image used.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{edgekd, quick_export, quick_train_on, stdout, subset};

/// Raspberry Pi 64-bit, static 64-bit ARM, Raspberry Pi 32-bit (portable int8 kernel), static
/// x86_64 (runs without an emulator).
const TARGETS: [&str; 4] = [
    "aarch64-unknown-linux-gnu",
    "aarch64-unknown-linux-musl",
    "armv7-unknown-linux-gnueabihf",
    "x86_64-unknown-linux-musl",
];
/// Test images classified on both sides.
const IMAGES: usize = 32;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where the cross builds go: beside this run's own target directory (its lock is held by the
/// cargo running this test), so reruns reuse them.
fn cross_target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // .../<target-dir>/release/deps/cross-<hash>
    exe.ancestors().nth(3).unwrap().join("cross")
}

/// Skips (with a visible message) or, under EDGEKD_REQUIRE_ALL, fails.
fn missing(what: &str) -> bool {
    if std::env::var_os("EDGEKD_REQUIRE_ALL").is_some() {
        panic!("EDGEKD_REQUIRE_ALL is set but {what}");
    }
    eprintln!("SKIPPED: {what}");
    true
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// The target's runner (empty: runs natively) and linker, as `.cargo/config.toml` states them.
fn config(target: &str) -> (Vec<String>, String) {
    let text = std::fs::read_to_string(root().join(".cargo/config.toml")).unwrap();
    let config: toml::Table = text.parse().unwrap();
    let t = &config["target"][target];
    let runner = t
        .get("runner")
        .and_then(|r| r.as_str())
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    (runner, t["linker"].as_str().unwrap().to_owned())
}

/// Whether this machine can build and run `target`; says why not otherwise.
fn usable(target: &str) -> bool {
    let (runner, linker) = config(target);
    if !has_std(target) {
        return false;
    }
    if !on_path(&linker) {
        return !missing(&format!(
            "{linker} (the linker for {target}) is not installed (targets/build.sh {target} installs it)"
        ));
    }
    if runner.first().is_some_and(|r| !on_path(r)) {
        return !missing(&format!(
            "{} is not installed (targets/build.sh {target} installs it)",
            runner[0]
        ));
    }
    true
}

/// Whether rustup installed the standard library for `target` (rustup's server is not a
/// package registry: a failed download may stay a skip, said out loud).
fn has_std(target: &str) -> bool {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap();
    let found = sysroot.join("lib/rustlib").join(target).is_dir();
    if !found {
        eprintln!("SKIPPED: the Rust standard library for {target} is not installed (rustup target add {target})");
    }
    found
}

/// Builds for `target` with the repository's entry point (no installs: CI did them, and no
/// Android NDK); returns what it built and what it said.
fn build(target: &str) -> (PathBuf, String) {
    let out = Command::new(root().join("targets/build.sh"))
        .env_remove("ANDROID_NDK_HOME")
        .env_remove("ANDROID_NDK_ROOT")
        .args([
            target,
            "--profile",
            "device-test",
            "--no-install",
            "--target-dir",
        ])
        .arg(cross_target_dir())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "targets/build.sh {target} failed:\n{said}"
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap());
    assert!(path.is_file(), "{}", path.display());
    (path, said)
}

/// Runs the device binary under the target's qemu runner, or directly when it has none.
fn device(runner: &[String], binary: &Path) -> Command {
    match runner.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(binary);
            c
        }
        None => Command::new(binary),
    }
}

fn output(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `run --json`'s logits, per image.
fn logits(json: &str) -> (String, Vec<Vec<f32>>) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let rows = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    (v["backend"].as_str().unwrap().to_owned(), rows)
}

/// The kernels the host's native engine picks (a static x86_64 build picks the same).
fn edgekd_isa() -> &'static str {
    edgekd_runtime::kernel_isa()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Four students (an MLP, a plain CNN, a ResNet with batch normalization and residual adds, a
/// MobileNetV2 with depthwise convolutions and ReLU6), each exported as f32, f16, int8
/// QOperator and int8 QDQ.
fn students(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (model, name) in [
        ("mlp:32", "mlp"),
        ("cnn:c4-c8-f16", "cnn"),
        ("resnet:8-w8", "resnet"),
        ("mobilenetv2:0.25", "mobilenet"),
    ] {
        let ck = dir.join(name);
        stdout(&mut quick_train_on(model, &ck, 1, 2000));
        // Checked against the host's engines below; ONNX Runtime's own check (export
        // --onnxruntime, on when EDGEKD_PYTHON is set) is the export tests' business, and on
        // a one-epoch MobileNetV2 its int8 logits stray past export's 0.3 from the exact ones
        // (its u8 x s8 products saturate).
        stdout(quick_export(&ck, dir, "f32,f16,int8", "qoperator,qdq").env_remove("EDGEKD_PYTHON"));
        for variant in ["f32", "f16", "int8-qop-percentile", "int8-qdq-percentile"] {
            files.push(dir.join(format!("{name}.{variant}.onnx")));
        }
    }
    files
}

#[test]
fn device_builds_match_the_host_under_qemu() {
    let targets: Vec<&str> = TARGETS.into_iter().filter(|t| usable(t)).collect();
    if targets.is_empty() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = students(dir.path());
    let images = subset().join("t10k-images-idx3-ubyte.gz");
    let run_args = |file: &Path| -> Vec<String> {
        vec![
            "run".into(),
            file.display().to_string(),
            "--input".into(),
            images.display().to_string(),
            "--limit".into(),
            IMAGES.to_string(),
            "--json".into(),
        ]
    };
    // The host: its default engine (native, fast float kernels), and the native engine in the
    // exact float mode the device build is compared in bit for bit.
    let host: Vec<_> = files
        .iter()
        .map(|f| {
            let default = logits(&stdout(edgekd().args(run_args(f))));
            let native = logits(&stdout(edgekd().args(run_args(f)).args([
                "--backend",
                "native",
                "--exact-float",
            ])));
            (default, native)
        })
        .collect();
    for target in targets {
        let (binary, _) = build(target);
        let (runner, _) = config(target);
        for (file, ((host_engine, want), (_, native))) in files.iter().zip(&host) {
            let mut c = device(&runner, &binary);
            c.args(run_args(file)).arg("--exact-float");
            let (engine, got) = logits(&output(c));
            let name = file.file_name().unwrap().to_string_lossy();
            assert_eq!(engine, "native", "{target} {name}");
            assert_eq!(got.len(), IMAGES, "{target} {name}");
            // With --exact-float, float sums are taken in one order without fused multiply-adds
            // on every instruction set, and int8 sums are exact anyway: the ARM build computes
            // the host's native results bit for bit.
            assert_eq!(
                &got, native,
                "{target} {name}: device vs host native engine"
            );
            // Against the host's default engine: f32 reassociation in tract; f16 arithmetic in
            // tract against f32 arithmetic on f16-rounded values; QDQ requantized through float
            // in tract (a tie may land one level apart).
            let tolerance = if name.contains("f16") || name.contains("qdq") {
                0.05
            } else {
                1e-4
            };
            let diff = got
                .iter()
                .flatten()
                .zip(want.iter().flatten())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                diff <= tolerance,
                "{target} {name}: max |device - host {host_engine}| = {diff} > {tolerance}"
            );
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert_eq!(argmax(g), argmax(w), "{target} {name}: top-1 of image {i}");
            }
        }

        // `bench` on the device writes the host's JSON, and `compare` lines the two up.
        let (teacher, student) = (&files[0], &files[2]);
        let bench = |mut c: Command, json: &Path| {
            c.arg("bench")
                .arg("--teacher")
                .arg(teacher)
                .arg("--student")
                .arg(student)
                .args(["--runs", "20", "--warmup", "2", "--limit", "200", "--data"])
                .arg(subset())
                .arg("--json")
                .arg(json);
            output(c)
        };
        let (host_json, device_json) = (dir.path().join("host.json"), dir.path().join("dev.json"));
        let host_cmd = Command::new(env!("CARGO_BIN_EXE_edgekd"));
        bench(host_cmd, &host_json);
        let table = bench(device(&runner, &binary), &device_json);
        assert!(table.contains("mean ± σ"), "{table}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&device_json).unwrap()).unwrap();
        let (arch, isa) = match target.split('-').next().unwrap() {
            // qemu-user's default CPU ("max") has the dot-product instructions.
            "aarch64" => ("aarch64", "neon+dotprod"),
            "armv7" => ("arm", "portable"),
            _ => (std::env::consts::ARCH, edgekd_isa()),
        };
        assert_eq!(report["platform"]["arch"], arch, "{report}");
        assert_eq!(report["platform"]["isa"], isa, "{report}");
        let rows = report["measurements"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{report}");
        for r in rows {
            assert_eq!(r["latency"]["runs"], 20, "{r}");
            // Under qemu-user the child process that measures peak memory cannot be started
            // (no binfmt_misc here), and its figure would be qemu's anyway: it is left out.
            assert!(r.get("peak_rss_bytes").is_some(), "{r}");
        }
        let compared = stdout(
            edgekd()
                .arg("compare")
                .arg(&host_json)
                .arg(&device_json)
                .args(["--label", &format!("host,{target}")]),
        );
        let student_line = compared
            .lines()
            .find(|l| l.starts_with("mlp.int8-qop-percentile"))
            .unwrap_or_else(|| panic!("{compared}"));
        // Two machines' latencies, accuracies and speed-ups, and the ratio between them.
        assert_eq!(student_line.matches(" | ").count(), 2, "{compared}");
        assert!(student_line.trim_end().ends_with('x'), "{compared}");
    }
}

/// The runtime's own tests (the int8 kernels against the portable ones, exactly; hand-built
/// graphs; hostile bytes) compiled for aarch64 and run under qemu by `cargo test --target`,
/// through `.cargo/config.toml`'s runner: once as a CPU with the dot-product instructions
/// (Cortex-A76 and later: SDOT kernels) and once as a Cortex-A72 without them (the Raspberry
/// Pi 4: widening multiply-accumulate kernels). qemu-user takes the CPU from `QEMU_CPU`.
#[test]
fn runtime_tests_pass_on_aarch64_under_qemu() {
    let target = TARGETS[0];
    if !usable(target) {
        return;
    }
    for (cpu, isa) in [("max", "neon+dotprod"), ("cortex-a72", "neon")] {
        let out = Command::new(env!("CARGO"))
            .current_dir(root())
            .env("QEMU_CPU", cpu)
            .env("EDGEKD_EXPECT_ISA", isa)
            .args(["test", "-p", "edgekd-runtime", "--no-default-features"])
            .args([
                "--profile",
                "device-test",
                "--target",
                target,
                "--target-dir",
            ])
            .arg(cross_target_dir())
            .output()
            .unwrap();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{cpu}: {text}");
        // The kernels' exactness test ran on the kernels this CPU picks (an aarch64 binary:
        // only the runner can have run it).
        for test in [
            "every_path_computes_the_exact_sums ... ok",
            "the_detected_isa_is_the_one_expected ... ok",
        ] {
            assert!(text.contains(test), "{cpu}: {text}");
        }
    }
}

/// Android: without the NDK (no registry here carries it) the runtime and its C ABI are
/// proven to build for aarch64-linux-android as the static library an app links.
#[test]
fn the_c_library_builds_for_android() {
    let target = "aarch64-linux-android";
    if !has_std(target) {
        return;
    }
    let (lib, said) = build(target);
    assert_eq!(lib.file_name().unwrap(), "libedgekd.a", "{said}");
    let bytes = std::fs::read(&lib).unwrap();
    // An ar archive exporting the header's functions.
    assert!(bytes.starts_with(b"!<arch>\n"));
    for symbol in ["edgekd_model_load", "edgekd_model_run", "edgekd_model_free"] {
        assert!(
            bytes.windows(symbol.len()).any(|w| w == symbol.as_bytes()),
            "{symbol} missing from {}",
            lib.display()
        );
    }
}
