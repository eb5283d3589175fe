//! Depthwise convolutions (one channel per group) as direct loops over each channel's plane:
//! a GEMM would have one row.
//!
//! Stride-1 ones run on a zero-padded copy of each plane, with the output (or its gradient)
//! laid out at the padded row pitch: a tap's products over the whole plane are then one
//! contiguous run, where per-row loops would run 4 to 28 values at a time (most of
//! MobileNetV2's planes are 14x14 or smaller). The columns past the output's width are
//! computed and dropped, or held at zero.

use super::geometry::Geometry;

impl Geometry {
    /// The padded row pitch, and the span of padded-pitch output positions from the first
    /// pixel to the last (for stride 1).
    fn pitch_and_span(&self) -> (usize, usize) {
        let pitch = self.w + 2 * self.pad;
        (pitch, (self.oh - 1) * pitch + self.ow)
    }

    /// Copies `plane` into the middle of `padded` (whose border stays as it is: zero).
    fn pad_into(&self, plane: &[f32], padded: &mut [f32]) {
        let pitch = self.w + 2 * self.pad;
        for (r, row) in plane.chunks_exact(self.w).enumerate() {
            padded[(r + self.pad) * pitch + self.pad..][..self.w].copy_from_slice(row);
        }
    }

    /// Depthwise forward of one sample: `y[c] = Σ taps w[c] · x[c]`.
    pub(super) fn depthwise_forward(&self, x: &[f32], w: &[f32], y: &mut [f32]) {
        let (k, p) = (self.k, self.pixels());
        if self.stride == 1 {
            let (pitch, span) = self.pitch_and_span();
            let mut padded = vec![0f32; (self.h + 2 * self.pad) * pitch];
            let mut acc = vec![0f32; span];
            for ch in 0..self.c {
                self.pad_into(&x[ch * self.h * self.w..][..self.h * self.w], &mut padded);
                acc.fill(0.0);
                for i in 0..k {
                    for j in 0..k {
                        axpy(
                            &mut acc,
                            &padded[i * pitch + j..],
                            1,
                            w[(ch * k + i) * k + j],
                        );
                    }
                }
                let out = &mut y[ch * p..][..p];
                for (oy, row) in out.chunks_exact_mut(self.ow).enumerate() {
                    row.copy_from_slice(&acc[oy * pitch..][..self.ow]);
                }
            }
            return;
        }
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
    pub(super) fn depthwise_backward(
        &self,
        x: &[f32],
        w: &[f32],
        grad: &[f32],
        dw: &mut [f32],
        mut dx: Option<&mut [f32]>,
    ) {
        let (k, p) = (self.k, self.pixels());
        if self.stride == 1 {
            let (pitch, span) = self.pitch_and_span();
            let padded_len = (self.h + 2 * self.pad) * pitch;
            let mut padded = vec![0f32; padded_len];
            let mut dpadded = vec![0f32; if dx.is_some() { padded_len } else { 0 }];
            // The gradient at the padded pitch; the columns past the output's width stay zero.
            let mut g = vec![0f32; span];
            for ch in 0..self.c {
                let plane = self.h * self.w;
                self.pad_into(&x[ch * plane..][..plane], &mut padded);
                for (oy, row) in grad[ch * p..][..p].chunks_exact(self.ow).enumerate() {
                    g[oy * pitch..][..self.ow].copy_from_slice(row);
                }
                for i in 0..k {
                    for j in 0..k {
                        let tap = (ch * k + i) * k + j;
                        dw[tap] += dot(&g, &padded[i * pitch + j..], 1);
                    }
                }
                if let Some(dx) = dx.as_deref_mut() {
                    dpadded.fill(0.0);
                    for i in 0..k {
                        for j in 0..k {
                            let wt = w[(ch * k + i) * k + j];
                            scatter_axpy(&mut dpadded[i * pitch + j..], &g, 1, wt);
                        }
                    }
                    for (r, row) in dx[ch * plane..][..plane]
                        .chunks_exact_mut(self.w)
                        .enumerate()
                    {
                        row.copy_from_slice(
                            &dpadded[(r + self.pad) * pitch + self.pad..][..self.w],
                        );
                    }
                }
            }
            return;
        }
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
