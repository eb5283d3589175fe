//! `edgekd demo`: the whole pipeline on the MNIST subset shipped in the repository: a teacher,
//! a student distilled from it and trained alone, f32 and int8 exports verified, teacher and
//! student benchmarked on the default engine, and the answer to "how much faster and smaller
//! is the student, and what did it cost".

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use edgekd_distill::experiment::{Distillation, Setup, Training};
use edgekd_distill::teacher::Teacher;
use edgekd_distill::{DistillConfig, KdConfig, ModelSpec, OptimizerConfig, Splits, TrainConfig};
use edgekd_export::{Activations, Encoding, ExportOptions, ExportReport, Method, Variant};
use edgekd_runtime::Backend;

use super::bench::{measure, Plan, TestSet};
use super::LimitArgs;
use crate::args::shipped_subset;
use crate::bench_report::{BenchReport, Measurement, Role};
use crate::console::{describe, Console};

/// Run the whole pipeline on the shipped MNIST subset: train, distil, export, benchmark.
///
/// A teacher (an MLP of two 1200-unit layers, trained with dropout and ±2 px jitter) and a
/// student with 64 hidden units, distilled from it and trained alone with the same seeds, so
/// the gain is measured rather than assumed; then f32 and int8 ONNX exports of the student and
/// an f32 export of the teacher, each verified on the test set; then all three timed on the
/// default engine at batch 1 and 64. It ends with how much faster and smaller the student is
/// and what accuracy it paid, and draws accuracy against latency. About a minute on two cores.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct DemoArgs {
    /// Where to write checkpoints, ONNX files, the benchmark report and the chart
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Directory of MNIST-layout IDX files [default: the shipped subset]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Seeds for the alone-vs-distilled comparison
    #[arg(long, default_value_t = 3)]
    seeds: usize,
    /// Seconds of timed runs per model and batch size in the benchmark
    #[arg(long, default_value_t = 0.5, value_name = "SECONDS")]
    bench_time: f64,
    /// Print only the results
    #[arg(long, short)]
    quiet: bool,
}

/// The demo's teacher and student: the teacher far larger and clearly better than the student
/// can get alone, which is when distillation pays.
const TEACHER: &str = "mlp:1200-1200";
const TEACHER_EPOCHS: usize = 10;
const TEACHER_LR: f64 = 1e-3;
const TEACHER_DROPOUT: f32 = 0.3;
const TEACHER_JITTER: usize = 2;
const STUDENT: &str = "mlp:64";
const STUDENT_EPOCHS: usize = 20;
const STUDENT_LR: f64 = 3e-3;
/// Found by sweeping the shipped subset (see README): a small student wants a low temperature.
const TEMPERATURE: f64 = 2.0;
const ALPHA: f64 = 0.5;

pub fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if !args.bench_time.is_finite() || args.bench_time <= 0.0 {
        bail!("--bench-time must be positive");
    }
    let dir = args.data.clone().unwrap_or_else(shipped_subset);
    let data =
        Splits::load(&dir).with_context(|| format!("loading dataset from {}", dir.display()))?;
    println!(
        "edgekd demo: {} training and {} test images from {}",
        data.train.len(),
        data.test.len(),
        dir.display()
    );
    let setup = Setup {
        data: &data,
        data_name: dir.display().to_string(),
        resume: false,
        stop_after: None,
        logit_cache: None,
    };
    let mut console = Console {
        quiet: args.quiet,
        profile: false,
    };

    let teacher = Training {
        spec: spec(TEACHER, &data)?.with_dropout(TEACHER_DROPOUT, 0.0)?,
        config: config(TEACHER_EPOCHS, TEACHER_LR, TEACHER_JITTER, 0),
    }
    .run(&setup, &args.out.join("teacher"), &mut console)?
    .context("the teacher run stopped early")?;
    let teacher_line = describe(&teacher);
    let teacher_dir = teacher.dir;
    let teachers = [Teacher::Checkpoint(teacher.model)];

    let distilled = Distillation {
        teachers: &teachers,
        teacher_names: vec![teacher_dir.display().to_string()],
        student: spec(STUDENT, &data)?,
        student_start: None,
        config: config(STUDENT_EPOCHS, STUDENT_LR, 0, 0),
        distill: DistillConfig {
            kd: KdConfig {
                temperature: TEMPERATURE,
                alpha: ALPHA,
                ..Default::default()
            },
            ..Default::default()
        },
        assistant: None,
        baseline: true,
        seeds: args.seeds,
        unlabeled: None,
    }
    .run(&setup, &args.out.join("student"), &mut console)?;
    let student = distilled
        .students
        .first()
        .context("the student run stopped early")?;

    let onnx = args.out.join("onnx");
    if !args.quiet {
        eprintln!("exporting to {} and verifying every file", onnx.display());
    }
    let teacher_export = export(&teacher_dir, &data, &onnx, "teacher", vec![Variant::F32])?;
    let int8 = Variant::Int8 {
        encoding: Encoding::QOperator,
        activations: Activations::Static(Method::Percentile),
    };
    let student_export = export(
        &student.dir,
        &data,
        &onnx,
        "student",
        vec![Variant::F32, int8],
    )?;

    if !args.quiet {
        eprintln!("benchmarking on the default engine, one thread, batch 1 and 64");
    }
    let file = |e: &ExportReport, variant: &str| {
        e.files
            .iter()
            .find(|f| f.variant == variant)
            .map(|f| f.path.clone())
            .with_context(|| format!("the export wrote no {variant} file"))
    };
    let plan = Plan {
        teacher: file(&teacher_export, "f32")?,
        students: vec![
            file(&student_export, "f32")?,
            file(&student_export, &int8.name())?,
        ],
        backends: vec![Backend::Auto],
        batches: vec![1, 64],
        threads: vec![1],
        runs: None,
        time: args.bench_time,
        warmup: 5,
        test: Some(TestSet::read(
            &dir,
            None,
            LimitArgs::default().limits().max_tensor_elements,
        )?),
        memory: true,
        limits: LimitArgs::default(),
    };
    let bench = measure(&plan)?;
    bench.write(&args.out.join("bench.json"))?;
    let chart = args.out.join("accuracy-vs-latency.png");
    draw(&chart, &bench)?;

    println!();
    println!("teacher  {teacher_line}");
    println!("student  {}", describe(student));
    if let Some(g) = &distilled.gain {
        println!("{}", g.line());
    }
    println!(
        "ONNX files in {}, each verified on the {} test images against its checkpoint:",
        onnx.display(),
        data.test.len()
    );
    for e in [&teacher_export, &student_export] {
        for f in &e.files {
            let v = &f.verification;
            println!(
                "  {:<34} {:>9}  {:.2}% accuracy, {:.2}% top-1 agreement, max |Δlogit| {:.4}",
                f.path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                bytes(f.bytes as u64),
                v.accuracy,
                v.agreement,
                v.max_abs_logit_diff,
            );
        }
    }
    println!("latency on the default engine, one thread (mean ± σ per batch):");
    for m in &bench.measurements {
        println!(
            "  {:<28} batch {:>2}  {:>9} ± {:<9}  {}",
            m.model,
            m.batch,
            super::bench::time_text(m.latency.mean),
            super::bench::time_text(m.latency.std_dev),
            m.engine,
        );
    }
    println!(
        "{}",
        verdict(&bench, &int8.name(), distilled.gain.as_ref())?
    );
    println!(
        "demo finished in {:.0} s; checkpoints, ONNX files, bench.json and {} in {}",
        started.elapsed().as_secs_f64(),
        chart.file_name().unwrap_or_default().to_string_lossy(),
        args.out.display()
    );
    Ok(())
}

/// A model spec for the data's images and classes.
fn spec(name: &str, data: &Splits) -> Result<ModelSpec> {
    let mut s = ModelSpec::parse(name)?;
    s.input = data.train.shape();
    s.classes = data.classes();
    s.validate()?;
    Ok(s)
}

/// AdamW at `lr` with the cosine schedule, batch 128.
fn config(epochs: usize, lr: f64, jitter: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        seed,
        optimizer: OptimizerConfig {
            lr,
            ..Default::default()
        },
        augment: edgekd_distill::batch::Augment {
            jitter,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Exports `checkpoint` as `variants` into `out`, every file verified on the test set.
fn export(
    checkpoint: &Path,
    data: &Splits,
    out: &Path,
    stem: &str,
    variants: Vec<Variant>,
) -> Result<ExportReport> {
    let options = ExportOptions {
        variants,
        calibration_samples: 1000,
        max_accuracy_drop: 0.5,
        latency_budget: 0.0,
        stem: stem.into(),
    };
    let report = edgekd_export::export(checkpoint, data, out, &options, &mut |_: &str| {})
        .with_context(|| format!("exporting {}", checkpoint.display()))?;
    if let Some(f) = report.rejected().first() {
        bail!(
            "{} lost {:.2} pp of accuracy in export",
            f.variant,
            report.reference_accuracy - f.verification.accuracy
        );
    }
    Ok(report)
}

#[cfg(feature = "plot")]
fn draw(path: &Path, bench: &BenchReport) -> Result<()> {
    crate::plot::accuracy_vs_latency(path, &bench.measurements, 1, 1)
}

#[cfg(not(feature = "plot"))]
fn draw(_: &Path, _: &BenchReport) -> Result<()> {
    Ok(())
}

fn bytes(b: u64) -> String {
    if b < 1 << 20 {
        format!("{:.1} kB", b as f64 / 1e3)
    } else {
        format!("{:.2} MB", b as f64 / 1e6)
    }
}

/// The line the demo exists for: the int8 student against the f32 teacher.
fn verdict(
    bench: &BenchReport,
    int8: &str,
    gain: Option<&edgekd_distill::KdGain>,
) -> Result<String> {
    let find = |role: Role, format: &str, batch: usize| -> Result<&Measurement> {
        bench
            .measurements
            .iter()
            .find(|m| m.role == role && m.format == format && m.batch == batch)
            .with_context(|| format!("no {format} {role} measured at batch {batch}"))
    };
    let (t1, s1) = (
        find(Role::Teacher, "f32", 1)?,
        find(Role::Student, int8, 1)?,
    );
    let (t64, s64) = (
        find(Role::Teacher, "f32", 64)?,
        find(Role::Student, int8, 64)?,
    );
    let accuracy = |m: &Measurement| m.accuracy.unwrap_or(f64::NAN);
    let mut line = format!(
        "student int8: {:.0}x faster than the teacher at batch 1 ({:.0}x at batch 64), {:.0}x smaller ({} vs {}), {:+.2} pp accuracy",
        t1.latency.mean / s1.latency.mean,
        t64.latency.mean / s64.latency.mean,
        t1.file_bytes as f64 / s1.file_bytes as f64,
        bytes(s1.file_bytes),
        bytes(t1.file_bytes),
        100.0 * (accuracy(s1) - accuracy(t1)),
    );
    if let Some(g) = gain {
        line += &format!(
            "; distillation gained {:.1} errors ({}/{} seeds)",
            g.gain(),
            g.wins(),
            g.seeds.len()
        );
    }
    Ok(line)
}
