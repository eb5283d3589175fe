//! `edgekd distill`: a student from one or more teachers, optionally through an assistant, with
//! an optional same-seed baseline that says whether distillation paid.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use edgekd_distill::checkpoint::{self, load_model, REPORT_FILE};
use edgekd_distill::image_folder::load_unlabeled;
use edgekd_distill::loss::SoftTargets;
use edgekd_distill::teacher::{OnnxOptions, OnnxTeacher, Teacher};
use edgekd_distill::trainer::{teacher_logit_stores, teacher_weights};
use edgekd_distill::Normalization;
use edgekd_distill::{KdGain, Objective, Report, Splits, TrainConfig};

use super::train::train_model;
use super::{describe, teacher_test_results, train_one, RunSetup, Trained};
use crate::args::{read_config, DistillFile, KdOpts, TrainOpts};

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

/// What `distill` produced.
pub struct Distilled {
    /// Distilled students, one per seed (the first is in --out).
    pub students: Vec<Trained>,
    /// The same student trained alone, one per seed, when --baseline was given.
    pub alone: Vec<Trained>,
    /// The KD gain, when --baseline was given.
    pub gain: Option<KdGain>,
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
    let result = distill(&kd, &opts, &teachers, &data, &out)?;
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

/// The images of an --unlabeled folder as the training set, labelled with the teachers'
/// combined top-1; the test set stays `data`'s.
fn teacher_labelled(
    dir: &Path,
    teachers: &[Teacher],
    kd: &KdOpts,
    norm: Normalization,
    data: &Splits,
) -> Result<Splits> {
    let mut train = load_unlabeled(dir, data.test.shape())
        .with_context(|| format!("loading unlabelled images from {}", dir.display()))?;
    // Through the logit cache: the trainer then maps these instead of running the teachers
    // over the folder a second time.
    let stores = teacher_logit_stores(
        teachers,
        &train,
        norm,
        kd.run.logit_cache_dir().as_deref(),
        &Device::Cpu,
        &mut |_| {},
    )?;
    let logits = stores
        .iter()
        .map(|s| s.all(&Device::Cpu))
        .collect::<edgekd_distill::Result<Vec<_>>>()?;
    let given = kd.teacher_weights.as_deref().unwrap_or_default();
    let weights = teacher_weights(given, teachers.len())?;
    let combined = SoftTargets::combine(&logits, &weights, 1.0)?;
    train.labels = combined.top1()?.into_iter().map(|l| l as u8).collect();
    eprintln!(
        "{} unlabelled images from {}, labelled by the teachers' top-1 (training accuracy is agreement with them)",
        train.len(),
        dir.display()
    );
    Ok(Splits {
        train,
        test: data.test.clone(),
        class_names: data.class_names.clone(),
    })
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

/// Loads teachers (checkpoint directories, or ONNX files), naming the one that fails.
pub fn load_teachers(paths: &[PathBuf], onnx: &OnnxOptions) -> Result<Vec<Teacher>> {
    if paths.is_empty() {
        bail!("no teacher given: pass --teacher DIR (a checkpoint written by `edgekd train`) or --teacher FILE.onnx");
    }
    paths
        .iter()
        .map(|p| {
            if p.is_file() {
                let t = OnnxTeacher::load(p, onnx)?;
                eprintln!(
                    "teacher {}: ONNX, output taken as {}",
                    p.display(),
                    if t.gives_probabilities() {
                        "probabilities (their logarithm is used as logits)"
                    } else {
                        "logits"
                    }
                );
                Ok(Teacher::Onnx(t))
            } else {
                Ok(Teacher::Checkpoint(
                    load_model(p, &Device::Cpu)
                        .with_context(|| format!("loading teacher checkpoint {}", p.display()))?,
                ))
            }
        })
        .collect()
}

/// The whole distill command on loaded teachers and data: returns the students and, with
/// --baseline, the gain.
pub fn distill(
    kd: &KdOpts,
    opts: &TrainOpts,
    teachers: &[Teacher],
    data: &Splits,
    out: &Path,
) -> Result<Distilled> {
    let teacher_names: Vec<String> = kd
        .teachers
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let student_arg = kd.student.clone().ok_or_else(|| {
        anyhow::anyhow!("no student given: pass --student SPEC (e.g. mlp:64) or --student self")
    })?;
    let spec = if student_arg == "self" {
        let Some(first) = teachers[0].model() else {
            bail!("--student self copies the first teacher's architecture, which an ONNX teacher does not give; name a student spec");
        };
        let mut s = first.spec().clone();
        s.dropout = opts.dropout.unwrap_or(s.dropout);
        s.input_dropout = opts.input_dropout.unwrap_or(s.input_dropout);
        s
    } else {
        opts.spec_for(&student_arg, data)?
    };
    // Before any teacher runs on the data: a teacher that cannot take it says why.
    for t in teachers {
        t.check_fits(&spec)?;
    }
    let base = opts.train_config()?;
    let mut kd = kd.clone();
    let unlabeled = match &kd.unlabeled {
        Some(dir) => {
            if kd.baseline {
                bail!(
                    "--baseline trains the student on labels, which --unlabeled images do not have"
                );
            }
            kd.alpha.get_or_insert(1.0);
            Some(teacher_labelled(
                dir,
                teachers,
                &kd,
                spec.normalization,
                data,
            )?)
        }
        None => None,
    };
    let (kd, data) = (&kd, unlabeled.as_ref().unwrap_or(data));
    let dcfg = kd.config(base.optimizer.lr)?;
    let seeds = kd.seeds.unwrap_or(1);
    if seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let data_name = opts.data_dir().display().to_string();
    let (teacher_errors, ensemble) =
        teacher_test_results(teachers, data, spec.normalization, &Device::Cpu)?;
    let teacher_predictions = Some(ensemble);
    let total = data.test.len();
    for ((t, path), errors) in teachers.iter().zip(&teacher_names).zip(teacher_errors) {
        let name = match t {
            Teacher::Checkpoint(m) => format!("{} ({path})", m.spec().name),
            Teacher::Onnx(_) => path.clone(),
        };
        eprintln!(
            "teacher {name}: {:.2}% test accuracy ({errors} errors of {total})",
            100.0 * (total - errors) as f64 / total as f64,
        );
    }
    let setup = |label: String, config: &TrainConfig| RunSetup {
        label,
        config: config.clone(),
        data,
        data_name: &data_name,
        resume: opts.resume,
        stop_after: opts.stop_after,
        quiet: opts.quiet,
        profile: opts.profile,
        teacher_predictions: teacher_predictions.as_deref(),
        teacher_names: teacher_names.clone(),
        logit_cache: kd.run.logit_cache_dir(),
    };

    // Teacher-assistant chain: the assistant learns from the teachers, the student from it.
    let assistant_model;
    let student_teachers: &[Teacher] = match &kd.assistant {
        Some(a) => {
            let aspec = opts.spec_for(a, data)?;
            let s = setup(format!("assistant {}", aspec.name), &base);
            let Some(t) = train_one(
                &aspec,
                Objective::Distill {
                    teachers,
                    config: dcfg.clone(),
                },
                &s,
                &out.join("assistant"),
            )?
            else {
                return Ok(Distilled {
                    students: vec![],
                    alone: vec![],
                    gain: None,
                });
            };
            eprintln!("{}", describe(&t));
            assistant_model = vec![Teacher::Checkpoint(t.model)];
            &assistant_model
        }
        None => teachers,
    };

    let mut students = Vec::new();
    let mut alone = Vec::new();
    let mut gain = KdGain {
        student: spec.name.clone(),
        test_total: data.test.len(),
        seeds: vec![],
        alone_errors: vec![],
        distilled_errors: vec![],
        alone_agreement: vec![],
        distilled_agreement: vec![],
    };
    for k in 0..seeds {
        let cfg = TrainConfig {
            seed: base.seed + k as u64,
            ..base.clone()
        };
        let kd_dir = if k == 0 {
            out.to_path_buf()
        } else {
            out.join("runs").join(format!("kd-seed{}", cfg.seed))
        };
        let s = setup(format!("kd {} seed {}", spec.name, cfg.seed), &cfg);
        let Some(student) = train_one(
            &spec,
            Objective::Distill {
                teachers: student_teachers,
                config: dcfg.clone(),
            },
            &s,
            &kd_dir,
        )?
        else {
            return Ok(Distilled {
                students,
                alone,
                gain: None,
            });
        };
        if kd.baseline {
            let s = setup(format!("alone {} seed {}", spec.name, cfg.seed), &cfg);
            let Some(alone_run) = train_one(
                &spec,
                Objective::Labels,
                &s,
                &out.join("runs").join(format!("alone-seed{}", cfg.seed)),
            )?
            else {
                return Ok(Distilled {
                    students,
                    alone,
                    gain: None,
                });
            };
            gain.seeds.push(cfg.seed);
            gain.alone_errors.push(alone_run.report.test_errors);
            gain.distilled_errors.push(student.report.test_errors);
            gain.alone_agreement
                .push(alone_run.report.teacher_agreement.unwrap_or(0.0));
            gain.distilled_agreement
                .push(student.report.teacher_agreement.unwrap_or(0.0));
            alone.push(alone_run);
        }
        students.push(student);
    }
    let gain = kd.baseline.then_some(gain);
    if let Some(g) = &gain {
        checkpoint::save_json(&out.join("kd-gain.json"), g)?;
    }
    Ok(Distilled {
        students,
        alone,
        gain,
    })
}
