//! The ONNX Runtime backend (feature `ort`), through the `ort` crate with `load-dynamic`:
//! nothing is downloaded or linked at build time. The shared library is loaded on first use
//! from `$ORT_DYLIB_PATH` (the PyPI wheel ships it as
//! `site-packages/onnxruntime/capi/libonnxruntime.so.<version>`), else from the system's
//! `libonnxruntime.so`. ONNX Runtime 1.31 or newer is required (API 31).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{Tensor, ValueType};

use crate::error::{Error, Result};
use crate::info::{ElementType, ModelInfo, Output};

const BACKEND: &str = "ort";

fn backend_error(message: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: message.to_string(),
    }
}

/// The library path this process loads ONNX Runtime from.
pub fn library_path() -> String {
    match std::env::var("ORT_DYLIB_PATH") {
        Ok(p) if !p.is_empty() => p,
        _ => format!(
            "{}onnxruntime{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ),
    }
}

/// The process-wide environment, created once; a failure to load the library is remembered
/// and reported to every caller rather than retried.
fn environment() -> Result<&'static Environment> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = library_path();
        let hint = "set ORT_DYLIB_PATH to libonnxruntime.so (>= 1.31), e.g. \
                    `pip install onnxruntime` then \
                    ORT_DYLIB_PATH=$(python3 -c 'import onnxruntime,glob,os; \
                    print(glob.glob(os.path.dirname(onnxruntime.__file__)+\"/capi/libonnxruntime.so*\")[0])')";
        let built = catch_unwind(AssertUnwindSafe(|| {
            ort::init_from(&path)
                .map_err(|e| format!("loading ONNX Runtime from `{path}`: {e}; {hint}"))?
                .with_name("edgekd")
                .build()
                .map_err(|e| format!("starting ONNX Runtime from `{path}`: {e}"))
        }));
        built.unwrap_or_else(|_| {
            Err(format!(
                "ONNX Runtime at `{path}` could not be initialised (older than 1.31?); {hint}"
            ))
        })
    })
    .as_ref()
    .map_err(backend_error)
}

/// A model in an ONNX Runtime session.
pub struct OrtModel {
    // `Session::run` takes `&mut self`; one lock per model keeps `Model` `Sync`.
    session: Mutex<Session>,
    input_f16: bool,
}

impl OrtModel {
    /// Creates a session with full graph optimisation and `threads` intra-op threads.
    pub fn load(bytes: &[u8], info: &ModelInfo, threads: usize) -> Result<OrtModel> {
        let input_f16 = match info.inputs[0].element {
            ElementType::F32 => false,
            ElementType::F16 => true,
            ref other => {
                return Err(Error::Interface {
                    reason: format!(
                        "input `{}` is {other}; the runtime feeds f32 or f16 inputs",
                        info.inputs[0].name
                    ),
                })
            }
        };
        let env = environment()?;
        let session = catch_unwind(AssertUnwindSafe(|| {
            // Builder errors carry the builder and are not `Send`: flatten them to text.
            Session::builder(env)
                .map_err(|e| e.to_string())?
                .with_optimization_level(GraphOptimizationLevel::All)
                .map_err(|e| e.to_string())?
                .with_intra_threads(threads)
                .map_err(|e| e.to_string())?
                .with_inter_threads(1)
                .map_err(|e| e.to_string())?
                // Spinning pool threads burn the cores that other models (or the rest of
                // the device's work) run on; measured in an interleaved bench on 2 cores,
                // they made every tract and native model 2-3x slower.
                .with_intra_op_spinning(false)
                .map_err(|e| e.to_string())?
                .with_inter_op_spinning(false)
                .map_err(|e| e.to_string())?
                .commit_from_memory(bytes)
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|_| Err("ONNX Runtime panicked creating the session".into()))
        .map_err(|e| Error::Backend {
            backend: BACKEND,
            message: format!("creating the session: {e}"),
        })?;
        Ok(OrtModel {
            session: Mutex::new(session),
            input_f16,
        })
    }

    /// Runs one batch of f32 values of the given concrete shape.
    pub fn run(&self, input: &[f32], shape: &[usize]) -> Result<Vec<Output>> {
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let value = if self.input_f16 {
            let h: Vec<half::f16> = input.iter().map(|&x| half::f16::from_f32(x)).collect();
            Tensor::from_array((dims, h))
                .map_err(backend_error)?
                .into_dyn()
        } else {
            Tensor::from_array((dims, input.to_vec()))
                .map_err(backend_error)?
                .into_dyn()
        };
        let outputs = session
            .run(ort::inputs![value])
            .map_err(|e| backend_error(format!("running the model: {e}")))?;
        outputs
            .iter()
            .map(|(name, v)| {
                use ort::value::TensorElementType as T;
                let ty = match v.dtype() {
                    ValueType::Tensor { ty, .. } => Some(*ty),
                    _ => None,
                };
                // Every output is given as f32, integers (labels, quantized values) included.
                let (shape, data): (_, Vec<f32>) = match ty {
                    Some(T::Float16) => {
                        let (s, d) = v.try_extract_tensor::<half::f16>().map_err(backend_error)?;
                        (s.clone(), d.iter().map(|x| x.to_f32()).collect())
                    }
                    Some(T::Int64) => {
                        let (s, d) = v.try_extract_tensor::<i64>().map_err(backend_error)?;
                        (s.clone(), d.iter().map(|&x| x as f32).collect())
                    }
                    Some(T::Int32) => {
                        let (s, d) = v.try_extract_tensor::<i32>().map_err(backend_error)?;
                        (s.clone(), d.iter().map(|&x| x as f32).collect())
                    }
                    Some(T::Uint8) => {
                        let (s, d) = v.try_extract_tensor::<u8>().map_err(backend_error)?;
                        (s.clone(), d.iter().map(|&x| x as f32).collect())
                    }
                    Some(T::Int8) => {
                        let (s, d) = v.try_extract_tensor::<i8>().map_err(backend_error)?;
                        (s.clone(), d.iter().map(|&x| x as f32).collect())
                    }
                    _ => {
                        let (s, d) = v.try_extract_tensor::<f32>().map_err(backend_error)?;
                        (s.clone(), d.to_vec())
                    }
                };
                Ok(Output {
                    name: name.to_string(),
                    shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                    data,
                })
            })
            .collect()
    }
}
