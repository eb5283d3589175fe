//! Activation calibration: from the values a tensor took on calibration samples to the range
//! its int8 grid should cover.
//!
//! - MinMax: the observed extremes. Exact for the data seen, wasteful when a few outliers
//!   stretch the range.
//! - Percentile: the 0.01th and 99.99th percentiles ([`PERCENTILE`]), clipping rare outliers.
//! - Entropy: the clipping threshold whose 128-level quantized histogram of |x| is closest to
//!   the original in KL divergence (Migacz, "8-bit Inference with TensorRT", 2017).

use crate::quantize::Range;

/// How activation ranges are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Observed minimum and maximum.
    MinMax,
    /// Percentiles [`PERCENTILE`] and 100 - [`PERCENTILE`].
    Percentile,
    /// KL-divergence-optimal clipping threshold.
    Entropy,
    /// No calibration: the ranges quantization-aware training learned (the checkpoint's
    /// `qat.json`).
    Qat,
}

impl Method {
    /// The name used in file names and reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::MinMax => "minmax",
            Method::Percentile => "percentile",
            Method::Entropy => "entropy",
            Method::Qat => "qat",
        }
    }
}

/// The percentile kept by [`Method::Percentile`].
pub const PERCENTILE: f64 = 99.99;
/// Histogram bins over `[0, max|x|]` for [`Method::Entropy`].
pub const ENTROPY_BINS: usize = 2048;
/// Levels of the quantized histogram: the magnitudes one sign of int8 can take.
pub const ENTROPY_LEVELS: usize = 128;

/// The range `method` picks for these values. Non-finite values must have been rejected.
pub fn range(method: Method, values: &[f32]) -> Range {
    if values.is_empty() {
        return Range { lo: 0.0, hi: 0.0 };
    }
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    match method {
        // Learned ranges are not calibrated; the exporter takes them from the checkpoint.
        Method::MinMax | Method::Qat => Range { lo, hi },
        Method::Percentile => {
            let mut sorted = values.to_vec();
            sorted.sort_unstable_by(f32::total_cmp);
            Range {
                lo: quantile(&sorted, 1.0 - PERCENTILE / 100.0),
                hi: quantile(&sorted, PERCENTILE / 100.0),
            }
        }
        Method::Entropy => {
            let t = entropy_threshold(values, lo.abs().max(hi.abs()));
            Range {
                lo: lo.max(-t),
                hi: hi.min(t),
            }
        }
    }
}

/// Linear-interpolated quantile `q` of sorted values.
fn quantile(sorted: &[f32], q: f64) -> f32 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    let next = sorted[(i + 1).min(sorted.len() - 1)];
    (sorted[i] as f64 + frac * (next as f64 - sorted[i] as f64)) as f32
}

/// The |x| threshold minimising KL(P || Q), where P is the histogram of |x| clipped at the
/// threshold (outliers folded into its last bin) and Q is P squeezed onto
/// [`ENTROPY_LEVELS`] levels and spread back over the bins that were non-empty.
pub fn entropy_threshold(values: &[f32], amax: f32) -> f32 {
    if amax <= 0.0 {
        return 0.0;
    }
    let width = amax / ENTROPY_BINS as f32;
    let mut hist = vec![0f64; ENTROPY_BINS];
    // Exact zeros (every ReLU output that did not fire) are left out: zero is exact at any
    // threshold, and a zero spike in the first bin would make the squeeze of the first
    // level dominate the divergence, driving the threshold down to the tightest candidate.
    for v in values.iter().filter(|v| **v != 0.0) {
        let b = ((v.abs() / width) as usize).min(ENTROPY_BINS - 1);
        hist[b] += 1.0;
    }
    let mut best = (f64::INFINITY, ENTROPY_BINS);
    let mut outliers: f64 = 0.0;
    // Walk thresholds from the widest down so the outlier mass accumulates incrementally.
    for i in (ENTROPY_LEVELS..=ENTROPY_BINS).rev() {
        if i < ENTROPY_BINS {
            outliers += hist[i];
        }
        let kl = clipped_kl(&hist[..i], outliers);
        // `<=`: on ties prefer the tighter threshold (finer steps for the same divergence).
        if kl <= best.0 {
            best = (kl, i);
        }
    }
    (best.1 as f32) * width
}

/// Mass moved onto empty bins before comparing distributions, so KL stays finite where one
/// has mass and the other has none (the smoothing of TensorRT's and MXNet's calibrators).
const SMOOTHING: f64 = 1e-4;

fn clipped_kl(bins: &[f64], outliers: f64) -> f64 {
    let n = bins.len();
    // P: the clipped reference, with everything beyond the threshold in its last bin.
    let mut p = bins.to_vec();
    p[n - 1] += outliers;
    // Q: the unclipped bins squeezed onto the levels and spread back over the bins that had
    // mass. Built from `bins`, not `p`: the outliers are exactly what Q cannot represent.
    let mut q = vec![0f64; n];
    for level in 0..ENTROPY_LEVELS {
        let start = level * n / ENTROPY_LEVELS;
        let end = (level + 1) * n / ENTROPY_LEVELS;
        let chunk = &bins[start..end];
        let nonzero = chunk.iter().filter(|&&c| c > 0.0).count();
        if nonzero == 0 {
            continue;
        }
        let share = chunk.iter().sum::<f64>() / nonzero as f64;
        for (qi, &c) in q[start..end].iter_mut().zip(chunk) {
            if c > 0.0 {
                *qi = share;
            }
        }
    }
    match (smoothed(&p), smoothed(&q)) {
        (Some(p), Some(q)) => p.iter().zip(&q).map(|(pi, qi)| pi * (pi / qi).ln()).sum(),
        _ => f64::INFINITY,
    }
}

/// Normalizes `h` to sum 1 and gives every empty bin [`SMOOTHING`] of mass, taken evenly from
/// the others. None when `h` is empty or too sparse to smooth.
fn smoothed(h: &[f64]) -> Option<Vec<f64>> {
    let total: f64 = h.iter().sum();
    let zeros = h.iter().filter(|&&v| v == 0.0).count();
    let nonzeros = h.len() - zeros;
    if total <= 0.0 || nonzeros == 0 {
        return None;
    }
    let take = SMOOTHING * zeros as f64 / nonzeros as f64;
    let out: Vec<f64> = h
        .iter()
        .map(|&v| {
            if v == 0.0 {
                SMOOTHING
            } else {
                v / total - take
            }
        })
        .collect();
    out.iter().all(|&v| v > 0.0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_is_the_extremes() {
        assert_eq!(
            range(Method::MinMax, &[0.5, -2.0, 3.0, 1.0]),
            Range { lo: -2.0, hi: 3.0 }
        );
    }

    #[test]
    fn percentile_interpolates_by_hand() {
        // 0..=10000: the 99.99th percentile is at position 0.9999 * 10000 = 9999.
        let v: Vec<f32> = (0..=10000).map(|i| i as f32).collect();
        let r = range(Method::Percentile, &v);
        assert!((r.hi - 9999.0).abs() < 1e-3, "{r:?}");
        assert!((r.lo - 1.0).abs() < 1e-3, "{r:?}");
        // One huge outlier among 20,001 values is clipped away.
        let mut w: Vec<f32> = (0..20000).map(|i| (i % 100) as f32 / 100.0).collect();
        w.push(1000.0);
        assert!(range(Method::Percentile, &w).hi < 1.0);
    }

    #[test]
    fn entropy_clips_a_long_tail_but_keeps_a_bounded_distribution() {
        // Uniform on [0, 1]: nothing to clip, the threshold stays near the maximum.
        let u: Vec<f32> = (0..100_000).map(|i| i as f32 / 100_000.0).collect();
        let t = entropy_threshold(&u, 1.0);
        assert!(t > 0.9, "uniform threshold {t}");
        // Laplace-like bulk with rare outliers 50x out: the threshold lands far below the max.
        let mut v: Vec<f32> = (1..100_000).map(|i| -(i as f32 / 100_000.0).ln()).collect();
        v.extend([50.0 * 11.5; 5]);
        let amax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let t = entropy_threshold(&v, amax);
        assert!(t < amax / 10.0, "threshold {t} of max {amax}");
        assert!(
            t > 5.0,
            "threshold {t} clips the bulk (99.3% of values are below 5)"
        );
    }

    #[test]
    fn kl_of_an_exactly_representable_histogram_is_zero() {
        // 128 bins, one per level: Q equals P.
        let bins: Vec<f64> = (0..128).map(|i| (i % 7 + 1) as f64).collect();
        assert!(clipped_kl(&bins, 0.0).abs() < 1e-12);
        // Clipping outliers into the last bin costs divergence: Q cannot hold them.
        assert!(clipped_kl(&bins, 100.0) > 0.01);
    }

    #[test]
    fn kl_by_hand_on_a_two_level_squeeze() {
        // 256 bins onto 128 levels: bins (2k, 2k+1) share a level. Bins 0 and 1 hold 3 and 1,
        // every other pair holds 2 and 2, so only the first level changes: Q = 2, 2 there.
        let mut bins = vec![2.0f64; 256];
        bins[0] = 3.0;
        bins[1] = 1.0;
        let total = 512.0;
        let want = (3.0 / total) * (3.0f64 / 2.0).ln() + (1.0 / total) * (1.0f64 / 2.0).ln();
        assert!((clipped_kl(&bins, 0.0) - want).abs() < 1e-12);
    }
}
