//! A loaded model ([`Model`]): which engine runs it ([`Backend`], [`Options`]) and how it is
//! run. What it takes and gives is [`ModelInfo`] ([`crate::info`]).
//!
//! Callers always feed `f32` and read `f32`: a model whose input is `f16` gets its input
//! cast inside the runtime, and int8 models quantize inside their own graph, so the same
//! calling code serves every format edgekd exports.

use std::path::Path;

use crate::error::{Error, Result};
use crate::info::{Dim, ModelInfo, Output};

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Backend {
    /// The native engine for every model whose operators it covers (int8 and f32: it is
    /// faster than tract on all of them), tract for the others; the native engine alone in
    /// builds without tract.
    #[default]
    Auto,
    /// edgekd's own engine: int8 and f32 convolutions and dense layers on packed weights,
    /// channels-last activations, one arena per run.
    Native,
    /// tract-onnx (feature `tract`).
    Tract,
    /// ONNX Runtime through the `ort` crate (feature `ort`), loaded from `ORT_DYLIB_PATH`.
    Ort,
}

impl Backend {
    /// The backend's name, as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Native => "native",
            Backend::Tract => "tract",
            Backend::Ort => "ort",
        }
    }

    /// Whether this build can run the backend at all.
    pub fn available(self) -> bool {
        match self {
            Backend::Auto | Backend::Native => true,
            Backend::Tract => cfg!(feature = "tract"),
            Backend::Ort => cfg!(feature = "ort"),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Backend, String> {
        match s {
            "auto" => Ok(Backend::Auto),
            "native" => Ok(Backend::Native),
            "tract" => Ok(Backend::Tract),
            "ort" | "onnxruntime" => Ok(Backend::Ort),
            other => Err(format!(
                "unknown backend `{other}` (expected auto, native, tract or ort)"
            )),
        }
    }
}

/// How to load a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Which engine.
    pub backend: Backend,
    /// Threads one inference may use (tract always uses one; see the README).
    pub threads: usize,
    /// What the file may declare before it is refused.
    pub limits: crate::Limits,
    /// How the native engine computes float layers: [`crate::FloatMode::Fast`] (fused
    /// multiply-adds; last-bit differences between CPU families) or `Exact` (the same bits on
    /// every CPU).
    pub float: crate::FloatMode,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            backend: Backend::Auto,
            threads: 1,
            limits: crate::Limits::default(),
            float: crate::FloatMode::default(),
        }
    }
}

enum Engine {
    Native(crate::engine::NativeModel),
    #[cfg(feature = "tract")]
    Tract(crate::backend::tract::TractModel),
    #[cfg(feature = "ort")]
    Ort(crate::backend::ort::OrtModel),
}

/// A model ready to run.
pub struct Model {
    info: ModelInfo,
    engine: Engine,
    options: Options,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("info", &self.info)
            .field("backend", &self.backend())
            .finish()
    }
}

impl Model {
    /// Loads an ONNX file on the default backend ([`Backend::Auto`], one thread).
    pub fn load(path: &Path) -> Result<Model> {
        Model::load_with(path, Options::default())
    }

    /// Loads an ONNX file with the given options.
    pub fn load_with(path: &Path, options: Options) -> Result<Model> {
        let io = |source| Error::Io {
            path: path.into(),
            source,
        };
        // Refused before it is read: the size limit is also a memory limit.
        options
            .limits
            .check_file_size(std::fs::metadata(path).map_err(io)?.len())?;
        let bytes = std::fs::read(path).map_err(io)?;
        Model::from_bytes_with(&bytes, options)
    }

    /// Loads an ONNX model from memory on the default backend.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Model::from_bytes_with(bytes, Options::default())
    }

    /// Loads an ONNX model from memory with the given options.
    pub fn from_bytes_with(bytes: &[u8], options: Options) -> Result<Model> {
        options.limits.check_file_size(bytes.len() as u64)?;
        let proto = crate::proto::decode(bytes)?;
        options.limits.check_model(&proto)?;
        let info = crate::backend::onnx_info::model_info(&proto, bytes.len())?;
        let threads = options.threads.max(1);
        let native = || crate::engine::NativeModel::load(&proto, &info, threads, options.float);
        let engine = match options.backend {
            Backend::Native => Engine::Native(native()?),
            Backend::Auto => match native() {
                // A file that does not decode is corrupt for every engine: say so once.
                Err(e @ Error::Corrupt { .. }) => return Err(e),
                Ok(m) => Engine::Native(m),
                #[cfg(feature = "tract")]
                Err(_) => Engine::Tract(crate::backend::tract::TractModel::load(bytes, &info)?),
                // Without tract, the native engine is the only one `auto` can pick.
                #[cfg(not(feature = "tract"))]
                Err(e) => return Err(e),
            },
            #[cfg(feature = "tract")]
            Backend::Tract => Engine::Tract(crate::backend::tract::TractModel::load(bytes, &info)?),
            #[cfg(feature = "ort")]
            Backend::Ort => {
                Engine::Ort(crate::backend::ort::OrtModel::load(bytes, &info, threads)?)
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(Error::Backend {
                    backend: other.name(),
                    message: format!(
                        "this build of edgekd-runtime was compiled without the `{other}` feature"
                    ),
                })
            }
        };
        Ok(Model {
            info,
            engine,
            options,
        })
    }

    /// The engine actually running the model (`native`, `tract` or `ort`).
    pub fn backend(&self) -> &'static str {
        match &self.engine {
            Engine::Native(_) => "native",
            #[cfg(feature = "tract")]
            Engine::Tract(_) => "tract",
            #[cfg(feature = "ort")]
            Engine::Ort(_) => "ort",
        }
    }

    /// The options the model was loaded with.
    pub fn options(&self) -> Options {
        self.options
    }

    /// What the model takes and gives.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Runs a batch of `batch` samples laid out row-major in `input` (the first input's
    /// shape with its first dimension set to `batch`), returning every output.
    pub fn run(&self, input: &[f32], batch: usize) -> Result<Vec<Output>> {
        let shape = self.input_shape(input.len(), batch)?;
        match &self.engine {
            Engine::Native(m) => m.run(input, &shape),
            #[cfg(feature = "tract")]
            Engine::Tract(m) => m.run(input, &shape),
            #[cfg(feature = "ort")]
            Engine::Ort(m) => m.run(input, &shape),
        }
    }

    /// Mean time per step over `runs` runs of one batch on the native engine: which (fused)
    /// operator costs what. Models on other engines are refused.
    pub fn profile(
        &self,
        input: &[f32],
        batch: usize,
        runs: usize,
    ) -> Result<Vec<(String, std::time::Duration)>> {
        let shape = self.input_shape(input.len(), batch)?;
        match &self.engine {
            Engine::Native(m) => m.profile(input, &shape, runs),
            #[allow(unreachable_patterns)]
            _ => Err(Error::Backend {
                backend: self.backend(),
                message: "only the native engine reports per-step times".into(),
            }),
        }
    }

    /// Runs a batch and returns the output that scores classes alone
    /// ([`ModelInfo::class_output`]: logits for edgekd's models, possibly probabilities for
    /// others, which [`ModelInfo::gives_probabilities`] tells).
    pub fn logits(&self, input: &[f32], batch: usize) -> Result<Output> {
        let mut outs = self.run(input, batch)?;
        let i = self.info.class_output();
        if i >= outs.len() {
            return Err(Error::Interface {
                reason: "the model has no output".into(),
            });
        }
        Ok(outs.swap_remove(i))
    }

    /// The concrete input shape for `batch` samples of `len` values in all, checked against
    /// the declared one.
    fn input_shape(&self, len: usize, batch: usize) -> Result<Vec<usize>> {
        let input = &self.info.inputs[0];
        let expected = input.shape_text();
        let mismatch = |given: String| Error::InputShape {
            name: input.name.clone(),
            expected: expected.clone(),
            given,
        };
        let per_sample = input.sample_len().ok_or_else(|| {
            mismatch(format!(
                "{len} values (only the first dimension may be free)"
            ))
        })?;
        if batch == 0 || len != batch * per_sample {
            return Err(mismatch(format!(
                "{len} values for a batch of {batch} ({per_sample} per sample)"
            )));
        }
        if let Some(Dim::Fixed(n)) = input.shape.first() {
            if *n != batch {
                return Err(mismatch(format!("a batch of {batch}")));
            }
        }
        let mut shape = vec![batch];
        shape.extend(input.shape.iter().skip(1).map(|d| match d {
            Dim::Fixed(n) => *n,
            Dim::Free(_) => unreachable!("sample_len checked every dimension is fixed"),
        }));
        Ok(shape)
    }
}
