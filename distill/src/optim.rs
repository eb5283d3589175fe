//! AdamW and SGD with momentum, learning-rate schedules and gradient clipping.
//!
//! The update runs over plain `f32` buffers, one pass per parameter, instead of a chain of
//! candle ops that would allocate a temporary tensor for every term of every parameter.
//! Moment buffers are plain vectors too, so they checkpoint exactly and a resumed run continues
//! bit for bit.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay (Loshchilov & Hutter).
    #[default]
    AdamW,
    /// Stochastic gradient descent with (heavy-ball) momentum and L2 weight decay.
    Sgd,
}

/// Optimizer settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Update rule.
    pub kind: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    /// Weight decay (decoupled for AdamW, L2 for SGD).
    pub weight_decay: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Adam's first-moment decay.
    pub beta1: f64,
    /// Adam's second-moment decay.
    pub beta2: f64,
    /// Adam's denominator floor.
    pub eps: f64,
    /// Rescale gradients whose global L2 norm exceeds this (None = never).
    pub clip_norm: Option<f64>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::AdamW,
            lr: 3e-3,
            weight_decay: 1e-4,
            momentum: 0.9,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            clip_norm: None,
        }
    }
}

impl OptimizerConfig {
    /// Rejects settings with no meaning.
    pub fn validate(&self) -> Result<()> {
        let ok = self.lr.is_finite()
            && self.lr > 0.0
            && self.weight_decay >= 0.0
            && (0.0..1.0).contains(&self.momentum)
            && (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps > 0.0;
        if !ok {
            return Err(Error::Config(format!("optimizer settings out of range: {self:?} (lr > 0, weight decay >= 0, momentum and betas in [0, 1))")));
        }
        if let Some(c) = self.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::Config(format!(
                    "gradient clip norm must be positive, got {c}"
                )));
            }
        }
        Ok(())
    }
}

/// How the learning rate moves over training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    /// The same rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        /// Epochs between decays.
        every: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// Half a cosine from the peak to zero over all steps (Loshchilov & Hutter, SGDR).
    #[default]
    Cosine,
}

impl Schedule {
    /// The learning rate at `step` (0-based, over the whole run) of `total_steps`, in `epoch` (0-based).
    pub fn lr(&self, peak: f64, epoch: usize, step: usize, total_steps: usize) -> f64 {
        match *self {
            Schedule::Constant => peak,
            Schedule::Step { every, gamma } => peak * gamma.powi((epoch / every.max(1)) as i32),
            Schedule::Cosine => {
                let progress = step as f64 / total_steps.max(1) as f64;
                peak * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
        }
    }
}

/// What one update saw.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
}

/// An optimizer over a fixed list of variables.
pub struct Optimizer {
    cfg: OptimizerConfig,
    vars: Vec<Var>,
    /// First moments (AdamW) or momentum buffers (SGD).
    m: Vec<Vec<f32>>,
    /// Second moments (AdamW only).
    v: Vec<Vec<f32>>,
    steps: u64,
}

impl Optimizer {
    /// A fresh optimizer for `vars`.
    pub fn new(cfg: OptimizerConfig, vars: Vec<Var>) -> Result<Optimizer> {
        cfg.validate()?;
        let zeros = |v: &Var| vec![0f32; v.elem_count()];
        let m = vars.iter().map(zeros).collect();
        let v = if cfg.kind == OptimizerKind::AdamW {
            vars.iter().map(zeros).collect()
        } else {
            vec![]
        };
        Ok(Optimizer {
            cfg,
            vars,
            m,
            v,
            steps: 0,
        })
    }

    /// Updates applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update at learning rate `lr` from the gradients in `grads`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<StepStats> {
        let mut gs = Vec::with_capacity(self.vars.len());
        let mut sq = 0f64;
        for var in &self.vars {
            let g = match grads.get(var.as_tensor()) {
                Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
                None => vec![0f32; var.elem_count()],
            };
            sq += g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
            gs.push(g);
        }
        let grad_norm = sq.sqrt();
        let scale = match self.cfg.clip_norm {
            Some(max) if grad_norm > max => (max / (grad_norm + 1e-6)) as f32,
            _ => 1.0,
        };
        self.steps += 1;
        let c = self.cfg;
        let t = self.steps as i32;
        for (i, var) in self.vars.iter().enumerate() {
            let mut w = var.flatten_all()?.to_vec1::<f32>()?;
            let g = &gs[i];
            let m = &mut self.m[i];
            match c.kind {
                OptimizerKind::AdamW => {
                    let v = &mut self.v[i];
                    let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
                    let (one_b1, one_b2) = ((1.0 - c.beta1) as f32, (1.0 - c.beta2) as f32);
                    // Same operation order as candle-nn's AdamW, so the two agree to rounding.
                    let scale_m = (1.0 / (1.0 - c.beta1.powi(t))) as f32;
                    let scale_v = (1.0 / (1.0 - c.beta2.powi(t))) as f32;
                    let decay = (1.0 - lr * c.weight_decay) as f32;
                    let (eps, lr) = (c.eps as f32, lr as f32);
                    for j in 0..w.len() {
                        let gj = g[j] * scale;
                        m[j] = m[j] * b1 + gj * one_b1;
                        v[j] = v[j] * b2 + gj * gj * one_b2;
                        let adjusted = (m[j] * scale_m) / ((v[j] * scale_v).sqrt() + eps);
                        w[j] = w[j] * decay - adjusted * lr;
                    }
                }
                OptimizerKind::Sgd => {
                    let (mu, wd, lr) = (c.momentum as f32, c.weight_decay as f32, lr as f32);
                    for j in 0..w.len() {
                        let gj = g[j] * scale + wd * w[j];
                        m[j] = mu * m[j] + gj;
                        w[j] -= lr * m[j];
                    }
                }
            }
            var.set(&Tensor::from_vec(w, var.shape(), var.device())?)?;
        }
        Ok(StepStats { grad_norm })
    }

    /// The moment buffers and step count as named tensors, for checkpoints.
    pub fn state(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, m) in self.m.iter().enumerate() {
            out.insert(format!("m.{i}"), Tensor::from_slice(m, m.len(), device)?);
        }
        for (i, v) in self.v.iter().enumerate() {
            out.insert(format!("v.{i}"), Tensor::from_slice(v, v.len(), device)?);
        }
        out.insert("steps".into(), Tensor::new(&[self.steps as f64], device)?);
        Ok(out)
    }

    /// Restores what [`Optimizer::state`] saved.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let get = |name: String, len: usize| -> Result<Vec<f32>> {
            let t = state
                .get(&name)
                .ok_or_else(|| Error::Config(format!("optimizer state lacks `{name}`")))?;
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            if v.len() != len {
                return Err(Error::Config(format!(
                    "optimizer state `{name}` has {} values, expected {len}",
                    v.len()
                )));
            }
            Ok(v)
        };
        for i in 0..self.m.len() {
            self.m[i] = get(format!("m.{i}"), self.m[i].len())?;
        }
        for i in 0..self.v.len() {
            self.v[i] = get(format!("v.{i}"), self.v[i].len())?;
        }
        let steps = state
            .get("steps")
            .ok_or_else(|| Error::Config("optimizer state lacks `steps`".into()))?;
        self.steps = steps
            .flatten_all()?
            .to_vec1::<f64>()?
            .first()
            .copied()
            .unwrap_or(0.0) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Optimizer as _;

    fn quad_loss(x: &Var, target: &Tensor) -> Tensor {
        (x.as_tensor() - target)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
    }

    #[test]
    fn adamw_matches_candle_nn_within_1e_6() {
        let dev = Device::Cpu;
        let init = Tensor::new(&[0.5f32, -1.5, 2.0, 0.0, 3.0], &dev).unwrap();
        let target = Tensor::new(&[1.0f32, 1.0, -1.0, 0.5, 0.0], &dev).unwrap();
        let ours_v = Var::from_tensor(&init).unwrap();
        let theirs_v = Var::from_tensor(&init).unwrap();
        let cfg = OptimizerConfig {
            lr: 0.05,
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut ours = Optimizer::new(cfg, vec![ours_v.clone()]).unwrap();
        let p = candle_nn::ParamsAdamW {
            lr: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let mut theirs = candle_nn::AdamW::new(vec![theirs_v.clone()], p).unwrap();
        for _ in 0..20 {
            ours.step(&quad_loss(&ours_v, &target).backward().unwrap(), 0.05)
                .unwrap();
            theirs
                .step(&quad_loss(&theirs_v, &target).backward().unwrap())
                .unwrap();
        }
        let a = ours_v.as_tensor().to_vec1::<f32>().unwrap();
        let b = theirs_v.as_tensor().to_vec1::<f32>().unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn sgd_momentum_follows_the_recurrence_by_hand() {
        // f(x) = x^2, g = 2x. x0 = 1, lr 0.1, mu 0.9, no decay:
        // b1 = 2, x1 = 0.8; b2 = 0.9*2 + 1.6 = 3.4, x2 = 0.8 - 0.34 = 0.46.
        let x = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: 0.1,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut opt = Optimizer::new(cfg, vec![x.clone()]).unwrap();
        let zero = Tensor::new(&[0f32], &Device::Cpu).unwrap();
        opt.step(&quad_loss(&x, &zero).backward().unwrap(), 0.1)
            .unwrap();
        assert!((x.as_tensor().to_vec1::<f32>().unwrap()[0] - 0.8).abs() < 1e-6);
        opt.step(&quad_loss(&x, &zero).backward().unwrap(), 0.1)
            .unwrap();
        assert!((x.as_tensor().to_vec1::<f32>().unwrap()[0] - 0.46).abs() < 1e-6);
    }

    #[test]
    fn clipping_bounds_the_update_and_reports_the_raw_norm() {
        // Gradient of sum((x - t)^2) at x = 0, t = [3, 4] is [-6, -8]: norm 10.
        let x = Var::new(&[0f32, 0.0], &Device::Cpu).unwrap();
        let t = Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap();
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: 1.0,
            momentum: 0.0,
            weight_decay: 0.0,
            clip_norm: Some(1.0),
            ..Default::default()
        };
        let mut opt = Optimizer::new(cfg, vec![x.clone()]).unwrap();
        let s = opt
            .step(&quad_loss(&x, &t).backward().unwrap(), 1.0)
            .unwrap();
        assert!((s.grad_norm - 10.0).abs() < 1e-5);
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (v[0] - 0.6).abs() < 1e-5 && (v[1] - 0.8).abs() < 1e-5,
            "{v:?}"
        );
    }

    #[test]
    fn state_round_trips() {
        let x = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let mut a = Optimizer::new(OptimizerConfig::default(), vec![x.clone()]).unwrap();
        let zero = Tensor::new(&[0f32, 0.0], &Device::Cpu).unwrap();
        a.step(&quad_loss(&x, &zero).backward().unwrap(), 0.01)
            .unwrap();
        let mut b = Optimizer::new(OptimizerConfig::default(), vec![x.clone()]).unwrap();
        b.load_state(&a.state(&Device::Cpu).unwrap()).unwrap();
        assert_eq!(
            (b.m.clone(), b.v.clone(), b.steps),
            (a.m.clone(), a.v.clone(), 1)
        );
    }

    #[test]
    fn schedules_hit_their_landmarks() {
        assert_eq!(Schedule::Constant.lr(0.1, 5, 50, 100), 0.1);
        assert!(
            (Schedule::Step {
                every: 2,
                gamma: 0.5
            }
            .lr(0.1, 5, 0, 1)
                - 0.025)
                .abs()
                < 1e-12
        );
        assert!((Schedule::Cosine.lr(0.1, 0, 0, 100) - 0.1).abs() < 1e-12);
        assert!((Schedule::Cosine.lr(0.1, 0, 50, 100) - 0.05).abs() < 1e-12);
        assert!(Schedule::Cosine.lr(0.1, 0, 100, 100).abs() < 1e-12);
    }
}
