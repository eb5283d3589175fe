//! Why the AVX2 int8 kernel (no VNNI) runs where it does: the inner loop of a 4-row x
//! 16-column tile written four ways and timed on one core, from registers and L1 (no memory
//! traffic, no epilogue), so only the instruction mix differs.
//!
//! - `exact, sign trick`: the engine's kernel (`kernels/qgemm.rs`): |a| times b·sign(a) with
//!   `vpmaddubsw`, pairs widened by `vpmaddwd` with ones. Exact for weights in [-127, 127].
//! - `exact, |a| stored`: the same with |a| read from a second copy of the activations
//!   instead of computed per row (one `vpsignb` fewer per row and quad).
//! - `exact, int16 vpmaddwd`: XNNPACK's AVX2 scheme, activations and weights widened to int16
//!   beforehand (here: stored wide), two products per 32-bit lane.
//! - `saturating u8 x s8`: ONNX Runtime's AVX2 U8S8 kernel, activations offset into u8 and
//!   `vpmaddubsw` straight on the weights. Its int16 pair sums saturate when two large
//!   products of one sign meet (255·127·2 > 32767), so its results are not always exact.
//!
//!   cargo run --release -p edgekd-runtime --example int8_dot_avx2
//!
//! Prints nanoseconds per 256 multiply-adds (one quad of four rows by sixteen columns), the
//! minimum of several passes, and each variant's time over the engine's.

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::hint::black_box;
    use std::time::Instant;

    /// Quads a pass cycles through: 4 rows x 1024 quads of activations and 2 panels of
    /// weights stay in L1 and L2.
    const QUADS: usize = 1024;

    pub struct Data {
        a: Vec<i8>,
        abs: Vec<i8>,
        w: Vec<i8>,
        a16: Vec<i16>,
        w16: Vec<i16>,
    }

    impl Data {
        pub fn new() -> Data {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as i8
            };
            let a: Vec<i8> = (0..4 * QUADS * 4).map(|_| next()).collect();
            let w: Vec<i8> = (0..QUADS * 64).map(|_| next().max(-127)).collect();
            Data {
                abs: a.iter().map(|v| v.unsigned_abs() as i8).collect(),
                a16: a.iter().map(|&v| v as i16).collect(),
                w16: w.iter().map(|&v| v as i16).collect(),
                a,
                w,
            }
        }
    }

    type Acc = [__m256i; 8];

    unsafe fn sum(c: Acc) -> i64 {
        let mut t = [0i32; 8];
        let mut s = 0i64;
        for v in c {
            _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, v);
            s += t.iter().map(|&x| x as i64).sum::<i64>();
        }
        s
    }

    #[inline(always)]
    unsafe fn bcast(p: *const i8) -> __m256i {
        _mm256_set1_epi32((p as *const i32).read_unaligned())
    }

    /// The byte kernels' loop: `row(at, w0, w1)` gives row `at`'s int16 pair sums against
    /// both panels, which `vpmaddwd` with ones adds into the int32 lanes.
    #[inline(always)]
    unsafe fn byte_tile(
        d: &Data,
        passes: usize,
        row: impl Fn(usize, __m256i, __m256i) -> (__m256i, __m256i),
    ) -> i64 {
        let ones = _mm256_set1_epi16(1);
        let mut c: Acc = [_mm256_setzero_si256(); 8];
        for _ in 0..passes {
            for q in 0..QUADS {
                let w0 = _mm256_loadu_si256(d.w.as_ptr().add(q * 64) as *const __m256i);
                let w1 = _mm256_loadu_si256(d.w.as_ptr().add(q * 64 + 32) as *const __m256i);
                for r in 0..4 {
                    let (p0, p1) = row((r * QUADS + q) * 4, w0, w1);
                    c[2 * r] = _mm256_add_epi32(c[2 * r], _mm256_madd_epi16(p0, ones));
                    c[2 * r + 1] = _mm256_add_epi32(c[2 * r + 1], _mm256_madd_epi16(p1, ones));
                }
            }
        }
        sum(c)
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn sign_trick(d: &Data, passes: usize) -> i64 {
        byte_tile(d, passes, |at, w0, w1| {
            let a = bcast(d.a.as_ptr().add(at));
            let ua = _mm256_sign_epi8(a, a);
            let p0 = _mm256_maddubs_epi16(ua, _mm256_sign_epi8(w0, a));
            (p0, _mm256_maddubs_epi16(ua, _mm256_sign_epi8(w1, a)))
        })
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn stored_abs(d: &Data, passes: usize) -> i64 {
        byte_tile(d, passes, |at, w0, w1| {
            let (a, ua) = (bcast(d.a.as_ptr().add(at)), bcast(d.abs.as_ptr().add(at)));
            let p0 = _mm256_maddubs_epi16(ua, _mm256_sign_epi8(w0, a));
            (p0, _mm256_maddubs_epi16(ua, _mm256_sign_epi8(w1, a)))
        })
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn int16(d: &Data, passes: usize) -> i64 {
        let mut c: Acc = [_mm256_setzero_si256(); 8];
        for _ in 0..passes {
            for q in 0..QUADS {
                // Per k pair and panel: eight columns x two k of int16 (32 bytes).
                let w = d.w16.as_ptr().add(q * 64);
                let w00 = _mm256_loadu_si256(w as *const __m256i);
                let w10 = _mm256_loadu_si256(w.add(16) as *const __m256i);
                let w01 = _mm256_loadu_si256(w.add(32) as *const __m256i);
                let w11 = _mm256_loadu_si256(w.add(48) as *const __m256i);
                for r in 0..4 {
                    let at = d.a16.as_ptr().add((r * QUADS + q) * 4);
                    let a0 = _mm256_set1_epi32((at as *const i32).read_unaligned());
                    let a1 = _mm256_set1_epi32((at.add(2) as *const i32).read_unaligned());
                    let s0 =
                        _mm256_add_epi32(_mm256_madd_epi16(a0, w00), _mm256_madd_epi16(a1, w01));
                    let s1 =
                        _mm256_add_epi32(_mm256_madd_epi16(a0, w10), _mm256_madd_epi16(a1, w11));
                    c[2 * r] = _mm256_add_epi32(c[2 * r], s0);
                    c[2 * r + 1] = _mm256_add_epi32(c[2 * r + 1], s1);
                }
            }
        }
        sum(c)
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn saturating(d: &Data, passes: usize) -> i64 {
        byte_tile(d, passes, |at, w0, w1| {
            // ONNX Runtime's activations are u8 already: any bytes stand for them.
            let a = bcast(d.abs.as_ptr().add(at));
            (_mm256_maddubs_epi16(a, w0), _mm256_maddubs_epi16(a, w1))
        })
    }

    /// Nanoseconds per 256 multiply-adds: the fastest of `rounds` timings.
    pub fn time(f: unsafe fn(&Data, usize) -> i64, d: &Data, rounds: usize) -> f64 {
        let passes = 2000;
        // SAFETY: the caller checked for AVX2; every read is inside `d`'s vectors.
        black_box(unsafe { f(d, 50) });
        (0..rounds)
            .map(|_| {
                let t = Instant::now();
                black_box(unsafe { f(black_box(d), passes) });
                t.elapsed().as_secs_f64() * 1e9 / (passes * QUADS) as f64
            })
            .fold(f64::INFINITY, f64::min)
    }
}

#[cfg(target_arch = "x86_64")]
fn main() {
    if !is_x86_feature_detected!("avx2") {
        eprintln!("this CPU has no AVX2: nothing to compare");
        std::process::exit(1);
    }
    let d = avx2::Data::new();
    type Variant = (&'static str, unsafe fn(&avx2::Data, usize) -> i64);
    let variants: [Variant; 4] = [
        ("exact, sign trick (the engine's)", avx2::sign_trick),
        ("exact, |a| stored", avx2::stored_abs),
        ("exact, int16 vpmaddwd", avx2::int16),
        ("saturating u8 x s8 (ONNX Runtime)", avx2::saturating),
    ];
    // Interleaved rounds, so a busy moment of the machine hits every variant alike.
    let mut best = [f64::INFINITY; 4];
    for _ in 0..7 {
        for (i, (_, f)) in variants.iter().enumerate() {
            best[i] = best[i].min(avx2::time(*f, &d, 3));
        }
    }
    println!("4 rows x 16 columns x 4 k = 256 multiply-adds per step, one core, from L1:");
    for ((name, _), t) in variants.iter().zip(best) {
        println!(
            "  {name:<36} {t:>6.2} ns/step  {:>6.1} GMAC/s  {:.2}x the engine's time",
            256.0 / t,
            t / best[0]
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("an x86-64 comparison: nothing to run on this architecture");
}
