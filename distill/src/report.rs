//! The JSON report written beside every checkpoint, and the KD-gain summary over seeds.

use serde::{Deserialize, Serialize};

use crate::config::{DistillConfig, TrainConfig};
use crate::evaluation::Evaluation;
use crate::identity::RunIdentity;
use crate::spec::ModelSpec;

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

/// Everything a finished run measured, with the settings that reproduce it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// edgekd version that wrote it.
    pub edgekd_version: String,
    /// The model's spec string.
    pub model: String,
    /// Trainable scalars.
    pub parameters: usize,
    /// Multiply-accumulates per sample.
    pub macs: usize,
    /// Weight bytes at f32.
    pub f32_bytes: usize,
    /// Test-set correct predictions.
    pub test_correct: usize,
    /// Test-set size.
    pub test_total: usize,
    /// Test-set errors.
    pub test_errors: usize,
    /// Test-set accuracy.
    pub test_accuracy: f64,
    /// Fraction of test samples where the student's top-1 equals the teachers' combined top-1.
    pub teacher_agreement: Option<f64>,
    /// Teacher checkpoints distilled from (empty for plain training).
    pub teachers: Vec<String>,
    /// Mean wall-clock seconds per training epoch.
    pub seconds_per_epoch: f64,
    /// Per-epoch figures.
    pub history: Vec<EpochStats>,
    /// The model spec in full.
    pub spec: ModelSpec,
    /// Training settings, seed included.
    pub train: TrainConfig,
    /// Distillation settings, when distilled.
    pub distill: Option<DistillConfig>,
    /// Data directory (or "shipped subset").
    pub data: String,
    /// What the run was: `--resume` reuses a finished run only when this matches (reports
    /// written before edgekd recorded it are never reused).
    #[serde(default)]
    pub identity: Option<RunIdentity>,
}

impl Report {
    /// Assembles a report from a run's results.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: &ModelSpec,
        eval: &Evaluation,
        teacher_agreement: Option<f64>,
        teachers: Vec<String>,
        history: Vec<EpochStats>,
        train: TrainConfig,
        distill: Option<DistillConfig>,
        data: String,
        identity: RunIdentity,
    ) -> Report {
        let trained: Vec<f64> = history.iter().map(|h| h.seconds).collect();
        Report {
            edgekd_version: env!("CARGO_PKG_VERSION").into(),
            model: spec.name.clone(),
            parameters: spec.param_count(),
            macs: spec.macs(),
            f32_bytes: spec.f32_bytes(),
            test_correct: eval.correct,
            test_total: eval.total,
            test_errors: eval.errors(),
            test_accuracy: eval.accuracy(),
            teacher_agreement,
            teachers,
            seconds_per_epoch: Summary::of(&trained).mean,
            history,
            spec: spec.clone(),
            train,
            distill,
            data,
            identity: Some(identity),
        }
    }
}

/// Mean, sample standard deviation and range of a few numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for a single value.
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises `xs` (all zeros when empty).
    pub fn of(xs: &[f64]) -> Summary {
        if xs.is_empty() {
            return Summary {
                mean: 0.0,
                std: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = if xs.len() > 1 {
            xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Summary {
            mean,
            std: var.sqrt(),
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// The same student trained alone and distilled, seed by seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KdGain {
    /// Student spec string.
    pub student: String,
    /// Test-set size.
    pub test_total: usize,
    /// Seeds used, in order.
    pub seeds: Vec<u64>,
    /// Test errors of the student trained alone, per seed.
    pub alone_errors: Vec<usize>,
    /// Test errors of the distilled student, per seed.
    pub distilled_errors: Vec<usize>,
    /// Agreement with the teacher, alone, per seed.
    pub alone_agreement: Vec<f64>,
    /// Agreement with the teacher, distilled, per seed.
    pub distilled_agreement: Vec<f64>,
}

fn summarise_counts(counts: &[usize]) -> Summary {
    Summary::of(&counts.iter().map(|&c| c as f64).collect::<Vec<_>>())
}

impl KdGain {
    /// Summary of errors alone.
    pub fn alone(&self) -> Summary {
        summarise_counts(&self.alone_errors)
    }
    /// Summary of errors distilled.
    pub fn distilled(&self) -> Summary {
        summarise_counts(&self.distilled_errors)
    }
    /// Mean errors saved by distillation (negative when it hurt).
    pub fn gain(&self) -> f64 {
        self.alone().mean - self.distilled().mean
    }
    /// Seeds on which the distilled student made fewer errors than the one trained alone.
    pub fn wins(&self) -> usize {
        self.alone_errors
            .iter()
            .zip(&self.distilled_errors)
            .filter(|(a, d)| d < a)
            .count()
    }
    /// Whether distillation helped on average and on at least half the seeds.
    pub fn helped(&self) -> bool {
        self.gain() > 0.0 && 2 * self.wins() >= self.seeds.len()
    }
    /// One line a person reads: errors alone vs distilled, mean ± σ over seeds, and a verdict.
    pub fn line(&self) -> String {
        let (a, d) = (self.alone(), self.distilled());
        let agree = |v: &[f64]| 100.0 * Summary::of(v).mean;
        let n = self.seeds.len();
        let verdict = if self.helped() {
            format!(
                "KD helped: {:.1} fewer errors on average, better on {} of {n} seeds",
                self.gain(),
                self.wins()
            )
        } else {
            format!(
                "KD did NOT help: {:+.1} errors on average, better on {} of {n} seeds. Distillation pays when the teacher is clearly better than what {} reaches alone; try a lower temperature, more epochs or a stronger teacher",
                -self.gain(),
                self.wins(),
                self.student
            )
        };
        format!(
            "{} on {} test images over {} seed(s): alone {:.1} ± {:.1} errors ({:?}), distilled {:.1} ± {:.1} ({:?}); teacher agreement {:.2}% -> {:.2}%. {verdict}",
            self.student,
            self.test_total,
            self.seeds.len(),
            a.mean,
            a.std,
            self.alone_errors,
            d.mean,
            d.std,
            self.distilled_errors,
            agree(&self.alone_agreement),
            agree(&self.distilled_agreement)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_the_sample_standard_deviation() {
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.mean, 5.0);
        assert!((s.std - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!((s.min, s.max), (2.0, 9.0));
        assert_eq!(Summary::of(&[3.0]).std, 0.0);
    }

    #[test]
    fn the_verdict_needs_a_mean_gain_and_half_the_seeds() {
        let mut g = KdGain {
            student: "mlp:64".into(),
            test_total: 100,
            seeds: vec![0, 1, 2],
            alone_errors: vec![10, 12, 11],
            distilled_errors: vec![8, 13, 9],
            alone_agreement: vec![0.9; 3],
            distilled_agreement: vec![0.95; 3],
        };
        assert!(g.helped());
        assert!(
            g.line()
                .contains("KD helped: 1.0 fewer errors on average, better on 2 of 3 seeds")
                && g.line().contains("alone 11.0 ± 1.0"),
            "{}",
            g.line()
        );
        g.distilled_errors = vec![12, 13, 5];
        assert!(
            !g.helped(),
            "a lower mean from one lucky seed is not a verdict"
        );
        assert!(
            g.line()
                .contains("did NOT help: -1.0 errors on average, better on 1 of 3 seeds"),
            "{}",
            g.line()
        );
    }
}
