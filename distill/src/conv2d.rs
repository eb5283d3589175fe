//! 2-D convolutions with any stride, padding and grouping, without bias (batch normalization
//! follows them), as one candle op: grouped im2col + GEMM both ways for dense and grouped
//! convolutions, a direct loop for depthwise ones (one channel per group, where a GEMM would
//! have one row), and 1x1 stride-1 convolutions straight as GEMM on the input.
//!
//! Samples run in parallel, each with its own column buffer (one sample's columns fit in L2,
//! and the product lands straight in its output planes); partial weight gradients are summed
//! in block order, so a run repeats for a given thread count.

use candle_core::{CpuStorage, CustomOp2, Layout, Module, Result as CandleResult, Shape, Tensor};
use rayon::prelude::*;

use crate::gemm::{matmul_serial, threads, values, with_values};

mod depthwise;
mod geometry;

use geometry::Geometry;

/// `conv(x, W)` for `x` `[n, c, h, w]` and `W` `[o, c / groups, k, k]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
}

impl Conv2d {
    /// A layer over `weight`, sharing its storage (so in-place optimizer updates reach it).
    pub fn new(weight: Tensor, stride: usize, padding: usize, groups: usize) -> Conv2d {
        Conv2d {
            weight,
            stride,
            padding,
            groups,
        }
    }

    /// The weight, `[o, c / groups, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The same layer computing with `weight` instead (a fake-quantized copy, in QAT).
    pub fn with_weight(&self, weight: Tensor) -> Conv2d {
        Conv2d {
            weight,
            ..self.clone()
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        x.contiguous()?.apply_op2(
            &self.weight.contiguous()?,
            ConvOp {
                stride: self.stride,
                padding: self.padding,
                groups: self.groups,
            },
        )
    }
}

struct ConvOp {
    stride: usize,
    padding: usize,
    groups: usize,
}

impl ConvOp {
    /// Stride, padding and groups.
    fn sizes(&self) -> (usize, usize, usize) {
        (self.stride, self.padding, self.groups)
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        x_layout: &Layout,
        ws: &CpuStorage,
        w_layout: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let g = Geometry::new(x_layout.dims(), w_layout.dims(), self.sizes())?;
        let x = values(xs, x_layout, "convolution input")?;
        let w = values(ws, w_layout, "convolution weight")?;
        let (p, image) = (g.pixels(), g.c * g.h * g.w);
        let mut y = vec![0f32; g.n * g.o * p];
        if g.depthwise() {
            y.par_chunks_mut(g.o * p)
                .zip(x.par_chunks(image))
                .for_each(|(y, x)| g.depthwise_forward(x, w, y));
        } else {
            let (rows, og) = (g.rows(), g.og());
            // One sample at a time: its columns stay in L2 and the product lands straight in
            // its output planes.
            y.par_chunks_mut(g.o * p)
                .zip(x.par_chunks(image))
                .for_each_init(
                    || vec![0f32; if g.pointwise() { 0 } else { rows * p }],
                    |cols, (y, xs)| {
                        for grp in 0..g.groups {
                            let wg = &w[grp * og * rows..(grp + 1) * og * rows];
                            let ys = &mut y[grp * og * p..(grp + 1) * og * p];
                            // out[o, pixel] = W_g[o, row] · cols[row, pixel]; a 1x1 stride-1
                            // convolution's columns are its input.
                            let b = if g.pointwise() {
                                &xs[grp * rows * p..(grp + 1) * rows * p]
                            } else {
                                g.columns(xs, grp, cols);
                                &cols[..]
                            };
                            matmul_serial((og, p, rows), ys, false, wg, (rows, 1), b, (p, 1));
                        }
                    },
                );
        }
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(x.dims(), w.dims(), self.sizes())?;
        let (p, image) = (g.pixels(), g.c * g.h * g.w);
        // The first convolution's input is data: no gradient to spend time on.
        let want_dx = x.track_op();
        let mut dx = want_dx.then(|| vec![0f32; x.elem_count()]);
        let wlen = w.elem_count();
        let partials: Vec<Vec<f32>> = with_values(grad, "convolution output gradient", |grad| {
            with_values(x, "convolution input", |xv| {
                with_values(w, "convolution weight", |wv| {
                    if g.depthwise() {
                        let block = g.n.div_ceil(threads()).max(1);
                        let work = |b: usize, dx: Option<&mut [f32]>| {
                            let mut dw = vec![0f32; wlen];
                            let first = b * block;
                            let count = block.min(g.n - first);
                            let mut dx = dx;
                            for smp in 0..count {
                                let i = first + smp;
                                g.depthwise_backward(
                                    &xv[i * image..][..image],
                                    wv,
                                    &grad[i * g.o * p..][..g.o * p],
                                    &mut dw,
                                    dx.as_deref_mut().map(|d| &mut d[smp * image..][..image]),
                                );
                            }
                            dw
                        };
                        return Ok(match dx.as_mut() {
                            Some(dx) => dx
                                .par_chunks_mut(block * image)
                                .enumerate()
                                .map(|(b, d)| work(b, Some(d)))
                                .collect(),
                            None => (0..g.n.div_ceil(block))
                                .into_par_iter()
                                .map(|b| work(b, None))
                                .collect(),
                        });
                    }
                    let (rows, og) = (g.rows(), g.og());
                    // Blocks of samples, one per thread; within a block, one sample at a time.
                    let block = g.n.div_ceil(threads()).max(1);
                    let work = |b: usize, mut dx: Option<&mut [f32]>| {
                        let first = b * block;
                        let count = block.min(g.n - first);
                        let mut dw = vec![0f32; wlen];
                        // Columns and their gradient apart: the columns' padding is written
                        // once (see `Geometry::columns`).
                        // A 1x1 stride-1 convolution's columns are its input: no buffers.
                        let cols_len = if g.pointwise() { 0 } else { rows * p };
                        let mut cols = vec![0f32; cols_len];
                        let mut dcols = vec![0f32; if want_dx { cols_len } else { 0 }];
                        for smp in 0..count {
                            let i = first + smp;
                            let xs = &xv[i * image..][..image];
                            let mut dxs = dx.as_deref_mut().map(|d| &mut d[smp * image..][..image]);
                            for grp in 0..g.groups {
                                let gs = &grad[(i * g.o + grp * og) * p..][..og * p];
                                let wg = &wv[grp * og * rows..(grp + 1) * og * rows];
                                let dwg = &mut dw[grp * og * rows..(grp + 1) * og * rows];
                                let b = if g.pointwise() {
                                    &xs[grp * rows * p..(grp + 1) * rows * p]
                                } else {
                                    g.columns(xs, grp, &mut cols);
                                    &cols[..]
                                };
                                // dW_g[o, row] += G[o, pixel] · cols[row, pixel]ᵀ
                                matmul_serial((og, rows, p), dwg, true, gs, (p, 1), b, (1, p));
                                if let Some(dxs) = dxs.as_deref_mut() {
                                    // dcols[row, pixel] = W_g[o, row]ᵀ · G[o, pixel], scattered
                                    // back (a 1x1 stride-1 convolution's is dx itself).
                                    if g.pointwise() {
                                        let d = &mut dxs[grp * rows * p..(grp + 1) * rows * p];
                                        matmul_serial(
                                            (rows, p, og),
                                            d,
                                            false,
                                            wg,
                                            (1, rows),
                                            gs,
                                            (p, 1),
                                        );
                                    } else {
                                        matmul_serial(
                                            (rows, p, og),
                                            &mut dcols,
                                            false,
                                            wg,
                                            (1, rows),
                                            gs,
                                            (p, 1),
                                        );
                                        g.add_columns(&mut dcols, grp, dxs);
                                    }
                                }
                            }
                        }
                        dw
                    };
                    Ok(match dx.as_mut() {
                        Some(dx) => dx
                            .par_chunks_mut(block * image)
                            .enumerate()
                            .map(|(b, d)| work(b, Some(d)))
                            .collect(),
                        None => (0..g.n.div_ceil(block))
                            .into_par_iter()
                            .map(|b| work(b, None))
                            .collect(),
                    })
                })
            })
        })?;
        let mut dw = vec![0f32; wlen];
        for part in partials {
            dw.iter_mut().zip(&part).for_each(|(d, v)| *d += v);
        }
        let dx = dx
            .map(|v| Tensor::from_vec(v, x.shape(), x.device()))
            .transpose()?;
        Ok((dx, Some(Tensor::from_vec(dw, w.shape(), w.device())?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::testing::assert_matches_reference;
    use candle_core::{Device, Var};
    use candle_nn::Conv2dConfig;

    fn wave(n: usize, f: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * f).sin()).collect()
    }

    /// Output and both gradients against candle-nn's convolution, for dense, strided,
    /// pointwise, grouped and depthwise shapes, and a batch larger than one block.
    #[test]
    fn matches_candle_nn_for_every_stride_padding_and_grouping() {
        let dev = Device::Cpu;
        for (n, c, h, o, k, stride, pad, groups) in [
            (3, 2, 7, 4, 3, 1, 1, 1),
            (2, 3, 8, 5, 3, 2, 1, 1),
            (2, 4, 9, 6, 1, 1, 0, 1),
            (2, 4, 9, 6, 1, 2, 0, 1),
            (3, 4, 7, 6, 3, 1, 1, 2),
            (3, 6, 8, 6, 3, 1, 1, 6),
            (2, 5, 9, 5, 3, 2, 1, 5),
            (40, 3, 16, 4, 3, 1, 1, 1),
            (3, 2, 6, 3, 5, 1, 2, 1),
            (2, 2, 5, 3, 3, 1, 2, 1),
            (3, 4, 7, 4, 5, 1, 2, 4),
            (2, 3, 6, 3, 3, 1, 0, 3),
        ] {
            let x = Var::from_vec(wave(n * c * h * h, 0.37), (n, c, h, h), &dev).unwrap();
            let w = Var::from_vec(
                wave(o * (c / groups) * k * k, 0.91),
                (o, c / groups, k, k),
                &dev,
            )
            .unwrap();
            let ours = Conv2d::new(w.as_tensor().clone(), stride, pad, groups)
                .forward(x.as_tensor())
                .unwrap();
            let cfg = Conv2dConfig {
                padding: pad,
                stride,
                dilation: 1,
                groups,
                cudnn_fwd_algo: None,
            };
            let reference = candle_nn::Conv2d::new(w.as_tensor().clone(), None, cfg)
                .forward(x.as_tensor())
                .unwrap();
            assert_matches_reference(&ours, &reference, &[(&x, "dx"), (&w, "dW")], 1e-4);
        }
    }
}
