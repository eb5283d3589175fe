//! Distillation options (`--teacher`, `-T`, `--alpha`, ...) and how ONNX teachers run.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use edgekd_distill::onnx_teacher::{OnnxOptions, TeacherOutputs};
use edgekd_distill::{DistillConfig, KdConfig, SoftLoss};
use serde::Deserialize;

use super::values::{one_or_many, CriterionArg, ScopeArg, SoftLossArg, TeacherOutputsArg};

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
    /// Student spec (e.g. mlp:64, mlp:800-800, cnn:lenet5-half); `self` for the first teacher's architecture (self-distillation); a checkpoint directory to start from its weights (a pruned model: --baseline then fine-tunes the same weights on labels); or a model.toml file for its architecture from fresh weights
    #[arg(long, value_name = "SPEC|DIR|FILE.toml")]
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
    /// Prune the --student checkpoint (a directory) by this fraction of its neurons and channels first, then distil; with --prune-steps, in rounds of prune then distil
    #[arg(long, value_name = "R")]
    pub prune_ratio: Option<f64>,
    /// Prune-then-distil rounds that reach --prune-ratio gradually; each earlier round trains one seed into OUT/stepK, the last one what --seeds and --baseline ask [default: 1]
    #[arg(long, value_name = "K", requires = "prune_ratio")]
    pub prune_steps: Option<usize>,
    /// How --prune-ratio ranks channels (see `edgekd prune --help`) [default: l1]
    #[arg(long, value_enum, requires = "prune_ratio")]
    pub prune_criterion: Option<CriterionArg>,
    /// Round pruned widths to multiples of this (see `edgekd prune --help`) [default: 8]
    #[arg(long, value_name = "N", requires = "prune_ratio")]
    pub prune_channel_multiple: Option<usize>,
    /// Where pruned channels compete: layer or global [default: layer]
    #[arg(long, value_enum, requires = "prune_ratio")]
    pub prune_scope: Option<ScopeArg>,
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
            prune_ratio,
            prune_steps,
            prune_criterion,
            prune_scope,
            prune_channel_multiple,
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
