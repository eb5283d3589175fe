//! Options shared by `train` and `distill`, and the experiment file (`--config exp.toml`) that can
//! hold any of them. A flag on the command line wins over the file; the file wins over defaults.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use edgekd_distill::batch::Augment;
use edgekd_distill::{ModelSpec, OptimizerConfig, OptimizerKind, Schedule, Splits, TrainConfig};
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

/// Training options. Every one may also be set in the `--config` file under the same name
/// (with `_` for `-`).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOpts {
    /// Directory of MNIST-layout IDX files (train-*/t10k-*, gzipped or raw) [default: the subset shipped in data/mnist-subset]
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
}

macro_rules! prefer_flags {
    ($flags:ident, $file:ident, $($field:ident),*) => {
        $( if $flags.$field.is_none() { $flags.$field = $file.$field.clone(); } )*
    };
}

impl TrainOpts {
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
            input_dropout
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
        Ok(ModelSpec::parse(spec)?.with_dropout(
            self.dropout.unwrap_or(0.0),
            self.input_dropout.unwrap_or(0.0),
        )?)
    }

    /// The data directory the run reads.
    pub fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(shipped_subset)
    }

    /// Loads the data, cut to --train-limit.
    pub fn load_data(&self) -> Result<Splits> {
        let dir = self.data_dir();
        let mut splits = Splits::load(&dir)
            .with_context(|| format!("loading dataset from {}", dir.display()))?;
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

/// Reads an experiment file into `T`, refusing unknown keys so typos are caught.
pub fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
}
