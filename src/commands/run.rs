//! `edgekd run`: classify inputs with an ONNX model and print the top classes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use edgekd_runtime::classify::top_k_probabilities;
use edgekd_runtime::{class_names, top_k, Backend, Preprocess};

/// Classify an image, an IDX file of images, or raw f32 values.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct RunArgs {
    /// ONNX model (any classifier; edgekd's exports carry their preprocessing in metadata)
    pub model: PathBuf,
    /// Input: PNG or JPEG image, IDX images (MNIST format, .gz or raw), or little-endian f32
    /// values in a file named .f32/.raw/.bin
    #[arg(long, short)]
    pub input: PathBuf,
    /// Classes to show per sample
    #[arg(long, short = 'k', default_value_t = 3)]
    pub top_k: usize,
    /// Samples to classify from an IDX or f32 file
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Invert pixels (255 - p): MNIST digits are white on black, photos of ink are not
    #[arg(long)]
    pub invert: bool,
    /// Engine: auto (edgekd's native engine for every model it covers, tract otherwise),
    /// native, tract, ort
    #[arg(long, default_value = "auto")]
    pub backend: Backend,
    /// Threads per inference
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Native engine: compute float layers in one fixed order without fused multiply-adds, so
    /// every CPU (x86-64, ARM, with or without FMA) prints the same bits; slower
    #[arg(long)]
    pub exact_float: bool,
    #[command(flatten)]
    pub limits: super::LimitArgs,
    /// Print JSON instead of text (top classes and every logit, per sample)
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: RunArgs) -> Result<()> {
    if a.top_k == 0 || a.limit == 0 {
        anyhow::bail!("--top-k and --limit must be at least 1");
    }
    let float = if a.exact_float {
        edgekd_runtime::FloatMode::Exact
    } else {
        edgekd_runtime::FloatMode::Fast
    };
    let model = super::load_model(&a.model, a.backend, a.threads, float, &a.limits)?;
    let info = model.info();
    let per_sample = info.inputs[0]
        .sample_len()
        .context("the model's input has free dimensions besides the batch")?;
    let pre = Preprocess::for_model(info);
    let inputs = crate::input::read(
        &a.input,
        pre.as_ref(),
        per_sample,
        a.limit,
        a.invert,
        a.limits.limits().max_tensor_elements,
    )?;
    let started = std::time::Instant::now();
    let logits = model
        .logits(&inputs.values, inputs.count)
        .with_context(|| format!("running {}", a.model.display()))?;
    let elapsed = started.elapsed();
    let names = class_names(info);
    let name = |c: usize| {
        names
            .as_ref()
            .and_then(|n| n.get(c).cloned())
            .unwrap_or_else(|| c.to_string())
    };
    // A model ending in a softmax (scikit-learn's, many exports) gives probabilities: ranked
    // as they are, not softmaxed again.
    let probabilities = info.gives_probabilities(info.class_output());
    let ranked: Vec<_> = (0..logits.rows())
        .map(|i| {
            let row = logits.row(i);
            if probabilities {
                top_k_probabilities(row.to_vec(), a.top_k.max(1))
            } else {
                top_k(row, a.top_k.max(1))
            }
        })
        .collect();
    if a.json {
        let samples: Vec<_> = ranked
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| serde_json::json!({"class": name(c.class), "index": c.class, "probability": c.probability}))
                    .collect::<Vec<_>>()
            })
            .collect();
        let logits: Vec<&[f32]> = (0..logits.rows()).map(|i| logits.row(i)).collect();
        let out = serde_json::json!({
            "model": a.model, "backend": model.backend(), "samples": samples,
            "logits": logits, "seconds": elapsed.as_secs_f64(),
            "output": { "name": info.outputs[info.class_output()].name,
                "holds": if probabilities { "probabilities" } else { "logits" } },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    eprintln!(
        "{} ({}, input {} {}), {} sample(s) in {:.3} ms",
        a.model.display(),
        model.backend(),
        info.inputs[0].shape_text(),
        info.inputs[0].element,
        inputs.count,
        elapsed.as_secs_f64() * 1e3
    );
    for (i, r) in ranked.iter().enumerate() {
        let classes: Vec<String> = r
            .iter()
            .map(|c| format!("{} ({:.1}%)", name(c.class), 100.0 * c.probability))
            .collect();
        println!("{i}: {}", classes.join(", "));
    }
    Ok(())
}
