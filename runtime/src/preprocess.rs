//! From pixels to the model's input, as the model's own metadata says (edgekd writes
//! `edgekd.input.image` and `edgekd.input.normalization` into every file it exports), so a
//! device program does not have to repeat the training-time preprocessing by hand.

use crate::info::{Dim, ModelInfo};

/// How 8-bit pixels become input values: `x = (pixel · scale - mean[c]) / std[c]` for a
/// pixel of channel `c`, laid out as `channels x rows x cols`.
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
    /// Mean subtracted after scaling, per channel (a grayscale image reads the first).
    pub mean: [f32; 3],
    /// Standard deviation divided by after that, per channel.
    pub std: [f32; 3],
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
        let field = |k: &str| norm.as_ref().and_then(|n| n.get(k));
        // A number for every channel, or one per channel (edgekd writes a list when they differ).
        let per_channel = |k: &str, default: f32| -> [f32; 3] {
            match field(k) {
                Some(serde_json::Value::Number(v)) => {
                    [v.as_f64().unwrap_or(default as f64) as f32; 3]
                }
                Some(serde_json::Value::Array(a)) => {
                    let v: Vec<f32> = a
                        .iter()
                        .filter_map(|x| x.as_f64())
                        .map(|x| x as f32)
                        .collect();
                    match v[..] {
                        [x] => [x; 3],
                        [r, g, b] => [r, g, b],
                        _ => [default; 3],
                    }
                }
                _ => [default; 3],
            }
        };
        Some(Preprocess {
            channels,
            rows,
            cols,
            scale: field("scale")
                .and_then(|v| v.as_f64())
                .map_or(1.0 / 255.0, |v| v as f32),
            mean: per_channel("mean", 0.0),
            std: per_channel("std", 1.0),
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

    /// Mean and std of channel `c`.
    pub fn channel(&self, c: usize) -> (f32, f32) {
        let c = c.min(2);
        (self.mean[c], self.std[c])
    }

    /// Normalizes planar (`C x H x W`) pixels of one or more images, image after image.
    pub fn apply(&self, pixels: &[u8]) -> Vec<f32> {
        let plane = (self.rows * self.cols).max(1);
        let mut out = Vec::with_capacity(pixels.len());
        for (k, chunk) in pixels.chunks(plane).enumerate() {
            let (mean, std) = self.channel(k % self.channels.max(1));
            out.extend(chunk.iter().map(|&p| (p as f32 * self.scale - mean) / std));
        }
        out
    }
}

/// The class names the model declares (`edgekd.classes`, a JSON list), if any.
pub fn class_names(info: &ModelInfo) -> Option<Vec<String>> {
    serde_json::from_str(info.metadata.get("edgekd.classes")?).ok()
}
