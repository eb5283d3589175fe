//! Batch normalization over `[n, c, h, w]` feature maps, with the activation after it (and,
//! in [`add_act`], a residual addition) fused into the same op.
//!
//! In training the batch's own statistics normalize it (mean and biased variance over n, h
//! and w per channel) and the running statistics move towards them with momentum 0.1, the
//! running variance taking the unbiased estimate, as PyTorch's `BatchNorm2d` does. In
//! evaluation the running statistics are used. The backward pass is the closed form,
//! `dx = γ/σ · (g − mean(g) − x̂ · mean(g · x̂))` per channel in training.

use std::sync::{Arc, Mutex};

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, Layout, Result as CandleResult, Shape, Tensor, Var,
};
use rayon::prelude::*;

use crate::gemm::{op_error, values, with_values};
use crate::plan::Activation;

/// PyTorch's default: the running statistics move 10% of the way each batch.
pub const MOMENTUM: f32 = 0.1;
/// Added to the variance before the square root.
pub const EPS: f32 = 1e-5;

/// A batch normalization layer and the activation after it.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    gamma: Tensor,
    beta: Tensor,
    running_mean: Var,
    running_var: Var,
    act: Activation,
}

impl BatchNorm {
    /// A layer over its scale, shift and running statistics (the variables a checkpoint holds).
    pub fn new(
        gamma: Tensor,
        beta: Tensor,
        running_mean: Var,
        running_var: Var,
        act: Activation,
    ) -> BatchNorm {
        BatchNorm {
            gamma,
            beta,
            running_mean,
            running_var,
            act,
        }
    }

    /// Normalizes `x`; in training with the batch's statistics, which also update the
    /// running ones.
    pub fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let stats = Arc::new(Mutex::new(None));
        let op = BnOp {
            act: self.act,
            running: if train {
                None
            } else {
                Some((
                    self.running_mean.as_tensor().flatten_all()?.to_vec1()?,
                    self.running_var.as_tensor().flatten_all()?.to_vec1()?,
                ))
            },
            batch: stats.clone(),
        };
        let y =
            x.contiguous()?
                .apply_op3(&self.gamma.contiguous()?, &self.beta.contiguous()?, op)?;
        if train {
            let batch = stats.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(BatchStats { mean, var, count }) = batch {
                let unbiased = count as f32 / (count.max(2) - 1) as f32;
                let update = |run: &Var, batch: &[f32], scale: f32| -> CandleResult<()> {
                    let old: Vec<f32> = run.as_tensor().to_vec1()?;
                    let new: Vec<f32> = old
                        .iter()
                        .zip(batch)
                        .map(|(&o, &b)| (1.0 - MOMENTUM) * o + MOMENTUM * b * scale)
                        .collect();
                    run.set(&Tensor::from_vec(new, old.len(), run.device())?)
                };
                update(&self.running_mean, &mean, 1.0)?;
                update(&self.running_var, &var, unbiased)?;
            }
        }
        Ok(y)
    }
}

/// `act(a + b)`: a residual block's addition and the activation after it, as one op.
pub fn add_act(a: &Tensor, b: &Tensor, act: Activation) -> CandleResult<Tensor> {
    a.contiguous()?
        .apply_op2(&b.contiguous()?, AddActOp { act })
}

/// One batch's per-channel statistics, handed from the forward pass to the layer.
struct BatchStats {
    mean: Vec<f32>,
    var: Vec<f32>,
    count: usize,
}

struct BnOp {
    act: Activation,
    /// Evaluation: the running mean and variance. Training: None.
    running: Option<(Vec<f32>, Vec<f32>)>,
    batch: Arc<Mutex<Option<BatchStats>>>,
}

/// `y = act(x · a + b)`, one loop per activation (so each vectorizes).
fn affine_act(y: &mut [f32], x: &[f32], a: f32, b: f32, act: Activation) {
    let pairs = y.iter_mut().zip(x);
    match act {
        Activation::Identity => pairs.for_each(|(d, &v)| *d = v * a + b),
        Activation::Relu => pairs.for_each(|(d, &v)| *d = (v * a + b).max(0.0)),
        Activation::Relu6 => pairs.for_each(|(d, &v)| *d = (v * a + b).clamp(0.0, 6.0)),
    }
}

/// The output gradient where the activation (whose output is `y`) passes it, zero elsewhere.
fn masked(dy: &[f32], y: &[f32], act: Activation, out: &mut [f32]) {
    match act {
        Activation::Identity => out.copy_from_slice(dy),
        Activation::Relu => out
            .iter_mut()
            .zip(dy)
            .zip(y)
            .for_each(|((o, &g), &y)| *o = if y > 0.0 { g } else { 0.0 }),
        Activation::Relu6 => out
            .iter_mut()
            .zip(dy)
            .zip(y)
            .for_each(|((o, &g), &y)| *o = if y > 0.0 && y < 6.0 { g } else { 0.0 }),
    }
}

fn dims(layout: &Layout) -> CandleResult<(usize, usize, usize)> {
    match layout.dims() {
        &[n, c, h, w] => Ok((n, c, h * w)),
        &[n, c] => Ok((n, c, 1)),
        other => Err(op_error(format!(
            "batch normalization expects [n, c, h, w] or [n, c], got {other:?}"
        ))),
    }
}

/// Sums of `v` and of `v²` in eight f32 lanes (vectorized), added up in f64 per plane so a
/// long batch does not drown small values.
fn sums(v: &[f32]) -> (f64, f64) {
    let (mut s, mut s2) = ([0f32; 8], [0f32; 8]);
    let chunks = v.chunks_exact(8);
    let (mut ts, mut ts2) = (0f64, 0f64);
    for &x in chunks.remainder() {
        ts += x as f64;
        ts2 += (x as f64) * (x as f64);
    }
    for c in chunks {
        for l in 0..8 {
            s[l] += c[l];
            s2[l] += c[l] * c[l];
        }
    }
    let add = |a: [f32; 8]| a.iter().map(|&v| v as f64).sum::<f64>();
    (add(s) + ts, add(s2) + ts2)
}

/// `Σ v` in eight f32 lanes, added up in f64.
fn sum(v: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&x| x as f64).sum();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += c[l];
        }
    }
    lanes.iter().map(|&x| x as f64).sum::<f64>() + tail
}

/// `Σ a · b` in eight f32 lanes, added up in f64.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(&x, &y)| x as f64 * y as f64)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail
}

/// Per-channel mean and biased variance of `x` (`[n, c, plane]`).
fn channel_stats(x: &[f32], n: usize, c: usize, plane: usize) -> (Vec<f32>, Vec<f32>) {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut s, mut s2) = (0f64, 0f64);
            for i in 0..n {
                let (a, b) = sums(&x[(i * c + ch) * plane..][..plane]);
                s += a;
                s2 += b;
            }
            let m = (n * plane) as f64;
            let mean = s / m;
            ((mean as f32), ((s2 / m - mean * mean).max(0.0)) as f32)
        })
        .unzip()
}

impl BnOp {
    /// The mean and variance used to normalize: the running ones, or the batch's.
    fn statistics(&self, x: &[f32], n: usize, c: usize, plane: usize) -> (Vec<f32>, Vec<f32>) {
        match &self.running {
            Some((m, v)) => (m.clone(), v.clone()),
            None => channel_stats(x, n, c, plane),
        }
    }
}

impl CustomOp3 for BnOp {
    fn name(&self) -> &'static str {
        "batch-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        x_layout: &Layout,
        gs: &CpuStorage,
        g_layout: &Layout,
        bs: &CpuStorage,
        b_layout: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let (n, c, plane) = dims(x_layout)?;
        let (x, gamma, beta) = (
            values(xs, x_layout, "batch norm input")?,
            values(gs, g_layout, "batch norm scale")?,
            values(bs, b_layout, "batch norm shift")?,
        );
        if gamma.len() != c || beta.len() != c {
            return Err(op_error(format!(
                "batch norm over {c} channels got {} scales and {} shifts",
                gamma.len(),
                beta.len()
            )));
        }
        let (mean, var) = self.statistics(x, n, c, plane);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(c * plane)
            .zip(x.par_chunks(c * plane))
            .for_each(|(y, x)| {
                for ch in 0..c {
                    let a = gamma[ch] / (var[ch] + EPS).sqrt();
                    let b = beta[ch] - mean[ch] * a;
                    let (yc, xc) = (&mut y[ch * plane..][..plane], &x[ch * plane..][..plane]);
                    affine_act(yc, xc, a, b, self.act);
                }
            });
        if self.running.is_none() {
            *self.batch.lock().unwrap_or_else(|e| e.into_inner()) = Some(BatchStats {
                mean,
                var,
                count: n * plane,
            });
        }
        Ok((CpuStorage::F32(y), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, plane) = match x.dims() {
            &[n, c, h, w] => (n, c, h * w),
            &[n, c] => (n, c, 1),
            other => return Err(op_error(format!("batch norm input {other:?}"))),
        };
        let m = (n * plane) as f32;
        let (dx, dgamma, dbeta) = with_values(x, "batch norm input", |xv| {
            with_values(gamma, "batch norm scale", |gv| {
                with_values(res, "batch norm output", |yv| {
                    with_values(grad, "batch norm output gradient", |dy| {
                        let (mean, var) = self.statistics(xv, n, c, plane);
                        // dx first holds the gradient the activation lets through.
                        let mut dx = vec![0f32; xv.len()];
                        dx.par_chunks_mut(c * plane)
                            .zip(dy.par_chunks(c * plane))
                            .zip(yv.par_chunks(c * plane))
                            .for_each(|((d, g), y)| masked(g, y, self.act, d));
                        // Per channel: Σ g and Σ g · x̂ (x̂ = (x - mean) / σ).
                        let per_channel: Vec<(f32, f32)> = (0..c)
                            .into_par_iter()
                            .map(|ch| {
                                let (mut sg, mut sgx) = (0f64, 0f64);
                                for i in 0..n {
                                    let at = (i * c + ch) * plane;
                                    let (g, x) = (&dx[at..at + plane], &xv[at..at + plane]);
                                    sg += sum(g);
                                    sgx += dot(g, x);
                                }
                                let inv = 1.0 / (var[ch] as f64 + EPS as f64).sqrt();
                                (sg as f32, ((sgx - mean[ch] as f64 * sg) * inv) as f32)
                            })
                            .collect();
                        let train = self.running.is_none();
                        dx.par_chunks_mut(c * plane)
                            .zip(xv.par_chunks(c * plane))
                            .for_each(|(d, x)| {
                                for ch in 0..c {
                                    let inv = 1.0 / (var[ch] + EPS).sqrt();
                                    let (sg, sgx) = per_channel[ch];
                                    let scale = gv[ch] * inv;
                                    let (d, x) =
                                        (&mut d[ch * plane..][..plane], &x[ch * plane..][..plane]);
                                    if train {
                                        // scale · (g - Σg/m - x̂ · Σgx̂/m), as a·g + b·x + c.
                                        let kx = -scale * sgx / m * inv;
                                        let k0 = -scale * sg / m - kx * mean[ch];
                                        for (d, &x) in d.iter_mut().zip(x) {
                                            *d = scale * *d + kx * x + k0;
                                        }
                                    } else {
                                        d.iter_mut().for_each(|v| *v *= scale);
                                    }
                                }
                            });
                        let dgamma = per_channel.iter().map(|p| p.1).collect::<Vec<f32>>();
                        let dbeta = per_channel.iter().map(|p| p.0).collect::<Vec<f32>>();
                        Ok((dx, dgamma, dbeta))
                    })
                })
            })
        })?;
        Ok((
            x.track_op()
                .then(|| Tensor::from_vec(dx, x.shape(), x.device()))
                .transpose()?,
            Some(Tensor::from_vec(dgamma, gamma.shape(), gamma.device())?),
            Some(Tensor::from_vec(dbeta, beta.shape(), beta.device())?),
        ))
    }
}

struct AddActOp {
    act: Activation,
}

impl CustomOp2 for AddActOp {
    fn name(&self) -> &'static str {
        "add-act"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        a_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        if a_layout.dims() != b_layout.dims() {
            return Err(op_error(format!(
                "residual addition of {:?} and {:?}",
                a_layout.dims(),
                b_layout.dims()
            )));
        }
        let (a, b) = (
            values(a, a_layout, "residual input")?,
            values(b, b_layout, "shortcut input")?,
        );
        let mut y = vec![0f32; a.len()];
        let it = y.iter_mut().zip(a).zip(b);
        match self.act {
            Activation::Identity => it.for_each(|((d, &p), &q)| *d = p + q),
            Activation::Relu => it.for_each(|((d, &p), &q)| *d = (p + q).max(0.0)),
            Activation::Relu6 => it.for_each(|((d, &p), &q)| *d = (p + q).clamp(0.0, 6.0)),
        }
        Ok((CpuStorage::F32(y), a_layout.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>)> {
        let g = with_values(grad, "residual output gradient", |dy| {
            with_values(res, "residual output", |y| {
                let mut g = vec![0f32; dy.len()];
                masked(dy, y, self.act, &mut g);
                Ok(g)
            })
        })?;
        let g = Tensor::from_vec(g, a.shape(), a.device())?;
        Ok((a.track_op().then(|| g.clone()), b.track_op().then_some(g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::testing::{assert_close, assert_matches_reference};
    use candle_core::Device;

    fn wave(n: usize, f: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * f).sin() * 2.0 + 0.3).collect()
    }

    /// Training-mode output and gradients against the same normalization composed from
    /// candle ops (whose gradients candle derives), for each activation.
    #[test]
    fn training_mode_matches_composed_candle_ops() {
        let dev = Device::Cpu;
        let (n, c, h) = (4, 3, 5);
        for act in [Activation::Identity, Activation::Relu, Activation::Relu6] {
            let x = Var::from_vec(wave(n * c * h * h, 0.37), (n, c, h, h), &dev).unwrap();
            let g = Var::from_vec(vec![1.5f32, -0.7, 2.2], c, &dev).unwrap();
            let b = Var::from_vec(vec![0.1f32, 0.4, -0.3], c, &dev).unwrap();
            let rm = Var::zeros(c, candle_core::DType::F32, &dev).unwrap();
            let rv = Var::ones(c, candle_core::DType::F32, &dev).unwrap();
            let bn = BatchNorm::new(g.as_tensor().clone(), b.as_tensor().clone(), rm, rv, act);
            let ours = bn.forward(x.as_tensor(), true).unwrap();
            let xt = x.as_tensor();
            let mean = xt
                .mean_keepdim(0)
                .unwrap()
                .mean_keepdim(2)
                .unwrap()
                .mean_keepdim(3)
                .unwrap();
            let centred = xt.broadcast_sub(&mean).unwrap();
            let var = centred
                .sqr()
                .unwrap()
                .mean_keepdim(0)
                .unwrap()
                .mean_keepdim(2)
                .unwrap()
                .mean_keepdim(3)
                .unwrap();
            let xh = centred
                .broadcast_div(&(var + EPS as f64).unwrap().sqrt().unwrap())
                .unwrap();
            let affine = xh
                .broadcast_mul(&g.as_tensor().reshape((1, c, 1, 1)).unwrap())
                .unwrap()
                .broadcast_add(&b.as_tensor().reshape((1, c, 1, 1)).unwrap())
                .unwrap();
            let reference = match act {
                Activation::Identity => affine,
                Activation::Relu => affine.relu().unwrap(),
                Activation::Relu6 => affine.clamp(0f32, 6f32).unwrap(),
            };
            assert_matches_reference(
                &ours,
                &reference,
                &[(&x, "dx"), (&g, "dgamma"), (&b, "dbeta")],
                1e-4,
            );
        }
    }

    #[test]
    fn running_statistics_follow_pytorch() {
        let dev = Device::Cpu;
        // One channel, values 1..=4: mean 2.5, biased variance 1.25, unbiased 5/3.
        let x = Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0], (1, 1, 2, 2), &dev).unwrap();
        let rm = Var::zeros(1, candle_core::DType::F32, &dev).unwrap();
        let rv = Var::ones(1, candle_core::DType::F32, &dev).unwrap();
        let ones = Tensor::ones(1, candle_core::DType::F32, &dev).unwrap();
        let zeros = Tensor::zeros(1, candle_core::DType::F32, &dev).unwrap();
        let bn = BatchNorm::new(ones, zeros, rm.clone(), rv.clone(), Activation::Identity);
        let y = bn.forward(&x, true).unwrap();
        let want: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .map(|v| (v - 2.5) / (1.25f32 + EPS).sqrt())
            .collect();
        assert_close(
            &y.flatten_all().unwrap(),
            &Tensor::new(want.as_slice(), &dev).unwrap(),
            1e-6,
            "y",
        );
        assert!((rm.as_tensor().to_vec1::<f32>().unwrap()[0] - 0.25).abs() < 1e-6);
        let rv1 = 0.9 + 0.1 * 5.0 / 3.0;
        assert!((rv.as_tensor().to_vec1::<f32>().unwrap()[0] - rv1).abs() < 1e-6);
        // Evaluation uses the running statistics: (x - 0.25) / sqrt(rv1 + eps).
        let e = bn
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(
            (e[0] - (1.0 - 0.25) / (rv1 + EPS).sqrt()).abs() < 1e-5,
            "{e:?}"
        );
    }
}
