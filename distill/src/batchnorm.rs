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

fn activate(act: Activation, v: f32) -> f32 {
    match act {
        Activation::Identity => v,
        Activation::Relu => v.max(0.0),
        Activation::Relu6 => v.clamp(0.0, 6.0),
    }
}

/// Whether the gradient passes an activation whose output is `y`.
fn passes(act: Activation, y: f32) -> bool {
    match act {
        Activation::Identity => true,
        Activation::Relu => y > 0.0,
        Activation::Relu6 => y > 0.0 && y < 6.0,
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

/// Per-channel mean and biased variance of `x` (`[n, c, plane]`), summed in f64.
fn channel_stats(x: &[f32], n: usize, c: usize, plane: usize) -> (Vec<f32>, Vec<f32>) {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut s, mut s2) = (0f64, 0f64);
            for i in 0..n {
                for &v in &x[(i * c + ch) * plane..][..plane] {
                    s += v as f64;
                    s2 += (v as f64) * (v as f64);
                }
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
                    for (d, &v) in yc.iter_mut().zip(xc) {
                        *d = activate(self.act, v * a + b);
                    }
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
                        let per_channel: Vec<(f32, f32)> = (0..c)
                            .into_par_iter()
                            .map(|ch| {
                                let inv = 1.0 / (var[ch] + EPS).sqrt();
                                let (mut sg, mut sgx) = (0f64, 0f64);
                                for i in 0..n {
                                    let at = (i * c + ch) * plane;
                                    for q in at..at + plane {
                                        if passes(self.act, yv[q]) {
                                            let g = dy[q] as f64;
                                            sg += g;
                                            sgx += g * ((xv[q] - mean[ch]) * inv) as f64;
                                        }
                                    }
                                }
                                (sg as f32, sgx as f32)
                            })
                            .collect();
                        let mut dx = vec![0f32; xv.len()];
                        let train = self.running.is_none();
                        dx.par_chunks_mut(c * plane).enumerate().for_each(|(i, d)| {
                            for ch in 0..c {
                                let inv = 1.0 / (var[ch] + EPS).sqrt();
                                let (sg, sgx) = per_channel[ch];
                                let scale = gv[ch] * inv;
                                let at = (i * c + ch) * plane;
                                for q in 0..plane {
                                    let g = if passes(self.act, yv[at + q]) {
                                        dy[at + q]
                                    } else {
                                        0.0
                                    };
                                    d[ch * plane + q] = if train {
                                        let xh = (xv[at + q] - mean[ch]) * inv;
                                        scale * (g - sg / m - xh * sgx / m)
                                    } else {
                                        scale * g
                                    };
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
        let y = a
            .iter()
            .zip(b)
            .map(|(&p, &q)| activate(self.act, p + q))
            .collect();
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
                Ok(dy
                    .iter()
                    .zip(y)
                    .map(|(&g, &y)| if passes(self.act, y) { g } else { 0.0 })
                    .collect::<Vec<f32>>())
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
