//! SHA-256 digests of what runs depend on, as lower-case hex: the images a teacher's logits
//! were computed on, the teachers themselves, a run's whole identity.

use sha2::{Digest, Sha256};

use crate::dataset::Dataset;

/// SHA-256 of a dataset's images (channels, rows, cols, then every pixel): what the logits
/// depend on.
pub fn images_sha256(data: &Dataset) -> String {
    let mut h = Sha256::new();
    h.update((data.channels as u64).to_le_bytes());
    h.update((data.rows as u64).to_le_bytes());
    h.update((data.cols as u64).to_le_bytes());
    h.update(&data.pixels);
    hex(&h.finalize())
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a dataset's images and labels: what a trained model depends on.
pub fn labelled_sha256(data: &Dataset) -> String {
    let mut h = Sha256::new();
    h.update(images_sha256(data));
    h.update((data.labels.len() as u64).to_le_bytes());
    h.update(&data.labels);
    hex(&h.finalize())
}
