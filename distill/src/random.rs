//! Seeded random streams: every random choice of a run (initialisation, sample order, dropout,
//! augmentation) draws from its own stream of the run's seed, so turning one on never moves
//! another, and a resumed epoch replays exactly.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Independent random streams of one run, so that e.g. turning on jitter does not change the
/// shuffling order, and a resumed epoch replays exactly.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// Weight initialisation.
    Init = 1,
    /// Orders of samples: epochs, calibration samples, held-out splits ([`permutation`]).
    Shuffle = 2,
    /// Dropout masks.
    Dropout = 3,
    /// Jitter offsets and mixup pairs.
    Augment = 4,
}

/// A generator for `stream` of run `seed` in `epoch` (0 for things that happen once).
pub fn rng(seed: u64, stream: Stream, epoch: usize) -> StdRng {
    // SplitMix64-style finaliser over the three inputs, so nearby seeds give unrelated streams.
    let mut z = seed
        ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// The `index`-th seeded permutation of `0..len` in run `seed`'s [`Stream::Shuffle`]: the
/// order an epoch visits the samples in (index = epoch), and also which samples calibrate an
/// int8 export and which images of a class an image folder holds out (index = class).
pub fn permutation(len: usize, seed: u64, index: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut rng(seed, Stream::Shuffle, index));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffles_are_seeded_and_differ_by_epoch() {
        assert_eq!(permutation(100, 7, 3), permutation(100, 7, 3));
        assert_ne!(permutation(100, 7, 3), permutation(100, 7, 4));
        assert_ne!(permutation(100, 7, 3), permutation(100, 8, 3));
        let mut o = permutation(100, 7, 3);
        o.sort();
        assert_eq!(o, (0..100).collect::<Vec<_>>());
    }
}
