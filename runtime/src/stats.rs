//! Latency statistics reported the way hyperfine reports them: mean ± σ, min … max, median and
//! tail percentiles, with a warning when outliers suggest interference.

use serde::{Deserialize, Serialize};

/// Summary of repeated timings, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Number of timings.
    pub runs: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (0 for a single run).
    pub std_dev: f64,
    /// Fastest run.
    pub min: f64,
    /// Slowest run.
    pub max: f64,
    /// 50th percentile.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Timings whose modified Z-score exceeds [`OUTLIER_Z`].
    pub outliers: usize,
}

/// Modified Z-score above which a timing counts as an outlier (Iglewicz and Hoaglin, as hyperfine uses).
pub const OUTLIER_Z: f64 = 14.0;

/// Why the numbers may not be trustworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutlierWarning {
    /// Some runs were far slower than the rest.
    Outliers {
        /// How many.
        count: usize,
    },
    /// The first run was much slower than the rest (caches were cold).
    SlowFirstRun,
}

impl std::fmt::Display for OutlierWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutlierWarning::Outliers { count } => write!(
                f,
                "Statistical outliers were detected ({count}). Consider re-running on a quiet machine, without other programs competing for the CPU, or with more warm-up runs."
            ),
            OutlierWarning::SlowFirstRun => write!(f, "The first run was significantly slower than the rest. Consider more warm-up runs."),
        }
    }
}

/// Linear-interpolated percentile `q` (0..=1) of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Modified Z-scores: 0.6745 * (x - median) / MAD.
fn modified_z_scores(xs: &[f64]) -> Vec<f64> {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = percentile(&sorted, 0.5);
    let mut dev: Vec<f64> = xs.iter().map(|x| (x - median).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = percentile(&dev, 0.5);
    xs.iter()
        .map(|x| {
            if mad > 0.0 {
                0.6745 * (x - median) / mad
            } else {
                0.0
            }
        })
        .collect()
}

impl LatencySummary {
    /// Summarises timings in seconds; None when there are none.
    pub fn of(times: &[f64]) -> Option<LatencySummary> {
        if times.is_empty() {
            return None;
        }
        let n = times.len() as f64;
        let mean = times.iter().sum::<f64>() / n;
        let std_dev = if times.len() > 1 {
            (times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let mut sorted = times.to_vec();
        sorted.sort_by(f64::total_cmp);
        let outliers = modified_z_scores(times)
            .iter()
            .filter(|z| z.abs() > OUTLIER_Z)
            .count();
        Some(LatencySummary {
            runs: times.len(),
            mean,
            std_dev,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            p50: percentile(&sorted, 0.5),
            p90: percentile(&sorted, 0.9),
            p99: percentile(&sorted, 0.99),
            outliers,
        })
    }

    /// Warnings in hyperfine's manner for `times` (the same slice the summary was made from).
    pub fn warnings(&self, times: &[f64]) -> Vec<OutlierWarning> {
        let mut w = Vec::new();
        let z = modified_z_scores(times);
        if z.first().is_some_and(|&z0| z0 > OUTLIER_Z) {
            w.push(OutlierWarning::SlowFirstRun);
        } else if self.outliers > 0 {
            w.push(OutlierWarning::Outliers {
                count: self.outliers,
            });
        }
        w
    }

    /// `mean ± σ` and `min … max` with a unit chosen for the magnitude, as hyperfine prints.
    pub fn display(&self) -> String {
        let (scale, unit) = unit_for(self.mean);
        format!(
            "Time (mean ± σ): {:8.3} {unit} ± {:6.3} {unit}    Range (min … max): {:8.3} {unit} … {:8.3} {unit}    {} runs",
            self.mean * scale,
            self.std_dev * scale,
            self.min * scale,
            self.max * scale,
            self.runs
        )
    }
}

fn unit_for(seconds: f64) -> (f64, &'static str) {
    if seconds < 1e-3 {
        (1e6, "µs")
    } else if seconds < 1.0 {
        (1e3, "ms")
    } else {
        (1.0, "s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_matches_hand_computation() {
        let s = LatencySummary::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.mean, 2.5);
        assert!((s.std_dev - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!((s.min, s.max, s.p50), (1.0, 4.0, 2.5));
        assert!((s.p90 - 3.7).abs() < 1e-12);
        assert!(LatencySummary::of(&[]).is_none());
    }

    #[test]
    fn a_far_outlier_is_flagged_and_a_slow_first_run_named() {
        let mut t = vec![
            1.0e-3, 1.01e-3, 0.99e-3, 1.02e-3, 0.98e-3, 1.0e-3, 1.01e-3, 0.99e-3,
        ];
        t.push(50e-3);
        let s = LatencySummary::of(&t).unwrap();
        assert_eq!(s.outliers, 1);
        assert_eq!(s.warnings(&t), vec![OutlierWarning::Outliers { count: 1 }]);
        t.rotate_right(1);
        assert_eq!(s.warnings(&t), vec![OutlierWarning::SlowFirstRun]);
        let quiet = LatencySummary::of(&[1.0, 1.0, 1.0]).unwrap();
        assert!(quiet.warnings(&[1.0, 1.0, 1.0]).is_empty());
    }

    #[test]
    fn display_picks_a_unit() {
        let s = LatencySummary::of(&[2.0e-4, 3.0e-4]).unwrap();
        assert!(s.display().contains("250.000 µs"), "{}", s.display());
    }
}
