//! The images a model takes and how their pixels are normalised: the vocabulary that data,
//! models, teachers and exports all speak, kept in a module of its own so none of them has
//! to import another to name an input.

use serde::{Deserialize, Serialize};

/// Input geometry: `channels x rows x cols` images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputShape {
    /// Colour channels (1 for MNIST).
    pub channels: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

impl InputShape {
    /// MNIST's 1 x 28 x 28.
    pub const MNIST: InputShape = InputShape {
        channels: 1,
        rows: 28,
        cols: 28,
    };

    /// Values per sample.
    pub fn len(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// Whether the shape holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for InputShape {
    /// `28x28 grayscale`, `32x32 RGB`, or `CxHxW` for other channel counts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.channels {
            1 => write!(f, "{}x{} grayscale", self.rows, self.cols),
            3 => write!(f, "{}x{} RGB", self.rows, self.cols),
            c => write!(f, "{c}x{}x{}", self.rows, self.cols),
        }
    }
}

/// Per-pixel normalization applied to `pixel / 255`: `(x - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Subtracted after scaling to [0, 1].
    pub mean: f32,
    /// Divided by after subtracting the mean.
    pub std: f32,
}

impl Normalization {
    /// MNIST's training-set statistics, as torchvision uses them.
    pub const MNIST: Normalization = Normalization {
        mean: 0.1307,
        std: 0.3081,
    };

    /// The normalized value of one pixel.
    pub fn apply(&self, pixel: u8) -> f32 {
        (pixel as f32 / 255.0 - self.mean) / self.std
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Self::MNIST
    }
}
