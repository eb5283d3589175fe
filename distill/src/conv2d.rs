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

use crate::gemm::{matmul_serial, op_error, threads, values, with_values};

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

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(x: &[usize], weight: &[usize], op: &ConvOp) -> CandleResult<Geometry> {
        let (&[n, c, h, w], &[o, cg, k, k2]) = (x, weight) else {
            return Err(op_error(format!(
                "convolution expects x [n, c, h, w] and weight [o, c/groups, k, k]; got {x:?}, {weight:?}"
            )));
        };
        let (s, p, g) = (op.stride, op.padding, op.groups);
        let fits = g > 0
            && c % g == 0
            && o % g == 0
            && c / g == cg
            && k == k2
            && k > 0
            && s > 0
            && h + 2 * p >= k
            && w + 2 * p >= k;
        if !fits {
            return Err(op_error(format!(
                "convolution: x {x:?} (stride {s}, padding {p}, {g} groups) does not fit weight {weight:?}"
            )));
        }
        Ok(Geometry {
            n,
            c,
            h,
            w,
            o,
            k,
            stride: s,
            pad: p,
            groups: g,
            oh: (h + 2 * p - k) / s + 1,
            ow: (w + 2 * p - k) / s + 1,
        })
    }

    fn cg(&self) -> usize {
        self.c / self.groups
    }

    fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Rows of one group's column matrix: (input channel, kernel row, kernel column).
    fn rows(&self) -> usize {
        self.cg() * self.k * self.k
    }

    fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    /// One input channel per group and one output per input: a per-channel filter.
    fn depthwise(&self) -> bool {
        self.cg() == 1 && self.og() == 1
    }

    /// A 1x1 convolution that reads every input pixel once, in order: its columns are the
    /// input itself.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Output columns `lo..hi` of tap column `j` whose input column is inside the image.
    fn columns_inside(&self, j: usize) -> (usize, usize) {
        // x * s + j >= pad  <=>  x >= ceil((pad - j) / s);  x * s + j < w + pad.
        let lo = self
            .pad
            .saturating_sub(j)
            .div_ceil(self.stride)
            .min(self.ow);
        let hi = (self.w + self.pad)
            .saturating_sub(j)
            .div_ceil(self.stride)
            .clamp(lo, self.ow);
        (lo, hi)
    }

    /// Stride 1 with output rows as wide as the input's ("same" padding): each tap's column
    /// row is the input plane shifted by one offset, so it is copied whole.
    fn shifted(&self) -> bool {
        self.stride == 1 && self.ow == self.w
    }

    /// For [`Geometry::shifted`] convolutions, tap `(i, j)`'s input offset from an output
    /// pixel, and the span `start..end` of output pixels from its first inside the image to
    /// its last: within it only the `lo`/`hi` edge columns of each row fall outside.
    fn shifted_span(&self, i: usize, j: usize) -> (isize, usize, usize) {
        let w = self.w;
        let shift = (i as isize - self.pad as isize) * w as isize + j as isize - self.pad as isize;
        let (lo, hi) = self.columns_inside(j);
        let y_lo = self.pad.saturating_sub(i).min(self.oh);
        let y_hi = (self.h + self.pad).saturating_sub(i).clamp(y_lo, self.oh);
        if y_lo == y_hi || lo == hi {
            return (shift, 0, 0);
        }
        (shift, y_lo * w + lo, (y_hi - 1) * w + hi)
    }

    /// Zeroes the positions of `row` inside `start..end` (see [`Geometry::shifted_span`])
    /// whose input column is outside the image: the wrap-around of a whole-plane shift.
    fn clear_wrapped(&self, j: usize, start: usize, end: usize, row: &mut [f32]) {
        let (lo, hi) = self.columns_inside(j);
        let w = self.w;
        if (lo == 0 && hi == w) || start == end {
            return;
        }
        // Column by column, a strided store each: the edges are one pixel wide or two.
        let first_row = start / w * w;
        for edge in (0..lo).chain(hi..w) {
            let mut q = first_row + edge;
            if q < start {
                q += w;
            }
            while q < end {
                row[q] = 0.0;
                q += w;
            }
        }
    }

    /// Group `g`'s im2col of one sample's `image` (`[c, h, w]`): `cols[row, pixel]`, a row per
    /// (input channel of the group, kernel row, kernel column). For [`Geometry::shifted`]
    /// convolutions only the pixels inside the image are written: `cols` must come zeroed and
    /// only ever hold this geometry's columns, whose padding is the same for every sample.
    fn columns(&self, image: &[f32], g: usize, cols: &mut [f32]) {
        let (p, s) = (self.pixels(), self.stride);
        if self.shifted() {
            for cl in 0..self.cg() {
                let plane = &image[(g * self.cg() + cl) * self.h * self.w..][..self.h * self.w];
                for i in 0..self.k {
                    for j in 0..self.k {
                        let row = (cl * self.k + i) * self.k + j;
                        let dst = &mut cols[row * p..(row + 1) * p];
                        let (shift, start, end) = self.shifted_span(i, j);
                        let from = (start as isize + shift) as usize;
                        dst[start..end].copy_from_slice(&plane[from..from + end - start]);
                        self.clear_wrapped(j, start, end, dst);
                    }
                }
            }
            return;
        }
        for cl in 0..self.cg() {
            let plane = &image[(g * self.cg() + cl) * self.h * self.w..][..self.h * self.w];
            for i in 0..self.k {
                for j in 0..self.k {
                    let row = (cl * self.k + i) * self.k + j;
                    let dst = &mut cols[row * p..(row + 1) * p];
                    let (lo, hi) = self.columns_inside(j);
                    for (y, out) in dst.chunks_exact_mut(self.ow).enumerate() {
                        let Some(sy) = (y * s + i).checked_sub(self.pad).filter(|&r| r < self.h)
                        else {
                            out.fill(0.0);
                            continue;
                        };
                        out[..lo].fill(0.0);
                        let from = sy * self.w + lo * s + j - self.pad;
                        if s == 1 {
                            out[lo..hi].copy_from_slice(&plane[from..from + hi - lo]);
                        } else {
                            let src = plane[from..].iter().step_by(s);
                            out[lo..hi].iter_mut().zip(src).for_each(|(o, &v)| *o = v);
                        }
                        out[hi..].fill(0.0);
                    }
                }
            }
        }
    }

    /// col2im, adding: the inverse of [`Geometry::columns`] into one sample's `dx`. Clears
    /// the wrapped positions of a [`Geometry::shifted`] convolution's `cols` on the way (so
    /// each tap adds as one contiguous run).
    fn add_columns(&self, cols: &mut [f32], g: usize, dx: &mut [f32]) {
        let (p, s) = (self.pixels(), self.stride);
        if self.shifted() {
            for cl in 0..self.cg() {
                let plane = &mut dx[(g * self.cg() + cl) * self.h * self.w..][..self.h * self.w];
                for i in 0..self.k {
                    for j in 0..self.k {
                        let row = (cl * self.k + i) * self.k + j;
                        let src = &mut cols[row * p..(row + 1) * p];
                        let (shift, start, end) = self.shifted_span(i, j);
                        self.clear_wrapped(j, start, end, src);
                        let to = (start as isize + shift) as usize;
                        let dst = &mut plane[to..to + end - start];
                        dst.iter_mut().zip(&src[start..end]).for_each(|(d, &v)| *d += v);
                    }
                }
            }
            return;
        }
        for cl in 0..self.cg() {
            let plane = &mut dx[(g * self.cg() + cl) * self.h * self.w..][..self.h * self.w];
            for i in 0..self.k {
                for j in 0..self.k {
                    let row = (cl * self.k + i) * self.k + j;
                    let src = &cols[row * p..(row + 1) * p];
                    let (lo, hi) = self.columns_inside(j);
                    for (y, add) in src.chunks_exact(self.ow).enumerate() {
                        let Some(sy) = (y * s + i).checked_sub(self.pad).filter(|&r| r < self.h)
                        else {
                            continue;
                        };
                        let from = sy * self.w + lo * s + j - self.pad;
                        let dst = plane[from..].iter_mut().step_by(s);
                        dst.zip(&add[lo..hi]).for_each(|(d, &v)| *d += v);
                    }
                }
            }
        }
    }

    /// Depthwise forward of one sample: `y[c] = Σ taps w[c] · x[c]`.
    fn depthwise_forward(&self, x: &[f32], w: &[f32], y: &mut [f32]) {
        let (k, p) = (self.k, self.pixels());
        for ch in 0..self.c {
            let plane = &x[ch * self.h * self.w..][..self.h * self.w];
            let out = &mut y[ch * p..][..p];
            out.fill(0.0);
            for i in 0..k {
                for j in 0..k {
                    let wt = w[(ch * k + i) * k + j];
                    let (lo, hi) = self.columns_inside(j);
                    for oy in 0..self.oh {
                        let row = (oy * self.stride + i).checked_sub(self.pad);
                        if let Some(sy) = row.filter(|&r| r < self.h) {
                            let row = &plane[sy * self.w..][..self.w];
                            let dst = &mut out[oy * self.ow..][lo..hi];
                            let start = lo * self.stride + j - self.pad;
                            axpy(dst, &row[start..], self.stride, wt);
                        }
                    }
                }
            }
        }
    }

    /// Depthwise backward of one sample: adds to `dw`, writes `dx` when given.
    fn depthwise_backward(
        &self,
        x: &[f32],
        w: &[f32],
        grad: &[f32],
        dw: &mut [f32],
        mut dx: Option<&mut [f32]>,
    ) {
        let (k, p) = (self.k, self.pixels());
        if let Some(dx) = dx.as_deref_mut() {
            dx.fill(0.0);
        }
        for ch in 0..self.c {
            let plane = &x[ch * self.h * self.w..][..self.h * self.w];
            let g = &grad[ch * p..][..p];
            for i in 0..k {
                for j in 0..k {
                    let tap = (ch * k + i) * k + j;
                    let wt = w[tap];
                    let mut sum = 0f32;
                    let (lo, hi) = self.columns_inside(j);
                    for oy in 0..self.oh {
                        let row = (oy * self.stride + i).checked_sub(self.pad);
                        if let Some(sy) = row.filter(|&r| r < self.h) {
                            let start = lo * self.stride + j - self.pad;
                            let gs = &g[oy * self.ow..][lo..hi];
                            let row = &plane[sy * self.w..][..self.w];
                            sum += dot(gs, &row[start..], self.stride);
                            if let Some(dx) = dx.as_deref_mut() {
                                let drow = &mut dx[(ch * self.h + sy) * self.w..][..self.w];
                                scatter_axpy(&mut drow[start..], gs, self.stride, wt);
                            }
                        }
                    }
                    dw[tap] += sum;
                }
            }
        }
    }
}

/// `dst[i] += a · src[i · stride]`: a contiguous loop (vectorized) for stride 1.
fn axpy(dst: &mut [f32], src: &[f32], stride: usize, a: f32) {
    if stride == 1 {
        let src = &src[..dst.len()];
        for (d, &v) in dst.iter_mut().zip(src) {
            *d += a * v;
        }
    } else {
        for (d, &v) in dst.iter_mut().zip(src.iter().step_by(stride)) {
            *d += a * v;
        }
    }
}

/// `dst[i · stride] += a · src[i]`.
fn scatter_axpy(dst: &mut [f32], src: &[f32], stride: usize, a: f32) {
    if stride == 1 {
        for (d, &v) in dst[..src.len()].iter_mut().zip(src) {
            *d += a * v;
        }
    } else {
        for (d, &v) in dst.iter_mut().step_by(stride).zip(src) {
            *d += a * v;
        }
    }
}

/// `Σ g[i] · x[i · stride]`, in eight partial sums for stride 1 (so it vectorizes).
fn dot(g: &[f32], x: &[f32], stride: usize) -> f32 {
    if stride != 1 {
        return g
            .iter()
            .zip(x.iter().step_by(stride))
            .map(|(a, b)| a * b)
            .sum();
    }
    let x = &x[..g.len()];
    let mut lanes = [0f32; 8];
    let (gc, xc) = (g.chunks_exact(8), x.chunks_exact(8));
    let tail: f32 = gc
        .remainder()
        .iter()
        .zip(xc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in gc.zip(xc) {
        for l in 0..8 {
            lanes[l] += a[l] * b[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
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
        let g = Geometry::new(x_layout.dims(), w_layout.dims(), self)?;
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
        let g = Geometry::new(x.dims(), w.dims(), self)?;
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
                        let mut cols = vec![0f32; rows * p];
                        let mut dcols = vec![0f32; if want_dx { rows * p } else { 0 }];
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
