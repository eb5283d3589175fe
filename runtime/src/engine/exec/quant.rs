//! The quantization steps: `QuantizeLinear` and `DequantizeLinear` standing alone, dynamic
//! quantization, and residual additions of two int8 values (those a convolution's epilogue
//! did not take). Each is one pass over a feature map, compiled per vector width.

use super::Ctx;
use crate::engine::ir::{ActId, Elem, QParams};

/// `round_half_even(x / scale) + zp` saturated to `[lo, hi]`, vectorizable: the value is
/// clamped first (NaN goes low, as `f32::max` ignores it), then rounded by adding and
/// subtracting 1.5·2^23, which leaves the nearest integer under IEEE's default rounding.
/// A division, as the ONNX spec writes it: multiplying by the reciprocal lands one level
/// off on values next to a rounding tie (the differential fuzz target found one).
#[inline]
pub(super) fn quantize(x: f32, scale: f32, zp: i32, lo: i32, hi: i32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    let v = (x / scale).max((lo - zp) as f32).min((hi - zp) as f32);
    (((v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) + zp) as i8
}

/// [`quantize`] over a slice, compiled once per vector width: the loop is the same, wider
/// registers divide more values at once (the division is most of its cost).
unsafe fn quantize_into(cx: &Ctx, src: &[f32], dst: &mut [i8], scale: f32, zp: i32) {
    #[inline(always)]
    fn body(src: &[f32], dst: &mut [i8], scale: f32, zp: i32) {
        dst.iter_mut()
            .zip(src)
            .for_each(|(d, &v)| *d = quantize(v, scale, zp, -128, 127));
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw")]
        unsafe fn avx512(src: &[f32], dst: &mut [i8], scale: f32, zp: i32) {
            body(src, dst, scale, zp)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(src: &[f32], dst: &mut [i8], scale: f32, zp: i32) {
            body(src, dst, scale, zp)
        }
        if cx.isa.has_avx512() {
            return avx512(src, dst, scale, zp);
        }
        if cx.isa.is_avx2() {
            return avx2(src, dst, scale, zp);
        }
    }
    let _ = cx;
    body(src, dst, scale, zp)
}

/// Scale and signed-domain zero point of an int8 value, static or computed this run.
pub(super) unsafe fn params(cx: &Ctx, a: usize) -> (f32, i32) {
    match cx.acts[a].elem {
        Elem::Q8(q) => (q.scale, q.zp),
        Elem::Q8Dynamic { scale, zp } => (*cx.ptr::<f32>(scale), *cx.ptr::<i32>(zp) - 128),
        e => unreachable!("{e:?} is not int8"),
    }
}

/// Where the sum of two int8 values goes.
enum QSum<'a> {
    Q8(&'a mut [i8], QParams),
    F32(&'a mut [f32]),
}

/// `clamp(dequantize(a) + dequantize(b))`, requantized or not. Written as zipped slices so
/// the compiler vectorizes it: a residual addition touches every value of a feature map.
#[inline(always)]
fn q_add(
    va: &[i8],
    vb: &[i8],
    (sa, za): (f32, i32),
    (sb, zb): (f32, i32),
    [lo, hi]: [f32; 2],
    out: QSum,
) {
    let v =
        |a: i8, b: i8| ((a as i32 - za) as f32 * sa + (b as i32 - zb) as f32 * sb).clamp(lo, hi);
    match out {
        QSum::Q8(dst, q) => dst
            .iter_mut()
            .zip(va.iter().zip(vb))
            .for_each(|(d, (&a, &b))| *d = quantize(v(a, b), q.scale, q.zp, -128, 127)),
        QSum::F32(dst) => dst
            .iter_mut()
            .zip(va.iter().zip(vb))
            .for_each(|(d, (&a, &b))| *d = v(a, b)),
    }
}

/// [`q_add`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn q_add_avx2(
    va: &[i8],
    vb: &[i8],
    pa: (f32, i32),
    pb: (f32, i32),
    bounds: [f32; 2],
    out: QSum,
) {
    q_add(va, vb, pa, pb, bounds, out)
}

/// [`q_add`] compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q_add_avx512(
    va: &[i8],
    vb: &[i8],
    pa: (f32, i32),
    pb: (f32, i32),
    bounds: [f32; 2],
    out: QSum,
) {
    q_add(va, vb, pa, pb, bounds, out)
}

/// `QuantizeLinear`.
///
/// # Safety
/// As [`super::run_step`].
pub(super) unsafe fn quantize_step(cx: &Ctx, x: ActId, y: ActId, q: QParams) {
    let (src, dst) = (cx.slice::<f32>(x), cx.slice_mut::<i8>(y));
    quantize_into(cx, src, dst, q.scale, q.zp);
}

/// `DequantizeLinear`.
///
/// # Safety
/// As [`super::run_step`].
pub(super) unsafe fn dequantize_step(cx: &Ctx, x: ActId, y: ActId) {
    let (s, z) = params(cx, x);
    let (src, dst) = (cx.slice::<i8>(x), cx.slice_mut::<f32>(y));
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, &v)| *d = (v as i32 - z) as f32 * s);
}

/// `DynamicQuantizeLinear`: the range of this run's values sets the scale and zero point.
///
/// # Safety
/// As [`super::run_step`].
pub(super) unsafe fn dynamic_quantize_step(cx: &Ctx, x: ActId, y: ActId, scale: ActId, zp: ActId) {
    let src = cx.slice::<f32>(x);
    let (lo, hi) = src
        .iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let s = (hi - lo) / 255.0;
    let dst = cx.slice_mut::<i8>(y);
    let z = if s > 0.0 && s.is_finite() {
        let z = (-lo / s).round_ties_even().clamp(0.0, 255.0) as i32;
        // u8 values held as `v - 128`.
        quantize_into(cx, src, dst, s, z - 128);
        z
    } else {
        // All zeros (or a non-finite range): everything maps to the zero point.
        dst.fill(-128);
        0
    };
    *cx.ptr::<f32>(scale) = s;
    *cx.ptr::<i32>(zp) = z;
}

/// The sum of two int8 values, clamped to `bounds`, written as int8 or f32.
///
/// # Safety
/// As [`super::run_step`].
pub(super) unsafe fn q_add_step(cx: &Ctx, a: ActId, b: ActId, y: ActId, bounds: [f32; 2]) {
    let (pa, pb) = (params(cx, a), params(cx, b));
    let (va, vb) = (cx.slice::<i8>(a), cx.slice::<i8>(b));
    let out = match cx.acts[y].elem {
        Elem::Q8(q) => QSum::Q8(cx.slice_mut::<i8>(y), q),
        _ => QSum::F32(cx.slice_mut::<f32>(y)),
    };
    #[cfg(target_arch = "x86_64")]
    if cx.isa.has_avx512() {
        // SAFETY: AVX-512 is detected.
        return q_add_avx512(va, vb, pa, pb, bounds, out);
    }
    #[cfg(target_arch = "x86_64")]
    if cx.isa.is_avx2() {
        // SAFETY: AVX2 is detected.
        return q_add_avx2(va, vb, pa, pb, bounds, out);
    }
    q_add(va, vb, pa, pb, bounds, out);
}
