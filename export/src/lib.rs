//! edgekd's export stage: a trained student in, standard ONNX out, in f32, f16 and int8,
//! each file verified in the runtime before it is written.
//!
//! [`network`] copies a checkpoint's weights out of candle; [`lower`] walks its layers into
//! an ONNX graph, with each format writing its weighted layers ([`lower::Float`],
//! [`lower::F16Storage`], [`int8`]); [`quantize`] and [`calibrate`] hold the int8 arithmetic;
//! [`onnx`] builds the protobuf; [`verify`] checks the result; [`export()`] ties them together.
#![warn(missing_docs)]

pub mod calibrate;
pub mod error;
pub mod export;
pub mod int8;
pub mod lower;
pub mod network;
pub mod onnx;
pub mod quantize;
pub mod verify;

pub use calibrate::Method;
pub use error::{Error, Result};
pub use export::{export, Activations, ExportOptions, ExportReport, Exported, Variant};
pub use int8::Encoding;
