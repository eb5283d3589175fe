//! From int32 sums to outputs: `v = (acc + bias[c]) · mult[c] + add[c]` per output channel,
//! then either f32 (clamped to the activation's range) or int8 (`round_half_even(v / div) +
//! zp`, clamped; the activation folded into the clamp). The order of operations is fixed (a
//! multiply, then an add, no fused multiply-add, then the division where there is one), so
//! every path gives the same bits.

use super::Isa;

/// What the epilogue writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Output {
    /// f32 values clamped to `[lo, hi]` (ReLU: `[0, inf)`; none: infinite bounds).
    F32 {
        /// Lower clamp.
        lo: f32,
        /// Upper clamp.
        hi: f32,
    },
    /// int8 values `round(v) + zp` clamped to `[lo, hi]` (in the int8 domain).
    Q8 {
        /// Zero point.
        zp: i32,
        /// Lower clamp.
        lo: i32,
        /// Upper clamp.
        hi: i32,
    },
    /// The int32 sums plus `bias` (no scaling).
    I32,
}

/// Per-channel constants of one layer's epilogue.
#[derive(Debug, Clone)]
pub(crate) struct Requant {
    /// Added to the int32 sum (a bias, minus the input zero point times the weight sums).
    pub bias: Vec<i32>,
    /// Multiplies the sum.
    pub mult: Vec<f32>,
    /// Added after the multiply.
    pub add: Vec<f32>,
    /// Divides `v` before an int8 output rounds it: a `QuantizeLinear`'s scale where the
    /// graph computed the float value with operators of its own (QOperator files:
    /// `ConvInteger`, `Cast`, `Mul`, then `QuantizeLinear`), which divide as the spec says;
    /// 1 where the scale went into `mult` (QDQ layers, which ONNX Runtime fuses that way).
    /// Folding it into `mult` instead lands one level off where `v / scale` is next to a
    /// rounding tie.
    pub div: f32,
    /// Whether `mult` and `add` came from the graph's own float operators (see `div`).
    pub float_ops: bool,
    /// What is written.
    pub out: Output,
}

impl Requant {
    /// Applies channels `ch0..ch0 + acc.len()` to one row of sums, writing f32 values.
    pub fn to_f32(&self, isa: Isa, acc: &[i32], ch0: usize, dst: &mut [f32]) {
        let Output::F32 { lo, hi } = self.out else {
            unreachable!("an f32 epilogue");
        };
        let n = acc.len();
        let (b, m, a) = (
            &self.bias[ch0..ch0 + n],
            &self.mult[ch0..ch0 + n],
            &self.add[ch0..ch0 + n],
        );
        #[cfg(target_arch = "x86_64")]
        if isa.is_avx2() {
            // SAFETY: AVX2 is detected; the slices have n elements each.
            return unsafe { x86::to_f32(acc, b, m, a, lo, hi, dst) };
        }
        let _ = isa;
        dequantize_row(acc, b, m, a, [lo, hi], None, dst);
    }

    /// Applies channels `ch0..ch0 + acc.len()` to one row of sums, writing int8 values.
    pub fn to_q8(&self, isa: Isa, acc: &[i32], ch0: usize, dst: &mut [i8]) {
        let Output::Q8 { zp, lo, hi } = self.out else {
            unreachable!("an int8 epilogue");
        };
        let n = acc.len();
        let (b, m, a) = (
            &self.bias[ch0..ch0 + n],
            &self.mult[ch0..ch0 + n],
            &self.add[ch0..ch0 + n],
        );
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx512() {
            // SAFETY: AVX-512 is detected; the slices have n elements each.
            return unsafe {
                super::requant_avx512::to_q8(acc, b, m, a, [zp, lo, hi], self.div, dst)
            };
        }
        #[cfg(target_arch = "x86_64")]
        if isa.is_avx2() {
            // SAFETY: AVX2 is detected; the slices have n elements each.
            return unsafe { x86::to_q8(acc, b, m, a, [zp, lo, hi], self.div, dst) };
        }
        let _ = isa;
        for i in 0..n {
            dst[i] = quantize(
                (((acc[i] + b[i]) as f32) * m[i] + a[i]) / self.div,
                zp,
                lo,
                hi,
            );
        }
    }

    /// Applies channels `ch0..ch0 + cols` to a tile of rows (`acc[r][..cols]`), writing row
    /// `r`'s int8 values at `dst + r · stride`. One call per micro-kernel tile: the channels'
    /// constants are loaded once for all its rows, which is what makes small layers (a 1x1
    /// expansion over 16 input channels spends as long here as in its products) cheap.
    ///
    /// # Safety
    /// `dst + r · stride` must be valid for `cols` bytes for every row.
    pub unsafe fn tile_to_q8<const W: usize>(
        &self,
        isa: Isa,
        acc: &[[i32; W]],
        cols: usize,
        ch0: usize,
        dst: *mut i8,
        stride: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            let Output::Q8 { zp, lo, hi } = self.out else {
                unreachable!("an int8 epilogue");
            };
            let c = ch0..ch0 + cols;
            let (b, m, a) = (&self.bias[c.clone()], &self.mult[c.clone()], &self.add[c]);
            let (bounds, div) = ([zp, lo, hi], self.div);
            if isa.has_avx512() && cols <= 16 {
                use super::requant_avx512::tile_to_q8;
                return tile_to_q8(acc, cols, b, m, a, bounds, div, dst, stride);
            }
            if isa.is_avx2() && (cols == 16 || cols == 8) {
                return x86::tile_to_q8(acc, cols, b, m, a, bounds, div, dst, stride);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            let out = std::slice::from_raw_parts_mut(dst.add(r * stride), cols);
            self.to_q8(isa, &row[..cols], ch0, out);
        }
    }

    /// Like [`Requant::to_f32`], adding `residual` before the clamp.
    pub fn to_f32_plus(
        &self,
        isa: Isa,
        acc: &[i32],
        ch0: usize,
        residual: &[f32],
        dst: &mut [f32],
    ) {
        let Output::F32 { lo, hi } = self.out else {
            unreachable!("an f32 epilogue");
        };
        let n = acc.len();
        let (b, m, a) = (
            &self.bias[ch0..ch0 + n],
            &self.mult[ch0..ch0 + n],
            &self.add[ch0..ch0 + n],
        );
        #[cfg(target_arch = "x86_64")]
        if isa.is_avx2() {
            // SAFETY: AVX2 is detected; the slices have n elements each.
            return unsafe { x86::to_f32_plus(acc, b, m, a, residual, lo, hi, dst) };
        }
        let _ = isa;
        dequantize_row(acc, b, m, a, [lo, hi], Some(residual), dst);
    }

    /// The f32 epilogue of a float layer, in place: `v + add[c] (+ residual)`, clamped.
    pub fn finish_f32(&self, isa: Isa, ch0: usize, residual: Option<&[f32]>, dst: &mut [f32]) {
        let Output::F32 { lo, hi } = self.out else {
            unreachable!("an f32 epilogue");
        };
        let a = &self.add[ch0..ch0 + dst.len()];
        #[cfg(target_arch = "x86_64")]
        if isa.is_avx2() {
            // SAFETY: AVX2 is detected.
            return unsafe { x86::finish_f32(a, [lo, hi], residual, dst) };
        }
        let _ = isa;
        finish_f32(a, [lo, hi], residual, dst)
    }

    /// [`Requant::to_f32`] (or [`Requant::to_f32_plus`]) for a tile of rows (`acc[r][..cols]`),
    /// writing row `r` at `dst + r · stride`: one call per tile rather than per row, which is
    /// what a layer with three output channels (LeNet's first) spends most on otherwise.
    ///
    /// # Safety
    /// `dst` and `residual` (when given) must be valid for every row's `cols` values.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_to_f32<const W: usize>(
        &self,
        isa: Isa,
        acc: &[[i32; W]],
        cols: usize,
        ch0: usize,
        dst: *mut f32,
        stride: usize,
        residual: Option<*const f32>,
    ) {
        let Output::F32 { lo, hi } = self.out else {
            unreachable!("an f32 epilogue");
        };
        let c = ch0..ch0 + cols;
        let (b, m, a) = (&self.bias[c.clone()], &self.mult[c.clone()], &self.add[c]);
        for (r, row) in acc.iter().enumerate() {
            let out = std::slice::from_raw_parts_mut(dst.add(r * stride), cols);
            let res = residual.map(|p| std::slice::from_raw_parts(p.add(r * stride), cols));
            #[cfg(target_arch = "x86_64")]
            if isa.is_avx2() && cols >= 8 {
                match res {
                    Some(res) => x86::to_f32_plus(&row[..cols], b, m, a, res, lo, hi, out),
                    None => x86::to_f32(&row[..cols], b, m, a, lo, hi, out),
                }
                continue;
            }
            dequantize_row(&row[..cols], b, m, a, [lo, hi], res, out);
        }
        let _ = isa;
    }

    /// The f32 epilogue of a float layer's tile: `acc[r][j] + add[ch0 + j] (+ residual)`,
    /// clamped, written at `dst + r · stride + j`. One call per tile, in loops the compiler
    /// vectorizes (for AVX where present): a per-row call costs more than a small layer's
    /// row of sums.
    ///
    /// # Safety
    /// `dst` and `residual` (when given) must be valid for every row's `cols` values.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_f32<const W: usize>(
        &self,
        isa: Isa,
        acc: &[[f32; W]],
        cols: usize,
        ch0: usize,
        dst: *mut f32,
        stride: usize,
        residual: Option<*const f32>,
    ) {
        let Output::F32 { lo, hi } = self.out else {
            unreachable!("an f32 epilogue");
        };
        let a = &self.add[ch0..ch0 + cols];
        #[cfg(target_arch = "x86_64")]
        if isa.is_avx2() {
            return x86::tile_f32(acc, a, [lo, hi], dst, stride, residual);
        }
        let _ = isa;
        tile_f32(acc, a, [lo, hi], dst, stride, residual)
    }

    /// Applies channels `ch0..` to one row of sums, writing int32 values.
    pub fn to_i32(&self, acc: &[i32], ch0: usize, dst: &mut [i32]) {
        for (i, (d, &v)) in dst.iter_mut().zip(acc).enumerate() {
            *d = v + self.bias[ch0 + i];
        }
    }
}

/// `clamp((acc + bias) · mult + add (+ residual))` per value, the form every f32 epilogue of
/// int32 sums computes (vector paths give the same bits: a multiply, then adds).
#[inline(always)]
fn dequantize_row(
    acc: &[i32],
    b: &[i32],
    m: &[f32],
    a: &[f32],
    [lo, hi]: [f32; 2],
    residual: Option<&[f32]>,
    dst: &mut [f32],
) {
    for i in 0..dst.len() {
        let v = ((acc[i] + b[i]) as f32) * m[i] + a[i];
        dst[i] = match residual {
            Some(r) => (v + r[i]).max(lo).min(hi),
            None => v.clamp(lo, hi),
        };
    }
}

/// The body of [`Requant::finish_f32`].
#[inline(always)]
fn finish_f32(a: &[f32], [lo, hi]: [f32; 2], residual: Option<&[f32]>, dst: &mut [f32]) {
    match residual {
        Some(r) => dst
            .iter_mut()
            .zip(a)
            .zip(r)
            .for_each(|((d, &a), &r)| *d = ((*d + a) + r).max(lo).min(hi)),
        None => dst
            .iter_mut()
            .zip(a)
            .for_each(|(d, &a)| *d = (*d + a).max(lo).min(hi)),
    }
}

/// The body of [`Requant::tile_f32`], as zipped slices (no bounds checks, so it vectorizes).
#[inline(always)]
unsafe fn tile_f32<const W: usize>(
    acc: &[[f32; W]],
    a: &[f32],
    [lo, hi]: [f32; 2],
    dst: *mut f32,
    stride: usize,
    residual: Option<*const f32>,
) {
    let cols = a.len();
    for (r, row) in acc.iter().enumerate() {
        let out = std::slice::from_raw_parts_mut(dst.add(r * stride), cols);
        let sums = out.iter_mut().zip(&row[..cols]).zip(a);
        match residual {
            Some(res) => {
                let res = std::slice::from_raw_parts(res.add(r * stride), cols);
                sums.zip(res)
                    .for_each(|(((o, &v), &a), &q)| *o = ((v + a) + q).max(lo).min(hi));
            }
            None => sums.for_each(|((o, &v), &a)| *o = (v + a).max(lo).min(hi)),
        }
    }
}

/// `round_half_even(v) + zp`, clamped to `[lo, hi]`: ONNX `QuantizeLinear`'s rounding.
pub(crate) fn quantize(v: f32, zp: i32, lo: i32, hi: i32) -> i8 {
    // Clamp in float first, at the integer bounds less the zero point: a huge v must not wrap
    // when converted, and NaN goes low (`f32::max` ignores it), as `vmaxps` does on AVX2.
    let r = v
        .max((lo - zp) as f32)
        .min((hi - zp) as f32)
        .round_ties_even() as i32;
    (r + zp) as i8
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn to_f32(
        acc: &[i32],
        b: &[i32],
        m: &[f32],
        a: &[f32],
        lo: f32,
        hi: f32,
        dst: &mut [f32],
    ) {
        let n = acc.len();
        let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let mut i = 0;
        while i + 8 <= n {
            let s = _mm256_add_epi32(
                _mm256_loadu_si256(acc.as_ptr().add(i) as *const __m256i),
                _mm256_loadu_si256(b.as_ptr().add(i) as *const __m256i),
            );
            let v = _mm256_add_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_loadu_ps(m.as_ptr().add(i))),
                _mm256_loadu_ps(a.as_ptr().add(i)),
            );
            _mm256_storeu_ps(
                dst.as_mut_ptr().add(i),
                _mm256_min_ps(_mm256_max_ps(v, vlo), vhi),
            );
            i += 8;
        }
        let (b, m, a) = (&b[i..], &m[i..], &a[i..]);
        super::dequantize_row(&acc[i..], b, m, a, [lo, hi], None, &mut dst[i..]);
    }

    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn to_f32_plus(
        acc: &[i32],
        b: &[i32],
        m: &[f32],
        a: &[f32],
        r: &[f32],
        lo: f32,
        hi: f32,
        dst: &mut [f32],
    ) {
        let n = acc.len();
        let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let mut i = 0;
        while i + 8 <= n {
            let s = _mm256_add_epi32(
                _mm256_loadu_si256(acc.as_ptr().add(i) as *const __m256i),
                _mm256_loadu_si256(b.as_ptr().add(i) as *const __m256i),
            );
            let v = _mm256_add_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_loadu_ps(m.as_ptr().add(i))),
                _mm256_loadu_ps(a.as_ptr().add(i)),
            );
            let v = _mm256_add_ps(v, _mm256_loadu_ps(r.as_ptr().add(i)));
            _mm256_storeu_ps(
                dst.as_mut_ptr().add(i),
                _mm256_min_ps(_mm256_max_ps(v, vlo), vhi),
            );
            i += 8;
        }
        let (b, m, a) = (&b[i..], &m[i..], &a[i..]);
        super::dequantize_row(&acc[i..], b, m, a, [lo, hi], Some(&r[i..]), &mut dst[i..]);
    }

    /// [`super::finish_f32`] compiled for AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn finish_f32(
        a: &[f32],
        bounds: [f32; 2],
        residual: Option<&[f32]>,
        dst: &mut [f32],
    ) {
        super::finish_f32(a, bounds, residual, dst)
    }

    /// [`super::tile_f32`] compiled for AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_f32<const W: usize>(
        acc: &[[f32; W]],
        a: &[f32],
        bounds: [f32; 2],
        dst: *mut f32,
        stride: usize,
        residual: Option<*const f32>,
    ) {
        super::tile_f32(acc, a, bounds, dst, stride, residual)
    }

    /// One vector's channel constants and clamp bounds.
    #[derive(Clone, Copy)]
    struct Constants {
        bias: __m256i,
        mult: __m256,
        add: __m256,
        lo: __m256,
        hi: __m256,
        zp: __m256i,
        div: Option<__m256>,
    }

    /// `round(clamp(((s + bias) · mult + add) / div)) + zp`, eight lanes.
    #[inline(always)]
    unsafe fn requant8(s: __m256i, k: Constants) -> __m256i {
        let mut v = _mm256_add_ps(
            _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(s, k.bias)), k.mult),
            k.add,
        );
        if let Some(d) = k.div {
            v = _mm256_div_ps(v, d);
        }
        let v = _mm256_min_ps(_mm256_max_ps(v, k.lo), k.hi);
        _mm256_add_epi32(_mm256_cvtps_epi32(v), k.zp)
    }

    /// Channels `i..i + 8`'s constants.
    #[inline(always)]
    unsafe fn constants(
        b: &[i32],
        m: &[f32],
        a: &[f32],
        [zp, lo, hi]: [i32; 3],
        div: f32,
        i: usize,
    ) -> Constants {
        Constants {
            bias: load(b, i),
            mult: _mm256_loadu_ps(m.as_ptr().add(i)),
            add: _mm256_loadu_ps(a.as_ptr().add(i)),
            lo: _mm256_set1_ps((lo - zp) as f32),
            hi: _mm256_set1_ps((hi - zp) as f32),
            zp: _mm256_set1_epi32(zp),
            div: (div != 1.0).then(|| _mm256_set1_ps(div)),
        }
    }

    /// Eight int32 from `s[i..]`.
    #[inline(always)]
    unsafe fn load(s: &[i32], i: usize) -> __m256i {
        _mm256_loadu_si256(s.as_ptr().add(i) as *const __m256i)
    }

    /// Eight or sixteen columns of every row. The clamp happens in float, at the bounds less
    /// the zero point: they are integers, so clamping before rounding gives what rounding
    /// and then clamping gives, and the integer clamp goes away.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_to_q8<const W: usize>(
        acc: &[[i32; W]],
        cols: usize,
        b: &[i32],
        m: &[f32],
        a: &[f32],
        bounds: [i32; 3],
        div: f32,
        dst: *mut i8,
        stride: usize,
    ) {
        let k0 = constants(b, m, a, bounds, div, 0);
        if cols == 16 {
            let k1 = constants(b, m, a, bounds, div, 8);
            for (r, row) in acc.iter().enumerate() {
                let q0 = requant8(load(row, 0), k0);
                let q1 = requant8(load(row, 8), k1);
                // packs works within 128-bit halves: [q0 0-3, q1 0-3 | q0 4-7, q1 4-7] as
                // int16, put in order by 64-bit quarters (q0 0-7, q1 0-7), then narrowed.
                let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(q0, q1));
                let bytes =
                    _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
                _mm_storeu_si128(dst.add(r * stride) as *mut __m128i, bytes);
            }
        } else {
            for (r, row) in acc.iter().enumerate() {
                let q = requant8(load(row, 0), k0);
                let h =
                    _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
                _mm_storel_epi64(dst.add(r * stride) as *mut __m128i, _mm_packs_epi16(h, h));
            }
        }
    }

    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn to_q8(
        acc: &[i32],
        b: &[i32],
        m: &[f32],
        a: &[f32],
        [zp, lo, hi]: [i32; 3],
        div: f32,
        dst: &mut [i8],
    ) {
        // As in `tile_to_q8`: the clamp in float at integer bounds, sixteen values a pass.
        let n = acc.len();
        let k = |i| constants(b, m, a, [zp, lo, hi], div, i);
        let mut i = 0;
        while i + 16 <= n {
            let q0 = requant8(load(acc, i), k(i));
            let q1 = requant8(load(acc, i + 8), k(i + 8));
            let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(q0, q1));
            let bytes =
                _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
            _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, bytes);
            i += 16;
        }
        if i + 8 <= n {
            let q = requant8(load(acc, i), k(i));
            let h = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            _mm_storel_epi64(
                dst.as_mut_ptr().add(i) as *mut __m128i,
                _mm_packs_epi16(h, h),
            );
            i += 8;
        }
        for i in i..n {
            let v = (((acc[i] + b[i]) as f32) * m[i] + a[i]) / div;
            dst[i] = super::quantize(v, zp, lo, hi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every set this CPU has against the portable path, bit for bit.
    #[test]
    fn every_path_rounds_and_clamps_alike() {
        for isa in Isa::available() {
            // Without and with a division (a QuantizeLinear after the graph's own float ops).
            for div in [1.0, 0.037] {
                rounds_and_clamps_like_the_portable_path(isa, div);
            }
        }
    }

    fn rounds_and_clamps_like_the_portable_path(isa: Isa, div: f32) {
        let acc: Vec<i32> = (0..21).map(|i| (i * 7919 % 4001) - 2000).collect();
        let r = |out| Requant {
            bias: (0..21).map(|i| i * 3 - 30).collect(),
            mult: (0..21).map(|i| (0.011 + i as f32 * 0.0007) * div).collect(),
            add: (0..21).map(|i| (i as f32 - 10.0) * 0.25 * div).collect(),
            div,
            float_ops: div != 1.0,
            out,
        };
        let q = r(Output::Q8 {
            zp: -3,
            lo: -128,
            hi: 100,
        });
        let (mut a, mut b) = (vec![0i8; 19], vec![0i8; 19]);
        q.to_q8(Isa::PORTABLE, &acc[2..], 2, &mut a);
        q.to_q8(isa, &acc[2..], 2, &mut b);
        assert_eq!(a, b);
        let f = r(Output::F32 { lo: 0.0, hi: 6.0 });
        let (mut a, mut b) = (vec![0f32; 21], vec![0f32; 21]);
        f.to_f32(Isa::PORTABLE, &acc, 0, &mut a);
        f.to_f32(isa, &acc, 0, &mut b);
        assert_eq!(a, b);
        // Whole tiles: sixteen, eight and odd column counts, one to four rows, sums far
        // outside the int8 range (ties are checked on `quantize` below).
        let mut tile = [[0i32; 16]; 8];
        for (i, v) in tile.iter_mut().flatten().enumerate() {
            *v = match i % 5 {
                0 => 1 << 30,
                1 => -(1 << 30),
                _ => (i as i32 * 7919 % 4001) - 2000,
            };
        }
        for (cols, rows) in [(16, 8), (16, 4), (16, 1), (8, 3), (5, 2), (13, 8), (1, 1)] {
            let mut got = vec![0i8; rows * 21];
            unsafe { q.tile_to_q8(isa, &tile[..rows], cols, 3, got.as_mut_ptr(), 21) };
            for r in 0..rows {
                let mut want = vec![0i8; cols];
                q.to_q8(Isa::PORTABLE, &tile[r][..cols], 3, &mut want);
                assert_eq!(
                    got[r * 21..r * 21 + cols],
                    want[..],
                    "{} {cols} columns, row {r}",
                    isa.name()
                );
            }
        }
        // Rows of every length the vector path splits differently, with huge sums.
        let flat: Vec<i32> = tile.iter().flatten().copied().collect();
        for n in [3, 8, 11, 16, 19] {
            let (mut a, mut b) = (vec![0i8; n], vec![0i8; n]);
            q.to_q8(Isa::PORTABLE, &flat[..n], 1, &mut a);
            q.to_q8(isa, &flat[..n], 1, &mut b);
            assert_eq!(a, b, "{} {n} values", isa.name());
        }
        // Half-way values go to the even neighbour, as QuantizeLinear says.
        assert_eq!(
            (quantize(2.5, 0, -128, 127), quantize(-3.5, 0, -128, 127)),
            (2, -4)
        );
        assert_eq!(quantize(1e30, 5, -128, 127), 127);
        // NaN (a corrupt scale) goes to the low bound on every path.
        assert_eq!(quantize(f32::NAN, 5, -100, 127), -100);
        let nan = Requant {
            bias: vec![0; 16],
            mult: vec![f32::NAN; 16],
            add: vec![0.0; 16],
            div: 1.0,
            float_ops: false,
            out: Output::Q8 {
                zp: 5,
                lo: -100,
                hi: 127,
            },
        };
        let (mut a, mut b) = (vec![0i8; 16], vec![0i8; 16]);
        nan.to_q8(Isa::PORTABLE, &[7; 16], 0, &mut a);
        nan.to_q8(isa, &[7; 16], 0, &mut b);
        assert_eq!((a.clone(), b), (vec![-100; 16], a));
    }
}
