//! One module per subcommand, and the single-run helper the training commands share.

pub mod bench;
pub mod compare;
#[cfg(feature = "train")]
pub mod data;
#[cfg(feature = "train")]
pub mod demo;
#[cfg(feature = "train")]
pub mod distill;
#[cfg(feature = "train")]
pub mod eval;
#[cfg(feature = "train")]
pub mod export;
pub mod run;
pub mod soak;
#[cfg(feature = "train")]
pub mod teacher_logits;
#[cfg(feature = "train")]
pub mod train;

#[cfg(feature = "train")]
pub use training::*;

/// What `train`, `distill` and `demo` share: running one training and reporting it.
#[cfg(feature = "train")]
mod training {
    use std::path::{Path, PathBuf};

    use anyhow::{Context, Result};
    use candle_core::{Device, Tensor, D};
    use edgekd_distill::checkpoint::{self, REPORT_FILE};
    use edgekd_distill::loss::SoftTargets;
    use edgekd_distill::teacher::Teacher;
    use edgekd_distill::trainer::{evaluate, teacher_logits_of, top1_agreement};
    use edgekd_distill::{
        Model, ModelSpec, Normalization, Objective, Report, Run, Splits, TrainConfig,
    };

    use crate::progress::Bars;

    /// A finished run: its checkpoint directory, report and model.
    pub struct Trained {
        pub dir: PathBuf,
        pub report: Report,
        pub model: Model,
    }

    /// Each teacher's test errors, and their combined top-1 on the test set (mean of their
    /// distributions), from one forward pass per teacher.
    pub fn teacher_test_results(
        teachers: &[Teacher],
        data: &Splits,
        norm: Normalization,
        device: &Device,
    ) -> Result<(Vec<usize>, Vec<u32>)> {
        let logits: Vec<Tensor> = teachers
            .iter()
            .map(|t| {
                // A checkpoint is tested as it was trained; an ONNX teacher converts any input.
                let norm = t.model().map_or(norm, |m| m.spec().normalization);
                teacher_logits_of(t, &data.test, norm, device)
            })
            .collect::<edgekd_distill::Result<_>>()?;
        let mut errors = Vec::with_capacity(logits.len());
        for l in &logits {
            let pred = l.argmax(D::Minus1)?.to_vec1::<u32>()?;
            errors.push(
                pred.iter()
                    .zip(&data.test.labels)
                    .filter(|(p, y)| **p != **y as u32)
                    .count(),
            );
        }
        let combined = SoftTargets::combine(&logits, &vec![1.0; logits.len()], 1.0)?;
        Ok((errors, combined.top1()?))
    }

    /// Everything one training run needs besides the model and objective.
    pub struct RunSetup<'a> {
        pub label: String,
        pub config: TrainConfig,
        pub data: &'a Splits,
        pub data_name: &'a str,
        pub resume: bool,
        pub stop_after: Option<usize>,
        pub quiet: bool,
        /// Print the per-phase step profile after training.
        pub profile: bool,
        /// Teacher top-1 on the test set, to report agreement against.
        pub teacher_predictions: Option<&'a [u32]>,
        pub teacher_names: Vec<String>,
        /// Where teacher logits are cached on disk (None: in memory only).
        pub logit_cache: Option<PathBuf>,
    }

    /// Trains `spec` into `dir` (resuming, or reusing a finished run, under `--resume`) and writes
    /// its report. Returns None when the run stopped early on `--stop-after`.
    pub fn train_one(
        spec: &ModelSpec,
        objective: Objective,
        setup: &RunSetup,
        dir: &Path,
    ) -> Result<Option<Trained>> {
        let device = Device::Cpu;
        let distill = match &objective {
            Objective::Distill { config, .. } => Some(config.clone()),
            Objective::Labels => None,
        };
        let report_path = dir.join(REPORT_FILE);
        if setup.resume && report_path.is_file() {
            let report: Report = checkpoint::load_json(&report_path)?;
            // A finished run is reused only if it was made with exactly these settings and teachers.
            if report.train == setup.config
                && report.spec == *spec
                && report.distill == distill
                && report.teachers == setup.teacher_names
            {
                let model = checkpoint::load_model(dir, &device)
                    .with_context(|| format!("reloading finished run {}", dir.display()))?;
                if !setup.quiet {
                    eprintln!(
                        "[{}] already finished in {}; reusing it",
                        setup.label,
                        dir.display()
                    );
                }
                return Ok(Some(Trained {
                    dir: dir.into(),
                    report,
                    model,
                }));
            }
        }
        let model = Model::new(spec, setup.config.seed, &device)?;
        let mut bars = Bars::new(setup.label.clone(), setup.quiet);
        let outcome = Run {
            student: &model,
            objective,
            config: &setup.config,
            train: &setup.data.train,
            test: &setup.data.test,
            out_dir: dir,
            resume: setup.resume && checkpoint::state_dir(dir).join("progress.json").is_file(),
            stop_after: setup.stop_after,
            logit_cache: setup.logit_cache.as_deref(),
        }
        .execute(&mut bars)
        .with_context(|| format!("training {} into {}", spec.name, dir.display()))?;
        if setup.profile && outcome.profile.steps > 0 {
            print!("[{}] {}", setup.label, outcome.profile.table());
        }
        if outcome.paused {
            eprintln!(
                "[{}] stopped after epoch {} as asked; continue with --resume",
                setup.label,
                outcome.history.len()
            );
            return Ok(None);
        }
        // The trainer evaluated after its last epoch; only a resume with nothing left to train has not.
        let eval = match outcome.last_eval {
            Some(e) => e,
            None => evaluate(&model, &setup.data.test, &device)?,
        };
        let agreement = setup
            .teacher_predictions
            .map(|t| top1_agreement(&eval.predictions, t));
        let report = Report::new(
            spec,
            &eval,
            agreement,
            setup.teacher_names.clone(),
            outcome.history,
            setup.config.clone(),
            distill,
            setup.data_name.into(),
        );
        checkpoint::save_json(&report_path, &report)?;
        Ok(Some(Trained {
            dir: dir.into(),
            report,
            model,
        }))
    }

    /// One summary line for a finished run.
    pub fn describe(t: &Trained) -> String {
        let r = &t.report;
        let agree = r
            .teacher_agreement
            .map(|a| format!(", {:.2}% agreement with the teacher", 100.0 * a))
            .unwrap_or_default();
        format!(
            "{}: {:.2}% test accuracy ({} errors of {}){agree}; {} parameters, {:.1} kMAC/sample, {:.2} s/epoch -> {}",
            r.model,
            100.0 * r.test_accuracy,
            r.test_errors,
            r.test_total,
            r.parameters,
            r.macs as f64 / 1e3,
            r.seconds_per_epoch,
            t.dir.display()
        )
    }
}

/// Size limits for files from strangers, shared by the commands that load models.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LimitArgs {
    /// Refuse model files larger than this [default: 2147483648, protobuf's own ceiling]
    #[arg(long, value_name = "BYTES")]
    pub max_model_bytes: Option<u64>,
    /// Refuse a model that declares a tensor, or an IDX file whose header declares an array,
    /// of more elements than this; checked before anything is allocated [default: 268435456]
    #[arg(long, value_name = "N")]
    pub max_tensor_elements: Option<u64>,
}

impl LimitArgs {
    /// The runtime's limits, defaults filled in.
    pub fn limits(&self) -> edgekd_runtime::Limits {
        let d = edgekd_runtime::Limits::default();
        edgekd_runtime::Limits {
            max_model_bytes: self.max_model_bytes.unwrap_or(d.max_model_bytes),
            max_tensor_elements: self.max_tensor_elements.unwrap_or(d.max_tensor_elements),
        }
    }

    /// The same flags, for a child process.
    pub fn to_args(self) -> Vec<String> {
        let l = self.limits();
        vec![
            format!("--max-model-bytes={}", l.max_model_bytes),
            format!("--max-tensor-elements={}", l.max_tensor_elements),
        ]
    }
}

/// Loads an ONNX model on the given engine, naming the file in any error.
pub fn load_model(
    path: &std::path::Path,
    backend: edgekd_runtime::Backend,
    threads: usize,
    limits: &LimitArgs,
) -> anyhow::Result<edgekd_runtime::Model> {
    use anyhow::Context;
    if threads == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    if path.is_dir() {
        anyhow::bail!("{} is a directory; give an .onnx file", path.display());
    }
    let options = edgekd_runtime::Options {
        backend,
        threads,
        limits: limits.limits(),
    };
    edgekd_runtime::Model::load_with(path, options)
        .with_context(|| format!("loading {}", path.display()))
}
