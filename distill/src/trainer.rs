//! The one training loop, for plain supervised training and for every kind of distillation.

use std::path::Path;
use std::time::Instant;

use candle_core::{Tensor, Var, D};
use candle_nn::Module;
use rand::Rng;

use crate::batch::make_batch;
use crate::checkpoint;
use crate::config::{DistillConfig, TrainConfig};
use crate::dataset::Dataset;
use crate::dense::Dense;
use crate::error::{Error, Result};
use crate::evaluation::{check_input, evaluate, Evaluation};
use crate::identity::RunIdentity;
use crate::logit_cache::LogitStore;
use crate::loss::{self, distillation_loss, label_loss, SoftTargets};
use crate::model::Model;
use crate::optim::Optimizer;
use crate::profile::{Phase, StepProfile};
use crate::random::{permutation, rng, Stream};
use crate::report::EpochStats;
use crate::teacher::Teacher;
use crate::teacher_logits::{
    non_finite_rows, teacher_logit_stores, teacher_outputs, teacher_weights,
};
use crate::train_state::{Progress, TrainState};

/// What a run learns from.
pub enum Objective<'a> {
    /// The true labels alone.
    Labels,
    /// Teachers' outputs blended with the labels.
    Distill {
        /// Teachers: checkpoints (run in evaluation mode) or ONNX classifiers.
        teachers: &'a [Teacher],
        /// Blend and schedule.
        config: DistillConfig,
    },
}

/// One batch's figures, for progress display.
#[derive(Debug, Clone, Copy)]
pub struct BatchStats {
    /// 1-based epoch.
    pub epoch: usize,
    /// 0-based batch in the epoch.
    pub batch: usize,
    /// Batches in the epoch.
    pub batches: usize,
    /// Total loss.
    pub loss: f32,
    /// Training accuracy on this batch (on the original labels).
    pub accuracy: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Samples in the batch.
    pub samples: usize,
}

/// Hears about training as it happens; the library never prints.
pub trait Observer {
    /// A long step that is not an epoch (e.g. computing teacher outputs).
    fn phase(&mut self, _what: &str) {}
    /// An epoch begins.
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    /// A batch is done.
    fn batch_end(&mut self, _stats: &BatchStats) {}
    /// An epoch is done and checkpointed.
    fn epoch_end(&mut self, _stats: &EpochStats) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// What a finished (or paused) run returns.
#[derive(Debug)]
pub struct RunOutcome {
    /// Per-epoch figures, including epochs done before a resume.
    pub history: Vec<EpochStats>,
    /// Test-set evaluation after the last epoch this call trained (None if it trained none).
    pub last_eval: Option<Evaluation>,
    /// Whether the run stopped early on request (`stop_after`).
    pub paused: bool,
    /// Time per phase of the steps this call trained.
    pub profile: StepProfile,
    /// What the run was ([`RunIdentity`]): its report records it.
    pub identity: RunIdentity,
}

/// Trains `student` on `train`, evaluating on `test` after each epoch and checkpointing into
/// `out_dir`. With `resume`, continues from the last checkpoint there; with `stop_after`, stops
/// (checkpointed) after that many epochs, as an interrupted run would.
pub struct Run<'a> {
    /// The model being trained (its weights are updated in place).
    pub student: &'a Model,
    /// Labels or teachers.
    pub objective: Objective<'a>,
    /// Training settings.
    pub config: &'a TrainConfig,
    /// Training data.
    pub train: &'a Dataset,
    /// Evaluation data.
    pub test: &'a Dataset,
    /// Checkpoint directory.
    pub out_dir: &'a Path,
    /// Continue from `out_dir`'s checkpoint.
    pub resume: bool,
    /// Stop after this many epochs in total.
    pub stop_after: Option<usize>,
    /// Directory of the on-disk teacher-logit cache (None: keep them in memory only).
    pub logit_cache: Option<&'a Path>,
    /// SHA-256 of the weights `student` started from, when they are not its seeded
    /// initialisation (part of the run's identity).
    pub start: Option<&'a str>,
}

impl Run<'_> {
    /// Runs to the end (or to `stop_after`).
    pub fn execute(self, observer: &mut dyn Observer) -> Result<RunOutcome> {
        let cfg = self.config;
        cfg.validate()?;
        crate::memory::keep_freed_buffers();
        let device = self.student.device();
        let norm = self.student.spec().normalization;
        check_input(self.student.spec(), self.train)?;
        check_input(self.student.spec(), self.test)?;
        let (teachers, dcfg) = match &self.objective {
            Objective::Labels => (&[][..], None),
            Objective::Distill { teachers, config } => {
                config.kd.validate()?;
                if teachers.is_empty() {
                    return Err(Error::Config(
                        "distillation needs at least one teacher".into(),
                    ));
                }
                for t in teachers.iter() {
                    t.check_fits(self.student.spec())?;
                }
                (*teachers, Some(config.clone()))
            }
        };
        let given = dcfg.as_ref().map_or(&[][..], |d| &d.teacher_weights[..]);
        let weights = teacher_weights(given, teachers.len())?;
        let kd = dcfg.as_ref().map(|d| d.kd);
        let finetune_epochs = dcfg.as_ref().map_or(0, |d| d.finetune_epochs);
        let total_epochs = cfg.epochs + finetune_epochs;

        // Hint distillation: a learned projection from student features to the first teacher's.
        let hint = match kd {
            Some(k) if k.hint_weight > 0.0 => {
                let first = teachers[0].model().ok_or_else(|| {
                    Error::Config(format!(
                        "hint distillation needs the first teacher's hidden layer; {} is an ONNX file, whose internals edgekd does not read",
                        teachers[0].name()
                    ))
                })?;
                let (i, o) = (
                    self.student.spec().feature_dim(),
                    first.spec().feature_dim(),
                );
                let mut r = rng(cfg.seed, Stream::Init, 1);
                let b = 1.0 / (i as f32).sqrt();
                let w: Vec<f32> = (0..i * o).map(|_| r.random_range(-b..b)).collect();
                let bias: Vec<f32> = (0..o).map(|_| r.random_range(-b..b)).collect();
                Some((
                    Var::from_tensor(&Tensor::from_vec(w, (o, i), &device)?)?,
                    Var::from_tensor(&Tensor::from_vec(bias, o, &device)?)?,
                ))
            }
            _ => None,
        };
        let mut vars = self.student.params().trainable();
        if let Some((w, b)) = &hint {
            vars.push((w.clone(), true));
            vars.push((b.clone(), true));
        }
        let mut opt = Optimizer::with_decay(cfg.optimizer, vars)?;

        let identity = RunIdentity::new(
            cfg,
            dcfg.as_ref(),
            self.student.spec(),
            teachers,
            self.train,
            self.test,
            self.start,
        )?;
        let state = TrainState::of(self.out_dir);
        let (mut history, start_epoch) = if self.resume {
            let resumed = state.load(&identity, self.student, &mut opt, hint.as_ref(), &device)?;
            (resumed.history, resumed.epochs_done)
        } else {
            (Vec::new(), 0)
        };

        // Without augmentation the teachers see the same inputs every epoch: run them once.
        let needs_features = hint.is_some();
        let mut profile = StepProfile::default();
        let cache_started = Instant::now();
        let cached: Option<Vec<LogitStore>> = if !teachers.is_empty()
            && !cfg.augment.is_active()
            && !needs_features
            && start_epoch < cfg.epochs
        {
            let stores =
                teacher_logit_stores(teachers, self.train, norm, self.logit_cache, &mut |m| {
                    observer.phase(m)
                })?;
            profile.teacher_cache_seconds = cache_started.elapsed().as_secs_f64();
            Some(stores)
        } else {
            None
        };

        // After any resume: the zeros are those of the weights training continues from.
        let masks = if cfg.keep_zeros {
            zero_masks(self.student)?
        } else {
            Vec::new()
        };
        let batches = self.train.len().div_ceil(cfg.batch_size);
        let mut last_eval = None;
        for epoch in start_epoch..total_epochs {
            if self.stop_after.is_some_and(|s| epoch >= s) {
                return Ok(RunOutcome {
                    history,
                    last_eval,
                    paused: true,
                    profile,
                    identity,
                });
            }
            let finetune = epoch >= cfg.epochs;
            observer.epoch_start(epoch + 1, total_epochs, batches);
            self.student.reseed_dropout(cfg.seed, epoch);
            if let (Some(q), Some(c)) = (self.student.qat(), &cfg.qat) {
                let (active, frozen) = c.phase(epoch, cfg.epochs);
                q.set_phase(active, frozen);
            }
            let order = permutation(self.train.len(), cfg.seed, epoch);
            let mut aug_rng = rng(cfg.seed, Stream::Augment, epoch);
            let started = Instant::now();
            let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
            for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
                let lr = if finetune {
                    dcfg.as_ref().map_or(cfg.optimizer.lr, |d| d.finetune_lr)
                } else {
                    learning_rate(cfg, epoch, epoch * batches + b, batches)
                };
                let augment = cfg
                    .augment
                    .is_active()
                    .then_some((&cfg.augment, &mut aug_rng));
                let lap = Instant::now();
                let batch = make_batch(self.train, chunk, norm, augment, &device)?;
                let lap = profile.lap(Phase::Data, lap);
                let teacher = match (&kd, finetune) {
                    (Some(_), false) => Some(teacher_outputs(
                        teachers,
                        cached.as_deref(),
                        &batch,
                        norm,
                        needs_features,
                        &device,
                    )?),
                    _ => None,
                };
                let lap = profile.lap(Phase::Teacher, lap);
                let out = self.student.forward(&batch.images, true)?;
                let bad = non_finite_rows(&out.logits)?;
                if !bad.is_empty() {
                    return Err(Error::NonFinite {
                        what: "student logits",
                        epoch: epoch + 1,
                        batch: b,
                        samples: bad.iter().map(|&(r, _)| batch.indices[r]).collect(),
                    });
                }
                let lap = profile.lap(Phase::StudentForward, lap);
                let label_term = label_loss(
                    &out.logits,
                    &batch.labels,
                    batch.mix.as_ref().map(|m| (&m.partner_labels, m.lambda)),
                    cfg.label_smoothing,
                )?;
                let total = match (&kd, teacher) {
                    (Some(kd), Some((t_logits, t_features))) => {
                        let targets = SoftTargets::combine(&t_logits, &weights, kd.temperature)?;
                        let hint_term = match (&hint, t_features) {
                            (Some((w, b)), Some(tf)) => Some(loss::mse(
                                &Dense::new(w.as_tensor().clone(), b.as_tensor().clone(), false)
                                    .forward(&out.features)?,
                                &tf,
                            )?),
                            _ => None,
                        };
                        distillation_loss(kd, &out.logits, &targets, label_term, hint_term)?.total
                    }
                    _ => label_term,
                };
                let loss_value = total.to_scalar::<f32>()?;
                if !loss_value.is_finite() {
                    return Err(Error::NonFinite {
                        what: "loss",
                        epoch: epoch + 1,
                        batch: b,
                        samples: batch.indices.clone(),
                    });
                }
                let lap = profile.lap(Phase::Loss, lap);
                let grads = total.backward()?;
                let lap = profile.lap(Phase::Backward, lap);
                let stats = opt.step(&grads, lr)?;
                for (var, mask) in &masks {
                    var.set(&var.as_tensor().mul(mask)?)?;
                }
                let lap = profile.lap(Phase::Optimizer, lap);
                if !stats.grad_norm.is_finite() {
                    return Err(Error::NonFinite {
                        what: "gradient",
                        epoch: epoch + 1,
                        batch: b,
                        samples: batch.indices.clone(),
                    });
                }
                let preds = out.logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
                let batch_correct = preds
                    .iter()
                    .zip(chunk)
                    .filter(|(p, &i)| **p == self.train.labels[i] as u32)
                    .count();
                loss_sum += loss_value as f64 * chunk.len() as f64;
                correct += batch_correct;
                seen += chunk.len();
                observer.batch_end(&BatchStats {
                    epoch: epoch + 1,
                    batch: b,
                    batches,
                    loss: loss_value,
                    accuracy: batch_correct as f32 / chunk.len() as f32,
                    lr,
                    samples: chunk.len(),
                });
                profile.lap(Phase::Metrics, lap);
                profile.steps += 1;
            }
            let seconds = started.elapsed().as_secs_f64();
            let eval = evaluate(self.student, self.test)?;
            let stats = EpochStats {
                epoch: epoch + 1,
                train_loss: loss_sum / seen as f64,
                train_accuracy: correct as f64 / seen as f64,
                test_accuracy: eval.accuracy(),
                test_errors: eval.errors(),
                seconds,
                samples_per_second: seen as f64 / seconds,
                finetune,
            };
            history.push(stats.clone());
            state.save(
                self.student,
                &opt,
                hint.as_ref(),
                &Progress {
                    epochs_done: epoch + 1,
                    identity: identity.clone(),
                    history: history.clone(),
                    qat: self.student.qat().map(|q| q.learned()),
                },
                &device,
            )?;
            checkpoint::save_model(self.out_dir, self.student)?;
            observer.epoch_end(&stats);
            last_eval = Some(eval);
        }
        Ok(RunOutcome {
            history,
            last_eval,
            paused: false,
            profile,
            identity,
        })
    }
}

/// The learning rate of global step `step` (in `epoch`, `batches` steps an epoch): a linear
/// ramp from zero over the warm-up epochs, then the schedule over the epochs that remain.
fn learning_rate(cfg: &TrainConfig, epoch: usize, step: usize, batches: usize) -> f64 {
    let peak = cfg.optimizer.lr;
    let warmup = cfg.warmup_epochs * batches;
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let epochs = cfg.epochs - cfg.warmup_epochs;
    cfg.schedule.lr(
        peak,
        epoch - cfg.warmup_epochs,
        step - warmup,
        epochs * batches,
    )
}

/// For each weight of a convolution or dense layer that holds exact zeros: the weight and a
/// mask of ones where it is non-zero.
fn zero_masks(model: &Model) -> Result<Vec<(candle_core::Var, Tensor)>> {
    let mut out = Vec::new();
    for (p, v) in &model.params().vars {
        if !(p.trainable && p.decay) {
            continue;
        }
        let mask = v.as_tensor().ne(0f32)?.to_dtype(candle_core::DType::F32)?;
        if mask.sum_all()?.to_scalar::<f32>()? < mask.elem_count() as f32 {
            out.push((v.clone(), mask));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::state_dir;
    use crate::dataset::tests::toy;
    use crate::evaluation::logits_of;
    use crate::loss::KdConfig;
    use crate::optim::OptimizerConfig;
    use crate::spec::ModelSpec;
    use crate::train_state::state_file;
    use candle_core::Device;

    #[test]
    fn cached_teacher_logits_carry_no_graph() {
        // Regression: undetached cached logits made every student step back-propagate through
        // the teacher's forward pass over the whole training set.
        let spec = ModelSpec::parse("cnn:lenet5-half").unwrap();
        let teacher = Model::new(&spec, 1, &Device::Cpu).unwrap();
        let logits = logits_of(&teacher, &toy(8, 0), spec.normalization).unwrap();
        let grads = logits.sum_all().unwrap().backward().unwrap();
        assert!(teacher
            .params()
            .vars
            .iter()
            .all(|(_, v)| grads.get(v.as_tensor()).is_none()));
    }

    /// Trains a fresh mlp:16 on `data` for 3 epochs into `dir` (resuming or stopping as asked)
    /// and returns its final weights file.
    fn three_epochs(
        data: &Dataset,
        dir: &Path,
        resume: bool,
        stop_after: Option<usize>,
    ) -> Vec<u8> {
        let m = Model::new(&ModelSpec::parse("mlp:16").unwrap(), 4, &Device::Cpu).unwrap();
        let cfg = TrainConfig {
            epochs: 3,
            batch_size: 16,
            ..Default::default()
        };
        Run {
            student: &m,
            objective: Objective::Labels,
            config: &cfg,
            train: data,
            test: data,
            out_dir: dir,
            resume,
            stop_after,
            logit_cache: None,
            start: None,
        }
        .execute(&mut Silent)
        .unwrap();
        std::fs::read(dir.join(checkpoint::WEIGHTS_FILE)).unwrap()
    }

    #[test]
    fn a_checkpoint_killed_before_its_progress_file_resumes_from_the_previous_epoch() {
        // Regression: the state files had fixed names, so a run killed after writing epoch 2's
        // weights but before progress.json resumed epoch 2 from epoch 2's weights.
        let data = toy(64, 3);
        let (whole, cut) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let expected = three_epochs(&data, whole.path(), false, None);
        three_epochs(&data, cut.path(), false, Some(1));
        // What a save of epoch 2 killed just before progress.json leaves behind.
        let sdir = state_dir(cut.path());
        for kind in ["weights", "optimizer"] {
            std::fs::copy(
                state_dir(whole.path()).join(state_file(kind, 3)),
                sdir.join(state_file(kind, 2)),
            )
            .unwrap();
        }
        assert_eq!(three_epochs(&data, cut.path(), true, None), expected);
    }

    #[test]
    fn distillation_pulls_the_student_towards_the_teacher() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-subset");
        let splits = crate::Splits::load(&dir).unwrap();
        let (data, test) = (splits.train.take(1000), splits.test.take(500));
        let tdir = tempfile::tempdir().unwrap();
        let teacher = Model::new(&ModelSpec::parse("mlp:64").unwrap(), 1, &Device::Cpu).unwrap();
        let cfg = TrainConfig {
            epochs: 5,
            batch_size: 32,
            ..Default::default()
        };
        Run {
            student: &teacher,
            objective: Objective::Labels,
            config: &cfg,
            train: &data,
            test: &test,
            out_dir: tdir.path(),
            resume: false,
            stop_after: None,
            logit_cache: None,
            start: None,
        }
        .execute(&mut Silent)
        .unwrap();
        let teacher_pred = evaluate(&teacher, &test).unwrap();
        assert!(
            teacher_pred.accuracy() > 0.8,
            "the teacher should learn: {}",
            teacher_pred.accuracy()
        );
        // A pure-KD student (alpha = 1) sees no label at all, yet learns the teacher's answers.
        let student = Model::new(&ModelSpec::parse("mlp:32").unwrap(), 2, &Device::Cpu).unwrap();
        let before = evaluate(&student, &test).unwrap().agreement(&teacher_pred);
        let config = DistillConfig {
            kd: KdConfig {
                alpha: 1.0,
                temperature: 2.0,
                ..Default::default()
            },
            ..Default::default()
        };
        let sdir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            epochs: 8,
            optimizer: OptimizerConfig {
                lr: 3e-3,
                ..Default::default()
            },
            ..cfg
        };
        Run {
            student: &student,
            objective: Objective::Distill {
                teachers: &[Teacher::Checkpoint(teacher)],
                config,
            },
            config: &cfg,
            train: &data,
            test: &test,
            out_dir: sdir.path(),
            resume: false,
            stop_after: None,
            logit_cache: None,
            start: None,
        }
        .execute(&mut Silent)
        .unwrap();
        let after = evaluate(&student, &test).unwrap().agreement(&teacher_pred);
        assert!(
            before < 0.3 && after > 0.75,
            "agreement {before} -> {after}"
        );
    }
}
