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

/// Most channels an image has (RGB).
pub const MAX_CHANNELS: usize = 3;

/// Per-pixel normalization applied to `pixel / 255`, channel by channel: `(x - mean[c]) /
/// std[c]`. One value for every channel (MNIST's 0.1307, 0.3081) or one per channel
/// (ImageNet's 0.485, 0.456, 0.406 / 0.229, 0.224, 0.225). Serialized as one number when the
/// channels agree (so checkpoints and exports written before per-channel values read the same)
/// and as a list otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Subtracted after scaling to [0, 1], per channel.
    pub mean: [f32; MAX_CHANNELS],
    /// Divided by after subtracting the mean, per channel.
    pub std: [f32; MAX_CHANNELS],
}

impl Normalization {
    /// MNIST's training-set statistics, as torchvision uses them.
    pub const MNIST: Normalization = Normalization::uniform(0.1307, 0.3081);

    /// The same mean and std for every channel.
    pub const fn uniform(mean: f32, std: f32) -> Normalization {
        Normalization {
            mean: [mean; MAX_CHANNELS],
            std: [std; MAX_CHANNELS],
        }
    }

    /// One value for every channel, or one per channel (up to three); None for other counts.
    pub fn per_channel(mean: &[f32], std: &[f32]) -> Option<Normalization> {
        let fill = |v: &[f32]| -> Option<[f32; MAX_CHANNELS]> {
            match v {
                [x] => Some([*x; MAX_CHANNELS]),
                v if v.len() == MAX_CHANNELS => Some([v[0], v[1], v[2]]),
                _ => None,
            }
        };
        Some(Normalization {
            mean: fill(mean)?,
            std: fill(std)?,
        })
    }

    /// Whether every value is finite and every std positive.
    pub fn is_valid(&self) -> bool {
        self.mean.iter().all(|m| m.is_finite())
            && self.std.iter().all(|s| s.is_finite() && *s > 0.0)
    }

    /// Whether every channel uses the same mean and std.
    pub fn is_uniform(&self) -> bool {
        self.mean.iter().all(|&m| m == self.mean[0]) && self.std.iter().all(|&s| s == self.std[0])
    }

    /// Mean and std of channel `c` (an image of one channel reads the first).
    pub fn channel(&self, c: usize) -> (f32, f32) {
        let c = c.min(MAX_CHANNELS - 1);
        (self.mean[c], self.std[c])
    }

    /// The normalized value of one pixel of channel `c`.
    pub fn apply(&self, c: usize, pixel: u8) -> f32 {
        let (mean, std) = self.channel(c);
        (pixel as f32 / 255.0 - mean) / std
    }

    /// The smallest and largest value a pixel of any channel normalizes to.
    pub fn range(&self, channels: usize) -> (f32, f32) {
        (0..channels.clamp(1, MAX_CHANNELS))
            .flat_map(|c| [self.apply(c, 0), self.apply(c, 255)])
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Self::MNIST
    }
}

/// The serialized form: numbers when uniform, lists otherwise.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Values {
    One(f32),
    Many(Vec<f32>),
}

#[derive(Serialize, Deserialize)]
struct NormalizationForm {
    mean: Values,
    std: Values,
}

impl Serialize for Normalization {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let form = if self.is_uniform() {
            NormalizationForm {
                mean: Values::One(self.mean[0]),
                std: Values::One(self.std[0]),
            }
        } else {
            NormalizationForm {
                mean: Values::Many(self.mean.to_vec()),
                std: Values::Many(self.std.to_vec()),
            }
        };
        form.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Normalization {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let form = NormalizationForm::deserialize(d)?;
        let list = |v: Values| match v {
            Values::One(x) => vec![x],
            Values::Many(v) => v,
        };
        Normalization::per_channel(&list(form.mean), &list(form.std)).ok_or_else(|| {
            serde::de::Error::custom("normalization takes one mean and std, or one per channel")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_normalizations_serialize_as_before_and_per_channel_ones_as_lists() {
        let json = serde_json::to_string(&Normalization::MNIST).unwrap();
        assert_eq!(json, r#"{"mean":0.1307,"std":0.3081}"#);
        assert_eq!(
            serde_json::from_str::<Normalization>(&json).unwrap(),
            Normalization::MNIST
        );
        let rgb = Normalization::per_channel(&[0.49, 0.48, 0.45], &[0.25, 0.24, 0.26]).unwrap();
        let json = serde_json::to_string(&rgb).unwrap();
        assert_eq!(json, r#"{"mean":[0.49,0.48,0.45],"std":[0.25,0.24,0.26]}"#);
        assert_eq!(serde_json::from_str::<Normalization>(&json).unwrap(), rgb);
        assert!((rgb.apply(2, 255) - (1.0 - 0.45) / 0.26).abs() < 1e-6);
        assert!(Normalization::per_channel(&[0.1, 0.2], &[1.0]).is_none());
    }
}
