//! The arithmetic of int8 quantization: per-channel symmetric weights, int32 biases, and
//! activation parameters from a calibrated range.
//!
//! Conventions are ONNX's: `real = scale * (q - zero_point)`, and values round half to even,
//! as `QuantizeLinear` does.

/// A calibrated range of real values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Smallest value to represent.
    pub lo: f32,
    /// Largest value to represent.
    pub hi: f32,
}

/// Scale and zero point of one quantized tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQuant {
    /// Real value of one integer step.
    pub scale: f32,
    /// The integer that represents 0.0.
    pub zero_point: i32,
}

/// Smallest scale used, so an all-zero tensor still gets a valid (non-zero) scale.
const MIN_SCALE: f32 = 1e-8;

impl ActQuant {
    /// Symmetric int8: zero point 0, `±max(|lo|, |hi|)` maps to ±127 (-128 is left unused so
    /// the grid is symmetric, as for weights).
    pub fn symmetric_i8(r: Range) -> ActQuant {
        ActQuant {
            scale: (r.lo.abs().max(r.hi.abs()) / 127.0).max(MIN_SCALE),
            zero_point: 0,
        }
    }

    /// Asymmetric uint8 over `[min(lo, 0), max(hi, 0)]` (0.0 must be exact, for ReLU and padding).
    pub fn asymmetric_u8(r: Range) -> ActQuant {
        let (lo, hi) = (r.lo.min(0.0), r.hi.max(0.0));
        let scale = ((hi - lo) / 255.0).max(MIN_SCALE);
        ActQuant {
            scale,
            zero_point: (-lo / scale).round_ties_even().clamp(0.0, 255.0) as i32,
        }
    }
}

/// Per-channel symmetric int8 weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelQuant {
    /// Quantized weights, same layout as the input.
    pub values: Vec<i8>,
    /// One scale per channel.
    pub scales: Vec<f32>,
}

impl ChannelQuant {
    /// The dequantized weights (for error measurements).
    pub fn dequantize(&self) -> Vec<f32> {
        let per = self.values.len() / self.scales.len().max(1);
        self.values
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * self.scales[i / per])
            .collect()
    }
}

/// Quantizes row-major `[channels, fan_in]` weights with one symmetric scale per channel:
/// `scale_c = max|w_c| / levels`, `q = round(w / scale_c)` in [-levels, levels] (127 for full
/// int8; 63 where a runtime's kernels need headroom).
///
/// ```
/// let q = edgekd_export::quantize::per_channel(&[0.25, -1.0, 0.5, 0.2], 2, 127);
/// assert_eq!(q.scales, vec![1.0 / 127.0, 0.5 / 127.0]);
/// assert_eq!(q.values, vec![32, -127, 127, 51]); // 31.75 -> 32, 50.8 -> 51
/// ```
pub fn per_channel(weight: &[f32], channels: usize, levels: i8) -> ChannelQuant {
    let levels = levels.unsigned_abs().max(1) as f32;
    let fan_in = weight.len() / channels.max(1);
    let mut scales = Vec::with_capacity(channels);
    let mut values = Vec::with_capacity(weight.len());
    for row in weight.chunks(fan_in.max(1)) {
        let amax = row.iter().fold(0f32, |m, w| m.max(w.abs()));
        let scale = (amax / levels).max(MIN_SCALE);
        scales.push(scale);
        values.extend(
            row.iter()
                .map(|w| (w / scale).round_ties_even().clamp(-levels, levels) as i8),
        );
    }
    ChannelQuant { values, scales }
}

/// Quantizes biases to int32 at scale `input_scale * weight_scale_c`, the scale of the int32
/// accumulator they are added to. Saturates rather than wrapping for absurd ranges.
///
/// ```
/// let b = edgekd_export::quantize::bias(&[0.5, -0.3], 0.1, &[0.01, 0.02]);
/// assert_eq!(b, vec![500, -150]);
/// ```
pub fn bias(bias: &[f32], input_scale: f32, weight_scales: &[f32]) -> Vec<i32> {
    bias.iter()
        .zip(weight_scales)
        .map(|(b, s)| {
            let q = (*b as f64 / (input_scale as f64 * *s as f64)).round_ties_even();
            q.clamp(i32::MIN as f64, i32::MAX as f64) as i32
        })
        .collect()
}

/// Transposes row-major `[rows, cols]` into `[cols, rows]`.
pub fn transpose<T: Copy>(m: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(m.len());
    for c in 0..cols {
        out.extend((0..rows).map(|r| m[r * cols + c]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_activation_scale_by_hand() {
        let q = ActQuant::symmetric_i8(Range {
            lo: -0.4242,
            hi: 2.8215,
        });
        assert_eq!(q.zero_point, 0);
        assert!((q.scale - 2.8215 / 127.0).abs() < 1e-9);
        // A zero range still gives a usable scale.
        assert!(ActQuant::symmetric_i8(Range { lo: 0.0, hi: 0.0 }).scale > 0.0);
    }

    #[test]
    fn asymmetric_activation_keeps_zero_exact() {
        // [-1, 3]: scale 4/255, zero point round(255/4) = round(63.75) = 64.
        let q = ActQuant::asymmetric_u8(Range { lo: -1.0, hi: 3.0 });
        assert!((q.scale - 4.0 / 255.0).abs() < 1e-9);
        assert_eq!(q.zero_point, 64);
        // Post-ReLU ranges start at 0: zero point 0.
        let r = ActQuant::asymmetric_u8(Range { lo: 0.0, hi: 6.0 });
        assert_eq!(r.zero_point, 0);
        assert!((r.scale - 6.0 / 255.0).abs() < 1e-9);
        // A range not containing 0 is widened to contain it.
        let s = ActQuant::asymmetric_u8(Range { lo: 1.0, hi: 2.0 });
        assert_eq!(s.zero_point, 0);
        assert!((s.scale - 2.0 / 255.0).abs() < 1e-9);
    }

    #[test]
    fn per_channel_error_is_at_most_half_a_step() {
        let w: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 31.5) / 7.0)
            .collect();
        let q = per_channel(&w, 4, 127);
        for (i, (a, b)) in w.iter().zip(q.dequantize()).enumerate() {
            assert!(
                (a - b).abs() <= q.scales[i / 16] / 2.0 + 1e-6,
                "{i}: {a} vs {b}"
            );
        }
        // The largest magnitude of each channel maps to exactly ±127.
        for c in 0..4 {
            let m = q.values[c * 16..(c + 1) * 16]
                .iter()
                .map(|v| v.unsigned_abs())
                .max();
            assert_eq!(m, Some(127));
        }
    }

    #[test]
    fn zero_channels_do_not_divide_by_zero() {
        let q = per_channel(&[0.0, 0.0, 1.0, -1.0], 2, 127);
        // Seven bits: ±63.
        assert_eq!(per_channel(&[0.25, -1.0], 1, 63).values, vec![16, -63]);
        assert_eq!(q.values, vec![0, 0, 127, -127]);
        assert!(q.scales[0] > 0.0);
    }

    #[test]
    fn bias_saturates_instead_of_wrapping() {
        assert_eq!(bias(&[1e9], 1e-6, &[1e-6]), vec![i32::MAX]);
        assert_eq!(bias(&[-1e9], 1e-6, &[1e-6]), vec![i32::MIN]);
    }

    #[test]
    fn transpose_by_hand() {
        assert_eq!(transpose(&[1, 2, 3, 4, 5, 6], 2, 3), vec![1, 4, 2, 5, 3, 6]);
    }
}
