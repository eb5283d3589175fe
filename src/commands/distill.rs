//! `edgekd distill`: a student from one or more teachers, optionally through an assistant, with
//! an optional same-seed baseline that says whether distillation paid.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use edgekd_distill::checkpoint::{self, REPORT_FILE};
use edgekd_distill::experiment::{self_distillation_student, Distillation, Distilled, Setup};
use edgekd_distill::onnx_teacher::OnnxOptions;
use edgekd_distill::prune::{Gradual, CHANNEL_MULTIPLE};
use edgekd_distill::teacher::Teacher;
use edgekd_distill::{ModelSpec, Report, Splits};

use super::train::train_model;
use crate::args::{read_config, CriterionArg, DistillFile, KdOpts, ScopeArg, TrainOpts};
use crate::console::{describe, Console};

/// Distil a student from one or more teachers.
///
/// The student learns from the teachers' temperature-softened outputs (KL divergence scaled by
/// T^2) blended with the true labels by --alpha; or from their logits (--soft-loss mse) or
/// argmax (--soft-loss hard), optionally with feature hints. With --baseline the same student is
/// also trained alone with the same seed, epochs and schedule, and the KD gain is reported over
/// --seeds seeds: distillation only pays when the teacher is clearly better than the student
/// can get alone, and this tells you whether it did.
///
/// --out receives the distilled student of the first seed; other runs go to --out/runs/, and the
/// gain to --out/kd-gain.json. Teacher outputs are computed once per run when no augmentation
/// is on.
///
/// An experiment file may also hold a `[teacher]` table (model, out and training options, as
/// in a `train --config` file): that teacher is trained first, or reused under --resume once
/// finished, and distilled from. Options the table leaves out come from the top level;
/// command-line flags override both.
#[derive(Debug, Args)]
#[command(
    allow_negative_numbers = true,
    after_help = "Example: edgekd distill --teacher runs/teacher --student mlp:64 -T 4 --alpha 0.9 --data ../shared/data/mnist --epochs 30 --baseline --seeds 3 --out runs/student"
)]
pub struct DistillArgs {
    #[command(flatten)]
    kd: KdOpts,
    /// Directory to write the student to
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Experiment file (TOML) holding any of these options; flags override it
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Draw test errors per epoch of the teachers, distilled and (--baseline) lone students (PNG)
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    opts: TrainOpts,
}

pub fn run(args: DistillArgs) -> Result<()> {
    let file: DistillFile = match &args.config {
        Some(p) => read_config(p)?,
        None => DistillFile::default(),
    };
    let mut kd = args.kd.merge(&file.kd);
    kd.run = std::mem::take(&mut kd.run).merge(&file.run);
    let opts = args.opts.clone().merge(&file.opts);
    let out = args
        .out
        .or(file.out)
        .ok_or_else(|| anyhow::anyhow!("no output directory given: pass --out DIR"))?;
    let plot = args.plot.or(file.plot);
    opts.apply_threads()?;
    if let Some(t) = &file.teacher {
        let (Some(model), Some(dir)) = (&t.model, &t.out) else {
            bail!("the [teacher] table needs both `model` and `out`");
        };
        let teacher_opts = args.opts.clone().merge(&t.opts.clone().merge(&file.opts));
        let Some(teacher) = train_model(model, dir, &teacher_opts)? else {
            return Ok(());
        };
        println!("{}", describe(&teacher));
        if !kd.teachers.contains(dir) {
            kd.teachers.insert(0, dir.clone());
        }
    }
    let teachers = load_teachers(&kd.teachers, &kd.run.onnx_options()?)?;
    let data = opts.load_data_for(Some(teachers[0].input()))?;
    let distillation = distillation(&kd, &opts, &teachers, &data)?;
    if let Some(start) = &distillation.student_start {
        if super::same_path(&start.dir, &out) {
            bail!(
                "--out {} is the --student checkpoint training starts from; write the student elsewhere",
                out.display()
            );
        }
    }
    if kd.prune_ratio.is_none()
        && (kd.prune_steps.is_some() || kd.prune_criterion.is_some() || kd.prune_scope.is_some())
    {
        bail!("prune_steps, prune_criterion and prune_scope need prune_ratio");
    }
    let setup = Setup {
        data: &data,
        data_name: opts.data_dir().display().to_string(),
        resume: opts.resume,
        stop_after: opts.stop_after,
        logit_cache: kd.run.logit_cache_dir(),
    };
    let mut console = Console {
        quiet: opts.quiet,
        profile: opts.profile,
    };
    let result = match kd.prune_ratio {
        Some(ratio) => {
            let Some(start) = &distillation.student_start else {
                bail!("--prune-ratio prunes the --student checkpoint: give --student DIR (for instance the teacher's own directory)");
            };
            let gradual = Gradual {
                ratio,
                steps: kd.prune_steps.unwrap_or(1),
                criterion: kd.prune_criterion.unwrap_or(CriterionArg::L1).criterion(),
                scope: kd.prune_scope.unwrap_or(ScopeArg::Layer).scope(),
                batches: 32,
                multiple: kd.prune_channel_multiple.unwrap_or(CHANNEL_MULTIPLE),
            };
            let model = start.model(&distillation.student)?;
            let Some(outcome) = gradual.run(model, &distillation, &setup, &out, &mut console)?
            else {
                return Ok(());
            };
            for (k, p) in outcome.plans.iter().enumerate() {
                println!(
                    "step {}: {} -> {} parameters, {} -> {} MACs/sample",
                    k + 1,
                    p.before.param_count(),
                    p.after.param_count(),
                    p.before.macs(),
                    p.after.macs()
                );
            }
            outcome.last
        }
        None => distillation.run(&setup, &out, &mut console)?,
    };
    for s in &result.students {
        println!("{}", describe(s));
    }
    if let Some(g) = &result.gain {
        println!("{}", g.line());
    }
    if let Some(path) = plot {
        plot_errors(&path, &kd.teachers, &result)?;
        eprintln!("test errors per epoch drawn in {}", path.display());
    }
    Ok(())
}

/// The distillation the options ask for, with its student made for `data`.
fn distillation<'a>(
    kd: &KdOpts,
    opts: &TrainOpts,
    teachers: &'a [Teacher],
    data: &Splits,
) -> Result<Distillation<'a>> {
    let mut student_start = None;
    let student = match kd.student.as_deref() {
        None => bail!("no student given: pass --student SPEC (e.g. mlp:64) or --student self"),
        Some("self") => self_distillation_student(teachers, opts.dropout, opts.input_dropout)?,
        Some(s) if Path::new(s).is_dir() => {
            let (spec, start) = checkpoint::load_start(Path::new(s))
                .with_context(|| format!("loading the student checkpoint {s}"))?;
            student_start = Some(start);
            checkpoint_student(spec, opts, data, s)?
        }
        Some(s) if s.ends_with(".toml") && Path::new(s).is_file() => {
            let spec = checkpoint::parse_spec(&std::fs::read_to_string(s)?, Path::new(s))?;
            checkpoint_student(spec, opts, data, s)?
        }
        Some(s) if s.contains('/') || s.ends_with(".toml") => bail!(
            "--student {s}: no such checkpoint directory or model.toml file (a spec looks like mlp:64 or resnet:8)"
        ),
        Some(spec) => opts.spec_for(spec, data)?,
    };
    let assistant = kd
        .assistant
        .as_deref()
        .map(|a| opts.spec_for(a, data))
        .transpose()?;
    let config = opts.train_config()?;
    let mut kd = kd.clone();
    if kd.unlabeled.is_some() {
        // Unlabelled images have no labels to blend in: soft targets only, unless told.
        kd.alpha.get_or_insert(1.0);
    }
    Ok(Distillation {
        teachers,
        teacher_names: kd
            .teachers
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        student,
        student_start,
        distill: kd.config(config.optimizer.lr)?,
        config,
        assistant,
        baseline: kd.baseline,
        seeds: kd.seeds.unwrap_or(1),
        unlabeled: kd.unlabeled.clone(),
    })
}

/// A student whose architecture a file fixes (a checkpoint's, or a model.toml alone for the
/// same shape from scratch), with --dropout / --input-dropout applied; it must take the data.
fn checkpoint_student(
    mut spec: ModelSpec,
    opts: &TrainOpts,
    data: &Splits,
    from: &str,
) -> Result<ModelSpec> {
    spec.dropout = opts.dropout.unwrap_or(spec.dropout);
    spec.input_dropout = opts.input_dropout.unwrap_or(spec.input_dropout);
    spec.validate()?;
    if spec.input != data.train.shape() || spec.classes != data.classes() {
        bail!(
            "the student {from} takes {} images in {} classes; the data has {} images in {}",
            spec.input,
            spec.classes,
            data.train.shape(),
            data.classes()
        );
    }
    Ok(spec)
}

/// Test errors per epoch of every run this command made or read (a teacher's come from the
/// report.json `edgekd train` left beside it, when there is one).
fn plot_errors(path: &Path, teachers: &[PathBuf], result: &Distilled) -> Result<()> {
    let curve = |r: &Report| r.history.iter().map(|e| (e.epoch, e.test_errors)).collect();
    let mut curves = Vec::new();
    for dir in teachers {
        let report = dir.join(REPORT_FILE);
        if report.is_file() {
            let r: Report = checkpoint::load_json(&report)?;
            curves.push((format!("teacher {}", r.model), curve(&r)));
        }
    }
    for (kind, runs) in [("distilled", &result.students), ("alone", &result.alone)] {
        for t in runs.iter() {
            let seed = t.report.train.seed;
            curves.push((
                format!("{} {kind} (seed {seed})", t.report.model),
                curve(&t.report),
            ));
        }
    }
    draw_errors(path, &curves)
}

#[cfg(feature = "plot")]
fn draw_errors(path: &Path, curves: &[crate::plot::ErrorCurve]) -> Result<()> {
    crate::plot::errors_per_epoch(path, "Test errors per epoch", curves)
}

#[cfg(not(feature = "plot"))]
fn draw_errors(_: &Path, _: &[(String, Vec<(usize, usize)>)]) -> Result<()> {
    bail!("this edgekd was built without the `plot` feature")
}

/// Loads teachers (checkpoint directories, or ONNX files), naming the one that fails, and
/// says how each ONNX teacher's output is read.
pub fn load_teachers(paths: &[PathBuf], onnx: &OnnxOptions) -> Result<Vec<Teacher>> {
    if paths.is_empty() {
        bail!("no teacher given: pass --teacher DIR (a checkpoint written by `edgekd train`) or --teacher FILE.onnx");
    }
    let mut teachers = Vec::with_capacity(paths.len());
    for p in paths {
        // An ONNX teacher's errors name its file already.
        let t = if p.is_file() {
            Teacher::load(p, onnx)?
        } else {
            Teacher::load(p, onnx)
                .with_context(|| format!("loading teacher checkpoint {}", p.display()))?
        };
        if let Teacher::Onnx(o) = &t {
            eprintln!(
                "teacher {}: ONNX, output taken as {}",
                p.display(),
                if o.gives_probabilities() {
                    "probabilities (their logarithm is used as logits)"
                } else {
                    "logits"
                }
            );
        }
        teachers.push(t);
    }
    Ok(teachers)
}
