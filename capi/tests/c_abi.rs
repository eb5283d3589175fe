//! The C ABI from C: compiles `tests/c/classify.c` against `include/edgekd.h` and the
//! `libedgekd` shared library cargo built for this test run, runs it, and compares what C
//! printed with the runtime called directly.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgekd_runtime::proto::{
    data_type, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};
use edgekd_runtime::{Backend, Model, Options};
use prost::Message;

fn value(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    ValueInfoProto::float_tensor(name, dims)
}

fn weights(name: &str, dims: &[i64], seed: u32) -> TensorProto {
    let n: i64 = dims.iter().product();
    let raw = (0..n as u32)
        .flat_map(|i| {
            let v = ((i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 16) % 200) as f32;
            ((v - 100.0) * 0.01).to_le_bytes()
        })
        .collect();
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        raw_data: raw,
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        ..Default::default()
    }
}

/// A 16 -> 8 -> 3 MLP over a 4x4 "image".
fn mlp() -> Vec<u8> {
    ModelProto::opset13(GraphProto {
        node: vec![
            node("MatMul", &["input", "w1"], "h"),
            node("Add", &["h", "b1"], "hb"),
            node("Relu", &["hb"], "a"),
            node("MatMul", &["a", "w2"], "o"),
            node("Add", &["o", "b2"], "logits"),
        ],
        name: "mlp".into(),
        initializer: vec![
            weights("w1", &[16, 8], 1),
            weights("b1", &[8], 2),
            weights("w2", &[8, 3], 3),
            weights("b2", &[3], 4),
        ],
        input: vec![value("input", &[None, Some(16)])],
        output: vec![value("logits", &[None, Some(3)])],
        ..Default::default()
    })
    .encode_to_vec()
}

/// Where cargo put this run's `libedgekd.so`: in the `deps` folder holding this test (the
/// copy one level up is only refreshed when the library itself was asked for, so it may be
/// an older build with other features).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        if dir.join("libedgekd.so").is_file() {
            return dir.to_path_buf();
        }
    }
    panic!("libedgekd.so is not beside {}", deps.display());
}

fn numbers(line: &str, tag: &str) -> Vec<f32> {
    line.strip_prefix(tag)
        .unwrap_or_else(|| panic!("expected `{tag}`: {line}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// A C compiler, or None after saying why the test is skipped (a failure under
/// EDGEKD_REQUIRE_ALL).
fn c_compiler() -> Option<&'static str> {
    let found = ["cc", "gcc", "clang"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok());
    if found.is_none() {
        if std::env::var_os("EDGEKD_REQUIRE_ALL").is_some() {
            panic!("EDGEKD_REQUIRE_ALL is set but no C compiler (cc, gcc, clang) is installed");
        }
        eprintln!("SKIPPED: no C compiler to build the C ABI test with");
    }
    found
}

/// Compiles `source` into `exe` against the header and the `libedgekd` in `lib`.
fn compile_against(cc: &str, source: &Path, exe: &Path, lib: &Path) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(exe)
        .arg(source)
        .arg("-I")
        .arg(manifest.join("include"))
        .arg("-L")
        .arg(lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-ledgekd")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cc} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn c_program_loads_runs_and_frees_through_the_header() {
    let Some(cc) = c_compiler() else {
        return;
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mlp.onnx");
    std::fs::write(&model, mlp()).unwrap();
    let lib = library_dir();
    let exe = dir.path().join("classify");
    compile_against(cc, &manifest.join("tests/c/classify.c"), &exe, &lib);
    // cargo test's own LD_LIBRARY_PATH lists the target directory, whose libedgekd.so may be
    // an older build, and it outranks the rpath: point the loader at this run's library.
    let out = Command::new(&exe)
        .arg(&model)
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"version 0.1.0"), "{stdout}");
    assert_eq!(lines.last(), Some(&"ok"), "{stdout}");
    assert!(lines[1].ends_with("input 16"), "{stdout}");

    // The same inputs the C program made, through the runtime directly, on the engine the
    // library chose (tract when the workspace build unified its feature in, else native).
    let backend: Backend = lines[1].split_whitespace().nth(1).unwrap().parse().unwrap();
    let pixels: Vec<u8> = (0..32).map(|i| ((i * 37) % 256) as u8).collect();
    let input: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let options = Options {
        backend,
        threads: 1,
        ..Default::default()
    };
    let want = Model::load_with(&model, options)
        .unwrap()
        .logits(&input, 2)
        .unwrap()
        .data;
    assert_eq!(numbers(lines[2], "logits"), want, "{stdout}");
    // Pixels are scaled by 1/255 (a multiply, where C divided): equal to rounding.
    for (a, b) in numbers(lines[3], "pixels").iter().zip(&want) {
        assert!((a - b).abs() < 1e-5, "{stdout}");
    }
}

/// The profile the library ships in: the one whose panic strategy decides whether
/// `catch_unwind` in the entry points does anything.
const SHIPPED_PROFILE: &str = "capi";

#[test]
fn a_panic_inside_an_entry_point_comes_back_to_c_as_an_error() {
    let Some(cc) = c_compiler() else {
        return;
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A target directory of its own (beside this test's), so the nested cargo neither waits
    // for nor disturbs the outer build.
    let exe = std::env::current_exe().unwrap();
    let target_dir = exe.ancestors().nth(3).unwrap().join("capi-profile");
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "edgekd-capi",
            "--lib",
            "--features",
            "test-panic",
        ])
        .args(["--profile", SHIPPED_PROFILE, "--target-dir"])
        .arg(&target_dir)
        .current_dir(manifest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the C library in the {SHIPPED_PROFILE} profile failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = target_dir.join(SHIPPED_PROFILE);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("panics.c");
    std::fs::write(
        &source,
        r#"#include <stdio.h>
#include <string.h>
#include "edgekd.h"
int main(int argc, char **argv) {
    if (argc != 2) return 2;
    EdgekdModel *m = edgekd_model_load(argv[1], 1);
    printf("%s|%s\n", m == NULL ? "null" : "model", edgekd_last_error());
    edgekd_model_free(m);
    return 0;
}
"#,
    )
    .unwrap();
    let program = dir.path().join("panics");
    compile_against(cc, &source, &program, &lib);
    let model = dir.path().join("mlp.onnx");
    std::fs::write(&model, mlp()).unwrap();
    let run = |panic: bool| {
        let mut c = Command::new(&program);
        c.arg(&model).env("LD_LIBRARY_PATH", &lib);
        if panic {
            c.env("EDGEKD_CAPI_TEST_PANIC", "1");
        }
        let out = c.output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let (status, said) = run(true);
    assert!(
        status.success(),
        "the process died of the panic ({status}): {said}"
    );
    assert_eq!(
        said,
        "null|edgekd panicked (a bug: please report it with the model)"
    );
    let (status, said) = run(false);
    assert!(status.success() && said == "model|", "{status}: {said}");
}
