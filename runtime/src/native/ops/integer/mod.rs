//! Integer MatMul and Conv (`MatMulInteger`, `ConvInteger`, and the QDQ `MatMul`/`Gemm`/
//! `Conv` patterns fused into them): int8 activations times constant int8 weights, int32
//! accumulation, optionally rescaled to f32 in the same pass.
//!
//! Activations of either signedness are moved to the signed domain (u8 x becomes x - 128,
//! with the zero point moved alike) and weights are stored with their zero point already
//! subtracted, so one signed kernel serves every combination:
//! Σ (a - za)(w - zw) = Σ a'·w' - za'·Σ w'.

mod conv;
mod epilogue;
mod matmul;
mod packed;

pub use conv::{ConvGeometry, IntegerConv};
pub use epilogue::Epilogue;
pub use matmul::IntegerMatMul;
pub use packed::PackedWeights;
