//! The values flags and experiment files take: enums for `--optimizer`, `--schedule`,
//! `--color`, `--soft-loss`, `--teacher-outputs`, and image sizes.

use clap::ValueEnum;
use serde::Deserialize;

/// How pruning ranks channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CriterionArg {
    /// Sum of |w| of the filters computing the channel
    L1,
    /// Euclidean norm of those filters
    L2,
    /// |scale| of the channel's batch normalization
    BnScale,
    /// |activation x gradient| of the loss over training batches
    Taylor,
}

impl CriterionArg {
    /// The library's value.
    pub fn criterion(self) -> edgekd_distill::prune::Criterion {
        use edgekd_distill::prune::Criterion;
        match self {
            CriterionArg::L1 => Criterion::L1,
            CriterionArg::L2 => Criterion::L2,
            CriterionArg::BnScale => Criterion::BnScale,
            CriterionArg::Taylor => Criterion::Taylor,
        }
    }
}

/// Where pruned channels compete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeArg {
    /// Every layer loses the same fraction
    Layer,
    /// All channels ranked together, scores relative to their layer's mean
    Global,
}

impl ScopeArg {
    /// The library's value.
    pub fn scope(self) -> edgekd_distill::prune::Scope {
        match self {
            ScopeArg::Layer => edgekd_distill::prune::Scope::Layer,
            ScopeArg::Global => edgekd_distill::prune::Scope::Global,
        }
    }
}

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
pub(crate) fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<f32>>, D::Error> {
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
