//! int8 matrix products: every quantized convolution and dense layer reduces to one.
//!
//! `C[m, n] = Σ_k A[m, k] · B[k, n]` with A the activations (int8, one row per output pixel
//! or sample) and B the weights (int8, one column per output channel). Weights are packed
//! once, at load, into panels of [`NR`] columns in groups of four k ("quads"): 32 bytes hold
//! eight columns' next four weights, the shape the micro-kernels consume. A row of A is read
//! through an indirection table, one pointer per kernel tap, so a convolution needs no
//! im2col copy: each tap's pointer points at the input pixel's channels (or at a row of the
//! zero point where the tap falls in the padding), and a dense layer is one tap.
//!
//! The AVX2 kernel multiplies |a| (u8) by b·sign(a) with `vpmaddubsw`, whose int16 pair sums
//! stay within 2·128·127 = 32512 when weights lie in [-127, 127]: every path computes the
//! exact integer result. Weights holding -128 run on the portable path there. CPUs with VNNI
//! sum a quad's four u8 x i8 products straight into int32 (`vpdpbusd`, one instruction for
//! the three of `vpmaddubsw`, `vpmaddwd` and the add, and no int16 step to overflow): the
//! activations are offset into u8 (a + 128, a flip of the top bit) and the offset's share,
//! 128 times each column's weight sum, is subtracted at the end.
//!
//! Without VNNI the same u8 offset feeds `vpmaddubsw` straight (ONNX Runtime's U8S8 kernel,
//! three vector operations per 32 products instead of the sign trick's four) when every weight
//! lies in [-64, 64]: the int16 pair sums then stay within 2·255·64 = 32640, so nothing
//! saturates. Seven-bit weights are what ONNX Runtime's quantizer writes with
//! `reduce_range` for CPUs without VNNI; full-range weights keep the sign trick.

use super::Isa;

/// Output columns per panel.
pub(crate) const NR: usize = 8;
/// Rows per micro-kernel call.
pub(crate) const MR: usize = 8;

/// Constant int8 weights packed for the micro-kernels.
#[derive(Debug, Clone)]
pub(crate) struct QPacked {
    /// Kernel taps (1 for a dense layer).
    pub taps: usize,
    /// Groups of four inputs per tap (`cin` rounded up).
    pub quads: usize,
    /// `[panel][tap][quad][NR columns][4]`, zero-padded.
    pub data: Vec<i8>,
    /// Per output channel, the sum of its weights (for the activation zero point).
    pub col_sums: Vec<i32>,
    /// Whether every weight lies in [-127, 127] (the AVX2 kernel needs it).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub symmetric: bool,
    /// Whether every weight lies in [-64, 64] (seven bits: the AVX2 kernel can skip the sign
    /// trick).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub narrow: bool,
    /// Per column of every panel, 128 · its weight sum: what the VNNI kernels' u8 offset
    /// adds to each sum.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    offset_sums: Vec<i32>,
}

/// Calls the kernel instance for a tile's shape: `rows` (one of `rs`) by one or two panels.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! by_shape {
    ($rows:expr, $panels:expr, $m:ident :: $f:ident $args:tt, [$($r:literal)*]) => {
        match ($rows, $panels) {
            $(
                ($r, 2) => $m::$f::<$r, 2> $args,
                ($r, _) => $m::$f::<$r, 1> $args,
            )*
            _ => unreachable!("more rows than the kernel takes"),
        }
    };
}

impl QPacked {
    /// Packs `n` output channels of `taps x cin` weights, `w(o, tap, ci)` each.
    pub fn pack(
        n: usize,
        taps: usize,
        cin: usize,
        w: impl Fn(usize, usize, usize) -> i8,
    ) -> QPacked {
        let quads = cin.div_ceil(4);
        let panels = n.div_ceil(NR);
        let mut data = vec![0i8; panels * taps * quads * NR * 4];
        let mut col_sums = vec![0i32; n];
        let (mut symmetric, mut narrow) = (true, true);
        for o in 0..n {
            let (panel, col) = (o / NR, o % NR);
            for t in 0..taps {
                for ci in 0..cin {
                    let v = w(o, t, ci);
                    symmetric &= v != i8::MIN;
                    narrow &= (-64..=64).contains(&v);
                    col_sums[o] += v as i32;
                    let at = (((panel * taps + t) * quads + ci / 4) * NR + col) * 4 + ci % 4;
                    data[at] = v;
                }
            }
        }
        let mut offset_sums = vec![0i32; panels * NR];
        for (o, s) in col_sums.iter().enumerate() {
            offset_sums[o] = s.wrapping_mul(128);
        }
        QPacked {
            taps,
            quads,
            data,
            col_sums,
            symmetric,
            narrow,
            offset_sums,
        }
    }

    /// Bytes of one panel.
    pub fn panel_len(&self) -> usize {
        self.taps * self.quads * NR * 4
    }

    /// Accumulates `rows` (≤ [`MR`]) rows against panels `first_panel..first_panel + panels`
    /// (at most two): `acc[r][j]` for column `first_panel·NR + j`. Row `r`'s tap `t` reads
    /// `cin` values at `ind[r * taps + t]`, with at least `quads · 4` readable bytes.
    ///
    /// # Safety
    /// Every pointer in `ind[..rows * taps]` must be valid for `quads · 4` bytes.
    pub unsafe fn accumulate(
        &self,
        isa: Isa,
        ind: &[*const i8],
        rows: usize,
        first_panel: usize,
        panels: usize,
        acc: &mut [[i32; 2 * NR]; MR],
    ) {
        debug_assert!(rows <= MR && panels <= 2 && ind.len() >= rows * self.taps);
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx512() {
            // Sixteen columns per register: eight rows give eight independent sums in flight.
            let b = self.data.as_ptr().add(first_panel * self.panel_len());
            let off = &self.offset_sums[first_panel * NR..];
            return by_shape!(rows, panels, x86::vnni512(self, ind, b, off, acc), [1 2 3 4 5 6 7 8]);
        }
        // The other kernels keep four rows' sums in registers: taller tiles go in fours.
        for r0 in (0..rows).step_by(4) {
            let n = 4.min(rows - r0);
            let (ind, acc) = (&ind[r0 * self.taps..], &mut acc[r0..r0 + n]);
            self.accumulate4(isa, ind, first_panel, panels, acc);
        }
    }

    /// [`QPacked::accumulate`] for `acc.len()` (at most four) rows.
    unsafe fn accumulate4(
        &self,
        isa: Isa,
        ind: &[*const i8],
        first_panel: usize,
        panels: usize,
        acc: &mut [[i32; 2 * NR]],
    ) {
        let rows = acc.len();
        let b = self.data.as_ptr().add(first_panel * self.panel_len());
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx_vnni() {
            let off = &self.offset_sums[first_panel * NR..];
            return by_shape!(rows, panels, x86::vnni256(self, ind, b, off, acc), [4 3 2 1]);
        }
        #[cfg(target_arch = "x86_64")]
        if isa.is_avx2() && self.narrow {
            let off = &self.offset_sums[first_panel * NR..];
            return by_shape!(rows, panels, x86::unsigned(self, ind, b, off, acc), [4 3 2 1]);
        }
        #[cfg(target_arch = "x86_64")]
        if isa.is_avx2() && self.symmetric {
            return by_shape!(rows, panels, x86::tile(self, ind, b, &[], acc), [4 3 2 1]);
        }
        #[cfg(target_arch = "aarch64")]
        if isa.has_dot() {
            return by_shape!(rows, panels, arm::dot(self, ind, b, acc), [4 3 2 1]);
        }
        #[cfg(target_arch = "aarch64")]
        if isa.is_neon() {
            // Two rows at a time: four accumulators per row and panel fill the registers.
            let mut r = 0;
            while r < rows {
                let (ind_r, acc_r) = (&ind[r * self.taps..], &mut acc[r..]);
                match (rows - r, panels) {
                    (1, 2) => arm::mull::<1, 2>(self, ind_r, b, acc_r),
                    (1, _) => arm::mull::<1, 1>(self, ind_r, b, acc_r),
                    (_, 2) => arm::mull::<2, 2>(self, ind_r, b, acc_r),
                    (_, _) => arm::mull::<2, 1>(self, ind_r, b, acc_r),
                }
                r += 2;
            }
            return;
        }
        let _ = isa;
        portable(self, ind, rows, b, panels, acc)
    }
}

/// The reference: exact integer sums, any row count, any weights.
unsafe fn portable(
    p: &QPacked,
    ind: &[*const i8],
    rows: usize,
    b: *const i8,
    panels: usize,
    acc: &mut [[i32; 2 * NR]],
) {
    for (r, acc) in acc.iter_mut().enumerate().take(rows) {
        *acc = [0; 2 * NR];
        for t in 0..p.taps {
            let a = std::slice::from_raw_parts(ind[r * p.taps + t], p.quads * 4);
            for pn in 0..panels {
                let panel = b.add(pn * p.panel_len() + t * p.quads * NR * 4);
                for q in 0..p.quads {
                    let w = std::slice::from_raw_parts(panel.add(q * NR * 4), NR * 4);
                    for c in 0..NR {
                        let mut s = 0i32;
                        for l in 0..4 {
                            s += a[q * 4 + l] as i32 * w[c * 4 + l] as i32;
                        }
                        acc[pn * NR + c] += s;
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{QPacked, MR, NR};
    use std::arch::x86_64::*;

    /// The four bytes at `p` in every 32-bit lane, broadcast by the load unit (see
    /// `broadcast`: intrinsics give a 128-bit flip and a shuffle instead).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn broadcast256(p: *const i8) -> __m256i {
        let v: __m256i;
        std::arch::asm!(
            "vpbroadcastd {v}, dword ptr [{p}]",
            v = out(ymm_reg) v, p = in(reg) p,
            options(pure, readonly, nostack, preserves_flags)
        );
        v
    }

    /// The 256-bit kernels: `R` (≤ 4) rows by one or two panels, eight columns per `__m256i`
    /// of int32 sums, each lane one column, so no horizontal reduction is needed. `$dot` adds
    /// a quad's four products into a lane from `$a`, the row's four activations in every
    /// lane. With `offset`, the activations went in as u8 (a + 128) and `offset` holds 128 ·
    /// the weight sums of the tile's columns, taken off at the end. The kernels differ only
    /// in that step; where it computes the same value for both panels (a row's |a| or flip),
    /// LLVM computes it once.
    macro_rules! quad_kernel {
        ($(#[$doc:meta])* $name:ident, $features:literal, offset: $offset:literal,
         |$c:ident, $a:ident, $w:ident| $dot:expr) => {
            $(#[$doc])*
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name<const R: usize, const PANELS: usize>(
                p: &QPacked,
                ind: &[*const i8],
                b: *const i8,
                offset: &[i32],
                acc: &mut [[i32; 2 * NR]],
            ) {
                let mut c = [_mm256_setzero_si256(); 8];
                let step = p.quads * NR * 4;
                let second = if PANELS == 2 { p.panel_len() } else { 0 };
                for t in 0..p.taps {
                    let mut rows = [std::ptr::null(); 4];
                    for (r, row) in rows.iter_mut().enumerate().take(R) {
                        *row = ind[r * p.taps + t];
                    }
                    let b0 = b.add(t * step);
                    let b1 = b0.add(second);
                    for q in 0..p.quads {
                        let w0 = _mm256_loadu_si256(b0.add(q * 32) as *const __m256i);
                        let w1 = if PANELS == 2 {
                            _mm256_loadu_si256(b1.add(q * 32) as *const __m256i)
                        } else {
                            w0
                        };
                        for r in 0..R {
                            let a = broadcast256(rows[r].add(q * 4));
                            c[2 * r] = {
                                let ($c, $a, $w) = (c[2 * r], a, w0);
                                $dot
                            };
                            if PANELS == 2 {
                                c[2 * r + 1] = {
                                    let ($c, $a, $w) = (c[2 * r + 1], a, w1);
                                    $dot
                                };
                            }
                        }
                    }
                }
                let (mut o0, mut o1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                if $offset {
                    o0 = _mm256_loadu_si256(offset.as_ptr() as *const __m256i);
                    if PANELS == 2 {
                        o1 = _mm256_loadu_si256(offset.as_ptr().add(NR) as *const __m256i);
                    }
                }
                for r in 0..R {
                    let lo = _mm256_sub_epi32(c[2 * r], o0);
                    let hi = _mm256_sub_epi32(c[2 * r + 1], o1);
                    _mm256_storeu_si256(acc[r].as_mut_ptr() as *mut __m256i, lo);
                    _mm256_storeu_si256(acc[r].as_mut_ptr().add(NR) as *mut __m256i, hi);
                }
            }
        };
    }

    quad_kernel!(
        /// Plain AVX2, any weights in [-127, 127]: |a| (u8) times b·sign(a) with `vpmaddubsw`,
        /// whose pair sums stay within 2·128·127, summed into the lanes by `vpmaddwd`.
        tile,
        "avx2",
        offset: false,
        |c, a, w| {
            let p = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(w, a));
            _mm256_add_epi32(c, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    );

    quad_kernel!(
        /// Seven-bit weights on plain AVX2: `vpmaddubsw` on the u8 activations straight,
        /// its pair sums within ±2·255·64 = 32640, summed into the lanes by `vpmaddwd`.
        unsigned,
        "avx2",
        offset: true,
        |c, a, w| {
            let ua = _mm256_xor_si256(a, _mm256_set1_epi8(i8::MIN));
            let p = _mm256_maddubs_epi16(ua, w);
            _mm256_add_epi32(c, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    );

    quad_kernel!(
        /// AVX-VNNI: a quad's four u8 x i8 products summed into the lane at once.
        vnni256,
        "avx2,avxvnni",
        offset: true,
        |c, a, w| _mm256_dpbusd_avx_epi32(c, _mm256_xor_si256(a, _mm256_set1_epi8(i8::MIN)), w)
    );

    /// The four bytes at `p` in every 32-bit lane, loaded by the load unit's broadcast.
    /// Written as assembly: from intrinsics LLVM flips the bytes in a 128-bit register first
    /// and broadcasts with a shuffle, one more vector operation per row and quad on a path
    /// where vector operations are the limit.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn broadcast(p: *const i8) -> __m512i {
        let v: __m512i;
        std::arch::asm!(
            "vpbroadcastd {v}, dword ptr [{p}]",
            v = out(zmm_reg) v, p = in(reg) p,
            options(pure, readonly, nostack, preserves_flags)
        );
        v
    }

    /// AVX-512 VNNI: `R` (≤ 8) rows by sixteen columns (two panels, or one with the upper
    /// half zero), one 512-bit register of sums per row.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn vnni512<const R: usize, const PANELS: usize>(
        p: &QPacked,
        ind: &[*const i8],
        b: *const i8,
        offset: &[i32],
        acc: &mut [[i32; 2 * NR]; MR],
    ) {
        let flip = _mm512_set1_epi8(i8::MIN);
        let mut c = [_mm512_setzero_si512(); MR];
        let step = p.quads * NR * 4;
        let second = if PANELS == 2 { p.panel_len() } else { 0 };
        for t in 0..p.taps {
            let mut rows = [std::ptr::null(); MR];
            for (r, row) in rows.iter_mut().enumerate().take(R) {
                *row = ind[r * p.taps + t];
            }
            let b0 = b.add(t * step);
            let b1 = b0.add(second);
            for q in 0..p.quads {
                let lo = _mm256_loadu_si256(b0.add(q * 32) as *const __m256i);
                let w = if PANELS == 2 {
                    let hi = _mm256_loadu_si256(b1.add(q * 32) as *const __m256i);
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
                } else {
                    _mm512_zextsi256_si512(lo)
                };
                for r in 0..R {
                    let ua = _mm512_xor_si512(broadcast(rows[r].add(q * 4)), flip);
                    c[r] = _mm512_dpbusd_epi32(c[r], ua, w);
                }
            }
        }
        let o = if PANELS == 2 {
            _mm512_loadu_si512(offset.as_ptr() as *const _)
        } else {
            _mm512_zextsi256_si512(_mm256_loadu_si256(offset.as_ptr() as *const __m256i))
        };
        for r in 0..R {
            _mm512_storeu_si512(acc[r].as_mut_ptr() as *mut _, _mm512_sub_epi32(c[r], o));
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{QPacked, NR};
    use std::arch::aarch64::*;

    /// `acc += Σ_k a[k] · b[k]` per 32-bit lane, four bytes each (SDOT). Written as assembly:
    /// the intrinsic is not stable Rust yet.
    #[inline(always)]
    unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        std::arch::asm!(
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc, in(vreg) a, in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }

    /// The row's next four inputs in every 32-bit lane.
    #[inline(always)]
    unsafe fn quad(p: *const i8) -> int8x16_t {
        vreinterpretq_s8_s32(vdupq_n_s32((p as *const i32).read_unaligned()))
    }

    /// `R` rows by one or two panels with SDOT: a quad of eight columns is two registers of
    /// four columns' four weights, each lane one column (Cortex-A76 and later).
    #[target_feature(enable = "neon,dotprod")]
    pub(super) unsafe fn dot<const R: usize, const PANELS: usize>(
        p: &QPacked,
        ind: &[*const i8],
        b: *const i8,
        acc: &mut [[i32; 2 * NR]],
    ) {
        let mut c = [[vdupq_n_s32(0); 4]; 4];
        let step = p.quads * NR * 4;
        for t in 0..p.taps {
            let b0 = b.add(t * step);
            let b1 = b0.add(if PANELS == 2 { p.panel_len() } else { 0 });
            for q in 0..p.quads {
                let w0 = vld1q_s8(b0.add(q * 32));
                let w1 = vld1q_s8(b0.add(q * 32 + 16));
                let (w2, w3) = if PANELS == 2 {
                    (vld1q_s8(b1.add(q * 32)), vld1q_s8(b1.add(q * 32 + 16)))
                } else {
                    (w0, w1)
                };
                for r in 0..R {
                    let a = quad(ind[r * p.taps + t].add(q * 4));
                    c[r][0] = sdot(c[r][0], a, w0);
                    c[r][1] = sdot(c[r][1], a, w1);
                    if PANELS == 2 {
                        c[r][2] = sdot(c[r][2], a, w2);
                        c[r][3] = sdot(c[r][3], a, w3);
                    }
                }
            }
        }
        for r in 0..R {
            for (j, v) in c[r].iter().enumerate() {
                vst1q_s32(acc[r].as_mut_ptr().add(4 * j), *v);
            }
        }
    }

    /// `R` (≤ 2) rows by one or two panels without the dot product (Cortex-A72): int8 products
    /// widened to int16 (`smull`), pairs added into int32 (`sadalp`), and each column's two
    /// pair sums added once at the end.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn mull<const R: usize, const PANELS: usize>(
        p: &QPacked,
        ind: &[*const i8],
        b: *const i8,
        acc: &mut [[i32; 2 * NR]],
    ) {
        // Per row: for each group of two columns, lanes [c0 k0+k1, c0 k2+k3, c1 k0+k1, c1 k2+k3].
        let mut c = [[vdupq_n_s32(0); 8]; 2];
        let step = p.quads * NR * 4;
        for t in 0..p.taps {
            let b0 = b.add(t * step);
            let b1 = b0.add(if PANELS == 2 { p.panel_len() } else { 0 });
            for q in 0..p.quads {
                let w = [
                    vld1q_s8(b0.add(q * 32)),
                    vld1q_s8(b0.add(q * 32 + 16)),
                    vld1q_s8(b1.add(q * 32)),
                    vld1q_s8(b1.add(q * 32 + 16)),
                ];
                for r in 0..R {
                    let a = quad(ind[r * p.taps + t].add(q * 4));
                    for (i, w) in w.iter().enumerate().take(2 * PANELS) {
                        let lo = vmull_s8(vget_low_s8(*w), vget_low_s8(a));
                        let hi = vmull_high_s8(*w, a);
                        c[r][2 * i] = vpadalq_s16(c[r][2 * i], lo);
                        c[r][2 * i + 1] = vpadalq_s16(c[r][2 * i + 1], hi);
                    }
                }
            }
        }
        for r in 0..R {
            for i in 0..2 * PANELS {
                vst1q_s32(
                    acc[r].as_mut_ptr().add(4 * i),
                    vpaddq_s32(c[r][2 * i], c[r][2 * i + 1]),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift stream of bytes for weights and activations.
    fn bytes(n: usize, seed: u64, lo: i32, hi: i32) -> Vec<i8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (lo + (s % (hi - lo + 1) as u64) as i32) as i8
            })
            .collect()
    }

    /// Every ISA this CPU has against the plain triple loop, for odd channel counts, several taps, partial
    /// panels and rows, and extreme values: chosen shapes, then random ones (weights at the
    /// ends of their range in every other case).
    #[test]
    fn every_path_computes_the_exact_sums() {
        let mut cases = vec![
            (16, 1, 4, 1),
            (13, 9, 3, 2),
            (8, 9, 16, 3),
            (24, 1, 67, 4),
            (3, 2, 5, 5),
        ];
        let dims = bytes(3 * 30, 99, 0, 127);
        for (i, d) in dims.chunks(3).enumerate() {
            let [n, taps, cin] = [
                d[0] as usize % 40 + 1,
                d[1] as usize % 12 + 1,
                d[2] as usize % 70 + 1,
            ];
            cases.push((n, taps, cin, 10 + i as u64));
        }
        // Seven-bit weights (the AVX2 kernel without the sign trick): seeds 100 and up.
        cases.extend([
            (16, 9, 16, 100),
            (13, 3, 7, 101),
            (24, 1, 67, 102),
            (40, 9, 33, 103),
        ]);
        for (n, taps, cin, seed) in cases {
            let bound = if seed >= 100 { 64 } else { 127 };
            let mut w = bytes(n * taps * cin, seed, -bound, bound);
            if seed >= 100 {
                // Random in [-64, 64], then the ends of that range; odd seeds pair the
                // largest weights of one sign with the largest activations below.
                if seed % 2 == 1 {
                    for (i, v) in w.iter_mut().enumerate() {
                        *v = if i % 4 < 2 { 64 } else { -64 };
                    }
                }
                assert!(
                    QPacked::pack(n, taps, cin, |o, t, ci| w[(o * taps + t) * cin + ci]).narrow
                );
            }
            // Odd seeds: weights at the ends of the range, -128 included every fourth case
            // (the AVX2 kernel hands those to the portable path, VNNI takes them).
            if seed % 2 == 1 && seed < 100 {
                let low = if seed % 4 == 3 { -128 } else { -127 };
                for (i, v) in w.iter_mut().enumerate() {
                    *v = if i % 3 == 0 {
                        low
                    } else if i % 3 == 1 {
                        127
                    } else {
                        *v
                    };
                }
            }
            let mut a = bytes(MR * taps * cin.div_ceil(4) * 4, seed + 9, -128, 127);
            if seed >= 100 && seed % 2 == 1 {
                // 127 becomes 255 in u8: with two weights of 64, a pair sums to 32640, the
                // most an int16 pair sum reaches; -128 (0 in u8) beside -64 weights.
                for (i, v) in a.iter_mut().enumerate() {
                    *v = if i % 4 < 2 { 127 } else { -128 };
                }
            }
            let packed = QPacked::pack(n, taps, cin, |o, t, ci| w[(o * taps + t) * cin + ci]);
            let quads = cin.div_ceil(4);
            // Each row's taps sit one after another; the bytes beyond cin are whatever follows
            // (the next pixel's channels at run time): they meet zero weights, also after VNNI
            // flips them into u8.
            let rows = a.clone();
            let ind: Vec<*const i8> = (0..MR * taps)
                .map(|i| unsafe { rows.as_ptr().add(i * quads * 4) })
                .collect();
            for panel in (0..n.div_ceil(NR)).step_by(2) {
                let panels = (n.div_ceil(NR) - panel).min(2);
                let runs = Isa::available()
                    .into_iter()
                    .flat_map(|isa| [MR, 7, 5, 4, 3, 2, 1].map(|rows| (isa, rows)));
                for (isa, nrows) in runs {
                    let mut acc = [[0i32; 2 * NR]; MR];
                    unsafe { packed.accumulate(isa, &ind, nrows, panel, panels, &mut acc) };
                    for r in 0..nrows {
                        for j in 0..panels * NR {
                            let o = panel * NR + j;
                            if o >= n {
                                continue;
                            }
                            let want: i32 = (0..taps)
                                .flat_map(|t| (0..cin).map(move |ci| (t, ci)))
                                .map(|(t, ci)| {
                                    rows[(r * taps + t) * quads * 4 + ci] as i32
                                        * w[(o * taps + t) * cin + ci] as i32
                                })
                                .sum();
                            assert_eq!(
                                acc[r][j],
                                want,
                                "{} n={n} taps={taps} cin={cin} r={r} o={o}",
                                isa.name()
                            );
                        }
                    }
                }
            }
            assert_eq!(
                packed.col_sums[0],
                (0..taps * cin).map(|i| w[i] as i32).sum::<i32>()
            );
        }
    }
}
