//! Knowledge-distillation losses (Hinton, Vinyals and Dean, 2015, and the variants after it).
//!
//! All losses are means over the batch. The soft loss is
//! `T^2 * KL(softmax(t/T) || softmax(s/T))`: the `T^2` keeps its gradient,
//! `T * (softmax(s/T) - softmax(t/T)) / n` with respect to the student logits `s`, on the same
//! scale as the hard-label cross-entropy's whatever the temperature.

use candle_core::{DType, Tensor, D};
use candle_nn::ops::{log_softmax, softmax_last_dim};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What the student is taught to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SoftLoss {
    /// Temperature-softened teacher distribution, KL divergence scaled by T^2 (Hinton et al.).
    #[default]
    Kl,
    /// Mean squared error between student and teacher logits (Ba & Caruana, 2014).
    Mse,
    /// Cross-entropy against the teacher's argmax ("hard distillation", Touvron et al., 2021).
    Hard,
}

/// How the soft and hard losses are blended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdConfig {
    /// Softmax temperature for [`SoftLoss::Kl`].
    pub temperature: f64,
    /// Weight of the distillation term; `1 - alpha` goes to the true-label cross-entropy.
    pub alpha: f64,
    /// Which distillation term.
    pub soft_loss: SoftLoss,
    /// Weight of the feature (hint) MSE term; 0 turns it off.
    pub hint_weight: f64,
}

impl Default for KdConfig {
    fn default() -> Self {
        KdConfig {
            temperature: 2.0,
            alpha: 0.9,
            soft_loss: SoftLoss::Kl,
            hint_weight: 0.0,
        }
    }
}

impl KdConfig {
    /// Rejects settings with no meaning.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::Config(format!(
                "temperature must be positive, got {}",
                self.temperature
            )));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::Config(format!(
                "alpha must be in [0, 1], got {}",
                self.alpha
            )));
        }
        if !(self.hint_weight.is_finite() && self.hint_weight >= 0.0) {
            return Err(Error::Config(format!(
                "hint weight must be >= 0, got {}",
                self.hint_weight
            )));
        }
        Ok(())
    }
}

/// The teachers' combined targets for one batch.
#[derive(Debug, Clone)]
pub struct SoftTargets {
    /// Weighted mean of the teachers' logits (for [`SoftLoss::Mse`]).
    pub logits: Tensor,
    /// Weighted mean of the teachers' distributions at the temperature.
    pub probs: Tensor,
    /// Log of `probs`, computed exactly when there is a single teacher.
    pub log_probs: Tensor,
}

impl SoftTargets {
    /// The ensemble's top-1 class per row.
    pub fn top1(&self) -> Result<Vec<u32>> {
        Ok(self
            .probs
            .argmax(candle_core::D::Minus1)?
            .to_vec1::<u32>()?)
    }

    /// Combines teacher logits `[n, classes]` with `weights` (normalised here) at `temperature`.
    /// Several teachers are averaged in probability space, as an ensemble's prediction is.
    pub fn combine(
        teacher_logits: &[Tensor],
        weights: &[f64],
        temperature: f64,
    ) -> Result<SoftTargets> {
        if teacher_logits.is_empty() || teacher_logits.len() != weights.len() {
            return Err(Error::Config(format!(
                "{} teachers but {} weights",
                teacher_logits.len(),
                weights.len()
            )));
        }
        let total: f64 = weights.iter().sum();
        // Written so NaN weights are refused too.
        if !total.is_finite() || total <= 0.0 || weights.iter().any(|w| w.is_nan() || *w < 0.0) {
            return Err(Error::Config(format!(
                "teacher weights must be >= 0 and not all zero, got {weights:?}"
            )));
        }
        if teacher_logits.len() == 1 {
            let scaled = (&teacher_logits[0] / temperature)?;
            return Ok(SoftTargets {
                logits: teacher_logits[0].clone(),
                probs: softmax_last_dim(&scaled)?,
                log_probs: log_softmax(&scaled, D::Minus1)?,
            });
        }
        let mut logits = None;
        let mut probs = None;
        for (t, w) in teacher_logits.iter().zip(weights) {
            let w = w / total;
            let p = (softmax_last_dim(&(t / temperature)?)? * w)?;
            let l = (t * w)?;
            probs = Some(match probs {
                None => p,
                Some(acc) => (acc + p)?,
            });
            logits = Some(match logits {
                None => l,
                Some(acc) => (acc + l)?,
            });
        }
        let probs = probs.expect("at least one teacher");
        // A mixture's log is only computable from the probabilities; the floor keeps 0 * log 0 at 0.
        let log_probs = probs.clamp(1e-30f32, 1f32)?.log()?;
        Ok(SoftTargets {
            logits: logits.expect("at least one teacher"),
            probs,
            log_probs,
        })
    }

    /// The teachers' predicted class per sample.
    pub fn argmax(&self) -> Result<Tensor> {
        Ok(self.probs.argmax(D::Minus1)?)
    }
}

/// `T^2 * KL(targets || softmax(student/T))`, averaged over the batch.
pub fn soft_kl(student_logits: &Tensor, targets: &SoftTargets, temperature: f64) -> Result<Tensor> {
    let log_q = log_softmax(&(student_logits / temperature)?, D::Minus1)?;
    let per_sample = (&targets.probs * (&targets.log_probs - log_q)?)?.sum(D::Minus1)?;
    Ok((per_sample.mean(0)? * (temperature * temperature))?)
}

/// Cross-entropy of `logits` against integer `labels` (u32), averaged over the batch.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

/// Mean squared error over all elements.
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((a - b)?.sqr()?.mean_all()?)
}

/// The pieces of one batch's loss, with the differentiable total.
#[derive(Debug)]
pub struct LossParts {
    /// What is back-propagated.
    pub total: Tensor,
    /// The distillation term before weighting (None without a teacher).
    pub soft: Option<Tensor>,
    /// The true-label cross-entropy before weighting.
    pub hard: Tensor,
    /// The hint term before weighting (None when off).
    pub hint: Option<Tensor>,
}

/// Cross-entropy against labels smoothed by `eps`: the target puts `1 - eps` on the label and
/// `eps` spread evenly over all classes, so the loss is `(1 - eps) · CE(y) + eps · mean_k
/// (-log p_k)`, as PyTorch's `cross_entropy(label_smoothing=eps)`.
pub fn smoothed_cross_entropy(logits: &Tensor, labels: &Tensor, eps: f64) -> Result<Tensor> {
    if eps == 0.0 {
        return cross_entropy(logits, labels);
    }
    let log_p = log_softmax(logits, D::Minus1)?;
    let nll = candle_nn::loss::nll(&log_p, labels)?;
    let uniform = log_p.mean(D::Minus1)?.mean(0)?.neg()?;
    Ok(((nll * (1.0 - eps))? + (uniform * eps)?)?)
}

/// Hard-label cross-entropy, label-smoothed by `smoothing` and mixup-aware:
/// `lambda * CE(y) + (1 - lambda) * CE(y_partner)`.
pub fn label_loss(
    logits: &Tensor,
    labels: &Tensor,
    mix: Option<(&Tensor, f64)>,
    smoothing: f64,
) -> Result<Tensor> {
    let ce = smoothed_cross_entropy(logits, labels, smoothing)?;
    match mix {
        None => Ok(ce),
        Some((partner, lambda)) => Ok(((ce * lambda)?
            + (smoothed_cross_entropy(logits, partner, smoothing)? * (1.0 - lambda))?)?),
    }
}

/// Blends the distillation term with the label term:
/// `alpha * soft + (1 - alpha) * hard + hint_weight * hint`.
pub fn distillation_loss(
    cfg: &KdConfig,
    student_logits: &Tensor,
    targets: &SoftTargets,
    label_term: Tensor,
    hint: Option<Tensor>,
) -> Result<LossParts> {
    let soft = match cfg.soft_loss {
        SoftLoss::Kl => soft_kl(student_logits, targets, cfg.temperature)?,
        SoftLoss::Mse => mse(student_logits, &targets.logits.to_dtype(DType::F32)?)?,
        SoftLoss::Hard => cross_entropy(student_logits, &targets.argmax()?)?,
    };
    let mut total = ((&soft * cfg.alpha)? + (&label_term * (1.0 - cfg.alpha))?)?;
    if let Some(h) = &hint {
        total = (total + (h * cfg.hint_weight)?)?;
    }
    Ok(LossParts {
        total,
        soft: Some(soft),
        hard: label_term,
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(rows: &[&[f32]]) -> Tensor {
        let n = rows.len();
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_vec(flat, (n, rows[0].len()), &Device::Cpu).unwrap()
    }
    fn scalar(x: &Tensor) -> f64 {
        x.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }
    fn ln(x: f32) -> f32 {
        x.ln()
    }

    // KL([0.8, 0.2] || [0.7, 0.3]) = 0.8 ln(8/7) + 0.2 ln(2/3)
    //   = 0.8 * 0.1335314 - 0.2 * 0.4054651 = 0.1068251 - 0.0810930 = 0.0257321.
    const KL_HAND: f64 = 0.025_732_1;

    #[test]
    fn kl_matches_the_hand_computed_value() {
        let teacher = t(&[&[ln(0.8), ln(0.2)]]);
        let student = t(&[&[ln(0.7), ln(0.3)]]);
        let targets = SoftTargets::combine(&[teacher], &[1.0], 1.0).unwrap();
        let kl = scalar(&soft_kl(&student, &targets, 1.0).unwrap());
        assert!((kl - KL_HAND).abs() < 1e-6, "{kl}");
    }

    #[test]
    fn temperature_scales_logits_and_the_loss_by_t_squared() {
        // Logits 2 ln p at T = 2 give back p, so the loss is 4 * KL_HAND.
        let teacher = t(&[&[2.0 * ln(0.8), 2.0 * ln(0.2)]]);
        let student = t(&[&[2.0 * ln(0.7), 2.0 * ln(0.3)]]);
        let targets = SoftTargets::combine(&[teacher], &[1.0], 2.0).unwrap();
        let kl = scalar(&soft_kl(&student, &targets, 2.0).unwrap());
        assert!((kl - 4.0 * KL_HAND).abs() < 4e-6, "{kl}");
    }

    #[test]
    fn kl_is_zero_for_identical_logits_and_averages_over_the_batch() {
        let a = t(&[
            &[1.0, 2.0, 3.0],
            &[ln(0.8), ln(0.2), f32::NEG_INFINITY.max(-80.0)],
        ]);
        let targets = SoftTargets::combine(std::slice::from_ref(&a), &[1.0], 3.0).unwrap();
        assert!(scalar(&soft_kl(&a, &targets, 3.0).unwrap()).abs() < 1e-6);
        // Batch of two: the identical row and the hand-worked row -> mean = KL_HAND / 2.
        let teacher = t(&[&[0.0, 0.0], &[ln(0.8), ln(0.2)]]);
        let student = t(&[&[0.0, 0.0], &[ln(0.7), ln(0.3)]]);
        let targets = SoftTargets::combine(&[teacher], &[1.0], 1.0).unwrap();
        assert!((scalar(&soft_kl(&student, &targets, 1.0).unwrap()) - KL_HAND / 2.0).abs() < 1e-6);
    }

    #[test]
    fn label_smoothing_matches_the_hand_computed_value() {
        // p = [0.25, 0.75], label 1, eps 0.1: the target is [0.05, 0.95], so the loss is
        // -(0.05 ln 0.25 + 0.95 ln 0.75) = 0.0693147 + 0.2732980 = 0.3426127.
        let logits = t(&[&[ln(1.0), ln(3.0)]]);
        let labels = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        let loss = scalar(&smoothed_cross_entropy(&logits, &labels, 0.1).unwrap());
        assert!((loss - 0.342_612_7).abs() < 1e-6, "{loss}");
        let plain = scalar(&smoothed_cross_entropy(&logits, &labels, 0.0).unwrap());
        assert!((plain - 0.287_682_1).abs() < 1e-6, "{plain}");
    }

    #[test]
    fn cross_entropy_and_mse_match_hand_values() {
        // -ln 0.7 = 0.3566749.
        let logits = t(&[&[ln(0.7), ln(0.3)]]);
        let labels = Tensor::new(&[0u32], &Device::Cpu).unwrap();
        assert!((scalar(&cross_entropy(&logits, &labels).unwrap()) - 0.356_674_9).abs() < 1e-6);
        // ((1-0)^2 + (2-4)^2 + (3-3)^2 + (0-1)^2) / 4 = 1.5.
        let m = mse(
            &t(&[&[1.0, 2.0], &[3.0, 0.0]]),
            &t(&[&[0.0, 4.0], &[3.0, 1.0]]),
        )
        .unwrap();
        assert!((scalar(&m) - 1.5).abs() < 1e-6);
        // Mixup label loss with lambda 0.25: 0.25 * -ln 0.7 + 0.75 * -ln 0.3 = 0.9921.
        let partner = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        let mixed = scalar(&label_loss(&logits, &labels, Some((&partner, 0.25)), 0.0).unwrap());
        assert!(
            (mixed - (0.25 * 0.356_674_9 + 0.75 * 1.203_972_8)).abs() < 1e-6,
            "{mixed}"
        );
    }

    #[test]
    fn gradient_of_the_soft_loss_matches_its_closed_form() {
        let temperature = 3.0;
        let s = Var::from_tensor(&t(&[
            &[1.0, -0.5, 2.0, 0.3],
            &[0.2, 0.1, -1.0, 0.7],
            &[3.0, 0.0, 0.0, -2.0],
        ]))
        .unwrap();
        let teacher = t(&[
            &[2.0, 1.0, -1.0, 0.0],
            &[-0.3, 0.8, 0.4, 1.5],
            &[0.5, 0.5, 4.0, -1.0],
        ]);
        let targets =
            SoftTargets::combine(std::slice::from_ref(&teacher), &[1.0], temperature).unwrap();
        let loss = soft_kl(s.as_tensor(), &targets, temperature).unwrap();
        let grad = loss
            .backward()
            .unwrap()
            .get(s.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let q = softmax_last_dim(&(s.as_tensor() / temperature).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let p = softmax_last_dim(&(teacher / temperature).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let n = 3.0;
        for i in 0..3 {
            for c in 0..4 {
                let closed = temperature as f32 * (q[i][c] - p[i][c]) / n;
                assert!(
                    (grad[i][c] - closed).abs() < 1e-6,
                    "[{i}][{c}] {} vs {closed}",
                    grad[i][c]
                );
            }
        }
    }

    #[test]
    fn teachers_are_averaged_in_probability_space() {
        // softmax([ln .9, ln .1]) = [.9, .1] and [.5, .5]; weights 3:1 -> [.8, .2].
        let a = t(&[&[ln(0.9), ln(0.1)]]);
        let b = t(&[&[0.0, 0.0]]);
        let st = SoftTargets::combine(&[a, b], &[3.0, 1.0], 1.0).unwrap();
        let p = st.probs.to_vec2::<f32>().unwrap();
        assert!((p[0][0] - 0.8).abs() < 1e-6 && (p[0][1] - 0.2).abs() < 1e-6);
        // ... so the student [.7, .3] sees exactly the hand-worked KL.
        let kl = scalar(&soft_kl(&t(&[&[ln(0.7), ln(0.3)]]), &st, 1.0).unwrap());
        assert!((kl - KL_HAND).abs() < 1e-6, "{kl}");
        assert!(SoftTargets::combine(&[t(&[&[0.0]])], &[1.0, 2.0], 1.0).is_err());
        assert!(SoftTargets::combine(&[t(&[&[0.0]])], &[0.0], 1.0).is_err());
    }

    #[test]
    fn blending_follows_alpha_and_each_soft_loss() {
        let student = t(&[&[ln(0.7), ln(0.3)]]);
        let teacher = t(&[&[ln(0.8), ln(0.2)]]);
        let labels = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        let targets = SoftTargets::combine(&[teacher], &[1.0], 1.0).unwrap();
        let hard = label_loss(&student, &labels, None, 0.0).unwrap(); // -ln 0.3 = 1.2039728
        let cfg = KdConfig {
            temperature: 1.0,
            alpha: 0.25,
            soft_loss: SoftLoss::Kl,
            hint_weight: 0.0,
        };
        let parts = distillation_loss(&cfg, &student, &targets, hard.clone(), None).unwrap();
        assert!((scalar(&parts.total) - (0.25 * KL_HAND + 0.75 * 1.203_972_8)).abs() < 1e-6);
        // Hard distillation: the teacher's argmax is class 0, so the term is -ln 0.7.
        let cfg = KdConfig {
            soft_loss: SoftLoss::Hard,
            alpha: 1.0,
            ..cfg
        };
        let parts = distillation_loss(&cfg, &student, &targets, hard.clone(), None).unwrap();
        assert!((scalar(&parts.total) - 0.356_674_9).abs() < 1e-6);
        // MSE on logits: ((ln .7 - ln .8)^2 + (ln .3 - ln .2)^2) / 2.
        let cfg = KdConfig {
            soft_loss: SoftLoss::Mse,
            ..cfg
        };
        let parts = distillation_loss(&cfg, &student, &targets, hard.clone(), None).unwrap();
        let want = ((0.7f64 / 0.8).ln().powi(2) + (0.3f64 / 0.2).ln().powi(2)) / 2.0;
        assert!((scalar(&parts.total) - want).abs() < 1e-6);
        // The hint term adds with its own weight.
        let cfg = KdConfig {
            hint_weight: 2.0,
            ..cfg
        };
        let hint = Tensor::new(0.5f32, &Device::Cpu).unwrap();
        let parts = distillation_loss(&cfg, &student, &targets, hard, Some(hint)).unwrap();
        assert!((scalar(&parts.total) - (want + 1.0)).abs() < 1e-6);
        assert!(KdConfig { alpha: 1.5, ..cfg }.validate().is_err());
        assert!(KdConfig {
            temperature: 0.0,
            ..cfg
        }
        .validate()
        .is_err());
    }
}
