//! Files written by other tools run on every engine of this build: PyTorch's two ONNX
//! exporters, ONNX Runtime's quantizer (QDQ u8/s8 per-tensor and per-channel after
//! `quant_pre_process`, QOperator, `quantize_dynamic`) and skl2onnx, each with a symbolic batch
//! and the `value_info` those tools write. `scripts/make_interop_fixtures.py` made the files
//! and stored ONNX Runtime's outputs for a fixed batch of 7; every engine runs that batch and
//! its first sample alone, and must match.

use std::path::PathBuf;

use edgekd_runtime::{Backend, Model, Options};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interop")
}

/// The script's input: `((i · 7919) mod 255) / 127.5 - 1` over the flattened batch.
fn inputs(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
        .collect()
}

/// Engines that cannot take a file, and why (anything else must run it).
const REFUSED: &[(&str, Backend, &str)] = &[
    // skl2onnx's label output goes through ai.onnx.ml's ArrayFeatureExtractor.
    ("sklearn-mlp.onnx", Backend::Native, "ArrayFeatureExtractor"),
];

/// How far an engine's output may be from ONNX Runtime's. Float files: rounding. Quantized
/// ones: engines requantize through different but equally valid roundings (a value on a
/// rounding tie lands one level apart, and a layer downstream carries that on), so the bound
/// is a fraction of the output's range.
fn tolerance(file: &str, expected: &[f64]) -> f64 {
    let range = expected.iter().fold(0f64, |m, v| m.max(v.abs()));
    if file.starts_with("ort-") {
        0.08 * range + 1e-3
    } else {
        1e-4 * (1.0 + range)
    }
}

fn engines() -> Vec<Backend> {
    let mut e = vec![Backend::Native];
    if cfg!(feature = "tract") {
        e.push(Backend::Tract);
    }
    if cfg!(feature = "ort") {
        if std::env::var_os("ORT_DYLIB_PATH").is_some() {
            e.push(Backend::Ort);
        } else if std::env::var_os("EDGEKD_REQUIRE_ALL").is_some() {
            panic!(
                "EDGEKD_REQUIRE_ALL is set but ORT_DYLIB_PATH is not: the ort engine cannot load"
            );
        } else {
            eprintln!(
                "SKIPPED: the ort engine (set ORT_DYLIB_PATH to ONNX Runtime's shared library)"
            );
        }
    }
    e
}

#[test]
fn every_engine_runs_other_exporters_files_at_batch_1_and_7_as_onnx_runtime_does() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
            .unwrap();
    let files = expected.as_object().unwrap();
    assert!(files.len() >= 12, "{} fixtures", files.len());
    let mut checked = 0;
    let mut failures = Vec::new();
    // Each file's batch-7 outputs per engine, to compare edgekd's engines with each other.
    let mut ours: std::collections::HashMap<(String, Backend), Vec<Vec<f32>>> = Default::default();
    for (file, e) in files {
        let sample: usize = e["sample_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .product();
        let batch = e["batch"].as_u64().unwrap() as usize;
        let x = inputs(batch * sample);
        for backend in engines() {
            let options = Options {
                backend,
                ..Default::default()
            };
            let model = Model::load_with(&fixtures().join(file), options);
            if let Some((_, _, why)) = REFUSED.iter().find(|(f, b, _)| f == file && *b == backend) {
                match model {
                    Err(e) if e.to_string().contains(why) => {}
                    Err(e) => failures.push(format!(
                        "{file} on {backend}: refused, but not for {why}: {e}"
                    )),
                    Ok(_) => failures.push(format!(
                        "{file} on {backend}: loads, but {why} should be refused"
                    )),
                }
                continue;
            }
            let model = match model {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{file} on {backend}: {e}"));
                    continue;
                }
            };
            for (n, input) in [(batch, &x[..]), (1, &x[..sample])] {
                let outs = match model.run(input, n) {
                    Ok(o) => o,
                    Err(e) => {
                        failures.push(format!("{file} on {backend} at batch {n}: {e}"));
                        continue;
                    }
                };
                if n == batch {
                    ours.insert(
                        (file.clone(), backend),
                        outs.iter().map(|o| o.data.clone()).collect(),
                    );
                }
                for (want, got) in e["outputs"].as_array().unwrap().iter().zip(&outs) {
                    let values: Vec<f64> = want["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap())
                        .collect();
                    let per = values.len() / batch;
                    let want_values = &values[..per * n];
                    if got.data.len() != want_values.len() {
                        failures.push(format!(
                            "{file} on {backend} at batch {n}: output `{}` has {} values, not {}",
                            got.name,
                            got.data.len(),
                            want_values.len()
                        ));
                        continue;
                    }
                    let tol = tolerance(file, &values);
                    let worst = got
                        .data
                        .iter()
                        .zip(want_values)
                        .map(|(&g, &w)| (g as f64 - w).abs())
                        .fold(0f64, f64::max);
                    eprintln!("{file:42} {backend:6} batch {n}: output `{}` within {worst:.2e} (tolerance {tol:.2e})", got.name);
                    // Negated so that a NaN output fails too.
                    #[allow(clippy::neg_cmp_op_on_partial_ord)]
                    if !(worst <= tol) {
                        failures.push(format!("{file} on {backend} at batch {n}: output `{}` is {worst} away from ONNX Runtime's (tolerance {tol})", got.name));
                    }
                }
                checked += 1;
            }
        }
    }
    // The native engine and tract compute integer layers exactly and agree with each other far
    // more closely than either with ONNX Runtime, whose x86 u8s8 kernels (`vpmaddubsw`) can
    // saturate a pair of products.
    for ((file, backend), outs) in &ours {
        if *backend != Backend::Native {
            continue;
        }
        if let Some(tract) = ours.get(&(file.clone(), Backend::Tract)) {
            for (a, b) in outs.iter().zip(tract) {
                let range = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let worst = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                eprintln!("{file:42} native vs tract: within {worst:.2e}");
                if worst > 1e-4 * (1.0 + range) {
                    failures.push(format!("{file}: native and tract differ by {worst}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 24, "{checked} runs checked");
}
