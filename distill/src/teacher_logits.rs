//! Teachers' answers for training: computed once over the whole training set (or mapped from
//! the on-disk cache), or per batch when augmentation changes the inputs, and refused when a
//! NaN or infinity shows that a teacher is broken.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::batch::Batch;
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::evaluation::teacher_logits_of;
use crate::input::Normalization;
use crate::logit_cache::{self, CacheKey, LogitStore, MappedLogits};
use crate::teacher::Teacher;

/// [`teacher_logits_of`] over a training set, refused when any is NaN or infinite (naming the
/// sample): what the trainer caches, and what `teacher-logits` writes.
pub fn checked_teacher_logits(
    teacher: &Teacher,
    data: &Dataset,
    norm: Normalization,
) -> Result<Tensor> {
    let logits = teacher_logits_of(teacher, data, norm)?;
    check_teacher_logits(teacher, &logits, |row| row)?;
    Ok(logits)
}

/// Relative weight of each of `teachers` teachers: `given`, one per teacher, or equal weights
/// when none are given.
pub fn teacher_weights(given: &[f64], teachers: usize) -> Result<Vec<f64>> {
    match given.len() {
        0 => Ok(vec![1.0; teachers]),
        n if n == teachers => Ok(given.to_vec()),
        n => Err(Error::Config(format!(
            "{n} teacher weights for {teachers} teachers"
        ))),
    }
}

/// Each teacher's logits over `data`: mapped from the cache in `cache` when a file for this
/// teacher, data and normalisation is there, else computed (and written there for later runs,
/// while this one keeps them in memory). `phase` hears which.
pub fn teacher_logit_stores(
    teachers: &[Teacher],
    data: &Dataset,
    norm: Normalization,
    cache: Option<&Path>,
    phase: &mut dyn FnMut(&str),
) -> Result<Vec<LogitStore>> {
    let data_sha256 = cache.map(|_| crate::digest::images_sha256(data));
    let mut stores = Vec::with_capacity(teachers.len());
    for t in teachers {
        let key = match (cache, &data_sha256) {
            (Some(dir), Some(hash)) => Some((dir, CacheKey::for_teacher(t, hash, norm)?)),
            _ => None,
        };
        if let Some((dir, key)) = &key {
            if let Some(m) = MappedLogits::open(dir, key, data.len())? {
                phase(&format!(
                    "reusing teacher logits cached in {}",
                    m.path().display()
                ));
                stores.push(LogitStore::Mapped(m));
                continue;
            }
        }
        phase("computing teacher logits once for the whole run");
        let logits = checked_teacher_logits(t, data, norm)?;
        if let Some((dir, key)) = &key {
            logit_cache::write(dir, key, &logits)?;
        }
        stores.push(LogitStore::Memory(logits));
    }
    Ok(stores)
}

/// Rows of `[n, classes]` logits holding a NaN or infinity, each with its first bad value.
pub(crate) fn non_finite_rows(logits: &Tensor) -> Result<Vec<(usize, f32)>> {
    Ok(logits
        .to_vec2::<f32>()?
        .iter()
        .enumerate()
        .filter_map(|(r, row)| row.iter().find(|v| !v.is_finite()).map(|&v| (r, v)))
        .collect())
}

/// Refuses teacher logits with a NaN or infinity, naming the training sample (`sample_of`
/// maps a row to its dataset index): a broken teacher must not be distilled silently.
fn check_teacher_logits(
    teacher: &Teacher,
    logits: &Tensor,
    sample_of: impl Fn(usize) -> usize,
) -> Result<()> {
    match non_finite_rows(logits)?.first() {
        Some(&(row, value)) => Err(Error::NonFiniteOutput {
            model: format!("teacher {}", teacher.name()),
            sample: sample_of(row),
            value,
        }),
        None => Ok(()),
    }
}

/// Teacher logits for a batch (from the cache when there is one) and the first teacher's features.
pub(crate) fn teacher_outputs(
    teachers: &[Teacher],
    cached: Option<&[LogitStore]>,
    batch: &Batch,
    norm: Normalization,
    features: bool,
    device: &Device,
) -> Result<(Vec<Tensor>, Option<Tensor>)> {
    if let Some(cache) = cached {
        return Ok((
            cache
                .iter()
                .map(|c| c.rows(&batch.indices, device))
                .collect::<Result<_>>()?,
            None,
        ));
    }
    let mut logits = Vec::with_capacity(teachers.len());
    let mut feats = None;
    for (i, t) in teachers.iter().enumerate() {
        let out = t.forward(&batch.images, norm)?;
        check_teacher_logits(t, &out.logits, |row| batch.indices[row])?;
        if i == 0 && features {
            feats = Some(out.features);
        }
        logits.push(out.logits);
    }
    Ok((logits, feats))
}
