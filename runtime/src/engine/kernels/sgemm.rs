//! f32 matrix products for float convolutions and dense layers, on the same plan as the int8
//! ones ([`super::qgemm`]): weights packed once into panels of [`NR`] columns, activation
//! rows read through one pointer per kernel tap (no im2col copy).
//!
//! The fast paths use fused multiply-adds, so their results differ in the last bits from the
//! portable kernel's (and from one CPU family to another). [`FloatMode::Exact`] runs the
//! portable kernel everywhere: one summation order, no fused multiply-add, the same bits on
//! every CPU.

use super::Isa;

/// Output columns per panel (one AVX-512 register, two AVX ones, four NEON ones).
pub(crate) const NR: usize = 16;
/// Rows per micro-kernel call: twelve sums of one register each in flight on AVX-512; the
/// other kernels take them six at a time.
pub(crate) const MR: usize = 12;

/// How float layers are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatMode {
    /// The fastest kernels the CPU has (fused multiply-adds; last-bit differences between CPU
    /// families).
    #[default]
    Fast,
    /// One fixed summation order without fused multiply-adds on every CPU: the same bits
    /// everywhere, slower.
    Exact,
}

/// Constant f32 weights packed for the micro-kernels.
#[derive(Debug, Clone)]
pub(crate) struct FPacked {
    /// Kernel taps (1 for a dense layer).
    pub taps: usize,
    /// Input values per tap.
    pub cin: usize,
    /// `[panel][tap][ci][NR columns]`, zero-padded.
    pub data: Vec<f32>,
}

impl FPacked {
    /// Packs `n` output channels of `taps x cin` weights, `w(o, tap, ci)` each.
    pub fn pack(
        n: usize,
        taps: usize,
        cin: usize,
        w: impl Fn(usize, usize, usize) -> f32,
    ) -> FPacked {
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * taps * cin * NR];
        for o in 0..n {
            let (panel, col) = (o / NR, o % NR);
            for t in 0..taps {
                for ci in 0..cin {
                    data[((panel * taps + t) * cin + ci) * NR + col] = w(o, t, ci);
                }
            }
        }
        FPacked { taps, cin, data }
    }

    /// Floats of one panel.
    pub fn panel_len(&self) -> usize {
        self.taps * self.cin * NR
    }

    /// Sums `rows` (≤ [`MR`]) rows against panel `panel`: `acc[r][j]` for column
    /// `panel·NR + j`. Row `r`'s tap `t` reads `cin` floats at `ind[r * taps + t]`.
    ///
    /// # Safety
    /// Every pointer in `ind[..rows * taps]` must be valid for `cin` floats.
    pub unsafe fn accumulate(
        &self,
        isa: Isa,
        mode: FloatMode,
        ind: &[*const f32],
        rows: usize,
        panel: usize,
        acc: &mut [[f32; NR]; MR],
    ) {
        debug_assert!(rows <= MR && ind.len() >= rows * self.taps);
        let b = self.data.as_ptr().add(panel * self.panel_len());
        if mode == FloatMode::Fast {
            #[cfg(target_arch = "x86_64")]
            if isa.has_avx512() {
                return x86::tile512(self, ind, rows, b, acc);
            }
            for r0 in (0..rows).step_by(6) {
                let n = 6.min(rows - r0);
                let (ind, acc) = (&ind[r0 * self.taps..], &mut acc[r0..r0 + n]);
                #[cfg(target_arch = "x86_64")]
                if isa.has_fma() {
                    x86::tile(self, ind, n, b, acc);
                    continue;
                }
                #[cfg(target_arch = "aarch64")]
                {
                    arm::tile(self, ind, n, b, acc);
                    continue;
                }
                #[allow(unreachable_code)]
                portable(self, ind, n, b, acc);
            }
            return;
        }
        let _ = isa;
        portable(self, ind, rows, b, acc)
    }
}

/// The reference: for each column, the products in tap then channel order, multiply then add.
unsafe fn portable(
    p: &FPacked,
    ind: &[*const f32],
    rows: usize,
    b: *const f32,
    acc: &mut [[f32; NR]],
) {
    for (r, acc) in acc.iter_mut().enumerate().take(rows) {
        *acc = [0.0; NR];
        for t in 0..p.taps {
            let a = std::slice::from_raw_parts(ind[r * p.taps + t], p.cin);
            let w = std::slice::from_raw_parts(b.add(t * p.cin * NR), p.cin * NR);
            for (ci, &x) in a.iter().enumerate() {
                let wr = &w[ci * NR..(ci + 1) * NR];
                for c in 0..NR {
                    acc[c] += x * wr[c];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{FPacked, MR, NR};
    use std::arch::x86_64::*;

    /// Up to six rows by sixteen columns in twelve accumulators: per input value, two loads of
    /// weights, one broadcast and two fused multiply-adds per row.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        p: &FPacked,
        ind: &[*const f32],
        rows: usize,
        b: *const f32,
        acc: &mut [[f32; NR]],
    ) {
        match rows {
            6 => rows_n::<6>(p, ind, b, acc),
            5 => rows_n::<5>(p, ind, b, acc),
            4 => rows_n::<4>(p, ind, b, acc),
            3 => rows_n::<3>(p, ind, b, acc),
            2 => rows_n::<2>(p, ind, b, acc),
            _ => rows_n::<1>(p, ind, b, acc),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_n<const R: usize>(
        p: &FPacked,
        ind: &[*const f32],
        b: *const f32,
        acc: &mut [[f32; NR]],
    ) {
        let mut c0 = [_mm256_setzero_ps(); R];
        let mut c1 = [_mm256_setzero_ps(); R];
        for t in 0..p.taps {
            let mut a = [std::ptr::null::<f32>(); R];
            for r in 0..R {
                a[r] = ind[r * p.taps + t];
            }
            let mut w = b.add(t * p.cin * NR);
            for ci in 0..p.cin {
                let w0 = _mm256_loadu_ps(w);
                let w1 = _mm256_loadu_ps(w.add(8));
                for r in 0..R {
                    let x = _mm256_broadcast_ss(&*a[r].add(ci));
                    c0[r] = _mm256_fmadd_ps(x, w0, c0[r]);
                    c1[r] = _mm256_fmadd_ps(x, w1, c1[r]);
                }
                w = w.add(NR);
            }
        }
        for r in 0..R {
            _mm256_storeu_ps(acc[r].as_mut_ptr(), c0[r]);
            _mm256_storeu_ps(acc[r].as_mut_ptr().add(8), c1[r]);
        }
    }

    /// Up to twelve rows by sixteen columns on AVX-512: one accumulator per row, the row's
    /// input value broadcast from memory into the fused multiply-add.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile512(
        p: &FPacked,
        ind: &[*const f32],
        rows: usize,
        b: *const f32,
        acc: &mut [[f32; NR]; MR],
    ) {
        macro_rules! rows {
            ($($r:literal)*) => {
                match rows {
                    $($r => rows512::<$r>(p, ind, b, acc),)*
                    _ => unreachable!("at most {MR} rows"),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11 12)
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn rows512<const R: usize>(
        p: &FPacked,
        ind: &[*const f32],
        b: *const f32,
        acc: &mut [[f32; NR]; MR],
    ) {
        let mut c = [_mm512_setzero_ps(); R];
        for t in 0..p.taps {
            let mut a = [std::ptr::null::<f32>(); R];
            for r in 0..R {
                a[r] = ind[r * p.taps + t];
            }
            let mut w = b.add(t * p.cin * NR);
            for ci in 0..p.cin {
                let wv = _mm512_loadu_ps(w);
                for r in 0..R {
                    c[r] = _mm512_fmadd_ps(_mm512_set1_ps(*a[r].add(ci)), wv, c[r]);
                }
                w = w.add(NR);
            }
        }
        for r in 0..R {
            _mm512_storeu_ps(acc[r].as_mut_ptr(), c[r]);
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{FPacked, NR};
    use std::arch::aarch64::*;

    /// Up to six rows by sixteen columns: four `float32x4_t` accumulators per row, fused
    /// multiply-adds by the row's input value.
    pub(super) unsafe fn tile(
        p: &FPacked,
        ind: &[*const f32],
        rows: usize,
        b: *const f32,
        acc: &mut [[f32; NR]],
    ) {
        match rows {
            6 => rows_n::<6>(p, ind, b, acc),
            5 => rows_n::<5>(p, ind, b, acc),
            4 => rows_n::<4>(p, ind, b, acc),
            3 => rows_n::<3>(p, ind, b, acc),
            2 => rows_n::<2>(p, ind, b, acc),
            _ => rows_n::<1>(p, ind, b, acc),
        }
    }

    unsafe fn rows_n<const R: usize>(
        p: &FPacked,
        ind: &[*const f32],
        b: *const f32,
        acc: &mut [[f32; NR]],
    ) {
        let mut c = [[vdupq_n_f32(0.0); 4]; R];
        for t in 0..p.taps {
            let mut a = [std::ptr::null::<f32>(); R];
            for r in 0..R {
                a[r] = ind[r * p.taps + t];
            }
            let mut w = b.add(t * p.cin * NR);
            for ci in 0..p.cin {
                let wv = [
                    vld1q_f32(w),
                    vld1q_f32(w.add(4)),
                    vld1q_f32(w.add(8)),
                    vld1q_f32(w.add(12)),
                ];
                for r in 0..R {
                    let x = *a[r].add(ci);
                    for j in 0..4 {
                        c[r][j] = vfmaq_n_f32(c[r][j], wv[j], x);
                    }
                }
                w = w.add(NR);
            }
        }
        for r in 0..R {
            for j in 0..4 {
                vst1q_f32(acc[r].as_mut_ptr().add(4 * j), c[r][j]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_and_exact_paths_agree_with_the_definition() {
        for (n, taps, cin) in [(16, 1, 7), (21, 9, 3), (5, 4, 33), (32, 1, 1)] {
            let w: Vec<f32> = (0..n * taps * cin)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 30.0)
                .collect();
            let packed = FPacked::pack(n, taps, cin, |o, t, ci| w[(o * taps + t) * cin + ci]);
            let a: Vec<f32> = (0..MR * taps * cin)
                .map(|i| ((i * 53 % 89) as f32 - 44.0) / 20.0)
                .collect();
            let ind: Vec<*const f32> = (0..MR * taps)
                .map(|i| unsafe { a.as_ptr().add(i * cin) })
                .collect();
            let runs = Isa::available().into_iter().flat_map(|isa| {
                [MR, 11, 7, 6, 3, 1].into_iter().flat_map(move |rows| {
                    [FloatMode::Exact, FloatMode::Fast].map(|mode| (isa, rows, mode))
                })
            });
            for (isa, rows, mode) in runs {
                for panel in 0..n.div_ceil(NR) {
                    {
                        let mut acc = [[0f32; NR]; MR];
                        unsafe { packed.accumulate(isa, mode, &ind, rows, panel, &mut acc) };
                        for r in 0..rows {
                            for j in 0..NR.min(n - panel * NR) {
                                let o = panel * NR + j;
                                let want: f64 = (0..taps * cin)
                                    .map(|k| {
                                        a[r * taps * cin + k] as f64 * w[o * taps * cin + k] as f64
                                    })
                                    .sum();
                                let got = acc[r][j] as f64;
                                assert!(
                                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                                    "{} {mode:?} {rows} rows: {got} vs {want}",
                                    isa.name()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
