//! Inference backends, one file each. tract is the default: pure Rust, no native library.

pub mod onnx_info;
#[cfg(feature = "ort")]
pub mod ort;
#[cfg(feature = "tract")]
pub mod tract;
