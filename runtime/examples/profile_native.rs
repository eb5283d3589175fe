//! Per-step time of a model on the native engine: which (fused) operator costs what.
//!
//! `cargo run --release -p edgekd-runtime --example profile_native -- MODEL.onnx [BATCH]`

use edgekd_runtime::{Backend, Model, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: profile_native MODEL.onnx [BATCH]")?;
    let batch: usize = args.get(2).map(|b| b.parse()).transpose()?.unwrap_or(1);
    let options = Options {
        backend: Backend::Native,
        ..Default::default()
    };
    let model = Model::load_with(std::path::Path::new(path), options)?;
    let per_sample = model.info().inputs[0]
        .sample_len()
        .ok_or("only the batch dimension may be free")?;
    let input: Vec<f32> = (0..batch * per_sample)
        .map(|i| (i % 255) as f32 / 255.0)
        .collect();
    let steps = model.profile(&input, batch, 2000 / batch.max(1) + 10)?;
    let total: f64 = steps.iter().map(|(_, t)| t.as_secs_f64()).sum();
    for (label, t) in &steps {
        println!(
            "{:>9.2} µs  {:>5.1}%  {label}",
            t.as_secs_f64() * 1e6,
            100.0 * t.as_secs_f64() / total
        );
    }
    println!(
        "{:>9.2} µs  total on {}",
        total * 1e6,
        edgekd_runtime::kernel_isa()
    );
    Ok(())
}
