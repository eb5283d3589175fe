//! The one error type of the distill crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading data, building models or training.
///
/// Display strings name the file or the setting at fault; the underlying cause, when there is
/// one, is kept as the error's `source` so a caller printing the chain sees both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done ("reading", "writing", "creating directory").
        action: &'static str,
        /// The file at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file claims to be IDX but is not a valid one.
    #[error("{}: invalid IDX file: {reason}", path.display())]
    Idx {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A dataset is incomplete or inconsistent (missing files, images without labels, ...).
    #[error("dataset {}: {reason}", dir.display())]
    Dataset {
        /// The dataset directory or file.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A downloaded or local file does not have the published SHA-256 sum.
    #[error("{}: SHA-256 mismatch: expected {expected}, found {actual}", path.display())]
    Checksum {
        /// The file at fault.
        path: PathBuf,
        /// The published sum.
        expected: String,
        /// The sum of the bytes on disk.
        actual: String,
    },
    /// A download failed on every mirror.
    #[error("downloading {file}: {reason}")]
    Download {
        /// The file that could not be fetched.
        file: String,
        /// Why, mirror by mirror.
        reason: String,
    },
    /// A model spec string or spec file could not be understood.
    #[error("invalid model spec `{spec}`: {reason}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint directory is missing pieces or does not match its spec.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint's weights are not a readable safetensors file.
    #[error("checkpoint {}: not a readable safetensors file", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// candle's error (which holds the safetensors library's).
        #[source]
        source: candle_core::Error,
    },
    /// An ONNX teacher cannot be loaded or used.
    #[error("teacher {}: {reason}", path.display())]
    Teacher {
        /// The ONNX file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The runtime could not load or run an ONNX teacher.
    #[error("teacher {}: {action}", path.display())]
    TeacherRuntime {
        /// The ONNX file.
        path: PathBuf,
        /// What was being done ("loading it", "running it").
        action: &'static str,
        /// The runtime's error (boxed: it is large, and every result carries this enum).
        #[source]
        source: Box<edgekd_runtime::Error>,
    },
    /// A safetensors file could not be read or written.
    #[error("{}: {action}", path.display())]
    Safetensors {
        /// The file at fault.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The safetensors library's error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// An image could not be decoded.
    #[error("{}: not a readable image", path.display())]
    Image {
        /// The file at fault.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: edgekd_runtime::image::ImageError,
    },
    /// One run of an experiment failed.
    #[error("training {model} into {}", dir.display())]
    Run {
        /// The model's spec name.
        model: String,
        /// Its checkpoint directory.
        dir: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// A configuration value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Training produced a NaN or infinite value.
    #[error("non-finite {what} at epoch {epoch}, batch {batch} (training samples {}): lower the learning rate or the temperature, or enable gradient clipping", show_samples(samples))]
    NonFinite {
        /// What went non-finite (loss, gradient norm, student logits).
        what: &'static str,
        /// 1-based epoch.
        epoch: usize,
        /// 0-based batch index in that epoch.
        batch: usize,
        /// Dataset indices of the batch's samples (for logits: the offending ones).
        samples: Vec<usize>,
    },
    /// A teacher gives a NaN or infinite output: its weights are broken, and nothing is
    /// trained on it.
    #[error("{model} gives a non-finite logit ({value}) for sample {sample} of the training set: its weights are broken or overflow; nothing was trained on it")]
    NonFiniteOutput {
        /// Which model (`teacher` and its spec name).
        model: String,
        /// Training-set index of the first sample at fault.
        sample: usize,
        /// The offending value.
        value: f32,
    },
    /// A TOML or JSON document could not be parsed or written.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file at fault.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// An error from candle's tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `3, 17, 42` or `3, 17, 42, ... (128 in all)`.
fn show_samples(samples: &[usize]) -> String {
    let shown: Vec<String> = samples.iter().take(8).map(|s| s.to_string()).collect();
    if samples.len() > 8 {
        format!("{}, ... ({} in all)", shown.join(", "), samples.len())
    } else {
        shown.join(", ")
    }
}

/// The distill crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

impl From<edgekd_runtime::idx::IdxError> for Error {
    fn from(e: edgekd_runtime::idx::IdxError) -> Error {
        use edgekd_runtime::idx::IdxError;
        match e {
            IdxError::Io {
                action,
                path,
                source,
            } => Error::Io {
                action,
                path,
                source,
            },
            IdxError::Format { path, reason } => Error::Idx { path, reason },
            other => Error::Idx {
                path: std::path::PathBuf::new(),
                reason: other.to_string(),
            },
        }
    }
}
