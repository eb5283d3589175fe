//! int8 dot-product kernels: the arithmetic every integer MatMul and Conv reduces to.
//!
//! Both operands are signed 8-bit and rows are zero-padded to [`K_ALIGN`] bytes, so the SIMD
//! loops need no tails. Weights are restricted to [-127, 127] (symmetric quantization never
//! produces -128): the AVX2 path multiplies |a| (u8) by b·sign(a) (i8) with `vpmaddubsw`,
//! whose int16 pair sums then stay within 2·128·127 = 32512 and never saturate, so every
//! path gives the exact integer result. Weights holding -128 are run on the portable path.

/// Every packed row is padded with zeros to a multiple of this many bytes.
pub(crate) const K_ALIGN: usize = 32;

/// `k` rounded up to the padding unit.
pub(crate) fn padded(k: usize) -> usize {
    k.div_ceil(K_ALIGN) * K_ALIGN
}

/// The instruction set the kernels run on. Only [`Isa::detect`] (and [`Isa::PORTABLE`]) make
/// one, so holding an `Isa` that names AVX2 proves the CPU has it: the unsafe SIMD paths
/// below rely on that, and nothing outside this module can forge it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Isa(Set);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Set {
    /// Plain Rust (any CPU).
    Portable,
    /// x86_64 with AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// aarch64 NEON (always present on aarch64).
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Isa {
    /// Plain Rust, on any CPU.
    pub(crate) const PORTABLE: Isa = Isa(Set::Portable);

    /// The best set this CPU supports, detected once per process.
    pub(crate) fn detect() -> Isa {
        static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") {
                    return Isa(Set::Avx2);
                }
            }
            #[cfg(target_arch = "aarch64")]
            {
                return Isa(Set::Neon);
            }
            #[allow(unreachable_code)]
            Isa::PORTABLE
        })
    }

    /// Whether it is x86_64's AVX2 (then the CPU has AVX2).
    pub(crate) fn is_avx2(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.0 == Set::Avx2
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Its name, for reports.
    pub(crate) fn name(self) -> &'static str {
        match self.0 {
            Set::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Set::Avx2 => "avx2",
            #[cfg(target_arch = "aarch64")]
            Set::Neon => "neon",
        }
    }
}

/// Which operand of [`dots`] holds the weights (the one kept within [-127, 127]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Weights {
    /// The rows of `b` are weights (a dense layer: one activation row against every filter).
    Rows,
    /// `a` is the weight row (a convolution: one filter against every patch).
    Shared,
}

/// `out[j] = Σ_p a[p] · b[j·k + p]` for every row `j` of `b`.
///
/// `a.len() == k`, `b.len() == out.len() · k`, `k` a multiple of [`K_ALIGN`]; the operand
/// `weights` names must not hold -128 unless `isa` is [`Isa::PORTABLE`]. Violations of the
/// lengths are caught here, not in the unsafe loops.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) fn dots(isa: Isa, weights: Weights, a: &[i8], b: &[i8], k: usize, out: &mut [i32]) {
    assert!(
        k % K_ALIGN == 0 && a.len() == k && b.len() == out.len() * k,
        "kernel contract violated: k {k}, a {}, b {}, out {}",
        a.len(),
        b.len(),
        out.len()
    );
    match isa.0 {
        Set::Portable => dots_portable(a, b, k, out),
        // SAFETY: only detection makes an AVX2 `Isa`; the lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        Set::Avx2 => unsafe {
            match weights {
                Weights::Rows => x86::dots_avx2::<false>(a, b, k, out),
                Weights::Shared => x86::dots_avx2::<true>(a, b, k, out),
            }
        },
        // SAFETY: NEON is part of the aarch64 baseline; the lengths were checked above.
        #[cfg(target_arch = "aarch64")]
        Set::Neon => unsafe { arm::dots_neon(a, b, k, out) },
    }
}

/// Partial sums per dot product in the f32 kernels.
const F32_LANES: usize = 8;

/// `out[r·n + j] = Σ_p a[r·k + p] · b[j·k + p]`: every row of `a` against every row of `b`
/// (a dense layer, `b` holding one output column per row), in f32.
///
/// Every dot product is summed in the same order whatever the instruction set, the batch size
/// or the blocking: lane `l` of eight accumulates the products at `p ≡ l (mod 8)` in
/// increasing `p`, the `k mod 8` tail is summed on its own, then the lanes are added in a
/// fixed tree and the tail last; no fused multiply-add. So every CPU gives the same bits.
pub(crate) fn matmul_f32(isa: Isa, a: &[f32], b: &[f32], k: usize, n: usize, out: &mut [f32]) {
    // `n` is given, not derived from `b.len() / k`: with k = 0 (an empty layer) `b` is empty
    // whatever `n` is, and every output is an empty sum.
    let rows = out.len().checked_div(n).unwrap_or(0);
    assert!(
        b.len() == n * k && a.len() == rows * k && out.len() == rows * n,
        "kernel contract violated: k {k}, n {n}, a {}, b {}, out {}",
        a.len(),
        b.len(),
        out.len()
    );
    if k == 0 {
        out.fill(0.0);
        return;
    }
    matmul_f32_blocked(isa, a, b, k, n, out);
}

/// Blocks of eight columns (rows of `b`, 8·k floats: in L1 or L2 for students' layers) are
/// streamed once, each against pairs of activation rows: 2 x 4 dot products share every
/// load, and their accumulators (one 8-lane group each) fit the registers of AVX2 and NEON.
fn matmul_f32_blocked(isa: Isa, a: &[f32], b: &[f32], k: usize, n: usize, out: &mut [f32]) {
    let rows = a.len() / k;
    let mut j = 0;
    while j < n {
        let cols = (n - j).min(8);
        let mut r = 0;
        while r < rows {
            let pair = (rows - r).min(2);
            match (pair, cols) {
                (2, 8) => {
                    f32_tile::<2, 4>(isa, a, b, k, n, [r, j], out);
                    f32_tile::<2, 4>(isa, a, b, k, n, [r, j + 4], out);
                }
                // A lone row (batch 1) takes eight columns at once: enough independent
                // accumulators to hide the adds' latency.
                (1, 8) => f32_tile::<1, 8>(isa, a, b, k, n, [r, j], out),
                (2, _) => {
                    (0..cols).for_each(|c| f32_tile::<2, 1>(isa, a, b, k, n, [r, j + c], out))
                }
                _ => (0..cols).for_each(|c| f32_tile::<1, 1>(isa, a, b, k, n, [r, j + c], out)),
            }
            r += pair;
        }
        j += cols;
    }
}

/// Eight partial sums per dot product.
type Lanes = [f32; F32_LANES];

/// Rows `r..r + R` of `a` against rows `j..j + C` of `b`: the lane sums over the first
/// `split` values from the SIMD loop, then the tail and the reduction, the same for all.
fn f32_tile<const R: usize, const C: usize>(
    isa: Isa,
    a: &[f32],
    b: &[f32],
    k: usize,
    n: usize,
    [r, j]: [usize; 2],
    out: &mut [f32],
) {
    let xs: [&[f32]; R] = std::array::from_fn(|i| &a[(r + i) * k..(r + i + 1) * k]);
    let ws: [&[f32]; C] = std::array::from_fn(|c| &b[(j + c) * k..(j + c + 1) * k]);
    let split = k - k % F32_LANES;
    let acc: [[Lanes; C]; R] = match isa.0 {
        // SAFETY: only detection makes an AVX2 `Isa`; every row holds `k >= split` values.
        #[cfg(target_arch = "x86_64")]
        Set::Avx2 => unsafe { x86::lane_sums_f32(xs, ws, split) },
        // SAFETY: NEON is part of the aarch64 baseline; rows hold `k >= split` values.
        #[cfg(target_arch = "aarch64")]
        Set::Neon => unsafe { arm::lane_sums_f32(xs, ws, split) },
        Set::Portable => lane_sums_portable(xs, ws, split),
    };
    for i in 0..R {
        for c in 0..C {
            let mut tail = 0f32;
            for q in split..k {
                tail += xs[i][q] * ws[c][q];
            }
            let mut v = acc[i][c];
            let mut width = F32_LANES / 2;
            while width > 0 {
                for l in 0..width {
                    v[l] += v[l + width];
                }
                width /= 2;
            }
            out[(r + i) * n + j + c] = v[0] + tail;
        }
    }
}

/// Lane `l` of each dot product: Σ x[p]·w[p] over p ≡ l (mod 8), p < split, in order.
fn lane_sums_portable<const R: usize, const C: usize>(
    xs: [&[f32]; R],
    ws: [&[f32]; C],
    split: usize,
) -> [[Lanes; C]; R] {
    let mut acc = [[[0f32; F32_LANES]; C]; R];
    for p in (0..split).step_by(F32_LANES) {
        for i in 0..R {
            for c in 0..C {
                for l in 0..F32_LANES {
                    acc[i][c][l] += xs[i][p + l] * ws[c][p + l];
                }
            }
        }
    }
    acc
}

fn dots_portable(a: &[i8], b: &[i8], k: usize, out: &mut [i32]) {
    for (o, row) in out.iter_mut().zip(b.chunks_exact(k)) {
        *o = a.iter().zip(row).map(|(&x, &w)| x as i32 * w as i32).sum();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::lane_sums_portable`] in AVX2 registers: one `__m256` per dot product, a
    /// multiply then an add per lane (no FMA), so the sums are the portable ones bit for bit.
    #[target_feature(enable = "avx2")]
    pub unsafe fn lane_sums_f32<const R: usize, const C: usize>(
        xs: [&[f32]; R],
        ws: [&[f32]; C],
        split: usize,
    ) -> [[super::Lanes; C]; R] {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut p = 0;
        while p < split {
            let mut x = [_mm256_setzero_ps(); R];
            for i in 0..R {
                x[i] = _mm256_loadu_ps(xs[i].as_ptr().add(p));
            }
            for c in 0..C {
                let w = _mm256_loadu_ps(ws[c].as_ptr().add(p));
                for i in 0..R {
                    acc[i][c] = _mm256_add_ps(acc[i][c], _mm256_mul_ps(x[i], w));
                }
            }
            p += 8;
        }
        let mut out = [[[0f32; 8]; C]; R];
        for i in 0..R {
            for c in 0..C {
                _mm256_storeu_ps(out[i][c].as_mut_ptr(), acc[i][c]);
            }
        }
        out
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// The four horizontal sums of four accumulators at once (two rounds of `vphaddd`):
    /// with short rows (a 5x5 kernel pads to 32 bytes) per-accumulator reductions cost more
    /// than the products.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hsum4(c0: __m256i, c1: __m256i, c2: __m256i, c3: __m256i) -> [i32; 4] {
        let s = _mm256_hadd_epi32(_mm256_hadd_epi32(c0, c1), _mm256_hadd_epi32(c2, c3));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let mut out = [0i32; 4];
        _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, s);
        out
    }

    /// a · b in int32 pair sums as |x| · (y · sign x), where y is the operand within
    /// [-127, 127] (the weights) so its negation cannot overflow: `vpmaddubsw` then sums
    /// pairs of at most 128·127 and never saturates. `SHARED_W`: `a` holds the weights.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn madd<const SHARED_W: bool>(
        abs_a: __m256i,
        a: __m256i,
        b: __m256i,
        ones: __m256i,
    ) -> __m256i {
        let prod = if SHARED_W {
            _mm256_maddubs_epi16(_mm256_sign_epi8(b, b), _mm256_sign_epi8(a, b))
        } else {
            _mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b, a))
        };
        _mm256_madd_epi16(prod, ones)
    }

    /// Four rows of `b` per pass so each load of `a` serves four dot products.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dots_avx2<const SHARED_W: bool>(a: &[i8], b: &[i8], k: usize, out: &mut [i32]) {
        let ones = _mm256_set1_epi16(1);
        let pa = a.as_ptr();
        let pb = b.as_ptr();
        let n = out.len();
        let mut j = 0;
        while j + 4 <= n {
            let (mut c0, mut c1, mut c2, mut c3) = (
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
            );
            let rows = [
                pb.add(j * k),
                pb.add((j + 1) * k),
                pb.add((j + 2) * k),
                pb.add((j + 3) * k),
            ];
            let mut p = 0;
            while p < k {
                let va = _mm256_loadu_si256(pa.add(p) as *const __m256i);
                let ua = _mm256_sign_epi8(va, va);
                let load = |r: *const i8| _mm256_loadu_si256(r.add(p) as *const __m256i);
                c0 = _mm256_add_epi32(c0, madd::<SHARED_W>(ua, va, load(rows[0]), ones));
                c1 = _mm256_add_epi32(c1, madd::<SHARED_W>(ua, va, load(rows[1]), ones));
                c2 = _mm256_add_epi32(c2, madd::<SHARED_W>(ua, va, load(rows[2]), ones));
                c3 = _mm256_add_epi32(c3, madd::<SHARED_W>(ua, va, load(rows[3]), ones));
                p += 32;
            }
            out[j..j + 4].copy_from_slice(&hsum4(c0, c1, c2, c3));
            j += 4;
        }
        while j < n {
            let mut c = _mm256_setzero_si256();
            let row = pb.add(j * k);
            let mut p = 0;
            while p < k {
                let va = _mm256_loadu_si256(pa.add(p) as *const __m256i);
                let ua = _mm256_sign_epi8(va, va);
                let vb = _mm256_loadu_si256(row.add(p) as *const __m256i);
                c = _mm256_add_epi32(c, madd::<SHARED_W>(ua, va, vb, ones));
                p += 32;
            }
            out[j] = hsum(c);
            j += 1;
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    /// [`super::lane_sums_portable`] in NEON registers: two `float32x4_t` per dot product
    /// (lanes 0-3 and 4-7), a multiply then an add (no FMA), bit for bit the portable sums.
    pub unsafe fn lane_sums_f32<const R: usize, const C: usize>(
        xs: [&[f32]; R],
        ws: [&[f32]; C],
        split: usize,
    ) -> [[super::Lanes; C]; R] {
        let zero = vdupq_n_f32(0.0);
        let mut lo = [[zero; C]; R];
        let mut hi = [[zero; C]; R];
        let mut p = 0;
        while p < split {
            let mut x = [[zero; 2]; R];
            for i in 0..R {
                x[i] = [
                    vld1q_f32(xs[i].as_ptr().add(p)),
                    vld1q_f32(xs[i].as_ptr().add(p + 4)),
                ];
            }
            for c in 0..C {
                let w0 = vld1q_f32(ws[c].as_ptr().add(p));
                let w1 = vld1q_f32(ws[c].as_ptr().add(p + 4));
                for i in 0..R {
                    lo[i][c] = vaddq_f32(lo[i][c], vmulq_f32(x[i][0], w0));
                    hi[i][c] = vaddq_f32(hi[i][c], vmulq_f32(x[i][1], w1));
                }
            }
            p += 8;
        }
        let mut out = [[[0f32; 8]; C]; R];
        for i in 0..R {
            for c in 0..C {
                vst1q_f32(out[i][c].as_mut_ptr(), lo[i][c]);
                vst1q_f32(out[i][c].as_mut_ptr().add(4), hi[i][c]);
            }
        }
        out
    }

    /// Widening multiplies (i8·i8 fits i16 exactly), pairwise-accumulated into int32.
    pub unsafe fn dots_neon(a: &[i8], b: &[i8], k: usize, out: &mut [i32]) {
        let pa = a.as_ptr();
        let pb = b.as_ptr();
        for (j, o) in out.iter_mut().enumerate() {
            let row = pb.add(j * k);
            let mut acc0 = vdupq_n_s32(0);
            let mut acc1 = vdupq_n_s32(0);
            let mut p = 0;
            while p < k {
                let va = vld1q_s8(pa.add(p));
                let vb = vld1q_s8(row.add(p));
                acc0 = vpadalq_s16(acc0, vmull_s8(vget_low_s8(va), vget_low_s8(vb)));
                acc1 = vpadalq_s16(acc1, vmull_high_s8(va, vb));
                p += 16;
            }
            *o = vaddvq_s32(vaddq_s32(acc0, acc1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of values including both extremes of a and b's range.
    fn pattern(len: usize, seed: u32, lo: i32) -> Vec<i8> {
        let mut s = seed;
        (0..len)
            .map(|i| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                match i % 17 {
                    0 => lo as i8,
                    1 => 127,
                    _ => (lo + ((s >> 16) as i32).rem_euclid(128 - lo)) as i8,
                }
            })
            .collect()
    }

    #[test]
    fn float_matmul_over_no_inputs_gives_zeros() {
        // An empty layer (k = 0): every output is an empty sum; the contract check must not
        // mistake it for a mismatch (it did when n was derived from b.len() / k).
        let mut out = vec![1f32; 2 * 3];
        matmul_f32(Isa::detect(), &[], &[], 0, 3, &mut out);
        assert_eq!(out, vec![0.0; 6]);
    }

    #[test]
    fn float_matmul_is_bit_identical_on_every_isa_batch_and_blocking() {
        let isa = Isa::detect();
        for (rows, n, k) in [(1, 1, 1), (3, 5, 15), (2, 4, 16), (5, 7, 33), (4, 10, 784)] {
            let a: Vec<f32> = pattern(rows * k, 7, -128)
                .iter()
                .map(|&x| x as f32 * 0.37)
                .collect();
            let b: Vec<f32> = pattern(n * k, 11, -127)
                .iter()
                .map(|&x| x as f32 / 7.0)
                .collect();
            let mut want = vec![0f32; rows * n];
            let mut got = vec![0f32; rows * n];
            matmul_f32(Isa::PORTABLE, &a, &b, k, n, &mut want);
            matmul_f32(isa, &a, &b, k, n, &mut got);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{} {rows}x{n} k={k}", isa.name());
            for r in 0..rows {
                // One row and one column at a time (no blocking) gives the same bits.
                for j in 0..n {
                    let mut one = [0f32];
                    matmul_f32(isa, &a[r * k..][..k], &b[j * k..][..k], k, 1, &mut one);
                    assert_eq!(
                        one[0].to_bits(),
                        got[r * n + j].to_bits(),
                        "{rows}x{n} k={k} ({r}, {j})"
                    );
                    let exact: f64 = (0..k)
                        .map(|p| a[r * k + p] as f64 * b[j * k + p] as f64)
                        .sum();
                    assert!((one[0] as f64 - exact).abs() <= 1e-3 * (1.0 + exact.abs()));
                }
            }
        }
    }

    #[test]
    fn simd_matches_portable_exactly_at_the_extremes() {
        let isa = Isa::detect();
        for (n, k) in [(1, 32), (3, 64), (4, 32), (9, 800), (64, 96)] {
            // a spans [-128, 127]; b spans [-127, 127].
            let a = pattern(k, 7, -128);
            let b = pattern(n * k, 11, -127);
            let mut want = vec![0; n];
            let mut got = vec![0; n];
            dots(Isa::PORTABLE, Weights::Rows, &a, &b, k, &mut want);
            dots(isa, Weights::Rows, &a, &b, k, &mut got);
            assert_eq!(got, want, "{} n={n} k={k}", isa.name());
            // Roles swapped: the shared row is the weights, the rows reach -128.
            let (w, x) = (pattern(k, 5, -127), pattern(n * k, 3, -128));
            dots(Isa::PORTABLE, Weights::Shared, &w, &x, k, &mut want);
            dots(isa, Weights::Shared, &w, &x, k, &mut got);
            assert_eq!(got, want, "{} shared n={n} k={k}", isa.name());
        }
        // The worst case for int16 pair sums: every product is -128 * -127.
        let a = vec![-128i8; 64];
        let b = vec![-127i8; 64];
        let mut got = [0];
        dots(isa, Weights::Rows, &a, &b, 64, &mut got);
        assert_eq!(got[0], 64 * 128 * 127);
        dots(isa, Weights::Shared, &b, &a, 64, &mut got);
        assert_eq!(got[0], 64 * 128 * 127);
    }
}
