//! Quantization-aware training (Jacob et al. 2018): the forward pass computes with the int8
//! grid the exported model will use, so training adapts the weights to it, while gradients
//! pass through the rounding unchanged (the straight-through estimator).
//!
//! What is simulated is the default int8 export (QOperator): weights symmetric per output
//! channel at ±127, and the input of every convolution and dense layer symmetric per tensor
//! at ±127 over a range tracked by an exponential moving average of each batch's extremes
//! (the model input's range is the normalization's, as in export). Ranges are frozen for the
//! last epochs so the weights settle on fixed grids; the exporter then uses them instead of
//! calibrating (`--calibration qat`).
//!
//! Jacob et al. fold batch normalization into the weights before quantizing them, because
//! the exported convolution carries the folded weights. With per-channel symmetric scales
//! the fold does not change the grid: BN multiplies output channel c by k_c, and
//! round(k_c·w / (max|k_c·w|/127)) = sign(k_c)·round(w / (max|w|/127)), so quantizing the
//! unfolded weights here is quantizing the folded ones the exporter writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Integer levels on each side of zero, for weights and activations alike.
pub const LEVELS: f32 = 127.0;
/// Weight of the past in the moving averages of activation ranges (TensorFlow's default).
pub const MOMENTUM: f32 = 0.99;
/// The file a QAT checkpoint keeps its activation ranges in, beside `model.safetensors`.
pub const RANGES_FILE: &str = "qat.json";

/// When quantization is simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QatConfig {
    /// Simulate int8 in the last this many epochs (the ones before train in float).
    pub epochs: usize,
    /// Of those, keep the activation ranges fixed in the last this many.
    pub freeze_epochs: usize,
}

impl QatConfig {
    /// QAT over the last `epochs` of `total`, ranges frozen for the last quarter of them (at
    /// least one epoch when QAT runs two or more).
    pub fn last(epochs: usize) -> QatConfig {
        QatConfig {
            epochs,
            freeze_epochs: if epochs >= 2 { (epochs / 4).max(1) } else { 0 },
        }
    }

    /// Rejects a QAT phase longer than the run.
    pub fn validate(&self, total: usize) -> Result<()> {
        let frozen_all = self.freeze_epochs > 0 && self.freeze_epochs >= self.epochs;
        if self.epochs == 0 || self.epochs > total || frozen_all {
            return Err(Error::Config(format!(
                "--qat-epochs must be between 1 and the run's {total} epochs, got {} (ranges frozen for {})",
                self.epochs, self.freeze_epochs
            )));
        }
        Ok(())
    }

    /// Whether `epoch` (0-based, of `total` before any fine-tune) fake-quantizes, and whether
    /// its ranges are frozen. Fine-tune epochs after `total` keep both on.
    pub fn phase(&self, epoch: usize, total: usize) -> (bool, bool) {
        let active = epoch + self.epochs >= total;
        let frozen =
            (self.freeze_epochs > 0 && epoch + self.freeze_epochs >= total) || epoch >= total;
        (active, frozen)
    }
}

/// A tensor's tracked range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TapRange {
    /// Moving average of the batch minima.
    pub lo: f32,
    /// Moving average of the batch maxima.
    pub hi: f32,
}

/// The ranges a QAT run learned, in the exporter's tap order: each weighted layer's input,
/// and both inputs of each residual addition (observed, not quantized: the QOperator export
/// adds in float).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedRanges {
    /// What the ranges are for.
    pub encoding: String,
    /// One per tap; None for a tap no training batch reached.
    pub taps: Vec<Option<TapRange>>,
}

/// The state of fake quantization during a run.
#[derive(Debug)]
pub struct Qat {
    ranges: Mutex<Vec<Option<TapRange>>>,
    input: TapRange,
    active: AtomicBool,
    frozen: AtomicBool,
}

/// `x` on a symmetric grid of step `scale`, clamped to ±LEVELS steps, with the gradient of the
/// identity inside the range and zero outside (the clamp's own gradient).
fn fake_quantize(x: &Tensor, amax: f32) -> Result<Tensor> {
    let amax = amax.max(1e-8);
    let scale = (amax / LEVELS) as f64;
    let clipped = x.clamp(-amax, amax)?;
    let q = ((&clipped / scale)?.round()? * scale)?;
    Ok((&clipped + (q - &clipped)?.detach())?)
}

impl Qat {
    /// Inactive QAT whose first tap (the model input) spans `input` (the normalization's range).
    pub fn new(input: (f32, f32)) -> Qat {
        Qat {
            ranges: Mutex::new(Vec::new()),
            input: TapRange {
                lo: input.0,
                hi: input.1,
            },
            active: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
        }
    }

    /// Switches simulation and range tracking for the coming batches.
    pub fn set_phase(&self, active: bool, frozen: bool) {
        self.active.store(active, Ordering::Relaxed);
        self.frozen.store(frozen, Ordering::Relaxed);
    }

    /// Whether the forward pass simulates int8.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Per-output-channel symmetric fake quantization of a weight (`[out, ...]`), straight
    /// through in the backward pass; the weight itself when inactive.
    pub fn weight(&self, w: &Tensor) -> Result<Tensor> {
        if !self.is_active() {
            return Ok(w.clone());
        }
        let rows = w.dim(0)?;
        let flat = w.reshape((rows, ()))?;
        let amax = flat
            .abs()?
            .max_keepdim(D::Minus1)?
            .clamp(1e-8f32, f32::MAX)?;
        let scale = (amax / LEVELS as f64)?;
        let q = flat
            .broadcast_div(&scale)?
            .round()?
            .clamp(-LEVELS, LEVELS)?
            .broadcast_mul(&scale)?;
        Ok((&flat + (q - &flat)?.detach())?.reshape(w.shape())?)
    }

    fn observe(&self, tap: usize, x: &Tensor, train: bool) -> Result<Option<TapRange>> {
        if tap == 0 {
            return Ok(Some(self.input));
        }
        let mut ranges = self.ranges.lock().unwrap_or_else(|e| e.into_inner());
        if ranges.len() <= tap {
            ranges.resize(tap + 1, None);
        }
        if train && self.is_active() && !self.frozen.load(Ordering::Relaxed) {
            let flat = x.detach().flatten_all()?;
            let (lo, hi) = (
                flat.min(0)?.to_scalar::<f32>()?.min(0.0),
                flat.max(0)?.to_scalar::<f32>()?.max(0.0),
            );
            ranges[tap] = Some(match ranges[tap] {
                None => TapRange { lo, hi },
                Some(r) => TapRange {
                    lo: MOMENTUM * r.lo + (1.0 - MOMENTUM) * lo,
                    hi: MOMENTUM * r.hi + (1.0 - MOMENTUM) * hi,
                },
            });
        }
        Ok(ranges[tap])
    }

    /// The input of weighted layer tap `tap`: its range tracked (in training), then
    /// fake-quantized when active.
    pub fn activation(&self, tap: usize, x: &Tensor, train: bool) -> Result<Tensor> {
        if !self.is_active() {
            return Ok(x.clone());
        }
        match self.observe(tap, x, train)? {
            Some(r) => fake_quantize(x, r.lo.abs().max(r.hi.abs())),
            None => Ok(x.clone()),
        }
    }

    /// An input of a residual addition: its range tracked for the exporter's QDQ files.
    pub fn addend(&self, tap: usize, x: &Tensor, train: bool) -> Result<()> {
        if self.is_active() {
            self.observe(tap, x, train)?;
        }
        Ok(())
    }

    /// The ranges learned so far, the input's first.
    pub fn learned(&self) -> LearnedRanges {
        let mut taps = self
            .ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if taps.is_empty() {
            taps.push(None);
        }
        taps[0] = Some(self.input);
        LearnedRanges {
            encoding: format!(
                "int8 symmetric ±{LEVELS}: weights per output channel, layer inputs per tensor"
            ),
            taps,
        }
    }

    /// Continues from ranges saved by an interrupted run.
    pub fn restore(&self, saved: &LearnedRanges) {
        *self.ranges.lock().unwrap_or_else(|e| e.into_inner()) = saved.taps.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn weights_land_on_the_exporters_grid_and_gradients_pass_straight_through() {
        let w = Var::from_slice(&[0.25f32, -1.0, 0.5, 0.2], (2, 2), &Device::Cpu).unwrap();
        let q = Qat::new((-1.0, 1.0));
        q.set_phase(true, false);
        let fq = q.weight(w.as_tensor()).unwrap();
        // export's per_channel doc example: scales 1/127 and 0.5/127, values 32 -127 127 51.
        let want = [32.0 / 127.0, -1.0, 0.5, 51.0 * 0.5 / 127.0];
        for (a, b) in fq
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip(want)
        {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let g = fq.sum_all().unwrap().backward().unwrap();
        let grad = g
            .get(w.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(grad, vec![1.0; 4]);
    }

    #[test]
    fn activations_are_clipped_to_the_tracked_range_with_zero_gradient_outside() {
        let q = Qat::new((-1.0, 1.0));
        q.set_phase(true, false);
        let x = Var::from_slice(&[0.0f32, 0.3, 1.27, -0.5], 4, &Device::Cpu).unwrap();
        // The first batch sets the range: [-0.5, 1.27], amax 1.27, step 0.01.
        let y = q.activation(1, x.as_tensor(), true).unwrap();
        let v = y.to_vec1::<f32>().unwrap();
        for (a, b) in v.iter().zip([0.0, 0.3, 1.27, -0.5]) {
            assert!((a - b).abs() < 1e-6);
        }
        // A wider batch moves the average by 1%: hi 0.99*1.27 + 0.01*2.0 = 1.2773.
        let wide = Var::from_slice(&[2.0f32, 0.1], 2, &Device::Cpu).unwrap();
        let y = q.activation(1, wide.as_tensor(), true).unwrap();
        let hi = q.learned().taps[1].unwrap().hi;
        assert!((hi - 1.2773).abs() < 1e-5, "{hi}");
        let v = y.to_vec1::<f32>().unwrap();
        assert!((v[0] - 1.2773).abs() < 1e-2, "clipped: {v:?}");
        let g = y.sum_all().unwrap().backward().unwrap();
        let grad = g.get(wide.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(grad, vec![0.0, 1.0]);
        // Frozen: the range no longer moves; evaluation never moves it.
        q.set_phase(true, true);
        q.activation(1, wide.as_tensor(), true).unwrap();
        q.set_phase(true, false);
        q.activation(1, wide.as_tensor(), false).unwrap();
        assert_eq!(q.learned().taps[1].unwrap().hi, hi);
    }

    #[test]
    fn the_phase_covers_the_last_epochs_and_freezes_the_last_quarter() {
        let c = QatConfig::last(4);
        let phases: Vec<_> = (0..10).map(|e| c.phase(e, 10)).collect();
        assert_eq!(&phases[..6], &[(false, false); 6]);
        assert_eq!(
            &phases[6..],
            &[(true, false), (true, false), (true, false), (true, true)]
        );
        assert!(QatConfig::last(11).validate(10).is_err());
        assert!(QatConfig::last(0).validate(10).is_err());
        assert!(QatConfig::last(10).validate(10).is_ok());
        assert!(QatConfig::last(1).validate(10).is_ok());
    }
}
