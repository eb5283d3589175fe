//! The one error type of the runtime crate.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model file could not be read.
    #[error("reading {}", path.display())]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid ONNX model (or not one this runtime can make sense of).
    #[error("not a valid ONNX model: {reason}")]
    Corrupt {
        /// What is wrong.
        reason: String,
    },
    /// The model uses an operator the backend does not implement.
    #[error("unsupported operator {domain}{op} (node `{node}`) in the {backend} backend")]
    UnsupportedOp {
        /// Operator type, e.g. `QLinearAdd`.
        op: String,
        /// Its domain followed by `::` when not the default one (`com.microsoft::`).
        domain: String,
        /// The first node using it.
        node: String,
        /// Which backend refused it.
        backend: &'static str,
    },
    /// An input does not have the shape the model declares.
    #[error("input `{name}`: the model expects shape {expected}, given {given}")]
    InputShape {
        /// The model input's name.
        name: String,
        /// Its declared shape, `N` for a free dimension.
        expected: String,
        /// What the caller supplied.
        given: String,
    },
    /// The model's inputs or outputs are not what the caller can feed or read.
    #[error("unsupported model interface: {reason}")]
    Interface {
        /// What does not fit.
        reason: String,
    },
    /// The model asks for more than the load limits allow ([`crate::Limits`]).
    #[error("{what}, over the limit of {limit} (raise {setting} to accept it)")]
    TooLarge {
        /// What was declared.
        what: String,
        /// The limit in force.
        limit: u64,
        /// The setting that holds it (`max-model-bytes`, `max-tensor-elements`).
        setting: &'static str,
    },
    /// The backend failed while preparing or running the model.
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// Its error, with its causes.
        message: String,
    },
}

impl Error {
    /// [`Error::UnsupportedOp`] for a node, its domain written as the message shows it.
    pub fn unsupported_op(op: String, domain: &str, node: &str, backend: &'static str) -> Error {
        Error::UnsupportedOp {
            op,
            domain: if domain.is_empty() || domain == "ai.onnx" {
                String::new()
            } else {
                format!("{domain}::")
            },
            node: node.into(),
            backend,
        }
    }
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
