//! Depthwise convolutions (one filter per channel) on channels-last activations: for each
//! output pixel, each tap's pointer reaches the input pixel's channels (or a row of the zero
//! point in the padding), and the channels are summed eight to a register. Where a row's
//! windows lie inside the image, its pixels go in one call (`run`) with each tap one offset
//! from the pixel, and a channel block's weights loaded once for the row. int8 channels
//! go sixteen at a time on AVX2: two taps' inputs, widened to int16 and interleaved, meet
//! their two weights in one `vpmaddwd`, which sums the pair exactly into int32.

use super::sgemm::FloatMode;
use super::Isa;

/// int8 depthwise weights, `[tap][channel]`, widened to int32.
#[derive(Debug, Clone)]
pub(crate) struct QDepthwise {
    /// Channels.
    pub c: usize,
    /// Kernel taps.
    pub taps: usize,
    /// `[tap][channel]`.
    pub w: Vec<i32>,
    /// Per channel, the sum of its taps' weights (for the input zero point).
    pub sums: Vec<i32>,
    /// Whole blocks of sixteen channels, `[block][tap pair][half][16]`: the weights of taps
    /// `2p` and `2p + 1` interleaved in the order `vpunpck{l,h}wd` interleaves inputs (a
    /// missing last tap weighs zero). Empty off x86, where nothing reads them.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub pairs: Vec<i16>,
}

impl QDepthwise {
    /// Packs `c` channels of `taps` weights, `w(channel, tap)` each.
    pub fn pack(c: usize, taps: usize, w: impl Fn(usize, usize) -> i8) -> QDepthwise {
        let mut packed = vec![0i32; taps * c];
        let mut sums = vec![0i32; c];
        for ch in 0..c {
            for t in 0..taps {
                let v = w(ch, t) as i32;
                packed[t * c + ch] = v;
                sums[ch] += v;
            }
        }
        let npairs = taps.div_ceil(2);
        // Only the AVX2 kernel reads them.
        let blocks = if cfg!(target_arch = "x86_64") {
            c / 16
        } else {
            0
        };
        let mut pairs = vec![0i16; blocks * npairs * 32];
        for (i, v) in pairs.iter_mut().enumerate() {
            let (block, pair, half, j) = (i / (npairs * 32), i / 32 % npairs, i / 16 % 2, i % 16);
            // Within each 128-bit lane of eight int16: channel k/2 of the lane's quarter,
            // taps alternating.
            let ch = block * 16 + (j / 8) * 8 + half * 4 + (j % 8) / 2;
            let t = 2 * pair + j % 2;
            if t < taps {
                *v = packed[t * c + ch] as i16;
            }
        }
        QDepthwise {
            c,
            taps,
            w: packed,
            sums,
            pairs,
        }
    }

    /// `acc[ch] = Σ_t x_t[ch] · w[t][ch]` for one output pixel, `ptrs[t]` its taps' inputs.
    ///
    /// # Safety
    /// Every pointer must be valid for `c` bytes.
    pub unsafe fn pixel(&self, isa: Isa, ptrs: &[*const i8], acc: &mut [i32]) {
        #[cfg(target_arch = "x86_64")]
        let ch = if isa.is_avx2() {
            x86::q_pixel(self, ptrs, acc)
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let ch = 0;
        let _ = isa;
        for ch in ch..self.c {
            let mut s = 0i32;
            for (t, p) in ptrs.iter().enumerate().take(self.taps) {
                s += *p.add(ch) as i32 * self.w[t * self.c + ch];
            }
            acc[ch] = s;
        }
    }
}

impl QDepthwise {
    /// Whether [`QDepthwise::run`] has a path on this CPU (callers skip looking for runs of
    /// interior pixels otherwise: that costs a division per pixel).
    pub fn has_run(&self, isa: Isa) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            isa.is_avx2() && self.taps.div_ceil(2) <= x86::MAX_PAIRS
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = isa;
            false
        }
    }

    /// The int32 sums of `n` output pixels in a row whose windows lie inside the image, into
    /// `acc` (`n · c` values, pixel after pixel): pixel `i`'s tap `t` reads
    /// `x + i · step + offsets[t]`. Integer sums, so the same values as
    /// [`QDepthwise::pixel`]; a block of sixteen channels loads its tap-pair weights once for
    /// the whole row. False (nothing written) where the CPU has no such path.
    ///
    /// # Safety
    /// Every pixel's taps must be valid for `c` values.
    pub unsafe fn run(
        &self,
        isa: Isa,
        x: *const i8,
        offsets: &[usize],
        step: usize,
        n: usize,
        acc: &mut [i32],
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.has_run(isa) && offsets.len() == self.taps {
            let ch = x86::q_run(self, x, offsets, step, n, acc);
            for i in 0..n {
                let (base, out) = (x.add(i * step), &mut acc[i * self.c..(i + 1) * self.c]);
                for ch in ch..self.c {
                    let mut s = 0i32;
                    for (t, &o) in offsets.iter().enumerate() {
                        s += *base.add(o + ch) as i32 * self.w[t * self.c + ch];
                    }
                    out[ch] = s;
                }
            }
            return true;
        }
        let _ = (isa, x, offsets, step, n, acc);
        false
    }
}

/// f32 depthwise weights, `[tap][channel]`.
#[derive(Debug, Clone)]
pub(crate) struct FDepthwise {
    /// Channels.
    pub c: usize,
    /// Kernel taps.
    pub taps: usize,
    /// `[tap][channel]`.
    pub w: Vec<f32>,
}

impl FDepthwise {
    /// Packs `c` channels of `taps` weights, `w(channel, tap)` each.
    pub fn pack(c: usize, taps: usize, w: impl Fn(usize, usize) -> f32) -> FDepthwise {
        let mut packed = vec![0f32; taps * c];
        for ch in 0..c {
            for t in 0..taps {
                packed[t * c + ch] = w(ch, t);
            }
        }
        FDepthwise { c, taps, w: packed }
    }

    /// `out[ch] = Σ_t x_t[ch] · w[t][ch]` for one output pixel.
    ///
    /// # Safety
    /// Every pointer must be valid for `c` floats.
    pub unsafe fn pixel(&self, isa: Isa, mode: FloatMode, ptrs: &[*const f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        let ch = if mode == FloatMode::Fast && isa.has_fma() {
            x86::f_pixel(self, ptrs, out)
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let ch = 0;
        let _ = (isa, mode);
        for ch in ch..self.c {
            let mut s = 0f32;
            for (t, p) in ptrs.iter().enumerate().take(self.taps) {
                s += *p.add(ch) * self.w[t * self.c + ch];
            }
            out[ch] = s;
        }
    }
}

/// Where [`FDepthwise::run`] writes: `clamp(sum + add[ch] (+ residual), lo, hi)` per
/// channel, pixel `i` at `dst + i · step` (its residual at `residual + i · step`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct FEpilogue<'a> {
    pub add: &'a [f32],
    pub bounds: [f32; 2],
    pub residual: Option<*const f32>,
    pub dst: *mut f32,
    pub step: usize,
}

impl FDepthwise {
    /// Whether [`FDepthwise::run`] has a path on this CPU and in this mode (callers skip
    /// looking for runs of interior pixels otherwise: that costs a division per pixel).
    pub fn has_run(&self, isa: Isa, mode: FloatMode) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            mode == FloatMode::Fast && isa.has_fma() && self.taps <= x86::MAX_TAPS
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (isa, mode);
            false
        }
    }

    /// `n` output pixels in a row whose windows lie inside the image: pixel `i`'s tap `t`
    /// reads `x + i · step + offsets[t]`, and the epilogue is applied in registers, so a row
    /// costs one call instead of a pointer table, a kernel call and an epilogue call per
    /// pixel. The same arithmetic as [`FDepthwise::pixel`] then `Requant::finish_f32`, so
    /// the same bits; false (nothing written) where the CPU or the mode has no such path.
    ///
    /// # Safety
    /// Every pixel's taps must be valid for `c` floats; `e.dst` (and `e.residual`) for `n`
    /// pixels of `c` floats, `e.step` apart.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        &self,
        isa: Isa,
        mode: FloatMode,
        x: *const f32,
        offsets: &[usize],
        step: usize,
        n: usize,
        e: &FEpilogue,
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.has_run(isa, mode) && offsets.len() == self.taps {
            x86::f_run(self, x, offsets, step, n, e);
            return true;
        }
        let _ = (isa, mode, x, offsets, step, n, e);
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{FDepthwise, FEpilogue, QDepthwise};
    use std::arch::x86_64::*;

    /// Sixteen int8 values at `p`, widened to int16.
    #[inline(always)]
    unsafe fn widen(p: *const i8) -> __m256i {
        _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i))
    }

    /// Tap pairs the fast int8 path takes (a 5x5 kernel has 13).
    pub(super) const MAX_PAIRS: usize = 13;

    /// [`QDepthwise::run`]'s whole sixteen-channel blocks; returns where they stopped.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn q_run(
        d: &QDepthwise,
        x: *const i8,
        offsets: &[usize],
        step: usize,
        n: usize,
        acc: &mut [i32],
    ) -> usize {
        match d.taps.div_ceil(2) {
            5 => q_run_pairs::<5>(d, x, offsets, step, n, acc),
            13 => q_run_pairs::<13>(d, x, offsets, step, n, acc),
            _ => q_run_pairs::<0>(d, x, offsets, step, n, acc),
        }
    }

    /// [`q_run`] for `P` tap pairs (0: as many as `d` has).
    #[inline(always)]
    unsafe fn q_run_pairs<const P: usize>(
        d: &QDepthwise,
        x: *const i8,
        offsets: &[usize],
        step: usize,
        n: usize,
        acc: &mut [i32],
    ) -> usize {
        let npairs = if P > 0 { P } else { d.taps.div_ceil(2) };
        // Each pair's two offsets (a missing last tap repeats its partner, weighing zero).
        let mut po = [[0usize; 2]; MAX_PAIRS];
        for (pair, o) in po.iter_mut().enumerate().take(npairs) {
            *o = [offsets[2 * pair], offsets[(2 * pair + 1).min(d.taps - 1)]];
        }
        let mut w = d.pairs.as_ptr() as *const __m256i;
        let mut ch = 0;
        while ch + 16 <= d.c {
            let mut wv = [[_mm256_setzero_si256(); 2]; MAX_PAIRS];
            for wv in wv.iter_mut().take(npairs) {
                *wv = [_mm256_loadu_si256(w), _mm256_loadu_si256(w.add(1))];
                w = w.add(2);
            }
            for i in 0..n {
                let base = x.add(i * step + ch);
                let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for ([t, u], [wl, wh]) in po[..npairs].iter().zip(&wv[..npairs]) {
                    let (a, b) = (widen(base.add(*t)), widen(base.add(*u)));
                    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), *wl));
                    hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), *wh));
                }
                // lo holds channels 0-3 and 8-11, hi 4-7 and 12-15.
                let out = acc.as_mut_ptr().add(i * d.c + ch) as *mut __m256i;
                _mm256_storeu_si256(out, _mm256_permute2x128_si256::<0x20>(lo, hi));
                _mm256_storeu_si256(out.add(1), _mm256_permute2x128_si256::<0x31>(lo, hi));
            }
            ch += 16;
        }
        ch
    }

    /// The whole sixteen-channel blocks of one pixel; `P` pairs when non-zero, else `npairs`.
    #[inline(always)]
    unsafe fn blocks<const P: usize>(
        d: &QDepthwise,
        pp: &[[*const i8; 2]; MAX_PAIRS],
        npairs: usize,
        acc: &mut [i32],
    ) -> usize {
        let npairs = if P > 0 { P } else { npairs };
        let mut w = d.pairs.as_ptr() as *const __m256i;
        let mut ch = 0;
        while ch + 16 <= d.c {
            let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for [t, u] in &pp[..npairs] {
                let (a, b) = (widen(t.add(ch)), widen(u.add(ch)));
                let plo = _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), _mm256_loadu_si256(w));
                let phi =
                    _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), _mm256_loadu_si256(w.add(1)));
                lo = _mm256_add_epi32(lo, plo);
                hi = _mm256_add_epi32(hi, phi);
                w = w.add(2);
            }
            // lo holds channels 0-3 and 8-11, hi 4-7 and 12-15.
            let out = acc.as_mut_ptr().add(ch) as *mut __m256i;
            _mm256_storeu_si256(out, _mm256_permute2x128_si256::<0x20>(lo, hi));
            _mm256_storeu_si256(out.add(1), _mm256_permute2x128_si256::<0x31>(lo, hi));
            ch += 16;
        }
        ch
    }

    /// Sixteen channels at a time by tap pairs (`vpmaddwd`), then eight (sign-extended to
    /// int32, `vpmulld`); returns where it stopped.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn q_pixel(d: &QDepthwise, ptrs: &[*const i8], acc: &mut [i32]) -> usize {
        let npairs = d.taps.div_ceil(2);
        let mut ch = 0;
        if npairs <= MAX_PAIRS {
            // Each pair's two pointers (a missing last tap repeats its partner, weighing
            // zero), in a fixed array so the block loop has no bounds to check; the common
            // kernels get a loop the compiler unrolls.
            let mut pp = [[std::ptr::null::<i8>(); 2]; MAX_PAIRS];
            for (pair, p) in pp.iter_mut().enumerate().take(npairs) {
                *p = [ptrs[2 * pair], ptrs[(2 * pair + 1).min(d.taps - 1)]];
            }
            ch = match npairs {
                5 => blocks::<5>(d, &pp, npairs, acc),
                2 => blocks::<2>(d, &pp, npairs, acc),
                13 => blocks::<13>(d, &pp, npairs, acc),
                _ => blocks::<0>(d, &pp, npairs, acc),
            };
        }
        while ch + 8 <= d.c {
            let mut s = _mm256_setzero_si256();
            for (t, p) in ptrs.iter().enumerate().take(d.taps) {
                let x = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(ch) as *const __m128i));
                let w = _mm256_loadu_si256(d.w.as_ptr().add(t * d.c + ch) as *const __m256i);
                s = _mm256_add_epi32(s, _mm256_mullo_epi32(x, w));
            }
            _mm256_storeu_si256(acc.as_mut_ptr().add(ch) as *mut __m256i, s);
            ch += 8;
        }
        ch
    }

    /// Sixteen channels at a time with fused multiply-adds, then eight; returns where it
    /// stopped. The taps' pointers go into a fixed array and 3x3 and 5x5 kernels get a tap
    /// loop the compiler unrolls, as on the int8 path.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn f_pixel(d: &FDepthwise, ptrs: &[*const f32], out: &mut [f32]) -> usize {
        if d.taps > MAX_TAPS {
            return f_rest(d, ptrs, out, 0);
        }
        let mut pp = [std::ptr::null::<f32>(); MAX_TAPS];
        pp[..d.taps].copy_from_slice(&ptrs[..d.taps]);
        let ch = match d.taps {
            9 => f_blocks::<9>(d, &pp, out),
            25 => f_blocks::<25>(d, &pp, out),
            _ => f_blocks::<0>(d, &pp, out),
        };
        f_rest(d, ptrs, out, ch)
    }

    /// Taps the unrolled float path takes (and the most [`f_run`] takes).
    pub(super) const MAX_TAPS: usize = 25;

    /// [`FDepthwise::run`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn f_run(
        d: &FDepthwise,
        x: *const f32,
        offsets: &[usize],
        step: usize,
        n: usize,
        e: &FEpilogue,
    ) {
        match d.taps {
            9 => f_run_taps::<9>(d, x, offsets, step, n, e),
            25 => f_run_taps::<25>(d, x, offsets, step, n, e),
            _ => f_run_taps::<0>(d, x, offsets, step, n, e),
        }
    }

    /// [`f_run`] for `T` taps (0: `d.taps`).
    #[inline(always)]
    unsafe fn f_run_taps<const T: usize>(
        d: &FDepthwise,
        x: *const f32,
        offsets: &[usize],
        step: usize,
        n: usize,
        e: &FEpilogue,
    ) {
        let taps = if T > 0 { T } else { d.taps };
        let offsets = &offsets[..taps];
        let (lo, hi) = (_mm256_set1_ps(e.bounds[0]), _mm256_set1_ps(e.bounds[1]));
        // Channel blocks outside, pixels inside: a block's weights are loaded once for the
        // row (and stay in registers for 3x3 kernels).
        let mut ch = 0;
        while ch + 8 <= d.c {
            let mut w = [_mm256_setzero_ps(); MAX_TAPS];
            for (t, w) in w.iter_mut().enumerate().take(taps) {
                *w = _mm256_loadu_ps(d.w.as_ptr().add(t * d.c + ch));
            }
            let add = _mm256_loadu_ps(e.add.as_ptr().add(ch));
            for i in 0..n {
                let base = x.add(i * step + ch);
                let mut s = _mm256_setzero_ps();
                for (&o, &w) in offsets.iter().zip(&w[..taps]) {
                    s = _mm256_fmadd_ps(_mm256_loadu_ps(base.add(o)), w, s);
                }
                let mut v = _mm256_add_ps(s, add);
                if let Some(r) = e.residual {
                    v = _mm256_add_ps(v, _mm256_loadu_ps(r.add(i * e.step + ch)));
                }
                let out = e.dst.add(i * e.step + ch);
                _mm256_storeu_ps(out, _mm256_min_ps(_mm256_max_ps(v, lo), hi));
            }
            ch += 8;
        }
        for i in 0..n {
            let base = x.add(i * step);
            let dst = e.dst.add(i * e.step);
            let res = e.residual.map(|r| r.add(i * e.step));
            // The channels past the last eight as the per-pixel path sums them (no fused
            // multiply-add).
            for ch in ch..d.c {
                let mut s = 0f32;
                for (t, &o) in offsets.iter().enumerate() {
                    s += *base.add(o + ch) * d.w[t * d.c + ch];
                }
                let mut v = s + e.add[ch];
                if let Some(r) = res {
                    v += *r.add(ch);
                }
                *dst.add(ch) = v.max(e.bounds[0]).min(e.bounds[1]);
            }
        }
    }

    /// Whole sixteen-channel blocks; `T` taps when non-zero, else `d.taps`.
    #[inline(always)]
    unsafe fn f_blocks<const T: usize>(
        d: &FDepthwise,
        pp: &[*const f32; MAX_TAPS],
        out: &mut [f32],
    ) -> usize {
        let taps = if T > 0 { T } else { d.taps };
        let mut ch = 0;
        while ch + 16 <= d.c {
            let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut w = d.w.as_ptr().add(ch);
            for p in &pp[..taps] {
                let x = p.add(ch);
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(w), s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(8)), _mm256_loadu_ps(w.add(8)), s1);
                w = w.add(d.c);
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(ch), s0);
            _mm256_storeu_ps(out.as_mut_ptr().add(ch + 8), s1);
            ch += 16;
        }
        ch
    }

    /// Eight channels at a time from `ch`; returns where it stopped.
    #[inline(always)]
    unsafe fn f_rest(d: &FDepthwise, ptrs: &[*const f32], out: &mut [f32], mut ch: usize) -> usize {
        while ch + 8 <= d.c {
            let mut s = _mm256_setzero_ps();
            for (t, p) in ptrs.iter().enumerate().take(d.taps) {
                let x = _mm256_loadu_ps(p.add(ch));
                s = _mm256_fmadd_ps(x, _mm256_loadu_ps(d.w.as_ptr().add(t * d.c + ch)), s);
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(ch), s);
            ch += 8;
        }
        ch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_and_f32_pixels_match_the_definition() {
        // Whole sixteen-channel blocks, an eight-channel rest and a scalar rest; odd and even
        // tap counts; the int8 extremes.
        for (c, taps) in [(40, 9), (37, 4), (16, 1), (33, 25), (32, 7), (5, 30)] {
            let x: Vec<i8> = (0..taps * c)
                .map(|i| {
                    if i % 7 == 0 {
                        -128
                    } else {
                        ((i * 37) % 255) as u8 as i8
                    }
                })
                .collect();
            let d = QDepthwise::pack(c, taps, |ch, t| {
                if (ch + t) % 5 == 0 {
                    -128
                } else {
                    ((ch * 7 + t * 13) % 255) as u8 as i8
                }
            });
            let ptrs: Vec<*const i8> = (0..taps)
                .map(|t| unsafe { x.as_ptr().add(t * c) })
                .collect();
            let (mut a, mut b) = (vec![0i32; c], vec![0i32; c]);
            unsafe {
                d.pixel(Isa::PORTABLE, &ptrs, &mut a);
                d.pixel(Isa::detect(), &ptrs, &mut b);
            }
            assert_eq!(a, b, "{c} channels, {taps} taps");
            for ch in 0..c {
                let want: i32 = (0..taps)
                    .map(|t| x[t * c + ch] as i32 * d.w[t * c + ch])
                    .sum();
                assert_eq!(a[ch], want);
            }
        }
        // Float: sixteen-channel blocks, eight-channel and scalar rests, unrolled and
        // general tap counts, against the exact (scalar, fixed-order) path.
        for (c, taps) in [(21, 9), (40, 25), (37, 4), (24, 30)] {
            let xf: Vec<f32> = (0..taps * c)
                .map(|i| ((i * 37) % 255) as f32 / 7.0 - 18.0)
                .collect();
            let f = FDepthwise::pack(c, taps, |ch, t| {
                ((ch * 7 + t * 13) % 255) as f32 / 11.0 - 11.0
            });
            let ptrs: Vec<*const f32> = (0..taps)
                .map(|t| unsafe { xf.as_ptr().add(t * c) })
                .collect();
            let (mut a, mut b) = (vec![0f32; c], vec![0f32; c]);
            unsafe {
                f.pixel(Isa::detect(), FloatMode::Exact, &ptrs, &mut a);
                f.pixel(Isa::detect(), FloatMode::Fast, &ptrs, &mut b);
            }
            for (ch, (p, q)) in a.iter().zip(&b).enumerate() {
                let want: f64 = (0..taps)
                    .map(|t| xf[t * c + ch] as f64 * f.w[t * c + ch] as f64)
                    .sum();
                assert!(
                    (*p as f64 - want).abs() < 1e-3 * (1.0 + want.abs()),
                    "{p} {want}"
                );
                assert!(
                    (p - q).abs() < 1e-4 * (1.0 + p.abs()),
                    "{c}x{taps}: {p} {q}"
                );
            }
        }
    }
}
