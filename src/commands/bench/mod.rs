//! `edgekd bench`: teacher against students, every model × backend × batch × threads
//! configuration timed in interleaved rounds of short bursts (so drift on a shared machine
//! hits all alike, while each burst runs warm), reported the way hyperfine reports commands.

mod measure;
mod table;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use edgekd_runtime::Backend;

pub(crate) use measure::{input_batch, proc_status_bytes};
pub use measure::{measure, peak_rss, PeakRssArgs, Plan, TestSet};
pub(crate) use table::time_text;

/// Measure latency, throughput, memory and accuracy of a teacher and its students.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct BenchArgs {
    /// The teacher's ONNX file: every speed-up is relative to it
    #[arg(long)]
    pub teacher: PathBuf,
    /// Student ONNX files (repeat the flag, or separate with commas)
    #[arg(long, required = true, value_delimiter = ',')]
    pub student: Vec<PathBuf>,
    /// Engines to compare: auto (edgekd's native engine for every model it covers, tract
    /// otherwise), native, tract, ort
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub backend: Vec<Backend>,
    /// Batch sizes
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// Threads per inference
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// Timed runs per configuration (default: as many as --time allows, at least 10)
    #[arg(long)]
    pub runs: Option<usize>,
    /// Seconds of timed runs per configuration, when --runs is not given
    #[arg(long, default_value_t = 1.0)]
    pub time: f64,
    /// Untimed runs per configuration before measuring
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// MNIST-layout directory (t10k-images/labels IDX) to measure accuracy on
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Test images used for accuracy (default: all)
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip measuring each model's peak memory in a child process
    #[arg(long)]
    pub no_memory: bool,
    #[command(flatten)]
    pub limits: super::LimitArgs,
    /// Write every measurement as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the table as CSV
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Draw accuracy against latency (first batch size and thread count) as a PNG
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.batch.contains(&0) || a.threads.contains(&0) {
        bail!("--batch and --threads take positive numbers");
    }
    if !a.time.is_finite() || a.time <= 0.0 {
        bail!("--time must be positive");
    }
    for b in &a.backend {
        if !b.available() {
            bail!("backend `{b}` is not in this build (rebuild with `--features {b}`)");
        }
    }
    let test = a
        .data
        .as_deref()
        .map(|d| TestSet::read(d, a.limit, a.limits.limits().max_tensor_elements))
        .transpose()
        .context("reading --data")?;
    let plan = Plan {
        teacher: a.teacher.clone(),
        students: a.student.clone(),
        backends: a.backend.clone(),
        batches: a.batch.clone(),
        threads: a.threads.clone(),
        runs: a.runs,
        time: a.time,
        warmup: a.warmup,
        test,
        memory: !a.no_memory,
        limits: a.limits,
    };
    let report = measure(&plan)?;
    table::print(&report.measurements);
    if let Some(p) = &a.json {
        report.write(p)?;
    }
    if let Some(p) = &a.csv {
        std::fs::write(p, table::csv(&report.measurements))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.plot {
        plot(p, &report, a.batch[0], a.threads[0])?;
    }
    Ok(())
}

#[cfg(feature = "plot")]
fn plot(
    path: &std::path::Path,
    report: &crate::bench_report::BenchReport,
    batch: usize,
    threads: usize,
) -> Result<()> {
    crate::plot::accuracy_vs_latency(path, &report.measurements, batch, threads)
}

#[cfg(not(feature = "plot"))]
fn plot(
    _: &std::path::Path,
    _: &crate::bench_report::BenchReport,
    _: usize,
    _: usize,
) -> Result<()> {
    bail!("this edgekd was built without the `plot` feature")
}
