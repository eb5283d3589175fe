//! What a `train` or `distill` command asks for, as one value: the runs it makes (a teacher,
//! an assistant, a student per seed, the same student alone for `--baseline`), where each is
//! written, which finished ones are reused under `--resume`, and the KD gain at the end.
//!
//! The command line converts its flags into a [`Training`] or a [`Distillation`] once; `demo`
//! builds them directly. Nothing here prints: a [`Reporter`] hears what happens.

use std::path::{Path, PathBuf};

use crate::checkpoint::{self, StartWeights, REPORT_FILE};
use crate::config::{DistillConfig, TrainConfig};
use crate::dataset::Splits;
use crate::error::{Error, Result};
use crate::evaluation::{evaluate, test_teachers, top1_agreement};
use crate::identity::RunIdentity;
use crate::image_folder::load_unlabeled;
use crate::loss::SoftTargets;
use crate::model::Model;
use crate::profile::StepProfile;
use crate::report::{KdGain, Report};
use crate::spec::ModelSpec;
use crate::teacher::Teacher;
use crate::teacher_logits::{teacher_logit_stores, teacher_weights};
use crate::trainer::{Objective, Observer, Run};

/// What every run of an experiment shares.
#[derive(Debug, Clone)]
pub struct Setup<'a> {
    /// Training and test data.
    pub data: &'a Splits,
    /// How reports name the data (its directory).
    pub data_name: String,
    /// Continue interrupted runs, and reuse finished ones of the same identity.
    pub resume: bool,
    /// Stop every run after this many epochs, as if interrupted.
    pub stop_after: Option<usize>,
    /// Directory of the on-disk teacher-logit cache (None: in memory only).
    pub logit_cache: Option<PathBuf>,
}

/// A finished run: its checkpoint directory, report and model.
#[derive(Debug)]
pub struct Trained {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its `report.json`.
    pub report: Report,
    /// The trained model.
    pub model: Model,
}

/// Something an experiment did that is worth a line.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A teacher's accuracy on the test set, measured before distilling from it.
    TeacherTested {
        /// The teacher as given (checkpoint directory or ONNX file) and its spec, if any.
        name: String,
        /// Its test errors.
        errors: usize,
        /// Test images.
        total: usize,
    },
    /// Images of an `--unlabeled` folder, labelled by the teachers' combined top-1.
    Relabelled {
        /// The folder.
        dir: &'a Path,
        /// Images in it.
        images: usize,
    },
    /// A run finished under `--resume` with this identity was found and is reused.
    Reused {
        /// The run's label.
        label: &'a str,
        /// Its checkpoint.
        dir: &'a Path,
    },
    /// A run stopped after `--stop-after` epochs; `--resume` continues it.
    Paused {
        /// The run's label.
        label: &'a str,
        /// Epochs trained.
        epochs: usize,
    },
    /// The teacher assistant is trained; the student learns from it next.
    Assistant {
        /// The assistant's run.
        run: &'a Trained,
    },
    /// A run finished.
    Finished {
        /// The run's label.
        label: &'a str,
        /// The run.
        run: &'a Trained,
        /// Where its steps' time went.
        profile: &'a StepProfile,
    },
}

/// Hears about an experiment as it runs.
pub trait Reporter {
    /// The observer of a training run about to start (progress bars, epoch lines).
    fn run_started(&mut self, label: &str) -> Box<dyn Observer + '_>;
    /// Something happened that is worth a line.
    fn event(&mut self, event: Event<'_>);
}

/// A reporter that ignores everything.
pub struct Quiet;

impl Reporter for Quiet {
    fn run_started(&mut self, _: &str) -> Box<dyn Observer + '_> {
        Box::new(crate::trainer::Silent)
    }
    fn event(&mut self, _: Event<'_>) {}
}

/// One model trained on labels alone: a teacher, or a baseline student.
#[derive(Debug, Clone)]
pub struct Training {
    /// The model.
    pub spec: ModelSpec,
    /// How it is trained.
    pub config: TrainConfig,
}

impl Training {
    /// Trains into `out`; None when the run stopped at `--stop-after`.
    pub fn run(
        &self,
        setup: &Setup,
        out: &Path,
        reporter: &mut dyn Reporter,
    ) -> Result<Option<Trained>> {
        let run = OneRun {
            label: self.spec.name.clone(),
            spec: &self.spec,
            config: &self.config,
            teachers: &[],
            teacher_names: &[],
            distill: None,
            teacher_predictions: None,
            start: None,
        };
        run.train(setup, out, reporter)
    }
}

/// A student distilled from teachers, optionally through an assistant, over several seeds,
/// optionally beside the same student trained alone.
#[derive(Debug)]
pub struct Distillation<'a> {
    /// The teachers, loaded.
    pub teachers: &'a [Teacher],
    /// How reports name them (as given: checkpoint directories or ONNX files).
    pub teacher_names: Vec<String>,
    /// The student.
    pub student: ModelSpec,
    /// Weights the student starts from (a pruned checkpoint) instead of a seeded
    /// initialisation; the `baseline` student then fine-tunes the same weights on labels.
    pub student_start: Option<StartWeights>,
    /// How the student (and the assistant) train; `seed` is the first seed.
    pub config: TrainConfig,
    /// The distillation blend and fine-tune.
    pub distill: DistillConfig,
    /// A teacher assistant trained from the teachers first, the student then learning from it.
    pub assistant: Option<ModelSpec>,
    /// Also train the student alone with the same seeds and report the KD gain.
    pub baseline: bool,
    /// Consecutive seeds from `config.seed`.
    pub seeds: usize,
    /// Train on this folder of unlabelled images, labelled by the teachers, instead of the
    /// data's training set.
    pub unlabeled: Option<PathBuf>,
}

/// What a distillation produced.
#[derive(Debug, Default)]
pub struct Distilled {
    /// Distilled students, one per seed (the first in `out`, the others in `out/runs/`).
    pub students: Vec<Trained>,
    /// The student trained alone, one per seed, with `baseline`.
    pub alone: Vec<Trained>,
    /// The KD gain over the seeds, with `baseline` (also written to `out/kd-gain.json`).
    pub gain: Option<KdGain>,
}

impl Distillation<'_> {
    /// Runs every run into `out`; stops early (returning what finished) at `--stop-after`.
    pub fn run(&self, setup: &Setup, out: &Path, reporter: &mut dyn Reporter) -> Result<Distilled> {
        if self.teachers.is_empty() {
            return Err(Error::Config(
                "distillation needs at least one teacher".into(),
            ));
        }
        if self.seeds == 0 {
            return Err(Error::Config("--seeds must be at least 1".into()));
        }
        // Before any teacher runs on the data: a teacher that cannot take it says why.
        for t in self.teachers {
            t.check_fits(&self.student)?;
        }
        let relabelled = match &self.unlabeled {
            Some(dir) => {
                if self.baseline {
                    return Err(Error::Config(
                        "--baseline trains the student on labels, which --unlabeled images do not have".into(),
                    ));
                }
                Some(self.relabel(dir, setup, reporter)?)
            }
            None => None,
        };
        let data = relabelled.as_ref().unwrap_or(setup.data);
        let setup = Setup {
            data,
            ..setup.clone()
        };
        let tested = test_teachers(self.teachers, &data.test, self.student.normalization)?;
        for ((t, name), errors) in self
            .teachers
            .iter()
            .zip(&self.teacher_names)
            .zip(tested.errors)
        {
            let name = match t {
                Teacher::Checkpoint(m) => format!("{} ({name})", m.spec().name),
                Teacher::Onnx(_) => name.clone(),
            };
            reporter.event(Event::TeacherTested {
                name,
                errors,
                total: data.test.len(),
            });
        }
        let predictions = Some(&tested.ensemble[..]);

        // Teacher-assistant chain: the assistant learns from the teachers, the student from it.
        let assistant;
        let student_teachers: &[Teacher] = match &self.assistant {
            Some(spec) => {
                // The assistant only teaches: it trains in float whatever the student does.
                let float = TrainConfig {
                    qat: None,
                    ..self.config.clone()
                };
                let run = OneRun {
                    label: format!("assistant {}", spec.name),
                    spec,
                    config: &float,
                    teachers: self.teachers,
                    teacher_names: &self.teacher_names,
                    distill: Some(&self.distill),
                    teacher_predictions: predictions,
                    start: None,
                };
                let Some(t) = run.train(&setup, &out.join("assistant"), reporter)? else {
                    return Ok(Distilled::default());
                };
                reporter.event(Event::Assistant { run: &t });
                assistant = [Teacher::Checkpoint(t.model)];
                &assistant
            }
            None => self.teachers,
        };

        let mut done = Distilled::default();
        let mut gain = KdGain {
            student: self.student.name.clone(),
            test_total: data.test.len(),
            seeds: vec![],
            alone_errors: vec![],
            distilled_errors: vec![],
            alone_agreement: vec![],
            distilled_agreement: vec![],
        };
        for k in 0..self.seeds {
            let config = TrainConfig {
                seed: self.config.seed + k as u64,
                ..self.config.clone()
            };
            let seed = config.seed;
            let kd_dir = if k == 0 {
                out.to_path_buf()
            } else {
                out.join("runs").join(format!("kd-seed{seed}"))
            };
            let distilled = OneRun {
                label: format!("kd {} seed {seed}", self.student.name),
                spec: &self.student,
                config: &config,
                teachers: student_teachers,
                teacher_names: &self.teacher_names,
                distill: Some(&self.distill),
                teacher_predictions: predictions,
                start: self.student_start.as_ref(),
            };
            let Some(student) = distilled.train(&setup, &kd_dir, reporter)? else {
                return Ok(done);
            };
            if self.baseline {
                let alone = OneRun {
                    label: format!("alone {} seed {seed}", self.student.name),
                    distill: None,
                    teachers: &[],
                    ..distilled
                };
                let alone_dir = out.join("runs").join(format!("alone-seed{seed}"));
                let Some(alone) = alone.train(&setup, &alone_dir, reporter)? else {
                    return Ok(done);
                };
                gain.seeds.push(seed);
                gain.alone_errors.push(alone.report.test_errors);
                gain.distilled_errors.push(student.report.test_errors);
                gain.alone_agreement
                    .push(alone.report.teacher_agreement.unwrap_or(0.0));
                gain.distilled_agreement
                    .push(student.report.teacher_agreement.unwrap_or(0.0));
                done.alone.push(alone);
            }
            done.students.push(student);
        }
        if self.baseline {
            checkpoint::save_json(&out.join("kd-gain.json"), &gain)?;
            done.gain = Some(gain);
        }
        Ok(done)
    }

    /// The images of an `--unlabeled` folder as the training set, labelled with the teachers'
    /// combined top-1; the test set stays the data's.
    fn relabel(&self, dir: &Path, setup: &Setup, reporter: &mut dyn Reporter) -> Result<Splits> {
        let mut train = load_unlabeled(dir, setup.data.test.shape())?;
        // Through the logit cache: the trainer then maps these instead of running the teachers
        // over the folder a second time.
        let stores = teacher_logit_stores(
            self.teachers,
            &train,
            self.student.normalization,
            setup.logit_cache.as_deref(),
            &mut |_| {},
        )?;
        let device = self.teachers[0].device();
        let logits = stores
            .iter()
            .map(|s| s.all(&device))
            .collect::<Result<Vec<_>>>()?;
        let weights = teacher_weights(&self.distill.teacher_weights, self.teachers.len())?;
        let combined = SoftTargets::combine(&logits, &weights, 1.0)?;
        train.labels = combined.top1()?.into_iter().map(|l| l as u8).collect();
        reporter.event(Event::Relabelled {
            dir,
            images: train.len(),
        });
        Ok(Splits {
            train,
            test: setup.data.test.clone(),
            class_names: setup.data.class_names.clone(),
        })
    }
}

/// The spec of a student that copies the first teacher's architecture (self-distillation),
/// with dropout set anew when given.
pub fn self_distillation_student(
    teachers: &[Teacher],
    dropout: Option<f32>,
    input_dropout: Option<f32>,
) -> Result<ModelSpec> {
    let Some(first) = teachers.first().and_then(Teacher::model) else {
        return Err(Error::Config(
            "--student self copies the first teacher's architecture, which an ONNX teacher does not give; name a student spec".into(),
        ));
    };
    let mut s = first.spec().clone();
    s.dropout = dropout.unwrap_or(s.dropout);
    s.input_dropout = input_dropout.unwrap_or(s.input_dropout);
    Ok(s)
}

/// One training run of an experiment.
struct OneRun<'a> {
    label: String,
    spec: &'a ModelSpec,
    config: &'a TrainConfig,
    /// Empty for training on labels.
    teachers: &'a [Teacher],
    teacher_names: &'a [String],
    distill: Option<&'a DistillConfig>,
    /// The teachers' combined top-1 on the test set, to report agreement against.
    teacher_predictions: Option<&'a [u32]>,
    /// Weights to start from instead of the seeded initialisation.
    start: Option<&'a StartWeights>,
}

impl OneRun<'_> {
    /// Trains into `dir` (resuming, or reusing a finished run of the same identity, under
    /// `--resume`) and writes its report; None when it stopped at `--stop-after`.
    fn train(
        &self,
        setup: &Setup,
        dir: &Path,
        reporter: &mut dyn Reporter,
    ) -> Result<Option<Trained>> {
        self.train_inner(setup, dir, reporter)
            .map_err(|e| Error::Run {
                model: self.spec.name.clone(),
                dir: dir.into(),
                source: Box::new(e),
            })
    }

    fn train_inner(
        &self,
        setup: &Setup,
        dir: &Path,
        reporter: &mut dyn Reporter,
    ) -> Result<Option<Trained>> {
        let data = setup.data;
        let report_path = dir.join(REPORT_FILE);
        if setup.resume && report_path.is_file() {
            let report: Report = checkpoint::load_json(&report_path)?;
            let identity = RunIdentity::new(
                self.config,
                self.distill,
                self.spec,
                self.teachers,
                &data.train,
                &data.test,
                self.start.map(|s| s.sha256.as_str()),
            )?;
            if report.identity.as_ref() == Some(&identity) {
                let model = checkpoint::load_model(dir, &candle_core::Device::Cpu)?;
                reporter.event(Event::Reused {
                    label: &self.label,
                    dir,
                });
                return Ok(Some(Trained {
                    dir: dir.into(),
                    report,
                    model,
                }));
            }
        }
        let mut model = match self.start {
            Some(start) => start.model(self.spec)?,
            None => Model::new(self.spec, self.config.seed, &candle_core::Device::Cpu)?,
        };
        if self.config.qat.is_some() {
            let s = self.spec;
            let input = s.normalization.range(s.input.channels);
            model = model.with_qat(std::sync::Arc::new(crate::qat::Qat::new(input)));
        }
        let objective = match self.distill {
            Some(config) => Objective::Distill {
                teachers: self.teachers,
                config: config.clone(),
            },
            None => Objective::Labels,
        };
        let outcome = {
            let mut observer = reporter.run_started(&self.label);
            Run {
                student: &model,
                objective,
                config: self.config,
                train: &data.train,
                test: &data.test,
                out_dir: dir,
                resume: setup.resume && checkpoint::state_dir(dir).join("progress.json").is_file(),
                stop_after: setup.stop_after,
                logit_cache: setup.logit_cache.as_deref(),
                start: self.start.map(|s| s.sha256.as_str()),
            }
            .execute(&mut *observer)?
        };
        if outcome.paused {
            reporter.event(Event::Paused {
                label: &self.label,
                epochs: outcome.history.len(),
            });
            return Ok(None);
        }
        // The trainer evaluated after its last epoch; only a resume with nothing left to train has not.
        let eval = match outcome.last_eval {
            Some(e) => e,
            None => evaluate(&model, &data.test)?,
        };
        let agreement = self
            .teacher_predictions
            .map(|t| top1_agreement(&eval.predictions, t));
        let report = Report::new(
            self.spec,
            &eval,
            agreement,
            self.teacher_names.to_vec(),
            outcome.history,
            self.config.clone(),
            self.distill.cloned(),
            setup.data_name.clone(),
            outcome.identity,
        );
        checkpoint::save_json(&report_path, &report)?;
        let trained = Trained {
            dir: dir.into(),
            report,
            model: model.without_qat(),
        };
        reporter.event(Event::Finished {
            label: &self.label,
            run: &trained,
            profile: &outcome.profile,
        });
        Ok(Some(trained))
    }
}
