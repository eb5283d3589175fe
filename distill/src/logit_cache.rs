//! Teacher logits computed once, stored on disk, memory-mapped by later runs.
//!
//! A large teacher over a large dataset costs far more than the student's training step, and
//! its answers never change for the same teacher and data. Without augmentation a run needs
//! them for every training image in order, so they are computed once and written to a cache
//! file that every later run with the same teacher and data maps instead of recomputing.
//! `edgekd teacher-logits` writes the same files on their own, so they can be produced on a
//! bigger machine and copied.
//!
//! # Format
//! A safetensors file named `<key>.safetensors` holding one tensor, `logits`, F32, shape
//! `[samples, classes]`, row *i* for training image *i* in the dataset's order. Its metadata:
//!
//! | key | value |
//! |---|---|
//! | `format` | `edgekd-teacher-logits/2` |
//! | `key` | the file's key: SHA-256 of the format, `teacher_sha256`, `data_sha256` and `normalization` |
//! | `teacher` | the teacher's name (informative) |
//! | `teacher_sha256` | the teacher's weights (checkpoint) or file and input convention (ONNX) |
//! | `data_sha256` | the images: channels, rows, cols (each a little-endian u64) and every pixel (channel-major), in order |
//! | `normalization` | mean and std the student's batches used, as JSON |
//! | `samples`, `classes` | the tensor's shape |
//!
//! Version 2 added the channel count to `data_sha256` (colour images); version 1 files are
//! not read (their keys no longer match anything, so they are recomputed).
//!
//! Logits are stored as the trainer uses them: an ONNX teacher's probabilities already turned
//! into log-probabilities.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

use crate::atomic;
use crate::digest::hex;
use crate::error::{Error, Result};
use crate::input::Normalization;
use crate::teacher::Teacher;

/// The `format` metadata value this module reads and writes.
pub const FORMAT: &str = "edgekd-teacher-logits/2";

/// What identifies one cache file.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheKey {
    /// The teacher's name, for people reading the metadata.
    pub teacher: String,
    /// See the module docs.
    pub teacher_sha256: String,
    /// See the module docs.
    pub data_sha256: String,
    /// The normalization the batches were made with.
    pub normalization: Normalization,
}

impl CacheKey {
    /// The key of `teacher`'s logits on images hashing to `data_sha256`, fed batches
    /// normalised with `normalization`.
    pub fn for_teacher(
        teacher: &Teacher,
        data_sha256: &str,
        normalization: Normalization,
    ) -> Result<CacheKey> {
        Ok(CacheKey {
            teacher: teacher.name(),
            teacher_sha256: teacher.sha256()?,
            data_sha256: data_sha256.into(),
            normalization,
        })
    }

    /// The key the file is named after.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            FORMAT,
            &self.teacher_sha256,
            &self.data_sha256,
            &self.normalization_json(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex(&h.finalize())
    }

    fn normalization_json(&self) -> String {
        serde_json::to_string(&self.normalization).expect("normalization serialises")
    }

    /// The cache file for this key in `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.safetensors", self.key()))
    }
}

/// Writes `logits` (`[samples, classes]`) as the cache file for `key` in `dir` (atomically,
/// so a reader never maps half a file). Returns the file's path.
pub fn write(dir: &Path, key: &CacheKey, logits: &Tensor) -> Result<PathBuf> {
    let (samples, classes) = logits.dims2()?;
    let values = logits.flatten_all()?.to_vec1::<f32>()?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let path = key.path_in(dir);
    let safetensors_error = |source| Error::Safetensors {
        path: path.clone(),
        action: "encoding teacher logits",
        source,
    };
    let view =
        TensorView::new(Dtype::F32, vec![samples, classes], &bytes).map_err(safetensors_error)?;
    let metadata: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("key", key.key()),
        ("teacher", key.teacher.clone()),
        ("teacher_sha256", key.teacher_sha256.clone()),
        ("data_sha256", key.data_sha256.clone()),
        ("normalization", key.normalization_json()),
        ("samples", samples.to_string()),
        ("classes", classes.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let file =
        safetensors::serialize([("logits", view)], Some(metadata)).map_err(safetensors_error)?;
    atomic::create_dir(dir)?;
    atomic::write(&path, &file)?;
    Ok(path)
}

/// A cache file mapped into memory: rows are read from the page cache as batches need them.
pub struct MappedLogits {
    path: PathBuf,
    map: Mmap,
    /// Byte range of the tensor's data in the file.
    data: std::ops::Range<usize>,
    samples: usize,
    classes: usize,
}

impl std::fmt::Debug for MappedLogits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedLogits")
            .field("path", &self.path)
            .field("samples", &self.samples)
            .field("classes", &self.classes)
            .finish()
    }
}

impl MappedLogits {
    /// Maps the cache file for `key` in `dir`: None when there is none; an error when a file
    /// by that name is not what the key says (it is then never used).
    pub fn open(dir: &Path, key: &CacheKey, samples: usize) -> Result<Option<MappedLogits>> {
        let path = key.path_in(dir);
        if !path.is_file() {
            return Ok(None);
        }
        let bad = |reason: String| {
            Error::Config(format!(
                "teacher-logit cache {}: {reason}; delete it to recompute the teacher's logits",
                path.display()
            ))
        };
        let file = std::fs::File::open(&path).map_err(Error::io("reading", &path))?;
        // SAFETY: the file is only ever replaced by atomic rename, never written in place, so
        // the mapped bytes do not change under the map.
        let map = unsafe { Mmap::map(&file).map_err(Error::io("mapping", &path))? };
        let (header, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let fields = meta.metadata().clone().unwrap_or_default();
        let field = |k: &str| fields.get(k).map(String::as_str);
        if field("format") != Some(FORMAT) || field("key") != Some(key.key().as_str()) {
            return Err(bad(format!(
                "its metadata names format {:?} and key {:?}, not {FORMAT} and {}",
                field("format"),
                field("key"),
                key.key()
            )));
        }
        let info = meta
            .info("logits")
            .ok_or_else(|| bad("it holds no `logits` tensor".into()))?;
        let &[rows, classes] = info.shape.as_slice() else {
            return Err(bad(format!(
                "`logits` has shape {:?}, not [samples, classes]",
                info.shape
            )));
        };
        if info.dtype != Dtype::F32 || rows != samples {
            return Err(bad(format!(
                "`logits` is {:?} {:?}, expected F32 with {samples} rows",
                info.dtype, info.shape
            )));
        }
        // read_metadata has checked that the offsets fit the file and the shape.
        let start = 8 + header + info.data_offsets.0;
        let end = 8 + header + info.data_offsets.1;
        let mapped = MappedLogits {
            path: path.clone(),
            map,
            data: start..end,
            samples: rows,
            classes,
        };
        if let Some(i) = (0..rows * classes).find(|&i| !mapped.value(i).is_finite()) {
            return Err(bad(format!(
                "logit {} of sample {} is {}",
                i % classes,
                i / classes,
                mapped.value(i)
            )));
        }
        Ok(Some(mapped))
    }

    fn value(&self, i: usize) -> f32 {
        let at = self.data.start + 4 * i;
        f32::from_le_bytes(self.map[at..at + 4].try_into().expect("4 bytes"))
    }

    /// The file it maps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows `indices`, as a `[indices.len(), classes]` tensor.
    pub fn rows(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let mut out = Vec::with_capacity(indices.len() * self.classes);
        for &r in indices {
            if r >= self.samples {
                return Err(Error::Config(format!(
                    "sample {r} is past the {} cached in {}",
                    self.samples,
                    self.path.display()
                )));
            }
            let at = self.data.start + 4 * r * self.classes;
            let row = &self.map[at..at + 4 * self.classes];
            out.extend(
                row.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
            );
        }
        Ok(Tensor::from_vec(
            out,
            (indices.len(), self.classes),
            device,
        )?)
    }

    /// Every row, as one tensor.
    pub fn all(&self, device: &Device) -> Result<Tensor> {
        self.rows(&(0..self.samples).collect::<Vec<_>>(), device)
    }
}

/// Where a run's teacher logits live: computed in memory, or mapped from a cache file.
#[derive(Debug)]
pub enum LogitStore {
    /// `[samples, classes]` in memory.
    Memory(Tensor),
    /// A mapped cache file.
    Mapped(MappedLogits),
}

impl LogitStore {
    /// Rows `indices`, as a `[indices.len(), classes]` tensor.
    pub fn rows(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        match self {
            LogitStore::Memory(t) => {
                let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
                let idx = Tensor::from_vec(idx, indices.len(), device)?;
                Ok(t.index_select(&idx, 0)?)
            }
            LogitStore::Mapped(m) => m.rows(indices, device),
        }
    }

    /// Every row, as one tensor.
    pub fn all(&self, device: &Device) -> Result<Tensor> {
        match self {
            LogitStore::Memory(t) => Ok(t.to_device(device)?),
            LogitStore::Mapped(m) => m.all(device),
        }
    }
}

/// The default cache directory: `$EDGEKD_CACHE_DIR`, else `$XDG_CACHE_HOME/edgekd`, else
/// `~/.cache/edgekd`, with `teacher-logits/` below it. None when none of these is set.
pub fn default_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = env("EDGEKD_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("edgekd")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("edgekd")))?;
    Some(base.join("teacher-logits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(data: &str) -> CacheKey {
        CacheKey {
            teacher: "t".into(),
            teacher_sha256: "aa".into(),
            data_sha256: data.into(),
            normalization: Normalization::MNIST,
        }
    }

    #[test]
    fn written_logits_map_back_row_for_row() {
        let dir = tempfile::tempdir().unwrap();
        let logits = Tensor::from_vec(
            (0..12).map(|v| v as f32 * 0.5 - 2.0).collect::<Vec<_>>(),
            (4, 3),
            &Device::Cpu,
        )
        .unwrap();
        let k = key("bb");
        let path = write(dir.path(), &k, &logits).unwrap();
        assert_eq!(path, dir.path().join(format!("{}.safetensors", k.key())));
        let mapped = MappedLogits::open(dir.path(), &k, 4).unwrap().unwrap();
        let rows = mapped.rows(&[2, 0], &Device::Cpu).unwrap();
        assert_eq!(
            rows.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 1.5, 2.0], vec![-2.0, -1.5, -1.0]]
        );
        // Another dataset is another key: no file, so the caller computes.
        assert!(MappedLogits::open(dir.path(), &key("cc"), 4)
            .unwrap()
            .is_none());
        // The wrong sample count is an error, not a silent misread.
        let err = MappedLogits::open(dir.path(), &k, 5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected F32 with 5 rows"), "{err}");
    }

    #[test]
    fn a_damaged_cache_file_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let k = key("bb");
        let logits = Tensor::zeros((4, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let path = write(dir.path(), &k, &logits).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = MappedLogits::open(dir.path(), &k, 4)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a safetensors file") && err.contains("delete it"),
            "{err}"
        );
        std::fs::write(&path, b"garbage").unwrap();
        assert!(MappedLogits::open(dir.path(), &k, 4).is_err());
    }
}
