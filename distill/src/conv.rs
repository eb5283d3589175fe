//! 2-D convolutions (stride 1, zero padding, square kernel) with the bias and ReLU fused, as
//! one candle op whose forward and backward are im2col + GEMM.
//!
//! Why not candle-nn's `Conv2d`: candle's CPU backward for a convolution computes the kernel
//! gradient with a direct (dot-product per output) convolution, which on LeNet-5 at batch 128
//! took 119 of the 141 ms of a training step, about 2 GFLOP/s. Here every product is one GEMM
//! over a block of samples: forward `Y = W · cols(X)`, backward `dW = G · cols(X)ᵀ` and
//! `cols(dX) = Wᵀ · G` scattered back (col2im). The columns are rebuilt in the backward pass
//! rather than kept, so memory stays one block of columns.

use candle_core::{CpuStorage, CustomOp3, Layout, Module, Result as CandleResult, Shape, Tensor};

use rayon::prelude::*;

use crate::gemm::{matmul_serial, op_error, threads, values, with_values};

/// Floats of im2col columns built at a time: a few MB, so a block stays in cache while its
/// GEMM runs and memory does not grow with the batch.
const COLUMN_BUDGET: usize = 1 << 20;

/// `relu(conv(x, W) + b)` for `x` `[n, c, h, w]`, `W` `[o, c, k, k]`, `b` `[o]`.
#[derive(Debug, Clone)]
pub struct Conv2dRelu {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
}

impl Conv2dRelu {
    /// A layer over `weight` and `bias`, sharing their storage (so the optimizer's in-place
    /// updates reach it).
    pub fn new(weight: Tensor, bias: Tensor, padding: usize) -> Conv2dRelu {
        Conv2dRelu {
            weight,
            bias,
            padding,
        }
    }

    /// The weight, `[o, c, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The same layer computing with `weight` instead (a fake-quantized copy, in QAT).
    pub fn with_weight(&self, weight: Tensor) -> Conv2dRelu {
        Conv2dRelu {
            weight,
            ..self.clone()
        }
    }
}

impl Module for Conv2dRelu {
    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        x.contiguous()?.apply_op3(
            &self.weight.contiguous()?,
            &self.bias.contiguous()?,
            ConvOp {
                padding: self.padding,
            },
        )
    }
}

struct ConvOp {
    padding: usize,
}

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    pad: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(x: &[usize], weight: &[usize], bias: &[usize], pad: usize) -> CandleResult<Geometry> {
        let (&[n, c, h, w], &[o, c2, k, k2], &[o2]) = (x, weight, bias) else {
            return Err(op_error(format!(
                "convolution expects x [n, c, h, w], weight [o, c, k, k], bias [o]; got {x:?}, {weight:?}, {bias:?}"
            )));
        };
        if c != c2 || k != k2 || o != o2 || k == 0 || h + 2 * pad < k || w + 2 * pad < k {
            return Err(op_error(format!(
                "convolution: x {x:?} with padding {pad} does not fit weight {weight:?} and bias {bias:?}"
            )));
        }
        Ok(Geometry {
            n,
            c,
            h,
            w,
            o,
            k,
            pad,
            oh: h + 2 * pad + 1 - k,
            ow: w + 2 * pad + 1 - k,
        })
    }

    /// Rows of the column matrix: one per (input channel, kernel row, kernel column).
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Output pixels per sample.
    fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    /// Samples per block of columns: within the memory budget, and small enough that every
    /// thread gets a block.
    fn block(&self, threads: usize) -> usize {
        let fits = COLUMN_BUDGET / (self.rows() * self.pixels()).max(1);
        fits.min(self.n.div_ceil(threads)).max(1)
    }

    /// For kernel tap `(i, j)` and output row `y`: the input row it reads (None: padding), and
    /// the output columns `lo..hi` that read input columns `lo + j - pad..` (the rest read
    /// padding). Whole row segments, so im2col and col2im are slice copies and adds.
    fn span(&self, y: usize, i: usize, j: usize) -> (Option<usize>, usize, usize) {
        let row = (y + i).checked_sub(self.pad).filter(|&r| r < self.h);
        let lo = self.pad.saturating_sub(j).min(self.ow);
        let hi = (self.w + self.pad).saturating_sub(j).clamp(lo, self.ow);
        (row, lo, hi)
    }

    /// im2col for samples `first..first + count`: `cols[row, s * pixels + pixel]`.
    fn columns(&self, x: &[f32], first: usize, count: usize, cols: &mut [f32]) {
        let (p, width) = (self.pixels(), count * self.pixels());
        for ch in 0..self.c {
            for i in 0..self.k {
                for j in 0..self.k {
                    let row = (ch * self.k + i) * self.k + j;
                    let dst = &mut cols[row * width..(row + 1) * width];
                    for s in 0..count {
                        let image = &x[((first + s) * self.c + ch) * self.h * self.w..];
                        for y in 0..self.oh {
                            let out = &mut dst[s * p + y * self.ow..][..self.ow];
                            match self.span(y, i, j) {
                                (Some(sy), lo, hi) => {
                                    let from = sy * self.w + lo + j - self.pad;
                                    out[..lo].fill(0.0);
                                    out[lo..hi].copy_from_slice(&image[from..from + hi - lo]);
                                    out[hi..].fill(0.0);
                                }
                                (None, ..) => out.fill(0.0),
                            }
                        }
                    }
                }
            }
        }
    }

    /// col2im, adding: the inverse scatter of [`Geometry::columns`] into `dx`.
    fn add_columns(&self, cols: &[f32], first: usize, count: usize, dx: &mut [f32]) {
        let (p, width) = (self.pixels(), count * self.pixels());
        for ch in 0..self.c {
            for i in 0..self.k {
                for j in 0..self.k {
                    let row = (ch * self.k + i) * self.k + j;
                    let src = &cols[row * width..(row + 1) * width];
                    for s in 0..count {
                        let image = &mut dx[((first + s) * self.c + ch) * self.h * self.w..];
                        for y in 0..self.oh {
                            if let (Some(sy), lo, hi) = self.span(y, i, j) {
                                let from = sy * self.w + lo + j - self.pad;
                                let add = &src[s * p + y * self.ow..][lo..hi];
                                for (d, &v) in image[from..from + hi - lo].iter_mut().zip(add) {
                                    *d += v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "conv2d-relu"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        x_layout: &Layout,
        ws: &CpuStorage,
        w_layout: &Layout,
        bs: &CpuStorage,
        b_layout: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let g = Geometry::new(
            x_layout.dims(),
            w_layout.dims(),
            b_layout.dims(),
            self.padding,
        )?;
        let (x, w, b) = (
            values(xs, x_layout, "convolution input")?,
            values(ws, w_layout, "convolution weight")?,
            values(bs, b_layout, "convolution bias")?,
        );
        let (p, rows, block) = (g.pixels(), g.rows(), g.block(threads()));
        let mut y = vec![0f32; g.n * g.o * p];
        // Blocks of samples run in parallel, each on its own columns and output rows.
        y.par_chunks_mut(block * g.o * p).enumerate().for_each_init(
            || (vec![0f32; rows * block * p], vec![0f32; g.o * block * p]),
            |(cols, out), (i, y)| {
                let (first, count) = (i * block, y.len() / (g.o * p));
                let width = count * p;
                g.columns(x, first, count, cols);
                // out[o, s * p + pixel] = W[o, row] · cols[row, s * p + pixel]
                matmul_serial(
                    (g.o, width, rows),
                    out,
                    false,
                    w,
                    (rows, 1),
                    cols,
                    (width, 1),
                );
                for s in 0..count {
                    for (ch, &bias) in b.iter().enumerate() {
                        let src = &out[ch * width + s * p..][..p];
                        let dst = &mut y[(s * g.o + ch) * p..][..p];
                        for (d, &v) in dst.iter_mut().zip(src) {
                            *d = (v + bias).max(0.0);
                        }
                    }
                }
            },
        );
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(x.dims(), w.dims(), b.dims(), self.padding)?;
        let (p, rows, block) = (g.pixels(), g.rows(), g.block(threads()));
        // The first convolution's input is data: no gradient to spend time on.
        let want_dx = x.track_op();
        let image = g.c * g.h * g.w;
        // One task per block of samples, each with its own buffers, writing its own slice of
        // dx and returning partial dW and db. Partials are summed in block order, so a run is
        // reproducible for a given thread count.
        let mut dx = want_dx.then(|| vec![0f32; x.elem_count()]);
        let partials: Vec<(Vec<f32>, Vec<f32>)> =
            with_values(grad, "convolution output gradient", |grad| {
                with_values(res, "convolution output", |y| {
                    with_values(x, "convolution input", |xv| {
                        with_values(w, "convolution weight", |wv| {
                            let work = |i: usize, dx: Option<&mut [f32]>| {
                                let first = i * block;
                                let count = block.min(g.n - first);
                                let width = count * p;
                                // The pre-activation gradient, gathered to [o, s * p + pixel]:
                                // ReLU passes it where the output is positive.
                                let mut gb = vec![0f32; g.o * width];
                                for s in 0..count {
                                    for ch in 0..g.o {
                                        let at = ((first + s) * g.o + ch) * p;
                                        let dst = &mut gb[ch * width + s * p..][..p];
                                        for ((d, &gv), &yv) in dst
                                            .iter_mut()
                                            .zip(&grad[at..at + p])
                                            .zip(&y[at..at + p])
                                        {
                                            *d = if yv > 0.0 { gv } else { 0.0 };
                                        }
                                    }
                                }
                                let db: Vec<f32> = (0..g.o)
                                    .map(|ch| gb[ch * width..(ch + 1) * width].iter().sum())
                                    .collect();
                                let mut cols = vec![0f32; rows * width];
                                g.columns(xv, first, count, &mut cols);
                                // dW[o, row] = gb[o, col] · cols[row, col]ᵀ
                                let mut dw = vec![0f32; g.o * rows];
                                matmul_serial(
                                    (g.o, rows, width),
                                    &mut dw,
                                    false,
                                    &gb,
                                    (width, 1),
                                    &cols,
                                    (1, width),
                                );
                                if let Some(dx) = dx {
                                    // dcols[row, col] = W[o, row]ᵀ · gb[o, col], scattered back.
                                    matmul_serial(
                                        (rows, width, g.o),
                                        &mut cols,
                                        false,
                                        wv,
                                        (1, rows),
                                        &gb,
                                        (width, 1),
                                    );
                                    g.add_columns(&cols, 0, count, dx);
                                }
                                (dw, db)
                            };
                            Ok(match dx.as_mut() {
                                Some(dx) => dx
                                    .par_chunks_mut(block * image)
                                    .enumerate()
                                    .map(|(i, dx)| work(i, Some(dx)))
                                    .collect(),
                                None => (0..g.n.div_ceil(block))
                                    .into_par_iter()
                                    .map(|i| work(i, None))
                                    .collect(),
                            })
                        })
                    })
                })
            })?;
        let mut dw = vec![0f32; g.o * rows];
        let mut db = vec![0f32; g.o];
        for (bw, bb) in partials {
            dw.iter_mut().zip(&bw).for_each(|(d, v)| *d += v);
            db.iter_mut().zip(&bb).for_each(|(d, v)| *d += v);
        }
        let dx = dx
            .map(|v| Tensor::from_vec(v, x.shape(), x.device()))
            .transpose()?;
        Ok((
            dx,
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
            Some(Tensor::from_vec(db, b.shape(), b.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::testing::assert_matches_reference;
    use candle_core::{Device, Var};
    use candle_nn::{Conv2d, Conv2dConfig};

    fn wave(n: usize, f: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * f).sin()).collect()
    }

    /// Output and all three gradients against candle-nn's Conv2d + relu, with and without
    /// padding, and with a batch larger than one block of columns.
    #[test]
    fn matches_candle_nn_conv2d_forward_and_backward() {
        let dev = Device::Cpu;
        for (n, c, h, o, k, pad) in [(3, 2, 7, 4, 3, 1), (2, 1, 6, 3, 5, 0), (15, 3, 32, 2, 5, 2)] {
            let x = Var::from_vec(wave(n * c * h * h, 0.37), (n, c, h, h), &dev).unwrap();
            let w = Var::from_vec(wave(o * c * k * k, 0.91), (o, c, k, k), &dev).unwrap();
            let b = Var::from_vec(wave(o, 2.3), o, &dev).unwrap();
            let fused = Conv2dRelu::new(w.as_tensor().clone(), b.as_tensor().clone(), pad)
                .forward(x.as_tensor())
                .unwrap();
            let cfg = Conv2dConfig {
                padding: pad,
                stride: 1,
                dilation: 1,
                groups: 1,
                cudnn_fwd_algo: None,
            };
            let reference = Conv2d::new(w.as_tensor().clone(), Some(b.as_tensor().clone()), cfg)
                .forward(x.as_tensor())
                .unwrap()
                .relu()
                .unwrap();
            assert_matches_reference(
                &fused,
                &reference,
                &[(&x, "dx"), (&w, "dW"), (&b, "db")],
                1e-4,
            );
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let dev = Device::Cpu;
        let layer = Conv2dRelu::new(
            Tensor::zeros((4, 2, 3, 3), candle_core::DType::F32, &dev).unwrap(),
            Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap(),
            0,
        );
        let one_channel = Tensor::zeros((1, 1, 8, 8), candle_core::DType::F32, &dev).unwrap();
        let err = layer.forward(&one_channel).unwrap_err().to_string();
        assert!(err.contains("does not fit weight [4, 2, 3, 3]"), "{err}");
        let too_small = Tensor::zeros((1, 2, 2, 2), candle_core::DType::F32, &dev).unwrap();
        assert!(layer.forward(&too_small).is_err());
    }
}
