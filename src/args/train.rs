//! Training options (`--data`, `--epochs`, `--lr`, ...), shared by `train` and `distill`, and
//! how they become a training configuration, a model spec and loaded data.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use edgekd_distill::batch::Augment;
use edgekd_distill::{
    ImageOptions, InputShape, ModelSpec, Normalization, OptimizerConfig, OptimizerKind, Schedule,
    Splits, TrainConfig,
};
use serde::Deserialize;

use super::values::{one_or_many, ColorArg, ImageSize, OptimizerArg, ScheduleArg};

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
    /// SGD with Nesterov momentum (as PyTorch's SGD(nesterov=True))
    #[arg(long)]
    #[serde(default)]
    pub nesterov: bool,
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
    /// Epochs of linear learning-rate warm-up from 0 before the schedule starts [default: 0]
    #[arg(long, value_name = "EPOCHS")]
    pub warmup_epochs: Option<usize>,
    /// Label smoothing of the true-label cross-entropy: the target puts EPS on the other
    /// classes, spread evenly (Szegedy et al. 2016) [default: 0]
    #[arg(long, value_name = "EPS")]
    pub label_smoothing: Option<f64>,
    /// Weights that are exactly zero at the start stay zero: recover a `prune --unstructured` checkpoint (as --student DIR) without regrowing what it removed
    #[arg(long)]
    #[serde(default)]
    pub keep_zeros: bool,
    /// Quantization-aware training: simulate the int8 export (weights per channel, layer inputs per tensor at ranges tracked by moving averages, frozen for the last quarter of the QAT epochs) in the forward pass, gradients straight through; the checkpoint keeps the learned ranges in qat.json and `export` uses them instead of calibrating
    #[arg(long)]
    #[serde(default)]
    pub qat: bool,
    /// With --qat: simulate int8 in only the last N epochs (the ones before train in float) [default: all]
    #[arg(long, value_name = "N", requires = "qat")]
    pub qat_epochs: Option<usize>,
    /// Random translation of up to this many pixels, the uncovered border zero: the same as
    /// a random crop of the image zero-padded by PX on every side (--crop-pad). Hinton et al.
    /// used 2 on MNIST, CIFAR ResNets 4 [default: 0]
    #[arg(long, value_name = "PX", visible_alias = "crop-pad")]
    #[serde(alias = "crop_pad")]
    pub jitter: Option<usize>,
    /// Mirror training images left to right at random (not for digits or text) [default: off]
    #[arg(long)]
    #[serde(default)]
    pub flip: bool,
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
    /// Input normalization of the trained model, applied to pixels scaled to [0, 1]: (x - MEAN) / STD for every channel; recorded in the checkpoint and the exported ONNX, and applied by run, bench and the C library [default: MNIST's 0.1307,0.3081]
    #[arg(long, value_name = "MEAN,STD", value_delimiter = ',', conflicts_with_all = ["normalize_mean", "normalize_std"])]
    pub normalize: Option<Vec<f32>>,
    /// Per-channel input means (R,G,B), with --normalize-std: (x - MEAN[c]) / STD[c]
    #[arg(
        long,
        value_name = "M1,M2,M3",
        value_delimiter = ',',
        requires = "normalize_std"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub normalize_mean: Option<Vec<f32>>,
    /// Per-channel input standard deviations, with --normalize-mean
    #[arg(
        long,
        value_name = "S1,S2,S3",
        value_delimiter = ',',
        requires = "normalize_mean"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub normalize_std: Option<Vec<f32>>,
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
        self.nesterov |= file.nesterov;
        self.flip |= file.flip;
        self.qat |= file.qat;
        self.keep_zeros |= file.keep_zeros;
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
            warmup_epochs,
            label_smoothing,
            qat_epochs,
            jitter,
            mixup,
            dropout,
            input_dropout,
            split_seed,
            image_size,
            color,
            normalize,
            normalize_mean,
            normalize_std,
            threads
        );
        self
    }

    /// The validated training configuration.
    ///
    /// (An experiment file can hold `qat_epochs` without `qat`, which clap cannot refuse.)
    pub fn train_config(&self) -> Result<TrainConfig> {
        if self.qat_epochs.is_some() && !self.qat {
            bail!("qat_epochs only applies with qat = true (--qat)");
        }
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
            nesterov: self.nesterov,
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
                flip: self.flip,
            },
            warmup_epochs: self.warmup_epochs.unwrap_or(0),
            label_smoothing: self.label_smoothing.unwrap_or(0.0),
            keep_zeros: self.keep_zeros,
            qat: self.qat.then(|| {
                edgekd_distill::qat::QatConfig::last(
                    self.qat_epochs.unwrap_or(self.epochs.unwrap_or(10)),
                )
            }),
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
        if !s.normalization.is_uniform() && s.input.channels != 3 {
            bail!(
                "per-channel normalization is for RGB images; the data's are {}: give one MEAN,STD with --normalize",
                s.input
            );
        }
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

    /// The input normalization --normalize (or --normalize-mean and --normalize-std) asks
    /// for; MNIST's statistics by default.
    pub fn normalization(&self) -> Result<Normalization> {
        let (mean, std, flags) = match (&self.normalize, &self.normalize_mean, &self.normalize_std) {
            (None, None, None) => return Ok(Normalization::default()),
            (Some(v), None, None) => match v[..] {
                [mean, std] => (vec![mean], vec![std], "--normalize MEAN,STD"),
                _ => bail!(
                    "--normalize takes MEAN,STD (one pair for every channel), got {v:?}; give per-channel values with --normalize-mean and --normalize-std"
                ),
            },
            (None, Some(m), Some(s)) => (m.clone(), s.clone(), "--normalize-mean/--normalize-std"),
            (None, _, _) => bail!("--normalize-mean and --normalize-std go together"),
            (Some(_), _, _) => bail!("--normalize and --normalize-mean/--normalize-std are alternatives; give one"),
        };
        match Normalization::per_channel(&mean, &std) {
            Some(n) if n.is_valid() => Ok(n),
            Some(_) => bail!("{flags} takes finite means with a positive STD for every channel, got means {mean:?} and standard deviations {std:?}"),
            None => bail!("{flags} takes one value for every channel or one per channel (3 for RGB), got {} means and {} standard deviations", mean.len(), std.len()),
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
