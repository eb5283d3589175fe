//! Turning a [`Dataset`] into normalized, shuffled, optionally augmented training batches.

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::input::Normalization;

/// Data augmentation applied to training batches only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Random translation of each image by up to this many pixels in x and y, the uncovered
    /// border zero (0 = off): the same as a random crop of the image padded with this many
    /// zeros on every side (`RandomCrop(size, padding)`). Hinton et al. (2015) used 2, CIFAR
    /// ResNets 4.
    #[serde(default)]
    pub jitter: usize,
    /// Mixup with mixing weight drawn from Beta(a, a) (None = off; 0.2 is common).
    #[serde(default)]
    pub mixup: Option<f32>,
    /// Mirror each image left to right with probability 1/2 (never for digits).
    #[serde(default)]
    pub flip: bool,
}

impl Augment {
    /// Whether any augmentation is on (then teacher outputs change every epoch and cannot be cached).
    pub fn is_active(&self) -> bool {
        self.jitter > 0 || self.mixup.is_some() || self.flip
    }

    /// Rejects impossible settings.
    pub fn validate(&self) -> Result<()> {
        if self.jitter > 8 {
            return Err(Error::Config(format!(
                "jitter {} px is more than 8 px: digits would leave the image",
                self.jitter
            )));
        }
        if let Some(a) = self.mixup {
            if !(a.is_finite() && a > 0.0) {
                return Err(Error::Config(format!(
                    "mixup alpha must be positive, got {a}"
                )));
            }
        }
        Ok(())
    }
}

/// One batch on the device.
#[derive(Debug)]
pub struct Batch {
    /// `[n, channels * rows * cols]` normalized pixels.
    pub images: Tensor,
    /// `[n]` class labels (u32).
    pub labels: Tensor,
    /// Dataset indices of the samples (before mixing).
    pub indices: Vec<usize>,
    /// When mixup is on: partner labels and the weight of the original sample.
    pub mix: Option<Mix>,
}

/// How a mixup batch was blended: `x = lambda * x + (1 - lambda) * x[partner]`.
#[derive(Debug)]
pub struct Mix {
    /// `[n]` labels of the partner samples (u32).
    pub partner_labels: Tensor,
    /// Weight of the original sample.
    pub lambda: f64,
}

/// Builds the batch of `indices`: normalization always, augmentation when `augment` and `rng` say so.
pub fn make_batch(
    data: &Dataset,
    indices: &[usize],
    norm: Normalization,
    augment: Option<(&Augment, &mut StdRng)>,
    device: &Device,
) -> Result<Batch> {
    let n = indices.len();
    let (rows, cols) = (data.rows, data.cols);
    let luts: Vec<Vec<f32>> = (0..data.channels)
        .map(|c| (0..=255u8).map(|p| norm.apply(c, p)).collect())
        .collect();
    let mut x = Vec::with_capacity(n * data.image_len());
    let (aug, mut rng) = match augment {
        Some((a, r)) => (*a, Some(r)),
        None => (Augment::default(), None),
    };
    for &i in indices {
        let img = data.image(i);
        // One shift and one flip for the whole image: every colour plane moves together.
        let (dy, dx, flip) = match &mut rng {
            Some(r) => {
                let j = aug.jitter as i64;
                let (dy, dx) = if j > 0 {
                    (r.random_range(-j..=j), r.random_range(-j..=j))
                } else {
                    (0, 0)
                };
                (dy, dx, aug.flip && r.random::<bool>())
            }
            None => (0, 0, false),
        };
        for (plane, lut) in img.chunks_exact(rows * cols).zip(&luts) {
            if (dy, dx, flip) == (0, 0, false) {
                x.extend(plane.iter().map(|&p| lut[p as usize]));
                continue;
            }
            for y in 0..rows as i64 {
                for xx in 0..cols as i64 {
                    let (sy, mut sx) = (y - dy, xx - dx);
                    if flip {
                        sx = cols as i64 - 1 - sx;
                    }
                    let inside = sy >= 0 && sy < rows as i64 && sx >= 0 && sx < cols as i64;
                    let p = if inside {
                        plane[(sy as usize) * cols + sx as usize]
                    } else {
                        0
                    };
                    x.push(lut[p as usize]);
                }
            }
        }
    }
    let labels: Vec<u32> = indices.iter().map(|&i| data.labels[i] as u32).collect();
    let mut images = Tensor::from_vec(x, (n, data.image_len()), device)?;
    let mut mix = None;
    if let (Some(r), Some(alpha)) = (rng, aug.mixup) {
        let beta = Beta::new(alpha, alpha)
            .map_err(|e| Error::Config(format!("mixup alpha {alpha}: {e}")))?;
        let lambda = beta.sample(r) as f64;
        let mut partner: Vec<u32> = (0..n as u32).collect();
        partner.shuffle(r);
        let partner_t = Tensor::from_vec(partner.clone(), n, device)?;
        images = ((&images * lambda)? + (images.index_select(&partner_t, 0)? * (1.0 - lambda))?)?;
        let partner_labels = partner
            .iter()
            .map(|&p| labels[p as usize])
            .collect::<Vec<_>>();
        mix = Some(Mix {
            partner_labels: Tensor::from_vec(partner_labels, n, device)?,
            lambda,
        });
    }
    Ok(Batch {
        images,
        labels: Tensor::from_vec(labels, n, device)?,
        indices: indices.to_vec(),
        mix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::tests::toy;
    use crate::random::{rng, Stream};

    #[test]
    fn normalization_matches_the_formula() {
        let d = toy(2, 0);
        let b = make_batch(
            &d,
            &[1],
            Normalization::uniform(0.5, 0.25),
            None,
            &Device::Cpu,
        )
        .unwrap();
        let v = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (got, &p) in v.iter().zip(d.image(1)) {
            assert!((got - (p as f32 / 255.0 - 0.5) / 0.25).abs() < 1e-6);
        }
    }

    #[test]
    fn jitter_moves_pixels_without_changing_their_values() {
        let d = toy(1, 0);
        let aug = Augment {
            jitter: 2,
            ..Default::default()
        };
        let norm = Normalization::uniform(0.0, 1.0);
        let mut moved = false;
        for e in 0..10 {
            let mut r = rng(1, Stream::Augment, e);
            let b = make_batch(&d, &[0], norm, Some((&aug, &mut r)), &Device::Cpu).unwrap();
            let v = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let lit = |img: &[f32]| img.iter().filter(|&&p| p > 0.0).count();
            let orig: Vec<f32> = d.image(0).iter().map(|&p| p as f32 / 255.0).collect();
            assert_eq!(lit(&v), lit(&orig), "the block stays inside the image");
            moved |= v != orig;
        }
        assert!(moved);
    }

    #[test]
    fn jitter_shifts_every_colour_plane_alike() {
        // One lit pixel at (4, 5) of a 3x8x8 image, a different value in each plane.
        let (rows, cols) = (8, 8);
        let mut pixels = vec![0u8; 3 * rows * cols];
        for (c, v) in [10u8, 20, 30].into_iter().enumerate() {
            pixels[c * rows * cols + 4 * cols + 5] = v;
        }
        let d = Dataset {
            pixels,
            labels: vec![0],
            channels: 3,
            rows,
            cols,
        };
        let aug = Augment {
            jitter: 2,
            ..Default::default()
        };
        let norm = Normalization::uniform(0.0, 1.0 / 255.0);
        let mut shifted = false;
        for e in 0..10 {
            let mut r = rng(3, Stream::Augment, e);
            let b = make_batch(&d, &[0], norm, Some((&aug, &mut r)), &Device::Cpu).unwrap();
            let v = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let lit: Vec<(usize, f32)> = v
                .chunks_exact(rows * cols)
                .map(|plane| {
                    let at = plane.iter().position(|&p| p > 0.5).unwrap();
                    (at, plane[at].round())
                })
                .collect();
            assert_eq!(lit[0].0, lit[1].0);
            assert_eq!(lit[1].0, lit[2].0);
            assert_eq!([lit[0].1, lit[1].1, lit[2].1], [10.0, 20.0, 30.0]);
            shifted |= lit[0].0 != 4 * cols + 5;
        }
        assert!(shifted);
    }

    #[test]
    fn mixup_blends_pairs_with_the_reported_weight() {
        let d = toy(8, 0);
        let aug = Augment {
            mixup: Some(0.4),
            ..Default::default()
        };
        let norm = Normalization::uniform(0.0, 1.0);
        let mut r = rng(1, Stream::Augment, 0);
        let idx: Vec<usize> = (0..8).collect();
        let b = make_batch(&d, &idx, norm, Some((&aug, &mut r)), &Device::Cpu).unwrap();
        let plain = make_batch(&d, &idx, norm, None, &Device::Cpu).unwrap();
        let mix = b.mix.unwrap();
        assert!((0.0..=1.0).contains(&mix.lambda));
        // Total brightness is conserved by a convex blend of a permutation.
        let s = |t: &Tensor| t.sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((s(&b.images) - s(&plain.images)).abs() / s(&plain.images) < 1e-4);
    }
}
