//! Integer 2-D convolutions with constant weights.

use super::epilogue::{Accumulated, Epilogue, Requant};
use super::packed::{Act, PackedWeights};
use crate::native::kernels::{self, Isa, Weights};
use crate::native::ops::{par_rows, required, Op};
use crate::native::tensor::{volume, Data, Tensor};

/// 2-D convolution geometry.
#[derive(Debug, Clone)]
pub struct ConvGeometry {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Strides.
    pub strides: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pads: [usize; 4],
    /// Dilations.
    pub dilations: [usize; 2],
    /// Groups.
    pub group: usize,
}

impl ConvGeometry {
    /// Copies group `grp`'s `channels` input planes of `image` (`[C, h, w]`) into `padded`,
    /// one plane of `(h + pads) x pwid` per channel, whose border already holds the padding
    /// value (the zero point for int8, zero for floats).
    pub fn fill_planes<T: Copy>(
        &self,
        image: &[T],
        channels: usize,
        grp: usize,
        [h, w]: [usize; 2],
        pwid: usize,
        padded: &mut [T],
    ) {
        let [pt, pl, pb, _] = self.pads;
        let ph = h + pt + pb;
        for c in 0..channels {
            let chan = &image[(grp * channels + c) * h * w..][..h * w];
            for (y, row) in chan.chunks_exact(w).enumerate() {
                let at = (c * ph + y + pt) * pwid + pl;
                padded[at..at + w].copy_from_slice(row);
            }
        }
    }

    /// `[N, C, H, W]` of a convolution's input, checked against `channels` per group.
    pub fn input(&self, shape: &[usize], channels: usize) -> Result<[usize; 4], String> {
        let [n, c, h, w] = shape[..] else {
            return Err(format!(
                "convolution input of shape {shape:?}: expected [N, C, H, W]"
            ));
        };
        if c != channels * self.group {
            return Err(format!(
                "input has {c} channels; the weights expect {}",
                channels * self.group
            ));
        }
        // Found by fuzzing (an image of width 0 panicked the plane copy).
        if h == 0 || w == 0 {
            return Err(format!(
                "convolution input of shape {shape:?} has an empty image"
            ));
        }
        Ok([n, c, h, w])
    }

    /// Output height and width for an input of `h` x `w`.
    pub fn output(&self, h: usize, w: usize) -> Result<[usize; 2], String> {
        let dim = |size: usize, i: usize| {
            let span = (self.kernel[i] - 1) * self.dilations[i] + 1;
            let padded = size + self.pads[i] + self.pads[i + 2];
            if padded < span || self.strides[i] == 0 {
                Err(format!(
                    "a {}x{} kernel does not fit a {h}x{w} input",
                    self.kernel[0], self.kernel[1]
                ))
            } else {
                Ok((padded - span) / self.strides[i] + 1)
            }
        };
        Ok([dim(h, 0)?, dim(w, 1)?])
    }
}

/// `[N, C, H, W]` int8 activations convolved with constant `[O, C/g, kh, kw]` weights.
/// Inputs: activations, optional zero point.
#[derive(Debug)]
pub struct IntegerConv {
    /// Weights, one packed row per output channel.
    pub weights: PackedWeights,
    /// Input channels per group.
    pub channels: usize,
    /// Kernel, strides, padding, dilations, groups.
    pub geometry: ConvGeometry,
    /// Output conversion.
    pub epilogue: Epilogue,
}

impl IntegerConv {
    /// One image. Per group, every output position's patch is gathered into a padded row of
    /// a patch matrix (padding takes the zero point, so it adds nothing); each filter is then
    /// dotted with all patches at once, which lets the kernel share each filter load across
    /// four positions and writes each output plane contiguously.
    #[allow(clippy::too_many_arguments)]
    fn image<T: Accumulated>(
        &self,
        requant: &[Requant],
        act: &[i8],
        za: i32,
        base: usize,
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        out: &mut [T],
    ) {
        let g = &self.geometry;
        let pw = &self.weights;
        let per_group = pw.rows / g.group;
        let [kh, kw] = g.kernel;
        let plane = oh * ow;
        let pad = za.clamp(-128, 127) as i8;
        // Slack for the 8-byte stores below, which may run past the last row.
        let mut patches = vec![0i8; plane * pw.k_pad + 8];
        let mut acc = vec![0i32; plane];
        let [pt, pl, pb, pr] = g.pads;
        // The input planes of a group, padded with the zero point on every side (plus 8
        // columns on the right), so that gathering needs no edge tests and each kernel row
        // is copied as 8-byte words.
        let (ph, pwid) = (h + pt + pb, w + pl + pr + 8);
        let mut padded = vec![pad; self.channels * ph * pwid];
        for grp in 0..g.group {
            g.fill_planes(&act[base..], self.channels, grp, [h, w], pwid, &mut padded);
            let [sh, sw] = g.strides;
            let [dh, dw] = g.dilations;
            for oy in 0..oh {
                for ox in 0..ow {
                    let row = &mut patches[(oy * ow + ox) * pw.k_pad..];
                    let mut i = 0;
                    for c in 0..self.channels {
                        for ky in 0..kh {
                            let src = (c * ph + oy * sh + ky * dh) * pwid + ox * sw;
                            if dw == 1 {
                                // Whole words: bytes past the row's kw are overwritten by the
                                // next copy, or land in the row's zero-weight tail.
                                let mut t = 0;
                                while t < kw {
                                    let word: [i8; 8] =
                                        padded[src + t..src + t + 8].try_into().expect("8 bytes");
                                    row[i + t..i + t + 8].copy_from_slice(&word);
                                    t += 8;
                                }
                            } else {
                                for kx in 0..kw {
                                    row[i + kx] = padded[src + kx * dw];
                                }
                            }
                            i += kw;
                        }
                    }
                }
            }
            for o in grp * per_group..(grp + 1) * per_group {
                let filter = &pw.data[o * pw.k_pad..(o + 1) * pw.k_pad];
                kernels::dots(
                    pw.isa,
                    Weights::Shared,
                    filter,
                    &patches[..plane * pw.k_pad],
                    pw.k_pad,
                    &mut acc,
                );
                let correction = za.wrapping_mul(pw.sums[o]);
                let dst = &mut out[o * plane..(o + 1) * plane];
                let q = requant[o];
                for (d, &a) in dst.iter_mut().zip(&acc) {
                    *d = T::from_acc(a.wrapping_sub(correction), &q);
                }
            }
        }
    }
}

impl Op for IntegerConv {
    fn run(&self, inputs: &[Option<&Tensor>], threads: usize) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0)?;
        let act = Act::of(x)?;
        let za = act.zero_point(inputs.get(1).copied().flatten())?;
        // Gathering patches reads each value kh·kw times: convert to the signed domain once.
        let centred: std::borrow::Cow<[i8]> = match act {
            Act::I8(v) => v.into(),
            Act::U8(v) => v
                .iter()
                .map(|&x| (x ^ 0x80) as i8)
                .collect::<Vec<_>>()
                .into(),
        };
        let g = &self.geometry;
        let [n, c, h, w] = g.input(&x.shape, self.channels)?;
        let [oh, ow] = g.output(h, w)?;
        let o = self.weights.rows;
        volume(&[n, o, oh, ow])?;
        let geometry = Geometry {
            n,
            image: c * h * w,
            hw: [h, w],
            out: [oh, ow],
        };
        let out = match self.epilogue {
            Epilogue::Int32 => Data::I32(self.compute(&centred, za, &geometry, threads)),
            Epilogue::Float { .. } => Data::F32(self.compute(&centred, za, &geometry, threads)),
        };
        Ok(vec![Tensor::new(vec![n, o, oh, ow], out)?])
    }
}

/// The sizes of one convolution run.
struct Geometry {
    n: usize,
    image: usize,
    hw: [usize; 2],
    out: [usize; 2],
}

impl IntegerConv {
    fn compute<T: Accumulated>(&self, act: &[i8], za: i32, g: &Geometry, threads: usize) -> Vec<T> {
        let per_image = self.weights.rows * g.out[0] * g.out[1];
        let mut out = vec![T::default(); g.n * per_image];
        let work = per_image * self.weights.k;
        let requant = self.epilogue.requant(self.weights.rows);
        par_rows(&mut out, per_image, threads, work, |first, block| {
            // Direct taps need long output rows to vectorize (measured on LeNet-5-half:
            // 28-wide rows 18 -> 11 µs, 8-wide rows 8 -> 26 µs).
            let unit = self.geometry.strides == [1, 1]
                && self.geometry.dilations == [1, 1]
                && g.out[1] >= 16;
            for (i, dst) in block.chunks_exact_mut(per_image).enumerate() {
                let base = (first + i) * g.image;
                if unit {
                    self.image_direct(&requant, act, za, base, g.hw, g.out, dst);
                } else {
                    self.image(&requant, act, za, base, g.hw, g.out, dst);
                }
            }
        });
        out
    }
}

impl IntegerConv {
    /// One image, for stride 1 and no dilation: each kernel tap adds weight × shifted input
    /// row to a row of accumulators. Students' convolutions have few input channels (LeNet's
    /// first layer has one), where gathering patches costs more than the arithmetic; this
    /// path gathers nothing and its inner loop vectorizes.
    #[allow(clippy::too_many_arguments)]
    fn image_direct<T: Accumulated>(
        &self,
        requant: &[Requant],
        act: &[i8],
        za: i32,
        base: usize,
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        out: &mut [T],
    ) {
        let g = &self.geometry;
        let pw = &self.weights;
        let per_group = pw.rows / g.group;
        let [kh, kw] = g.kernel;
        let plane = oh * ow;
        let [pt, pl, pb, pr] = g.pads;
        let (ph, pwid) = (h + pt + pb, w + pl + pr);
        let pad = za.clamp(-128, 127) as i8;
        let mut padded = vec![pad; self.channels * ph * pwid];
        let mut acc = vec![0i32; plane];
        for grp in 0..g.group {
            g.fill_planes(&act[base..], self.channels, grp, [h, w], pwid, &mut padded);
            for o in grp * per_group..(grp + 1) * per_group {
                let filter = &pw.data[o * pw.k_pad..o * pw.k_pad + pw.k];
                acc.fill(0);
                taps(
                    pw.isa,
                    filter,
                    &padded,
                    [ph, pwid],
                    [kh, kw],
                    [oh, ow],
                    &mut acc,
                );
                let correction = za.wrapping_mul(pw.sums[o]);
                let q = requant[o];
                for (d, &a) in out[o * plane..(o + 1) * plane].iter_mut().zip(&acc) {
                    *d = T::from_acc(a.wrapping_sub(correction), &q);
                }
            }
        }
    }
}

/// `acc[oy][ox] += Σ_taps w · x[oy + ky][ox + kx]` over every channel of `padded`.
fn taps(
    isa: Isa,
    filter: &[i8],
    padded: &[i8],
    dims: [usize; 2],
    kernel: [usize; 2],
    out: [usize; 2],
    acc: &mut [i32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: only detection makes an `Isa` that says AVX2.
        return unsafe { taps_avx2(filter, padded, dims, kernel, out, acc) };
    }
    taps_body(filter, padded, dims, kernel, out, acc)
}

/// The same loop compiled for AVX2, so it vectorizes eight lanes wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn taps_avx2(
    filter: &[i8],
    padded: &[i8],
    dims: [usize; 2],
    kernel: [usize; 2],
    out: [usize; 2],
    acc: &mut [i32],
) {
    taps_body(filter, padded, dims, kernel, out, acc)
}

#[inline(always)]
fn taps_body(
    filter: &[i8],
    padded: &[i8],
    [ph, pwid]: [usize; 2],
    [kh, kw]: [usize; 2],
    [oh, ow]: [usize; 2],
    acc: &mut [i32],
) {
    for (t, &wt) in filter.iter().enumerate() {
        if wt == 0 {
            continue;
        }
        let (c, ky, kx) = (t / (kh * kw), (t / kw) % kh, t % kw);
        let wt = wt as i16;
        for oy in 0..oh {
            let src = &padded[(c * ph + oy + ky) * pwid + kx..][..ow];
            let dst = &mut acc[oy * ow..(oy + 1) * ow];
            for (d, &x) in dst.iter_mut().zip(src) {
                // i8 · i8 fits i16 exactly (|product| <= 16384).
                *d += (wt * x as i16) as i32;
            }
        }
    }
}
