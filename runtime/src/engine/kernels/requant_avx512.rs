//! The int8 epilogue on AVX-512: sixteen channels per register, the same arithmetic as the
//! AVX2 and portable paths (`round(clamp(((s + bias) · mult + add) / div)) + zp`, the multiply and
//! the add not fused, so every path gives the same bytes), and masked loads and stores for
//! the channels past the last sixteen instead of a scalar tail.

use std::arch::x86_64::*;

/// One register's channel constants and clamp bounds.
#[derive(Clone, Copy)]
struct Constants {
    bias: __m512i,
    mult: __m512,
    add: __m512,
    lo: __m512,
    hi: __m512,
    zp: __m512i,
    div: Option<__m512>,
}

/// Channels `i..i + 16` (those under `mask`) of the layer's constants.
#[inline(always)]
unsafe fn constants(
    b: &[i32],
    m: &[f32],
    a: &[f32],
    [zp, lo, hi]: [i32; 3],
    div: f32,
    i: usize,
    mask: __mmask16,
) -> Constants {
    Constants {
        bias: _mm512_maskz_loadu_epi32(mask, b.as_ptr().add(i)),
        mult: _mm512_maskz_loadu_ps(mask, m.as_ptr().add(i)),
        add: _mm512_maskz_loadu_ps(mask, a.as_ptr().add(i)),
        // The clamp in float, at the integer bounds less the zero point (integers: clamping
        // before rounding gives what rounding then clamping gives).
        lo: _mm512_set1_ps((lo - zp) as f32),
        hi: _mm512_set1_ps((hi - zp) as f32),
        zp: _mm512_set1_epi32(zp),
        div: (div != 1.0).then(|| _mm512_set1_ps(div)),
    }
}

/// Sixteen int8 results (in an int32 register's lanes, already in range); `div` as in
/// [`super::requant::Requant::div`].
#[inline(always)]
unsafe fn requant16(s: __m512i, k: Constants) -> __m512i {
    let mut v = _mm512_add_ps(
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s, k.bias)), k.mult),
        k.add,
    );
    if let Some(d) = k.div {
        v = _mm512_div_ps(v, d);
    }
    let v = _mm512_min_ps(_mm512_max_ps(v, k.lo), k.hi);
    _mm512_add_epi32(_mm512_cvtps_epi32(v), k.zp)
}

/// The lanes of the first `n` (≤ 16) channels.
#[inline(always)]
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        u16::MAX
    } else {
        (1u16 << n) - 1
    }
}

/// `cols` (≤ 16) columns of every row of a tile, row `r` written at `dst + r · stride`.
///
/// # Safety
/// The CPU has AVX-512 F and BW; `b`, `m`, `a` hold `cols` values and every destination row
/// has room for `cols` bytes.
#[target_feature(enable = "avx512f,avx512bw")]
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
    let mask = lanes(cols);
    let k = constants(b, m, a, bounds, div, 0, mask);
    for (r, row) in acc.iter().enumerate() {
        let q = requant16(_mm512_maskz_loadu_epi32(mask, row.as_ptr()), k);
        _mm512_mask_cvtsepi32_storeu_epi8(dst.add(r * stride), mask, q);
    }
}

/// One row of any length.
///
/// # Safety
/// As [`tile_to_q8`], with `acc`, `b`, `m`, `a` and `dst` all `acc.len()` long.
#[target_feature(enable = "avx512f,avx512bw")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn to_q8(
    acc: &[i32],
    b: &[i32],
    m: &[f32],
    a: &[f32],
    bounds: [i32; 3],
    div: f32,
    dst: &mut [i8],
) {
    let n = acc.len();
    let mut i = 0;
    while i < n {
        let mask = lanes(n - i);
        let k = constants(b, m, a, bounds, div, i, mask);
        let q = requant16(_mm512_maskz_loadu_epi32(mask, acc.as_ptr().add(i)), k);
        _mm512_mask_cvtsepi32_storeu_epi8(dst.as_mut_ptr().add(i), mask, q);
        i += 16;
    }
}
