//! AdamW and SGD with momentum, learning-rate schedules and gradient clipping.
//!
//! The update is fused: one pass over each parameter's own storage (candle's `inplace_op1`)
//! reads the gradient and updates moments and weights in place, instead of a chain of candle
//! ops that allocates a temporary tensor for every term of every parameter.
//! Moment buffers are plain vectors too, so they checkpoint exactly and a resumed run continues
//! bit for bit.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::{
    backend::BackendStorage, backprop::GradStore, CpuStorage, Device, InplaceOp1, Layout, Storage,
    Tensor, Var,
};
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
    /// SGD with Nesterov momentum (Sutskever et al. 2013), as PyTorch computes it.
    #[serde(default)]
    pub nesterov: bool,
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
            nesterov: false,
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

/// The update rule with this step's constants folded in.
#[derive(Debug, Clone, Copy)]
enum Rule {
    AdamW {
        b1: f32,
        b2: f32,
        one_b1: f32,
        one_b2: f32,
        scale_m: f32,
        scale_v: f32,
        decay: f32,
        eps: f32,
        lr: f32,
    },
    Sgd {
        mu: f32,
        wd: f32,
        lr: f32,
        nesterov: bool,
    },
}

impl Rule {
    /// The rule for one step; `decays` says whether weight decay applies to this parameter.
    fn new(c: &OptimizerConfig, step: u64, lr: f64, decays: bool) -> Rule {
        let wd = if decays { c.weight_decay } else { 0.0 };
        match c.kind {
            OptimizerKind::AdamW => Rule::AdamW {
                b1: c.beta1 as f32,
                b2: c.beta2 as f32,
                one_b1: (1.0 - c.beta1) as f32,
                one_b2: (1.0 - c.beta2) as f32,
                scale_m: (1.0 / (1.0 - c.beta1.powi(step as i32))) as f32,
                scale_v: (1.0 / (1.0 - c.beta2.powi(step as i32))) as f32,
                decay: (1.0 - lr * wd) as f32,
                eps: c.eps as f32,
                lr: lr as f32,
            },
            OptimizerKind::Sgd => Rule::Sgd {
                mu: c.momentum as f32,
                wd: wd as f32,
                lr: lr as f32,
                nesterov: c.nesterov,
            },
        }
    }
}

/// One parameter's update, run by candle on the variable's own storage (`inplace_op1`), so
/// weights and moments are read and written once each with no tensor allocated per step.
struct Update<'a> {
    rule: Rule,
    /// None: the parameter got no gradient this step (it still decays and carries momentum).
    grad: Option<&'a [f32]>,
    /// Gradient clipping factor.
    scale: f32,
    /// First and second moments (the second is empty for SGD). Behind a RefCell because
    /// candle hands the op to `cpu_fwd` by shared reference.
    moments: RefCell<(&'a mut [f32], &'a mut [f32])>,
}

impl InplaceOp1 for Update<'_> {
    fn name(&self) -> &'static str {
        "optimizer-step"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("optimizer: parameter is not contiguous".into())
        })?;
        let CpuStorage::F32(w) = storage else {
            return Err(candle_core::Error::Msg(format!(
                "optimizer: parameter is {:?}, only f32 is trained",
                storage.dtype()
            )));
        };
        let w = &mut w[start..end];
        let mut moments = self.moments.borrow_mut();
        let (m, v) = &mut *moments;
        let n = w.len();
        let n_v = if matches!(self.rule, Rule::AdamW { .. }) {
            n
        } else {
            0
        };
        if m.len() != n || v.len() != n_v || self.grad.is_some_and(|g| g.len() != n) {
            return Err(candle_core::Error::Msg(format!(
                "optimizer: parameter of {n} values has moments of {} and a gradient of {:?}",
                m.len(),
                self.grad.map(<[f32]>::len)
            )));
        }
        apply(self.rule, w, m, v, self.grad, self.scale);
        Ok(())
    }
}

/// Applies `rule` to one parameter: AVX2 where the CPU has it (x86-64's baseline is SSE2, and
/// the update's square root and division are most of its arithmetic), portable code elsewhere.
/// Neither path fuses multiply-adds, so both give the same bits.
fn apply(
    rule: Rule,
    w: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grad: Option<&[f32]>,
    scale: f32,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { apply_avx2(rule, w, m, v, grad, scale) };
    }
    apply_portable(rule, w, m, v, grad, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn apply_avx2(
    rule: Rule,
    w: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grad: Option<&[f32]>,
    scale: f32,
) {
    apply_portable(rule, w, m, v, grad, scale)
}

/// The update itself, over zipped iterators (no bounds checks, so the loops vectorise); a
/// missing gradient gets its own loop rather than a branch per value.
#[inline(always)]
fn apply_portable(
    rule: Rule,
    w: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grad: Option<&[f32]>,
    scale: f32,
) {
    match rule {
        Rule::AdamW {
            b1,
            b2,
            one_b1,
            one_b2,
            scale_m,
            scale_v,
            decay,
            eps,
            lr,
        } => {
            // Same operation order as candle-nn's AdamW, so the two agree to rounding.
            let update = |((w, m), v): ((&mut f32, &mut f32), &mut f32), g: f32| {
                *m = *m * b1 + g * one_b1;
                *v = *v * b2 + g * g * one_b2;
                let adjusted = (*m * scale_m) / ((*v * scale_v).sqrt() + eps);
                *w = *w * decay - adjusted * lr;
            };
            let params = w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut());
            match grad {
                Some(g) => params.zip(g).for_each(|(p, &g)| update(p, g * scale)),
                None => params.for_each(|p| update(p, 0.0)),
            }
        }
        Rule::Sgd {
            mu,
            wd,
            lr,
            nesterov,
        } => {
            // PyTorch's SGD: the buffer accumulates the decayed gradient; Nesterov steps along
            // the gradient plus the momentum looked ahead.
            let update = |(w, m): (&mut f32, &mut f32), g: f32| {
                let g = g + wd * *w;
                *m = mu * *m + g;
                *w -= lr * if nesterov { g + mu * *m } else { *m };
            };
            let params = w.iter_mut().zip(m.iter_mut());
            match grad {
                Some(g) => params.zip(g).for_each(|(p, &g)| update(p, g * scale)),
                None => params.for_each(|p| update(p, 0.0)),
            }
        }
    }
}

/// Runs `f` over a contiguous CPU f32 tensor's values.
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let values = match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) => &v[start..end],
        _ => {
            return Err(Error::Config(format!(
                "optimizer: gradients must be contiguous f32 on the CPU, got {:?}",
                t.dtype()
            )))
        }
    };
    f(values)
}

/// Σx² in f64, summed in eight f32 lanes per block (which vectorises) and blocks in f64.
fn sum_of_squares(xs: &[f32]) -> f64 {
    xs.chunks(4096)
        .map(|block| {
            let mut lanes = [0f32; 8];
            let mut chunks = block.chunks_exact(8);
            for c in &mut chunks {
                for (l, &x) in lanes.iter_mut().zip(c) {
                    *l += x * x;
                }
            }
            let tail: f32 = chunks.remainder().iter().map(|x| x * x).sum();
            lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64
        })
        .sum()
}

/// An optimizer over a fixed list of variables.
pub struct Optimizer {
    cfg: OptimizerConfig,
    vars: Vec<Var>,
    /// Whether weight decay applies, per variable.
    decays: Vec<bool>,
    /// First moments (AdamW) or momentum buffers (SGD).
    m: Vec<Vec<f32>>,
    /// Second moments (AdamW only).
    v: Vec<Vec<f32>>,
    steps: u64,
}

impl Optimizer {
    /// A fresh optimizer for `vars`, weight decay applying to all of them.
    pub fn new(cfg: OptimizerConfig, vars: Vec<Var>) -> Result<Optimizer> {
        Optimizer::with_decay(cfg, vars.into_iter().map(|v| (v, true)).collect())
    }

    /// A fresh optimizer for `vars`, each with whether weight decay applies to it (not to
    /// biases and normalization parameters, in the networks that use batch normalization).
    pub fn with_decay(cfg: OptimizerConfig, vars: Vec<(Var, bool)>) -> Result<Optimizer> {
        cfg.validate()?;
        let (vars, decays): (Vec<Var>, Vec<bool>) = vars.into_iter().unzip();
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
            decays,
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
        let grad_of = |var: &Var| -> Result<Option<Tensor>> {
            Ok(match grads.get(var.as_tensor()) {
                Some(g) => Some(g.contiguous()?),
                None => None,
            })
        };
        // Once each: a gradient that is not contiguous is copied here, not in both passes.
        let gs = self.vars.iter().map(grad_of).collect::<Result<Vec<_>>>()?;
        let mut sq = 0f64;
        for g in gs.iter().flatten() {
            sq += with_values(g, |g| Ok(sum_of_squares(g)))?;
        }
        let grad_norm = sq.sqrt();
        let scale = match self.cfg.clip_norm {
            Some(max) if grad_norm > max => (max / (grad_norm + 1e-6)) as f32,
            _ => 1.0,
        };
        self.steps += 1;
        let rules = [false, true].map(|d| Rule::new(&self.cfg, self.steps, lr, d));
        let mut no_v: [f32; 0] = [];
        for (i, (var, g)) in self.vars.iter().zip(&gs).enumerate() {
            let rule = rules[usize::from(self.decays[i])];
            let v: &mut [f32] = match self.v.get_mut(i) {
                Some(v) => v,
                None => &mut no_v,
            };
            let mut update = |grad: Option<&[f32]>| {
                var.as_tensor().inplace_op1(&Update {
                    rule,
                    grad,
                    scale,
                    moments: RefCell::new((&mut self.m[i], &mut *v)),
                })
            };
            match g {
                Some(g) => with_values(g, |g| Ok(update(Some(g))?))?,
                None => update(None)?,
            }
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

    /// Two parameters (37 values, so the vectorised loop has a remainder, and a 3x5 matrix),
    /// 20 steps with weight decay: the fused update against candle-nn's unfused AdamW.
    #[test]
    fn adamw_matches_candle_nn_within_1e_6() {
        let dev = Device::Cpu;
        let wave = |n: usize, f: f32| {
            (0..n)
                .map(|i| (i as f32 * f).sin() * 2.0)
                .collect::<Vec<f32>>()
        };
        let inits = [
            Tensor::from_vec(wave(37, 0.7), 37, &dev).unwrap(),
            Tensor::from_vec(wave(15, 1.3), (3, 5), &dev).unwrap(),
        ];
        let targets = [
            Tensor::from_vec(wave(37, 0.3), 37, &dev).unwrap(),
            Tensor::from_vec(wave(15, 0.2), (3, 5), &dev).unwrap(),
        ];
        let vars = |_| -> Vec<Var> { inits.iter().map(|t| Var::from_tensor(t).unwrap()).collect() };
        let (ours_v, theirs_v) = (vars(0), vars(1));
        let loss = |vs: &[Var]| {
            let a = quad_loss(&vs[0], &targets[0]);
            (a + quad_loss(&vs[1], &targets[1]).affine(0.5, 0.0).unwrap()).unwrap()
        };
        let cfg = OptimizerConfig {
            lr: 0.05,
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut ours = Optimizer::new(cfg, ours_v.clone()).unwrap();
        let p = candle_nn::ParamsAdamW {
            lr: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let mut theirs = candle_nn::AdamW::new(theirs_v.clone(), p).unwrap();
        for _ in 0..20 {
            ours.step(&loss(&ours_v).backward().unwrap(), 0.05).unwrap();
            theirs.step(&loss(&theirs_v).backward().unwrap()).unwrap();
        }
        for ((o, t), init) in ours_v.iter().zip(&theirs_v).zip(&inits) {
            let a = o
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = t
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_ne!(a, init.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
            }
        }
    }

    /// A parameter with no gradient this step still decays and carries its momentum.
    #[test]
    fn a_parameter_without_gradient_still_decays_and_coasts() {
        let (x, y) = (
            Var::new(&[1f32], &Device::Cpu).unwrap(),
            Var::new(&[1f32], &Device::Cpu).unwrap(),
        );
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: 0.1,
            weight_decay: 0.5,
            momentum: 0.9,
            ..Default::default()
        };
        let mut opt = Optimizer::new(cfg, vec![x.clone(), y.clone()]).unwrap();
        let zero = Tensor::new(&[0f32], &Device::Cpu).unwrap();
        // Only x is in the loss. y: g = 0 + 0.5 * 1 = 0.5, b = 0.5, y = 1 - 0.05 = 0.95;
        // then g = 0.475, b = 0.45 + 0.475 = 0.925, y = 0.95 - 0.0925 = 0.8575.
        opt.step(&quad_loss(&x, &zero).backward().unwrap(), 0.1)
            .unwrap();
        opt.step(&quad_loss(&x, &zero).backward().unwrap(), 0.1)
            .unwrap();
        assert!((y.as_tensor().to_vec1::<f32>().unwrap()[0] - 0.8575).abs() < 1e-6);
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
