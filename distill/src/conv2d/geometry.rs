//! The sizes of one convolution and its im2col / col2im.

use candle_core::Result as CandleResult;

use crate::gemm::op_error;

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) k: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) groups: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
}

impl Geometry {
    /// The sizes of `x` (`[n, c, h, w]`) convolved with `weight` (`[o, c / groups, k, k]`).
    pub(super) fn new(
        x: &[usize],
        weight: &[usize],
        (s, p, g): (usize, usize, usize),
    ) -> CandleResult<Geometry> {
        let (&[n, c, h, w], &[o, cg, k, k2]) = (x, weight) else {
            return Err(op_error(format!(
                "convolution expects x [n, c, h, w] and weight [o, c/groups, k, k]; got {x:?}, {weight:?}"
            )));
        };
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

    pub(super) fn cg(&self) -> usize {
        self.c / self.groups
    }

    pub(super) fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Rows of one group's column matrix: (input channel, kernel row, kernel column).
    pub(super) fn rows(&self) -> usize {
        self.cg() * self.k * self.k
    }

    pub(super) fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    /// One input channel per group and one output per input: a per-channel filter.
    pub(super) fn depthwise(&self) -> bool {
        self.cg() == 1 && self.og() == 1
    }

    /// A 1x1 convolution that reads every input pixel once, in order: its columns are the
    /// input itself.
    pub(super) fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Output columns `lo..hi` of tap column `j` whose input column is inside the image.
    pub(super) fn columns_inside(&self, j: usize) -> (usize, usize) {
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
        self.stride == 1 && self.ow == self.w && self.oh == self.h
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
    pub(super) fn columns(&self, image: &[f32], g: usize, cols: &mut [f32]) {
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
    pub(super) fn add_columns(&self, cols: &mut [f32], g: usize, dx: &mut [f32]) {
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
                        dst.iter_mut()
                            .zip(&src[start..end])
                            .for_each(|(d, &v)| *d += v);
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
}
