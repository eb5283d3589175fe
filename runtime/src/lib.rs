//! edgekd's device-side crate: what ships to the board or phone.
//!
//! It must stay small and cross-compile cleanly, so it never depends on the training stack
//! (candle, `edgekd-distill`). It loads ONNX models ([`Model`], on tract by default), turns
//! logits into ranked class probabilities ([`classify`]) and summarises latency samples the
//! way hyperfine does ([`stats`]).
#![warn(missing_docs)]

pub mod backend;
pub mod classify;
mod engine;
pub mod error;
pub mod idx;
#[cfg(feature = "image")]
pub mod image;
pub mod info;
pub mod limits;
pub mod model;
pub mod preprocess;
pub mod proto;
pub mod stats;

pub use classify::{softmax, top_k, Ranked};
pub use engine::FloatMode;
pub use error::{Error, Result};
pub use info::{Dim, ElementType, ModelInfo, Output, TensorInfo};
pub use limits::Limits;
pub use model::{Backend, Model, Options};
pub use preprocess::{class_names, Preprocess};
pub use stats::{LatencySummary, OutlierWarning};

/// The instruction set the native engine's kernels run on here (`avx2`, `neon` or
/// `portable`), detected once.
pub fn kernel_isa() -> &'static str {
    engine::kernels::Isa::detect().name()
}
