//! The one training loop, for plain supervised training and for every kind of distillation.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor, Var, D};
use candle_nn::Module;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::batch::{epoch_order, make_batch, rng, Augment, Batch, Stream};
use crate::checkpoint::{self, state_dir};
use crate::dataset::{Dataset, Normalization};
use crate::dense::Dense;
use crate::error::{Error, Result};
use crate::logit_cache::{self, CacheKey, LogitStore, MappedLogits};
use crate::loss::{self, distillation_loss, label_loss, KdConfig, SoftTargets};
use crate::model::Model;
use crate::optim::{Optimizer, OptimizerConfig, Schedule};
use crate::profile::{Phase, StepProfile};
use crate::spec::ModelSpec;
use crate::teacher::Teacher;

/// Settings shared by every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per update.
    pub batch_size: usize,
    /// Seeds initialisation, shuffling, dropout and augmentation.
    pub seed: u64,
    /// Update rule and its settings.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Training-time augmentation.
    pub augment: Augment,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 128,
            seed: 0,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::Cosine,
            augment: Augment::default(),
        }
    }
}

impl TrainConfig {
    /// Rejects settings with no meaning.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::Config(format!(
                "epochs and batch size must be at least 1, got {} and {}",
                self.epochs, self.batch_size
            )));
        }
        if let Schedule::Step { every, gamma } = self.schedule {
            if every == 0 || !(gamma > 0.0 && gamma <= 1.0) {
                return Err(Error::Config(format!(
                    "step schedule needs every >= 1 and gamma in (0, 1], got {every} and {gamma}"
                )));
            }
        }
        self.optimizer.validate()?;
        self.augment.validate()
    }
}

/// Distillation settings beyond the loss blend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// Temperature, alpha, which soft loss, hint weight.
    pub kd: KdConfig,
    /// Relative weight of each teacher (empty: equal weights).
    #[serde(default)]
    pub teacher_weights: Vec<f64>,
    /// Epochs of hard-label-only training after distillation, at `finetune_lr`.
    #[serde(default)]
    pub finetune_epochs: usize,
    /// Constant learning rate of the fine-tune.
    #[serde(default = "default_finetune_lr")]
    pub finetune_lr: f64,
}

fn default_finetune_lr() -> f64 {
    1e-4
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            kd: KdConfig::default(),
            teacher_weights: vec![],
            finetune_epochs: 0,
            finetune_lr: default_finetune_lr(),
        }
    }
}

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

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (on the original labels).
    pub train_accuracy: f64,
    /// Test accuracy after the epoch.
    pub test_accuracy: f64,
    /// Test errors after the epoch.
    pub test_errors: usize,
    /// Wall-clock seconds of training (not evaluation).
    pub seconds: f64,
    /// Training samples per second.
    pub samples_per_second: f64,
    /// Whether this was a hard-label fine-tune epoch.
    #[serde(default)]
    pub finetune: bool,
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

/// Accuracy of a model on a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Correct predictions.
    pub correct: usize,
    /// Samples.
    pub total: usize,
    /// Predicted class per sample.
    #[serde(skip)]
    pub predictions: Vec<u32>,
}

impl Evaluation {
    /// Fraction correct.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
    /// Wrong predictions.
    pub fn errors(&self) -> usize {
        self.total - self.correct
    }
    /// Fraction of samples on which two models predict the same class.
    pub fn agreement(&self, other: &Evaluation) -> f64 {
        top1_agreement(&self.predictions, &other.predictions)
    }
}

/// Fraction of positions where two prediction lists name the same class.
pub fn top1_agreement(a: &[u32], b: &[u32]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

const EVAL_BATCH: usize = 1000;

/// Logits of `model` on all of `data`, in order, without augmentation.
pub fn logits_of(
    model: &Model,
    data: &Dataset,
    norm: Normalization,
    device: &Device,
) -> Result<Tensor> {
    check_input(model.spec(), data)?;
    // Detached: cached teacher logits must not drag the teacher's graph into every backward pass.
    in_batches(data, norm, device, |x| {
        Ok(model.forward(x, false)?.logits.detach())
    })
}

/// [`teacher_logits_of`] over a training set, refused when any is NaN or infinite (naming the
/// sample): what the trainer caches, and what `teacher-logits` writes.
pub fn checked_teacher_logits(
    teacher: &Teacher,
    data: &Dataset,
    norm: Normalization,
    device: &Device,
) -> Result<Tensor> {
    let logits = teacher_logits_of(teacher, data, norm, device)?;
    check_teacher_logits(teacher, &logits, |row| row)?;
    Ok(logits)
}

/// Relative weight of each of `teachers` teachers: `given`, one per teacher, or equal weights
/// when none are given.
pub fn teacher_weights(given: &[f64], teachers: usize) -> Result<Vec<f64>> {
    match given.len() {
        0 => Ok(vec![1.0; teachers]),
        n if n == teachers => Ok(given.to_vec()),
        n => Err(Error::Config(format!(
            "{n} teacher weights for {teachers} teachers"
        ))),
    }
}

/// A teacher's logits on all of `data`, in order, without augmentation, fed batches
/// normalised with `norm` (the student's).
pub fn teacher_logits_of(
    teacher: &Teacher,
    data: &Dataset,
    norm: Normalization,
    device: &Device,
) -> Result<Tensor> {
    in_batches(data, norm, device, |x| Ok(teacher.forward(x, norm)?.logits))
}

/// Each teacher's logits over `data`: mapped from the cache in `cache` when a file for this
/// teacher, data and normalisation is there, else computed (and written there for later runs,
/// while this one keeps them in memory). `phase` hears which.
pub fn teacher_logit_stores(
    teachers: &[Teacher],
    data: &Dataset,
    norm: Normalization,
    cache: Option<&Path>,
    device: &Device,
    phase: &mut dyn FnMut(&str),
) -> Result<Vec<LogitStore>> {
    let data_sha256 = cache.map(|_| logit_cache::data_sha256(data));
    let mut stores = Vec::with_capacity(teachers.len());
    for t in teachers {
        let key = match (cache, &data_sha256) {
            (Some(dir), Some(hash)) => Some((dir, CacheKey::for_teacher(t, hash, norm)?)),
            _ => None,
        };
        if let Some((dir, key)) = &key {
            if let Some(m) = MappedLogits::open(dir, key, data.len())? {
                phase(&format!(
                    "reusing teacher logits cached in {}",
                    m.path().display()
                ));
                stores.push(LogitStore::Mapped(m));
                continue;
            }
        }
        phase("computing teacher logits once for the whole run");
        let logits = checked_teacher_logits(t, data, norm, device)?;
        if let Some((dir, key)) = &key {
            logit_cache::write(dir, key, &logits)?;
        }
        stores.push(LogitStore::Memory(logits));
    }
    Ok(stores)
}

/// Refuses data whose images are not the ones `spec` takes, saying both.
fn check_input(spec: &ModelSpec, data: &Dataset) -> Result<()> {
    if data.shape() == spec.input {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{} takes {} images, the data holds {} ones",
        spec.name,
        spec.input,
        data.shape()
    )))
}

/// `f` over all of `data` in evaluation-sized batches, the results stacked in order.
fn in_batches(
    data: &Dataset,
    norm: Normalization,
    device: &Device,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let idx: Vec<usize> = (0..data.len()).collect();
    let parts = idx
        .chunks(EVAL_BATCH)
        .map(|c| f(&make_batch(data, c, norm, None, device)?.images))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// Accuracy of `model` on `data`.
pub fn evaluate(model: &Model, data: &Dataset, device: &Device) -> Result<Evaluation> {
    let logits = logits_of(model, data, model.spec().normalization, device)?;
    let predictions = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let correct = predictions
        .iter()
        .zip(&data.labels)
        .filter(|(p, l)| **p == **l as u32)
        .count();
    Ok(Evaluation {
        correct,
        total: data.len(),
        predictions,
    })
}

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
}

/// Saved after every epoch so `--resume` can continue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    epochs_done: usize,
    fingerprint: String,
    history: Vec<EpochStats>,
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
}

impl Run<'_> {
    /// Runs to the end (or to `stop_after`).
    pub fn execute(self, observer: &mut dyn Observer) -> Result<RunOutcome> {
        let cfg = self.config;
        cfg.validate()?;
        crate::memory::keep_freed_buffers();
        let device = self.student.params().vars[0].1.device().clone();
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
        let mut vars = self.student.params().vars();
        if let Some((w, b)) = &hint {
            vars.push(w.clone());
            vars.push(b.clone());
        }
        let mut opt = Optimizer::new(cfg.optimizer, vars)?;

        let fingerprint = serde_json::to_string(&(
            cfg,
            &dcfg,
            self.student.spec(),
            teachers.iter().map(Teacher::name).collect::<Vec<_>>(),
        ))
        .expect("configs serialise");
        let sdir = state_dir(self.out_dir);
        let mut history = Vec::new();
        let mut start_epoch = 0;
        if self.resume {
            let progress: Progress =
                checkpoint::load_json(&sdir.join("progress.json")).map_err(|e| {
                    Error::Checkpoint {
                        path: sdir.clone(),
                        reason: format!("nothing to resume: {e}"),
                    }
                })?;
            if progress.fingerprint != fingerprint {
                return Err(Error::Checkpoint { path: sdir, reason: "the checkpoint was made with different settings; resume with the same command line or config".into() });
            }
            let weights = checkpoint::load_tensors(
                &sdir.join(state_file("weights", progress.epochs_done)),
                &device,
            )?;
            for (p, var) in &self.student.params().vars {
                let t = weights.get(&p.name).ok_or_else(|| Error::Checkpoint {
                    path: sdir.clone(),
                    reason: format!("weights lack {}", p.name),
                })?;
                var.set(t)?;
            }
            let state = checkpoint::load_tensors(
                &sdir.join(state_file("optimizer", progress.epochs_done)),
                &device,
            )?;
            opt.load_state(&state)?;
            if let Some((w, b)) = &hint {
                let get = |n: &str| {
                    state.get(n).cloned().ok_or_else(|| Error::Checkpoint {
                        path: sdir.clone(),
                        reason: format!("state lacks {n}"),
                    })
                };
                w.set(&get("hint.weight")?)?;
                b.set(&get("hint.bias")?)?;
            }
            start_epoch = progress.epochs_done;
            history = progress.history;
        }

        // Without augmentation the teachers see the same inputs every epoch: run them once.
        let needs_features = hint.is_some();
        let mut profile = StepProfile::default();
        let cache_started = Instant::now();
        let cached: Option<Vec<LogitStore>> = if !teachers.is_empty()
            && !cfg.augment.is_active()
            && !needs_features
            && start_epoch < cfg.epochs
        {
            let stores = teacher_logit_stores(
                teachers,
                self.train,
                norm,
                self.logit_cache,
                &device,
                &mut |m| observer.phase(m),
            )?;
            profile.teacher_cache_seconds = cache_started.elapsed().as_secs_f64();
            Some(stores)
        } else {
            None
        };

        let batches = self.train.len().div_ceil(cfg.batch_size);
        let total_steps = batches * cfg.epochs;
        let mut last_eval = None;
        for epoch in start_epoch..total_epochs {
            if self.stop_after.is_some_and(|s| epoch >= s) {
                return Ok(RunOutcome {
                    history,
                    last_eval,
                    paused: true,
                    profile,
                });
            }
            let finetune = epoch >= cfg.epochs;
            observer.epoch_start(epoch + 1, total_epochs, batches);
            self.student.reseed_dropout(cfg.seed, epoch);
            let order = epoch_order(self.train.len(), cfg.seed, epoch);
            let mut aug_rng = rng(cfg.seed, Stream::Augment, epoch);
            let started = Instant::now();
            let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
            for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
                let lr = if finetune {
                    dcfg.as_ref().map_or(cfg.optimizer.lr, |d| d.finetune_lr)
                } else {
                    cfg.schedule
                        .lr(cfg.optimizer.lr, epoch, epoch * batches + b, total_steps)
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
            let eval = evaluate(self.student, self.test, &device)?;
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
            self.save_state(
                &sdir,
                &opt,
                hint.as_ref(),
                &Progress {
                    epochs_done: epoch + 1,
                    fingerprint: fingerprint.clone(),
                    history: history.clone(),
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
        })
    }

    fn save_state(
        &self,
        sdir: &PathBuf,
        opt: &Optimizer,
        hint: Option<&(Var, Var)>,
        progress: &Progress,
        device: &Device,
    ) -> Result<()> {
        crate::atomic::create_dir(sdir)?;
        let mut state = opt.state(device)?;
        if let Some((w, b)) = hint {
            state.insert("hint.weight".into(), w.as_tensor().clone());
            state.insert("hint.bias".into(), b.as_tensor().clone());
        }
        // Each epoch's tensors go to files named after it, and progress.json, written last and
        // atomically, names the epoch to resume from: a run killed anywhere in here resumes from
        // a consistent (weights, moments, epoch) triple. Overwriting fixed names instead left
        // epoch N+1's weights beside epoch N's progress when killed between the writes.
        let epoch = progress.epochs_done;
        checkpoint::save_tensors(&sdir.join(state_file("optimizer", epoch)), &state)?;
        checkpoint::save_tensors(
            &sdir.join(state_file("weights", epoch)),
            &self.student.params().tensors(),
        )?;
        checkpoint::save_json(&sdir.join("progress.json"), progress)?;
        remove_stale_state(sdir, epoch);
        Ok(())
    }
}

/// `weights-3.safetensors`: what a state directory holds for the end of epoch 3.
fn state_file(kind: &str, epoch: usize) -> String {
    format!("{kind}-{epoch}.safetensors")
}

/// Deletes state files of epochs other than `keep` (best effort: a leftover costs disk, not
/// correctness, since progress.json names the files to load).
fn remove_stale_state(sdir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(sdir) else {
        return;
    };
    let current = [state_file("weights", keep), state_file("optimizer", keep)];
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") && !current.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Rows of `[n, classes]` logits holding a NaN or infinity, each with its first bad value.
fn non_finite_rows(logits: &Tensor) -> Result<Vec<(usize, f32)>> {
    Ok(logits
        .to_vec2::<f32>()?
        .iter()
        .enumerate()
        .filter_map(|(r, row)| row.iter().find(|v| !v.is_finite()).map(|&v| (r, v)))
        .collect())
}

/// Refuses teacher logits with a NaN or infinity, naming the training sample (`sample_of`
/// maps a row to its dataset index): a broken teacher must not be distilled silently.
fn check_teacher_logits(
    teacher: &Teacher,
    logits: &Tensor,
    sample_of: impl Fn(usize) -> usize,
) -> Result<()> {
    match non_finite_rows(logits)?.first() {
        Some(&(row, value)) => Err(Error::NonFiniteOutput {
            model: format!("teacher {}", teacher.name()),
            sample: sample_of(row),
            value,
        }),
        None => Ok(()),
    }
}

/// Teacher logits for a batch (from the cache when there is one) and the first teacher's features.
fn teacher_outputs(
    teachers: &[Teacher],
    cached: Option<&[LogitStore]>,
    batch: &Batch,
    norm: Normalization,
    features: bool,
    device: &Device,
) -> Result<(Vec<Tensor>, Option<Tensor>)> {
    if let Some(cache) = cached {
        return Ok((
            cache
                .iter()
                .map(|c| c.rows(&batch.indices, device))
                .collect::<Result<_>>()?,
            None,
        ));
    }
    let mut logits = Vec::with_capacity(teachers.len());
    let mut feats = None;
    for (i, t) in teachers.iter().enumerate() {
        let out = t.forward(&batch.images, norm)?;
        check_teacher_logits(t, &out.logits, |row| batch.indices[row])?;
        if i == 0 && features {
            feats = Some(out.features);
        }
        logits.push(out.logits);
    }
    Ok((logits, feats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::tests::toy;
    use crate::spec::ModelSpec;

    #[test]
    fn cached_teacher_logits_carry_no_graph() {
        // Regression: undetached cached logits made every student step back-propagate through
        // the teacher's forward pass over the whole training set.
        let spec = ModelSpec::parse("cnn:lenet5-half").unwrap();
        let teacher = Model::new(&spec, 1, &Device::Cpu).unwrap();
        let logits = logits_of(&teacher, &toy(8, 0), spec.normalization, &Device::Cpu).unwrap();
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
        }
        .execute(&mut Silent)
        .unwrap();
        let teacher_pred = evaluate(&teacher, &test, &Device::Cpu).unwrap();
        assert!(
            teacher_pred.accuracy() > 0.8,
            "the teacher should learn: {}",
            teacher_pred.accuracy()
        );
        // A pure-KD student (alpha = 1) sees no label at all, yet learns the teacher's answers.
        let student = Model::new(&ModelSpec::parse("mlp:32").unwrap(), 2, &Device::Cpu).unwrap();
        let before = evaluate(&student, &test, &Device::Cpu)
            .unwrap()
            .agreement(&teacher_pred);
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
        }
        .execute(&mut Silent)
        .unwrap();
        let after = evaluate(&student, &test, &Device::Cpu)
            .unwrap()
            .agreement(&teacher_pred);
        assert!(
            before < 0.3 && after > 0.75,
            "agreement {before} -> {after}"
        );
    }
}
