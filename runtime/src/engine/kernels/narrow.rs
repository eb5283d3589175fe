//! Float convolutions with few output channels over few input channels (a first layer:
//! LeNet's 3 or 6 filters over a grey or colour image), stride 1: pixels in lanes. Eight
//! neighbouring output pixels of one row share a vector, one accumulator per output channel,
//! and each tap is one broadcast weight times eight neighbouring input values of a padded
//! plane. The GEMM path puts output channels in lanes, so 3 filters leave 13 of its 16
//! idle, and it gathers every pixel's window first.
//!
//! x86_64 with AVX2 and FMA only (the module is built there alone), in
//! [`super::sgemm::FloatMode::Fast`]: elsewhere, and in the exact mode, such layers keep the
//! GEMM path (and its bits).

/// Filters per pass (one accumulator each); a layer of up to sixteen runs in two passes.
pub(crate) const MAX_OUT: usize = 8;
/// Output pixels per vector.
pub(crate) const LANES: usize = 8;

/// The padded planes of one image: `c` planes of `rows x pitch` values, the image at row
/// `top`, column `left`, zeros around it, and [`LANES`] spare columns on the right so the
/// last block of a row may read past the row's end.
pub(crate) struct Planes {
    pub c: usize,
    pub rows: usize,
    pub pitch: usize,
}

impl Planes {
    pub(crate) fn new(c: usize, [h, w]: [usize; 2], pads: [usize; 4]) -> Planes {
        Planes {
            c,
            rows: h + pads[0] + pads[2],
            pitch: w + pads[1] + pads[3] + LANES,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.c * self.rows * self.pitch
    }

    /// Writes an NHWC image (`h x w` pixels of `c` values at `x`) into `dst` (zeroed before,
    /// by the caller, and only ever written here with this layout: the border stays zero).
    ///
    /// # Safety
    /// `x` must hold the image; `dst` must hold [`Planes::len`] values.
    pub(crate) unsafe fn fill(
        &self,
        x: *const f32,
        [h, w]: [usize; 2],
        [top, left]: [usize; 2],
        dst: &mut [f32],
    ) {
        for y in 0..h {
            for ci in 0..self.c {
                let row = &mut dst[(ci * self.rows + y + top) * self.pitch + left..][..w];
                for (i, v) in row.iter_mut().enumerate() {
                    *v = *x.add((y * w + i) * self.c + ci);
                }
            }
        }
    }
}

/// The signature of [`row`], for a caller that picks the width once.
pub(crate) type Row = unsafe fn(&[f32], &Planes, usize, usize, [usize; 2], &[f32], usize, Epilogue);

/// What [`row`] does with its sums: `clamp(sum + add[o], lo, hi)` written to output channel
/// `o` of each pixel, pixels `stride` values apart from `dst`.
pub(crate) struct Epilogue<'a> {
    pub add: &'a [f32],
    pub bounds: [f32; 2],
    pub dst: *mut f32,
    pub stride: usize,
}

/// One output row of `ow` pixels and `OG` channels, through the epilogue. Weights
/// `w[(tap · c + ci) · w_stride + o]` (the GEMM's packed panel), taps `kh x kw` row by row;
/// the row reads plane rows `oy..oy + kh`.
///
/// # Safety
/// `planes` must hold [`Planes::len`] values laid out as `p` says, with `oy + kh <= p.rows`
/// and `ow + kw - 1 + LANES <= p.pitch`; `e.dst` must be valid for the row's pixels; the CPU
/// must have AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn row<const OG: usize>(
    planes: &[f32],
    p: &Planes,
    oy: usize,
    ow: usize,
    [kh, kw]: [usize; 2],
    w: &[f32],
    w_stride: usize,
    e: Epilogue,
) {
    use std::arch::x86_64::*;
    let base = planes.as_ptr();
    let (lo, hi) = (_mm256_set1_ps(e.bounds[0]), _mm256_set1_ps(e.bounds[1]));
    for x0 in (0..ow).step_by(LANES) {
        let mut acc = [_mm256_setzero_ps(); OG];
        for ky in 0..kh {
            for kx in 0..kw {
                let t = ky * kw + kx;
                for ci in 0..p.c {
                    let at = (ci * p.rows + oy + ky) * p.pitch + x0 + kx;
                    let v = _mm256_loadu_ps(base.add(at));
                    let wt = w.as_ptr().add((t * p.c + ci) * w_stride);
                    for (o, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_broadcast_ss(&*wt.add(o)), v, *a);
                    }
                }
            }
        }
        let real = LANES.min(ow - x0);
        if OG == 8 {
            // Eight filters: transpose in registers, one store of eight channels per pixel.
            let acc: [__m256; 8] = std::array::from_fn(|o| acc[o]);
            let bias = _mm256_loadu_ps(e.add.as_ptr());
            for (l, v) in transpose8(acc).iter().enumerate().take(real) {
                let v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(*v, bias), lo), hi);
                _mm256_storeu_ps(e.dst.add((x0 + l) * e.stride), v);
            }
            continue;
        }
        let mut lanes = [0f32; LANES];
        for (o, a) in acc.iter().enumerate() {
            let v = _mm256_add_ps(*a, _mm256_broadcast_ss(&e.add[o]));
            _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_min_ps(_mm256_max_ps(v, lo), hi));
            for (l, &v) in lanes.iter().enumerate().take(real) {
                *e.dst.add((x0 + l) * e.stride + o) = v;
            }
        }
    }
}

/// The 8x8 transpose of eight vectors: lane `l` of input `o` becomes lane `o` of output `l`.
#[inline(always)]
unsafe fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}
