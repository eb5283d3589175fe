//! From pixels to the model's input, as the model's own metadata says (edgekd writes
//! `edgekd.input.image` and `edgekd.input.normalization` into every file it exports), so a
//! device program does not have to repeat the training-time preprocessing by hand.

use crate::info::{Dim, ModelInfo};

/// How 8-bit pixels become input values: `x = (pixel · scale - mean) / std`, laid out as
/// `channels x rows x cols`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Input channels (1: grayscale, 3: RGB).
    pub channels: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// Pixel scale (1/255 maps bytes to [0, 1]).
    pub scale: f32,
    /// Mean subtracted after scaling.
    pub mean: f32,
    /// Standard deviation divided by after that.
    pub std: f32,
}

impl Preprocess {
    /// Read from the model's metadata; where it says nothing, the image size comes from the
    /// input shape (`[N, C, H, W]`, or `[N, H·W]` as a square grayscale image) and pixels are
    /// scaled to [0, 1] without normalization.
    pub fn for_model(info: &ModelInfo) -> Option<Preprocess> {
        let meta = &info.metadata;
        let dims: Option<Vec<usize>> = meta
            .get("edgekd.input.image")
            .and_then(|s| s.split('x').map(|d| d.trim().parse().ok()).collect());
        let (channels, rows, cols) = match dims.as_deref() {
            Some(&[c, h, w]) => (c, h, w),
            _ => {
                let fixed: Vec<usize> = info.inputs.first()?.shape[1..]
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => Some(*n),
                        Dim::Free(_) => None,
                    })
                    .collect::<Option<_>>()?;
                match fixed[..] {
                    [c, h, w] => (c, h, w),
                    [n] => {
                        let side = (n as f64).sqrt().round() as usize;
                        if side * side != n {
                            return None;
                        }
                        (1, side, side)
                    }
                    _ => return None,
                }
            }
        };
        let norm: Option<serde_json::Value> = meta
            .get("edgekd.input.normalization")
            .and_then(|s| serde_json::from_str(s).ok());
        let field = |k: &str, default: f32| {
            norm.as_ref()
                .and_then(|n| n.get(k))
                .and_then(|v| v.as_f64())
                .map_or(default, |v| v as f32)
        };
        Some(Preprocess {
            channels,
            rows,
            cols,
            scale: field("scale", 1.0 / 255.0),
            mean: field("mean", 0.0),
            std: field("std", 1.0),
        })
    }

    /// Values per image.
    pub fn len(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Normalizes planar (`C x H x W`) pixels.
    pub fn apply(&self, pixels: &[u8]) -> Vec<f32> {
        pixels
            .iter()
            .map(|&p| (p as f32 * self.scale - self.mean) / self.std)
            .collect()
    }
}

/// The class names the model declares (`edgekd.classes`, a JSON list), if any.
pub fn class_names(info: &ModelInfo) -> Option<Vec<String>> {
    serde_json::from_str(info.metadata.get("edgekd.classes")?).ok()
}
