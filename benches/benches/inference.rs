//! Inference latency: teacher (mlp:1200-1200) against students (mlp:64, cnn:lenet5-half)
//! in f32, f16 and int8, on every engine of this build (ort with `--features
//! edgekd-runtime/ort` and ORT_DYLIB_PATH set), at batch 1 and 64.
//!
//! `cargo bench -p edgekd-benches --bench inference`
//!
//! The models are exported at start-up from freshly initialised weights (latency does not
//! depend on what the weights learned), calibrated on the shipped MNIST subset.

use std::path::{Path, PathBuf};

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use edgekd_distill::{checkpoint, Model, ModelSpec, Splits};
use edgekd_export::{export, Activations, Encoding, ExportOptions, Method, Variant};
use edgekd_runtime::{Backend, Options};

fn exported(dir: &Path, spec: &str, stem: &str, data: &Splits) -> Vec<(String, PathBuf)> {
    let ck = dir.join(stem);
    let model = Model::new(&ModelSpec::parse(spec).unwrap(), 1, &Device::Cpu).unwrap();
    checkpoint::save_model(&ck, &model).unwrap();
    let variants = if stem == "teacher" {
        vec![Variant::F32]
    } else {
        vec![
            Variant::F32,
            Variant::F16,
            Variant::Int8 {
                encoding: Encoding::QOperator,
                activations: Activations::Static(Method::Percentile),
            },
            Variant::Int8 {
                encoding: Encoding::Qdq,
                activations: Activations::Static(Method::Percentile),
            },
        ]
    };
    let options = ExportOptions {
        variants,
        calibration_samples: 200,
        // Untrained weights: accuracy is not the point here.
        max_accuracy_drop: 100.0,
        latency_budget: 0.0,
        stem: stem.into(),
    };
    let report = export(&ck, data, &dir.join("onnx"), &options, &mut |_: &str| {}).unwrap();
    report
        .files
        .iter()
        .map(|f| (format!("{stem} {}", f.variant), f.path.clone()))
        .collect()
}

fn inference(c: &mut Criterion) {
    let mut data =
        Splits::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-subset")).unwrap();
    data.train = data.train.take(500);
    data.test = data.test.take(200);
    let dir = tempfile::tempdir().unwrap();
    let mut files = exported(dir.path(), "mlp:1200-1200", "teacher", &data);
    files.extend(exported(dir.path(), "mlp:64", "mlp64", &data));
    files.extend(exported(
        dir.path(),
        "cnn:lenet5-half",
        "lenet5-half",
        &data,
    ));
    let mut backends = vec![Backend::Auto, Backend::Tract];
    if Backend::Ort.available() && std::env::var_os("ORT_DYLIB_PATH").is_some() {
        backends.push(Backend::Ort);
    } else {
        eprintln!("SKIPPED ort: build with --features edgekd-runtime/ort and set ORT_DYLIB_PATH");
    }
    for batch in [1usize, 64] {
        let mut group = c.benchmark_group(format!("inference batch {batch}"));
        for (name, path) in &files {
            for &backend in &backends {
                let model = edgekd_runtime::Model::load_with(
                    path,
                    Options {
                        backend,
                        threads: 1,
                        ..Default::default()
                    },
                )
                .unwrap();
                let per = model.info().inputs[0].sample_len().unwrap();
                let x: Vec<f32> = (0..batch * per).map(|i| (i % 255) as f32 / 255.0).collect();
                let id = BenchmarkId::new(name.as_str(), format!("{backend}:{}", model.backend()));
                group.bench_function(id, |b| b.iter(|| model.logits(&x, batch).unwrap()));
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(1));
    targets = inference
}
criterion_main!(benches);
