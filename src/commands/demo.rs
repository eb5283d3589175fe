//! `edgekd demo`: the whole distill stage on the MNIST subset shipped in the repository.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use edgekd_distill::Objective;

use super::distill::{distill, load_teachers};
use super::{describe, train_one, RunSetup};
use crate::args::KdOpts;
use crate::args::TrainOpts;

/// Train a teacher, distil a student from it, and compare them, on the shipped MNIST subset.
///
/// The teacher is LeNet-5 trained with dropout and ±2 px jitter; the student an MLP with 64
/// hidden units, trained both alone and distilled (T = 2, alpha = 0.5) with the same seeds, so
/// the line at the end says what distillation bought. Takes about two minutes on two cores.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct DemoArgs {
    /// Where to write the teacher and student checkpoints
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Directory of MNIST-layout IDX files [default: the shipped subset]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Seeds for the alone-vs-distilled comparison
    #[arg(long, default_value_t = 3)]
    seeds: usize,
    /// Print only the results
    #[arg(long, short)]
    quiet: bool,
}

/// The demo's teacher and student, chosen so the whole demo fits in about two minutes on two
/// cores while the teacher stays clearly better than the student can get alone (about 40 vs
/// 95 errors on the 2,000 test images): distillation pays only then.
const TEACHER: &str = "cnn:lenet5";
const TEACHER_EPOCHS: usize = 10;
const STUDENT: &str = "mlp:64";
const STUDENT_EPOCHS: usize = 20;
/// Found by sweeping the shipped subset (see README): a small student wants a low temperature.
const LR: f64 = 3e-3;
const TEMPERATURE: f64 = 2.0;
const ALPHA: f64 = 0.5;

pub fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let teacher_opts = TrainOpts {
        data: args.data.clone(),
        epochs: Some(TEACHER_EPOCHS),
        lr: Some(LR),
        jitter: Some(2),
        dropout: Some(0.3),
        quiet: args.quiet,
        ..Default::default()
    };
    let data = teacher_opts.load_data()?;
    let data_name = teacher_opts.data_dir().display().to_string();
    println!(
        "edgekd demo: {} training and {} test images from {}",
        data.train.len(),
        data.test.len(),
        data_name
    );

    let tspec = teacher_opts.spec_for(TEACHER, &data)?;
    let tcfg = teacher_opts.train_config()?;
    let setup = RunSetup {
        label: format!("teacher {TEACHER}"),
        config: tcfg.clone(),
        data: &data,
        data_name: &data_name,
        resume: false,
        stop_after: None,
        quiet: args.quiet,
        profile: false,
        teacher_predictions: None,
        teacher_names: vec![],
        logit_cache: None,
    };
    let teacher = train_one(&tspec, Objective::Labels, &setup, &args.out.join("teacher"))?
        .context("the teacher run stopped early")?;

    let student_opts = TrainOpts {
        data: args.data.clone(),
        epochs: Some(STUDENT_EPOCHS),
        lr: Some(LR),
        quiet: args.quiet,
        ..Default::default()
    };
    let kd = KdOpts {
        teachers: vec![teacher.dir.clone()],
        student: Some(STUDENT.into()),
        temperature: Some(TEMPERATURE),
        alpha: Some(ALPHA),
        baseline: true,
        seeds: Some(args.seeds),
        ..Default::default()
    };
    let teachers = load_teachers(&kd.teachers, &kd.run.onnx_options()?)?;
    let result = distill(
        &kd,
        &student_opts,
        &teachers,
        &data,
        &args.out.join("student"),
    )?;

    println!();
    println!("teacher  {}", describe(&teacher));
    if let Some(s) = result.students.first() {
        println!("student  {}", describe(s));
        let (t, s) = (&teacher.report, &s.report);
        println!(
            "student vs teacher: {:.1}x fewer parameters, {:.1}x fewer MACs, {:.1} kB vs {:.1} kB of f32 weights, {:+.2} pp accuracy",
            t.parameters as f64 / s.parameters as f64,
            t.macs as f64 / s.macs as f64,
            s.f32_bytes as f64 / 1e3,
            t.f32_bytes as f64 / 1e3,
            100.0 * (s.test_accuracy - t.test_accuracy)
        );
    }
    if let Some(g) = &result.gain {
        println!("{}", g.line());
    }
    println!(
        "demo finished in {:.0} s; checkpoints and report.json files in {}",
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
