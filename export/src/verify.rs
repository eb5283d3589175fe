//! Checking an exported file before anyone sees it: reload it in the runtime, run the test
//! set, and compare with the candle model it came from.

use std::time::Instant;

use edgekd_runtime::{LatencySummary, Model};

use crate::error::{Error, Result};

/// Test images per runtime call: one plan, reused for every full batch.
pub const BATCH: usize = 500;

/// The test set as the exported model sees it, with the candle model's answers.
pub struct Reference {
    /// Normalized inputs, `[n, sample_len]` row-major.
    pub inputs: Vec<f32>,
    /// Values per sample.
    pub sample_len: usize,
    /// True labels.
    pub labels: Vec<u8>,
    /// The candle model's logits, `[n, classes]`.
    pub logits: Vec<f32>,
    /// Number of classes.
    pub classes: usize,
}

impl Reference {
    /// Number of test samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no test samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The candle model's test accuracy, in percent.
    pub fn accuracy(&self) -> f64 {
        accuracy(&argmax_rows(&self.logits, self.classes), &self.labels)
    }
}

/// How an exported file did on the test set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    /// Test accuracy, in percent.
    pub accuracy: f64,
    /// Misclassified test samples.
    pub errors: usize,
    /// Percent of test samples where its top-1 equals the candle model's.
    pub agreement: f64,
    /// Largest |logit - candle logit| over every test sample and class.
    pub max_abs_logit_diff: f32,
    /// Batch-1 latency in the runtime (tract), seconds.
    pub latency: Option<LatencySummary>,
}

/// Index of the largest value of each row.
pub fn argmax_rows(values: &[f32], cols: usize) -> Vec<usize> {
    values
        .chunks(cols)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0
        })
        .collect()
}

fn accuracy(pred: &[usize], labels: &[u8]) -> f64 {
    let correct = pred
        .iter()
        .zip(labels)
        .filter(|(p, y)| **p == **y as usize)
        .count();
    100.0 * correct as f64 / labels.len().max(1) as f64
}

/// Runs `model` on every reference input, in batches of [`BATCH`].
pub fn logits(model: &Model, r: &Reference, variant: &str) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(r.len() * r.classes);
    for chunk in r.inputs.chunks(BATCH * r.sample_len) {
        let n = chunk.len() / r.sample_len;
        let o = model.logits(chunk, n).map_err(|source| Error::Runtime {
            variant: variant.into(),
            source,
        })?;
        if o.data.len() != n * r.classes {
            return Err(Error::Model {
                reason: format!(
                    "{variant}: the runtime returned shape {:?}, expected [{n}, {}]",
                    o.shape, r.classes
                ),
            });
        }
        out.extend(o.data);
    }
    Ok(out)
}

/// Compares `model`'s answers with the reference, and times it at batch 1 for `latency_budget`
/// seconds (after a warm-up) when that is non-zero.
pub fn verify(
    model: &Model,
    r: &Reference,
    variant: &str,
    latency_budget: f64,
) -> Result<Verification> {
    let got = logits(model, r, variant)?;
    let pred = argmax_rows(&got, r.classes);
    let want = argmax_rows(&r.logits, r.classes);
    let same = pred.iter().zip(&want).filter(|(a, b)| a == b).count();
    let max_abs_logit_diff = got
        .iter()
        .zip(&r.logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) });
    let accuracy = accuracy(&pred, &r.labels);
    let latency = if latency_budget > 0.0 {
        Some(batch1_latency(
            model,
            &r.inputs[..r.sample_len],
            latency_budget,
            variant,
        )?)
    } else {
        None
    };
    Ok(Verification {
        accuracy,
        errors: pred
            .iter()
            .zip(&r.labels)
            .filter(|(p, y)| **p != **y as usize)
            .count(),
        agreement: 100.0 * same as f64 / r.len().max(1) as f64,
        max_abs_logit_diff,
        latency,
    })
}

/// Batch-1 latency: 20 warm-up runs, then runs until `budget` seconds (at least 10, at most
/// 10,000 runs).
pub fn batch1_latency(
    model: &Model,
    sample: &[f32],
    budget: f64,
    variant: &str,
) -> Result<LatencySummary> {
    let run = || {
        model.logits(sample, 1).map_err(|source| Error::Runtime {
            variant: variant.into(),
            source,
        })
    };
    for _ in 0..20 {
        run()?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 10 || (start.elapsed().as_secs_f64() < budget && times.len() < 10_000) {
        let t = Instant::now();
        std::hint::black_box(run()?);
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(LatencySummary::of(&times).expect("at least 10 timings"))
}
