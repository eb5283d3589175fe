//! The settings of one training run and of distillation: what `report.json` records and a
//! run's identity hashes.

use serde::{Deserialize, Serialize};

use crate::batch::Augment;
use crate::error::{Error, Result};
use crate::loss::KdConfig;
use crate::optim::{OptimizerConfig, Schedule};

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
    /// Epochs of linear learning-rate warm-up from zero before the schedule.
    #[serde(default)]
    pub warmup_epochs: usize,
    /// Label smoothing of the hard-label cross-entropy (0: none).
    #[serde(default)]
    pub label_smoothing: f64,
    /// Weights of convolution and dense layers that are exactly zero when training starts
    /// stay zero (recovering an unstructured prune without regrowing what it removed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_zeros: bool,
    /// Quantization-aware training in the last epochs (None: float throughout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat: Option<crate::qat::QatConfig>,
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
            warmup_epochs: 0,
            label_smoothing: 0.0,
            keep_zeros: false,
            qat: None,
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
        if self.warmup_epochs >= self.epochs {
            return Err(Error::Config(format!(
                "{} warm-up epochs leave none of the {} epochs to train at the schedule's rate",
                self.warmup_epochs, self.epochs
            )));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::Config(format!(
                "label smoothing must be in [0, 1), got {}",
                self.label_smoothing
            )));
        }
        if let Some(q) = &self.qat {
            q.validate(self.epochs)?;
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
