//! Options shared by `train` and `distill`, and the experiment file (`--config exp.toml`) that can
//! hold any of them. A flag on the command line wins over the file; the file wins over defaults.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use edgekd_distill::batch::Augment;
use edgekd_distill::teacher::{OnnxOptions, TeacherOutputs};
use edgekd_distill::{
    DistillConfig, ImageOptions, InputShape, KdConfig, ModelSpec, Normalization, OptimizerConfig,
    OptimizerKind, Schedule, SoftLoss, Splits, TrainConfig,
};
use serde::Deserialize;

/// Update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerArg {
    /// Adam with decoupled weight decay.
    Adamw,
    /// SGD with momentum.
    Sgd,
}

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleArg {
    /// Half a cosine from --lr to zero.
    Cosine,
    /// Multiply by --step-gamma every --step-every epochs.
    Step,
    /// Constant --lr.
    Constant,
}

/// The colour an image folder is decoded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorArg {
    /// One channel, Pillow's luma weights (as torchvision's Grayscale)
    Gray,
    /// Three channels, red, green, blue (alpha dropped)
    Rgb,
}

/// Height and width an image folder is resized to: `HxW`, or `N` for a square.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ImageSize {
    pub rows: usize,
    pub cols: usize,
}

impl std::str::FromStr for ImageSize {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let side = |t: &str| match t.trim().parse::<usize>() {
            Ok(n) if (1..=8192).contains(&n) => Ok(n),
            _ => Err(format!(
                "`{s}` is not an image size: HxW (e.g. 32x32) or N, sides 1 to 8192"
            )),
        };
        let (rows, cols) = match s.split_once(['x', 'X']) {
            Some((h, w)) => (side(h)?, side(w)?),
            None => (side(s)?, side(s)?),
        };
        Ok(ImageSize { rows, cols })
    }
}

impl TryFrom<String> for ImageSize {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

/// Fills each listed `Option` field of `$flags` that is `None` from `$file`.
macro_rules! prefer_flags {
    ($flags:ident, $file:ident, $($field:ident),*) => {
        $( if $flags.$field.is_none() { $flags.$field = $file.$field.clone(); } )*
    };
}

/// Which distillation term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SoftLossArg {
    /// KL divergence to the teachers' softened distribution, times T^2 (Hinton et al.)
    Kl,
    /// Mean squared error between logits
    Mse,
    /// Cross-entropy to the teachers' argmax (hard distillation)
    Hard,
}

/// What an ONNX teacher's output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeacherOutputsArg {
    /// Probabilities if the output comes from a Softmax node or is named like `probabilities`
    Auto,
    /// Unnormalised scores (or log-probabilities)
    Logits,
    /// A probability distribution per row (its logarithm is used as logits)
    Probs,
}

/// A number or a list of numbers in an experiment file (`teacher_mean = 0.5` or
/// `teacher_mean = [0.485, 0.456, 0.406]`), as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<f32>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(f32),
        Many(Vec<f32>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(x) => vec![x],
        OneOrMany::Many(v) => v,
    }))
}

/// How teachers run and where their logits are cached: shared by `distill` and
/// `teacher-logits`.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherOpts {
    /// What ONNX teachers output: logits, probs (their logarithm becomes the logits), or auto (probs when the output comes from a Softmax or is named like `probabilities`) [default: auto]
    #[arg(long, value_enum)]
    pub teacher_outputs: Option<TeacherOutputsArg>,
    /// Output of the ONNX teachers to distil from, by name [default: the one shaped [N, classes]]
    #[arg(long, value_name = "NAME")]
    pub teacher_output: Option<String>,
    /// Engine for ONNX teachers: auto, native, tract, ort [default: auto]
    #[arg(long, value_name = "ENGINE")]
    pub teacher_backend: Option<String>,
    /// Pixel scale ONNX teachers expect: input = (pixel · scale - mean) / std [default: from the model's edgekd metadata, else 1/255]
    #[arg(long, value_name = "SCALE")]
    pub teacher_scale: Option<f32>,
    /// Mean ONNX teachers subtract after scaling: one value, or one per channel (R,G,B) as torchvision's Normalize takes them [default: from metadata, else 0]
    #[arg(long, value_name = "MEAN[,..]", value_delimiter = ',')]
    #[serde(default, deserialize_with = "one_or_many")]
    pub teacher_mean: Option<Vec<f32>>,
    /// Std ONNX teachers divide by: one value, or one per channel [default: from metadata, else 1]
    #[arg(long, value_name = "STD[,..]", value_delimiter = ',')]
    #[serde(default, deserialize_with = "one_or_many")]
    pub teacher_std: Option<Vec<f32>>,
    /// Directory of the on-disk teacher-logit cache (safetensors files keyed by hashes of teacher and data; see `edgekd teacher-logits --help`) [default: $EDGEKD_CACHE_DIR, else $XDG_CACHE_HOME/edgekd or ~/.cache/edgekd, then teacher-logits/]
    #[arg(long, value_name = "DIR")]
    pub logit_cache: Option<PathBuf>,
    /// Keep teacher logits in memory only: neither read nor write the cache
    #[arg(long)]
    #[serde(default)]
    pub no_logit_cache: bool,
}

impl TeacherOpts {
    /// Fills every option not given on the command line from the experiment file.
    pub fn merge(mut self, file: &TeacherOpts) -> TeacherOpts {
        self.no_logit_cache |= file.no_logit_cache;
        prefer_flags!(
            self,
            file,
            logit_cache,
            teacher_outputs,
            teacher_output,
            teacher_backend,
            teacher_scale,
            teacher_mean,
            teacher_std
        );
        self
    }

    /// The teacher-logit cache directory, unless caching is off.
    pub fn logit_cache_dir(&self) -> Option<PathBuf> {
        if self.no_logit_cache {
            return None;
        }
        self.logit_cache
            .clone()
            .or_else(edgekd_distill::logit_cache::default_dir)
    }

    /// How ONNX teachers are loaded.
    pub fn onnx_options(&self) -> Result<OnnxOptions> {
        let backend = match &self.teacher_backend {
            Some(b) => b
                .parse()
                .map_err(|e| anyhow::anyhow!("--teacher-backend: {e}"))?,
            None => Default::default(),
        };
        Ok(OnnxOptions {
            backend,
            outputs: match self.teacher_outputs.unwrap_or(TeacherOutputsArg::Auto) {
                TeacherOutputsArg::Auto => TeacherOutputs::Auto,
                TeacherOutputsArg::Logits => TeacherOutputs::Logits,
                TeacherOutputsArg::Probs => TeacherOutputs::Probs,
            },
            output: self.teacher_output.clone(),
            scale: self.teacher_scale,
            mean: self.teacher_mean.clone(),
            std: self.teacher_std.clone(),
        })
    }
}

/// Distillation options; each may also be set in --config under the same name.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdOpts {
    /// Teacher: a checkpoint directory written by edgekd, or an ONNX classifier file from any exporter; repeat for several teachers (their distributions are averaged)
    #[arg(long = "teacher", value_name = "DIR|FILE.onnx")]
    #[serde(rename = "teachers", default)]
    pub teachers: Vec<PathBuf>,
    /// How teachers run; read from experiment files through DistillFile (serde cannot nest a
    /// flattened struct inside this one, itself flattened there).
    #[command(flatten)]
    #[serde(skip)]
    pub run: TeacherOpts,
    /// Relative weight of each teacher, in --teacher order [default: equal]
    #[arg(long, value_delimiter = ',', value_name = "W1,W2,...")]
    pub teacher_weights: Option<Vec<f64>>,
    /// Student spec (e.g. mlp:64, mlp:800-800, cnn:lenet5-half), or `self` for the first teacher's architecture (self-distillation)
    #[arg(long)]
    pub student: Option<String>,
    /// Train this assistant from the teachers first, then the student from the assistant (teacher-assistant chain)
    #[arg(long, value_name = "SPEC")]
    pub assistant: Option<String>,
    /// Softmax temperature T of the soft targets [default: 2, measured best on MNIST; see README]
    #[arg(long, short = 'T')]
    pub temperature: Option<f64>,
    /// Weight of the distillation term; 1 - alpha goes to the true labels [default: 0.9]
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Distillation term [default: kl]
    #[arg(long, value_enum)]
    pub soft_loss: Option<SoftLossArg>,
    /// Weight of feature (hint) distillation: MSE between a learned projection of the student's last hidden layer and the first teacher's [default: 0, off]
    #[arg(long)]
    pub hint_weight: Option<f64>,
    /// Epochs of hard-label fine-tuning after distillation [default: 0]
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
    /// Constant learning rate of the fine-tune [default: lr / 10]
    #[arg(long)]
    pub finetune_lr: Option<f64>,
    /// Train on these images instead of --data's training set: a folder of PNG/JPEG files (subfolders included), no labels needed. The teachers label them (their combined top-1, so training accuracy reads as agreement with them) and alpha defaults to 1 (soft targets only); --data still gives the test set
    #[arg(long, value_name = "DIR")]
    pub unlabeled: Option<PathBuf>,
    /// Also train the same student alone (same seed, epochs and schedule) and report the KD gain
    #[arg(long)]
    #[serde(default)]
    pub baseline: bool,
    /// Repeat over this many consecutive seeds, starting at --seed, and report mean and spread [default: 1]
    #[arg(long)]
    pub seeds: Option<usize>,
}

impl KdOpts {
    /// Fills every option not given on the command line from the experiment file.
    pub fn merge(mut self, file: &KdOpts) -> KdOpts {
        if self.teachers.is_empty() {
            self.teachers = file.teachers.clone();
        }
        self.baseline |= file.baseline;
        prefer_flags!(
            self,
            file,
            teacher_weights,
            unlabeled,
            student,
            assistant,
            temperature,
            alpha,
            soft_loss,
            hint_weight,
            finetune_epochs,
            finetune_lr,
            seeds
        );
        self
    }

    /// The validated distillation configuration for a run whose peak learning rate is `lr`.
    pub fn config(&self, lr: f64) -> Result<DistillConfig> {
        let d = KdConfig::default();
        let kd = KdConfig {
            temperature: self.temperature.unwrap_or(d.temperature),
            alpha: self.alpha.unwrap_or(d.alpha),
            soft_loss: match self.soft_loss.unwrap_or(SoftLossArg::Kl) {
                SoftLossArg::Kl => SoftLoss::Kl,
                SoftLossArg::Mse => SoftLoss::Mse,
                SoftLossArg::Hard => SoftLoss::Hard,
            },
            hint_weight: self.hint_weight.unwrap_or(0.0),
        };
        kd.validate()?;
        Ok(DistillConfig {
            kd,
            teacher_weights: self.teacher_weights.clone().unwrap_or_default(),
            finetune_epochs: self.finetune_epochs.unwrap_or(0),
            finetune_lr: self.finetune_lr.unwrap_or(lr / 10.0),
        })
    }
}

/// Training options. Every one may also be set in the `--config` file under the same name
/// (with `_` for `-`).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOpts {
    /// Dataset: a directory of MNIST-layout IDX files (train-*/t10k-*, gzipped or raw) or an image folder (one subfolder of PNG/JPEG files per class, optionally under train/ and test/) [default: the subset shipped in data/mnist-subset]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Use only the first N training images (for quick experiments)
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
    /// Passes over the training set [default: 10]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Samples per update [default: 128]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed for initialisation, shuffling, dropout and augmentation [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Optimizer [default: adamw]
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// Peak learning rate [default: 0.003 for adamw, 0.05 for sgd]
    #[arg(long)]
    pub lr: Option<f64>,
    /// Weight decay (decoupled for adamw, L2 for sgd) [default: 0.0001]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// SGD momentum [default: 0.9]
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Clip gradients to this global L2 norm [default: off]
    #[arg(long, value_name = "NORM")]
    pub clip_norm: Option<f64>,
    /// Learning-rate schedule [default: cosine]
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Epochs between decays of the step schedule [default: 10]
    #[arg(long)]
    pub step_every: Option<usize>,
    /// Decay factor of the step schedule [default: 0.1]
    #[arg(long)]
    pub step_gamma: Option<f64>,
    /// Random translation of up to this many pixels (Hinton et al. used 2) [default: 0]
    #[arg(long, value_name = "PX")]
    pub jitter: Option<usize>,
    /// Mixup with Beta(A, A) weights, e.g. 0.2 [default: off]
    #[arg(long, value_name = "A")]
    pub mixup: Option<f32>,
    /// Dropout after each hidden layer of the trained model [default: 0]
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Dropout on the input of an MLP (Hinton et al. used 0.2) [default: 0]
    #[arg(long)]
    pub input_dropout: Option<f32>,
    /// Continue an interrupted run from the checkpoint in --out (same settings required)
    #[arg(long)]
    #[serde(skip)]
    pub resume: bool,
    /// Stop after this many epochs as if interrupted (the run can then be --resume'd)
    #[arg(long, value_name = "EPOCHS", hide = true)]
    #[serde(skip)]
    pub stop_after: Option<usize>,
    /// Print only each run's final line
    #[arg(long, short)]
    #[serde(skip)]
    pub quiet: bool,
    /// Print where each training step's time went: data, teacher forward, student forward,
    /// loss, backward, optimizer, metrics (ms per step and share)
    #[arg(long)]
    #[serde(skip)]
    pub profile: bool,
    /// Seed of the train/test split of an image folder without test/ (a sixth of each class held out) [default: 0]
    #[arg(long, value_name = "SEED")]
    pub split_seed: Option<u64>,
    /// Size an image folder is resized to: HxW (height x width) or N for NxN [default: the teacher's input size, else the first image's]
    #[arg(long, value_name = "HxW")]
    pub image_size: Option<ImageSize>,
    /// Colour an image folder is decoded to [default: the teacher's input, else RGB when the first image is in colour]
    #[arg(long, value_enum)]
    pub color: Option<ColorArg>,
    /// Input normalization of the trained model, applied to pixels scaled to [0, 1]: (x - MEAN) / STD; recorded in the checkpoint and the exported ONNX [default: MNIST's 0.1307,0.3081]
    #[arg(long, value_name = "MEAN,STD", value_delimiter = ',')]
    pub normalize: Option<Vec<f32>>,
    /// Threads for training: the matrix products, and convolution blocks [default: every core, or RAYON_NUM_THREADS]. Both cores of a small machine help the big MLPs most (measured in README, Training speed)
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl TrainOpts {
    /// Applies --threads, process-wide (before any training thread starts: candle, gemm and
    /// rayon all read RAYON_NUM_THREADS).
    pub fn apply_threads(&self) -> Result<()> {
        match self.threads {
            Some(0) => bail!("--threads must be at least 1"),
            Some(n) => std::env::set_var("RAYON_NUM_THREADS", n.to_string()),
            None => {}
        }
        Ok(())
    }

    /// Fills every option not given on the command line from the experiment file.
    pub fn merge(mut self, file: &TrainOpts) -> TrainOpts {
        prefer_flags!(
            self,
            file,
            data,
            train_limit,
            epochs,
            batch_size,
            seed,
            optimizer,
            lr,
            weight_decay,
            momentum,
            clip_norm,
            schedule,
            step_every,
            step_gamma,
            jitter,
            mixup,
            dropout,
            input_dropout,
            split_seed,
            image_size,
            color,
            normalize,
            threads
        );
        self
    }

    /// The validated training configuration.
    pub fn train_config(&self) -> Result<TrainConfig> {
        let kind = match self.optimizer.unwrap_or(OptimizerArg::Adamw) {
            OptimizerArg::Adamw => OptimizerKind::AdamW,
            OptimizerArg::Sgd => OptimizerKind::Sgd,
        };
        let default_lr = if kind == OptimizerKind::Sgd {
            0.05
        } else {
            3e-3
        };
        let d = OptimizerConfig::default();
        let optimizer = OptimizerConfig {
            kind,
            lr: self.lr.unwrap_or(default_lr),
            weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
            momentum: self.momentum.unwrap_or(d.momentum),
            clip_norm: self.clip_norm,
            ..d
        };
        let schedule = match self.schedule.unwrap_or(ScheduleArg::Cosine) {
            ScheduleArg::Cosine => Schedule::Cosine,
            ScheduleArg::Constant => Schedule::Constant,
            ScheduleArg::Step => Schedule::Step {
                every: self.step_every.unwrap_or(10),
                gamma: self.step_gamma.unwrap_or(0.1),
            },
        };
        let cfg = TrainConfig {
            epochs: self.epochs.unwrap_or(10),
            batch_size: self.batch_size.unwrap_or(128),
            seed: self.seed.unwrap_or(0),
            optimizer,
            schedule,
            augment: Augment {
                jitter: self.jitter.unwrap_or(0),
                mixup: self.mixup,
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A model spec with this run's dropout settings.
    pub fn spec(&self, spec: &str) -> Result<ModelSpec> {
        let mut s = ModelSpec::parse(spec)?.with_dropout(
            self.dropout.unwrap_or(0.0),
            self.input_dropout.unwrap_or(0.0),
        )?;
        s.normalization = self.normalization()?;
        Ok(s)
    }

    /// A model spec for `data`: it takes the data's images and scores its classes.
    pub fn spec_for(&self, spec: &str, data: &Splits) -> Result<ModelSpec> {
        let mut s = self.spec(spec)?;
        s.classes = data.classes();
        s.class_names = data.class_names.clone();
        s.input = data.train.shape();
        s.validate()
            .with_context(|| format!("for the data's {} images", s.input))?;
        Ok(s)
    }

    /// The image-folder decoding --image-size and --color ask for.
    pub fn image_options(&self) -> ImageOptions {
        ImageOptions {
            size: self.image_size.map(|s| (s.rows, s.cols)),
            channels: self.color.map(|c| match c {
                ColorArg::Gray => 1,
                ColorArg::Rgb => 3,
            }),
        }
    }

    /// The input normalization --normalize asks for (MNIST's statistics by default).
    pub fn normalization(&self) -> Result<Normalization> {
        match self.normalize.as_deref() {
            None => Ok(Normalization::default()),
            Some(&[mean, std]) if mean.is_finite() && std.is_finite() && std > 0.0 => {
                Ok(Normalization { mean, std })
            }
            Some(v) => bail!("--normalize takes MEAN,STD with a positive STD, got {v:?}"),
        }
    }

    /// The data directory the run reads.
    pub fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(shipped_subset)
    }

    /// Loads the data, cut to --train-limit.
    pub fn load_data(&self) -> Result<Splits> {
        self.load_data_for(None)
    }

    /// Loads the data, cut to --train-limit. An image folder is decoded at --image-size and
    /// --color; what they leave open comes from `teacher_input` (the images the teacher takes),
    /// else from the folder's first image.
    pub fn load_data_for(&self, teacher_input: Option<InputShape>) -> Result<Splits> {
        let dir = self.data_dir();
        let mut image = self.image_options();
        let folder = Splits::is_image_folder(&dir);
        if let (true, Some(t)) = (folder, teacher_input) {
            image = ImageOptions::exactly(image.resolve(|| Ok(t))?);
        }
        let mut splits = Splits::load_with(&dir, self.split_seed.unwrap_or(0), image)
            .with_context(|| format!("loading dataset from {}", dir.display()))?;
        if folder && !self.quiet {
            eprintln!(
                "{}: image folder, {} training and {} test images decoded as {}",
                dir.display(),
                splits.train.len(),
                splits.test.len(),
                splits.train.shape()
            );
        }
        if let Some(n) = self.train_limit {
            if n == 0 {
                bail!("--train-limit must be at least 1");
            }
            splits.train = splits.train.take(n);
        }
        Ok(splits)
    }
}

/// The MNIST subset in the repository (10,000 training and 2,000 test images).
pub fn shipped_subset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("mnist-subset")
}

/// What `train --config FILE` reads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainFile {
    pub model: Option<String>,
    pub out: Option<PathBuf>,
    #[serde(flatten)]
    pub opts: TrainOpts,
}

/// What `distill --config FILE` reads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillFile {
    pub out: Option<PathBuf>,
    /// Chart of test errors per epoch (PNG).
    pub plot: Option<PathBuf>,
    /// A teacher to train first (a `train --config` file as a table); options it leaves out
    /// come from the top level, and command-line flags override both.
    pub teacher: Option<TrainFile>,
    #[serde(flatten)]
    pub kd: KdOpts,
    #[serde(flatten)]
    pub run: TeacherOpts,
    #[serde(flatten)]
    pub opts: TrainOpts,
}

/// Reads an experiment file into `T`, refusing unknown keys so typos are caught.
pub fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    parse_config(&text).with_context(|| format!("parsing config {}", path.display()))
}

/// Parses experiment-file text into `T` (what [`read_config`] does after reading the file),
/// with errors on one line that name the line and the key.
pub fn parse_config<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let err = match toml::from_str(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    // Values under `#[serde(flatten)]` lose their position: find the bad key by trying each
    // top-level key alone (every option is optional, so only the culprit fails).
    if let Ok(table) = toml::from_str::<toml::Table>(text) {
        for (key, value) in table {
            let one = toml::Table::from_iter([(key.clone(), value)]);
            if let Err(e) = toml::Value::Table(one).try_into::<T>() {
                let line = text
                    .lines()
                    .position(|l| {
                        l.trim_start()
                            .strip_prefix(key.as_str())
                            .is_some_and(|r| r.trim_start().starts_with('='))
                    })
                    .map(|i| format!("line {}, ", i + 1))
                    .unwrap_or_default();
                bail!("{line}`{key}`: {}", one_line(e.message()));
            }
        }
    }
    // A syntax error: toml's Display draws the offending line under the message.
    let at = err
        .span()
        .and_then(|s| text.get(..s.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        })
        .unwrap_or_default();
    bail!("{at}{}", one_line(err.message()))
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiment_files_take_per_channel_means_image_sizes_and_colours() {
        let f: DistillFile = parse_config(
            "teacher_mean = [0.485, 0.456, 0.406]\nteacher_std = 0.25\n\
             image_size = \"32x24\"\ncolor = \"rgb\"\n",
        )
        .unwrap();
        assert_eq!(f.run.teacher_mean, Some(vec![0.485, 0.456, 0.406]));
        assert_eq!(f.run.teacher_std, Some(vec![0.25]));
        let image = f.opts.image_options();
        assert_eq!((image.size, image.channels), (Some((32, 24)), Some(3)));
        let err = parse_config::<DistillFile>("image_size = \"32y\"").unwrap_err();
        assert!(
            err.to_string().contains("`32y` is not an image size"),
            "{err}"
        );
    }

    #[test]
    fn image_sizes_are_hxw_or_one_side() {
        let size = |s: &str| s.parse::<ImageSize>().map(|s| (s.rows, s.cols));
        assert_eq!(size("32"), Ok((32, 32)));
        assert_eq!(size("20x24"), Ok((20, 24)));
        assert_eq!(size("224X224"), Ok((224, 224)));
        for bad in ["0", "3x0", "x", "8193x2", "-1x4", "2x3x4"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }
}
