//! `QuantizeLinear`, `DequantizeLinear`, `DynamicQuantizeLinear`, as the ONNX spec defines
//! them: round half to even, saturate to the integer type.

use super::{required, Op};
use crate::native::tensor::{Data, Tensor};

/// f32 to int8/uint8 with one scale and zero point per tensor. Inputs: x, scale, zero point
/// (whose type picks the output type; u8 when absent).
#[derive(Debug)]
pub struct QuantizeLinear;

/// `saturate(round(x / scale) + zp)`, written so the loop over a tensor vectorizes: the
/// value is clamped to the representable range first (NaN saturates low, as `f32::max`
/// ignores it), which makes the rounding trick valid for every input, and the integer is then
/// read from the rounded float's bits instead of through a checked float-to-int conversion.
#[inline]
fn quantize(x: f32, scale: f32, zp: i32, lo: i32, hi: i32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    let v = (x / scale).max((lo - zp) as f32).min((hi - zp) as f32);
    // For |v| < 2^22, v + 1.5·2^23 holds round(v) in its low mantissa bits.
    ((v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) + zp
}

/// Round half to even without a libm call (baseline x86_64 has no rounding instruction, and
/// `f32::round_ties_even` became a function call per value): adding and subtracting 1.5·2^23
/// leaves the nearest integer under IEEE's default rounding, for |v| < 2^22; larger floats
/// are integers already.
#[inline]
fn round_ties_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if v.abs() < 4_194_304.0 {
        (v + MAGIC) - MAGIC
    } else {
        v
    }
}

impl Op for QuantizeLinear {
    fn run(&self, inputs: &[Option<&Tensor>], _: usize) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0)?;
        let v = x.as_f32()?;
        let scale = required(inputs, 1)?.scalar_f32().map_err(|e| {
            format!("scale: {e} (per-axis activation quantization is not supported)")
        })?;
        let zp = inputs.get(2).copied().flatten();
        let data = match zp.map(|z| &z.data) {
            Some(Data::I8(z)) if z.len() == 1 => {
                let z = z[0] as i32;
                Data::I8(
                    v.iter()
                        .map(|&x| quantize(x, scale, z, -128, 127) as i8)
                        .collect(),
                )
            }
            None => Data::U8(
                v.iter()
                    .map(|&x| quantize(x, scale, 0, 0, 255) as u8)
                    .collect(),
            ),
            Some(Data::U8(z)) if z.len() == 1 => {
                let z = z[0] as i32;
                Data::U8(
                    v.iter()
                        .map(|&x| quantize(x, scale, z, 0, 255) as u8)
                        .collect(),
                )
            }
            Some(other) => {
                return Err(format!(
                    "zero point must be one i8 or u8 value, found {} {}",
                    other.len(),
                    other.type_name()
                ))
            }
        };
        Ok(vec![Tensor::new(x.shape.clone(), data)?])
    }
}

/// int to f32: `(x - zero_point) · scale`, per tensor or per channel along `axis`.
/// Inputs: x, scale, zero point.
#[derive(Debug)]
pub struct DequantizeLinear {
    /// The channel axis for per-channel scales (may be negative).
    pub axis: i64,
}

impl Op for DequantizeLinear {
    fn run(&self, inputs: &[Option<&Tensor>], _: usize) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0)?;
        let v = x.to_i64()?;
        let scale = required(inputs, 1)?.as_f32()?.to_vec();
        let zp = match inputs.get(2).copied().flatten() {
            Some(z) => z.to_i64()?,
            None => vec![0],
        };
        let channels = scale.len();
        // Per-tensor: everything is channel 0 of a single "channel".
        let (inner, count) = if channels == 1 {
            (v.len().max(1), 1)
        } else {
            let rank = x.shape.len() as i64;
            let axis = if self.axis < 0 {
                self.axis + rank
            } else {
                self.axis
            };
            if axis < 0 || axis >= rank || x.shape[axis as usize] != channels {
                return Err(format!(
                    "{channels} scales do not match axis {} of shape {:?}",
                    self.axis, x.shape
                ));
            }
            (
                x.shape[axis as usize + 1..].iter().product::<usize>(),
                channels,
            )
        };
        if zp.len() != 1 && zp.len() != count {
            return Err(format!("{} zero points for {count} scales", zp.len()));
        }
        let out = v
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let c = (i / inner) % count;
                let z = if zp.len() == 1 { zp[0] } else { zp[c] };
                (q - z) as f32 * scale[c]
            })
            .collect();
        Ok(vec![Tensor::f32(x.shape.clone(), out)?])
    }
}

/// f32 to u8 with a scale and zero point computed from the tensor's own range (which always
/// includes 0). Outputs: y, scale, zero point.
#[derive(Debug)]
pub struct DynamicQuantizeLinear;

impl Op for DynamicQuantizeLinear {
    fn run(&self, inputs: &[Option<&Tensor>], _: usize) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0)?;
        let v = x.as_f32()?;
        let (lo, hi) = v
            .iter()
            .fold((0.0f32, 0.0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let scale = (hi - lo) / 255.0;
        let (q, zp) = if scale > 0.0 && scale.is_finite() {
            let zp = round_ties_even(-lo / scale).clamp(0.0, 255.0) as i32;
            let q = v
                .iter()
                .map(|&x| quantize(x, scale, zp, 0, 255) as u8)
                .collect();
            (q, zp as u8)
        } else {
            // All zeros (or a non-finite range): everything maps to the zero point.
            (vec![0u8; v.len()], 0)
        };
        Ok(vec![
            Tensor::new(x.shape.clone(), Data::U8(q))?,
            Tensor::f32(vec![], vec![scale])?,
            Tensor::new(vec![], Data::U8(vec![zp]))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_rounding_agrees_with_the_standard_library() {
        let mut x = -300.0f32;
        while x < 300.0 {
            for v in [x, x + 0.5, -x - 0.5, x * 1.0001] {
                assert_eq!(round_ties_even(v), v.round_ties_even(), "{v}");
            }
            x += 0.25;
        }
        for v in [4_194_303.5f32, 1e9, -1e9, 8_388_609.0] {
            assert_eq!(round_ties_even(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let x = Tensor::f32(vec![6], vec![0.5, 1.5, 2.5, -0.5, 1000.0, -1000.0]).unwrap();
        let s = Tensor::f32(vec![], vec![1.0]).unwrap();
        let z = Tensor::new(vec![], Data::I8(vec![0])).unwrap();
        let y = QuantizeLinear
            .run(&[Some(&x), Some(&s), Some(&z)], 1)
            .unwrap();
        assert_eq!(y[0].data, Data::I8(vec![0, 2, 2, 0, 127, -128]));
    }

    #[test]
    fn dynamic_quantization_matches_the_spec_formula() {
        // Range [-1, 2] (0 inside): scale 3/255, zero point round(1 / (3/255)) = 85.
        let x = Tensor::f32(vec![3], vec![-1.0, 0.0, 2.0]).unwrap();
        let y = DynamicQuantizeLinear.run(&[Some(&x)], 1).unwrap();
        assert_eq!(y[1].scalar_f32().unwrap(), 3.0 / 255.0);
        assert_eq!(y[2].data, Data::U8(vec![85]));
        assert_eq!(y[0].data, Data::U8(vec![0, 85, 255]));
    }
}
