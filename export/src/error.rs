//! The one error type of the export crate.

use std::path::PathBuf;

/// Everything that can go wrong exporting a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading the checkpoint or the data failed.
    #[error(transparent)]
    Distill(#[from] edgekd_distill::Error),
    /// candle failed while reading weights or computing reference logits.
    #[error("reading the model's tensors: {0}")]
    Candle(#[from] candle_core::Error),
    /// The runtime could not load or run an exported file.
    #[error("{variant} in the runtime")]
    Runtime {
        /// Which exported variant.
        variant: String,
        /// The runtime's error.
        #[source]
        source: edgekd_runtime::Error,
    },
    /// The model cannot be exported as it is.
    #[error("cannot export this model: {reason}")]
    Model {
        /// Why.
        reason: String,
    },
    /// The options make no sense together.
    #[error("invalid export options: {reason}")]
    Options {
        /// What is wrong.
        reason: String,
    },
    /// Writing a file failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// The export crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
