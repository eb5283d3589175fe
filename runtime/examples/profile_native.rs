//! Per-step time of an int8 model on the native engine: which (fused) operator costs what.
//!
//! `cargo run --release -p edgekd-runtime --example profile_native -- MODEL.onnx [BATCH]`

use edgekd_runtime::native::NativeModel;
use edgekd_runtime::{Dim, Model, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: profile_native MODEL.onnx [BATCH]")?;
    let batch: usize = args.get(2).map(|b| b.parse()).transpose()?.unwrap_or(1);
    let bytes = std::fs::read(path)?;
    let info = Model::from_bytes_with(&bytes, Options::default())?
        .info()
        .clone();
    let native = NativeModel::load(&edgekd_runtime::proto::decode(&bytes)?, &info, 1)?;
    let mut shape = vec![batch];
    for d in &info.inputs[0].shape[1..] {
        match d {
            Dim::Fixed(n) => shape.push(*n),
            Dim::Free(_) => return Err("only the batch dimension may be free".into()),
        }
    }
    let n: usize = shape.iter().product();
    let input: Vec<f32> = (0..n).map(|i| (i % 255) as f32 / 255.0).collect();
    let steps = native.profile(&input, &shape, 2000 / batch.max(1) + 10)?;
    let total: f64 = steps.iter().map(|(_, t)| t.as_secs_f64()).sum();
    for (label, t) in &steps {
        println!(
            "{:>9.2} µs  {:>5.1}%  {label}",
            t.as_secs_f64() * 1e6,
            100.0 * t.as_secs_f64() / total
        );
    }
    println!("{:>9.2} µs  total on {}", total * 1e6, native.isa());
    Ok(())
}
