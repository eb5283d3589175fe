//! `edgekd soak`: one model run a million times in one process, resident memory watched, for
//! devices that run for months. Fails when memory grows past `--max-growth`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use edgekd_runtime::Backend;
use indicatif::{ProgressBar, ProgressStyle};

use super::bench::{input_batch, proc_status_bytes};

/// Run one model many times and report resident memory at the start and the end.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct SoakArgs {
    /// ONNX model
    pub model: PathBuf,
    /// Inferences to run
    #[arg(long, default_value_t = 1_000_000)]
    pub runs: u64,
    /// Samples per inference
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Engine: auto, native, tract, ort
    #[arg(long, default_value = "auto")]
    pub backend: Backend,
    /// Threads per inference
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Largest accepted growth of resident memory between the first and the last run, in MB
    #[arg(long, default_value_t = 1.0)]
    pub max_growth: f64,
    #[command(flatten)]
    pub limits: super::LimitArgs,
    /// Print the figures as JSON
    #[arg(long)]
    pub json: bool,
}

/// Warm-up runs before the starting figure: allocators and plan caches settle in them.
const WARMUP: u64 = 1000;

pub fn run(a: SoakArgs) -> Result<()> {
    if a.runs == 0 || a.batch == 0 {
        bail!("--runs and --batch must be at least 1");
    }
    if !(a.max_growth.is_finite() && a.max_growth >= 0.0) {
        bail!("--max-growth must be a number of MB, 0 or more");
    }
    let model = super::load_model(
        &a.model,
        a.backend,
        a.threads,
        Default::default(),
        &a.limits,
    )?;
    let input = input_batch(&model, a.batch, None)?;
    let reference = model.logits(&input, a.batch)?;
    for _ in 0..WARMUP {
        model.logits(&input, a.batch)?;
    }
    let rss = || proc_status_bytes("VmRSS").context("resident memory is only read on Linux");
    let bar = ProgressBar::new(a.runs).with_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar.set_prefix("soak");
    // One checkpoint before the starting figure: its first progress draw and /proc read
    // touch pages of their own, which are not the model's growth.
    bar.set_message(format!("RSS {:.2} MB", rss()? as f64 / 1e6));
    bar.tick();
    let start_rss = rss()?;
    let mut samples = vec![(0u64, start_rss)];
    let started = Instant::now();
    let every = (a.runs / 10).max(1);
    for i in 1..=a.runs {
        let out = model.logits(&input, a.batch)?;
        // Every run must still give the first run's answer, not only use no more memory.
        if i % every == 0 || i == a.runs {
            if out != reference {
                bail!("run {i} gave different logits from the first run");
            }
            let now = rss()?;
            samples.push((i, now));
            bar.set_position(i);
            bar.set_message(format!("RSS {:.2} MB", now as f64 / 1e6));
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let end_rss = samples.last().map_or(start_rss, |s| s.1);
    let growth = end_rss as f64 - start_rss as f64;
    if a.json {
        let out = serde_json::json!({
            "model": a.model, "backend": model.backend(), "runs": a.runs, "batch": a.batch,
            "seconds": seconds, "rss_start_bytes": start_rss, "rss_end_bytes": end_rss,
            "rss_growth_bytes": growth,
            "rss_samples": samples.iter().map(|(i, b)| serde_json::json!({"run": i, "rss_bytes": b})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}: {} runs of batch {} on {} in {:.1} s ({:.1} µs each)",
            a.model.display(),
            a.runs,
            a.batch,
            model.backend(),
            seconds,
            seconds / a.runs as f64 * 1e6
        );
        println!(
            "resident memory: {:.3} MB after warm-up, {:.3} MB at the end ({:+.1} kB)",
            start_rss as f64 / 1e6,
            end_rss as f64 / 1e6,
            growth / 1e3
        );
    }
    if growth > a.max_growth * 1e6 {
        bail!(
            "resident memory grew by {:.1} kB over {} runs (limit --max-growth {} MB)",
            growth / 1e3,
            a.runs,
            a.max_growth
        );
    }
    Ok(())
}
