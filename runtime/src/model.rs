//! A loaded model: what it takes and gives ([`ModelInfo`]) and a way to run it ([`Model`]).
//!
//! Callers always feed `f32` and read `f32`: a model whose input is `f16` gets its input
//! cast inside the runtime, and int8 models quantize inside their own graph, so the same
//! calling code serves every format edgekd exports.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Element type of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ElementType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// Anything else, by its ONNX name.
    Other(String),
}

impl std::fmt::Display for ElementType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElementType::F32 => f.write_str("f32"),
            ElementType::F16 => f.write_str("f16"),
            ElementType::I8 => f.write_str("i8"),
            ElementType::U8 => f.write_str("u8"),
            ElementType::I32 => f.write_str("i32"),
            ElementType::I64 => f.write_str("i64"),
            ElementType::Other(s) => f.write_str(s),
        }
    }
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A free size (the batch), by its symbol when it has one.
    Free(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Free(s) if s.is_empty() => f.write_str("?"),
            Dim::Free(s) => f.write_str(s),
        }
    }
}

/// Name, element type and declared shape of an input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The graph's name for it.
    pub name: String,
    /// Element type.
    pub element: ElementType,
    /// Declared shape.
    pub shape: Vec<Dim>,
    /// For an output: whether a Softmax node writes it (directly or through Identity nodes),
    /// so it holds probabilities rather than logits.
    pub from_softmax: bool,
}

impl TensorInfo {
    /// The shape as text, e.g. `[N, 784]`.
    pub fn shape_text(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        format!("[{}]", dims.join(", "))
    }

    /// The class count of a `[N, classes]` output with at least two classes.
    pub fn classes(&self) -> Option<usize> {
        match self.shape[..] {
            [_, Dim::Fixed(c)] if c >= 2 => Some(c),
            _ => None,
        }
    }

    /// Values per sample: the product of every dimension after the first.
    pub fn sample_len(&self) -> Option<usize> {
        self.shape
            .iter()
            .skip(1)
            .try_fold(1usize, |acc, d| match d {
                Dim::Fixed(n) => acc.checked_mul(*n),
                Dim::Free(_) => None,
            })
    }
}

/// What a model file declares about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Graph inputs (initializers excluded).
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs.
    pub outputs: Vec<TensorInfo>,
    /// The default-domain opset the model imports.
    pub opset: i64,
    /// ONNX IR version.
    pub ir_version: i64,
    /// `metadata_props`, key to value.
    pub metadata: BTreeMap<String, String>,
    /// Size of the file or buffer, in bytes.
    pub bytes: usize,
}

impl ModelInfo {
    /// The output that scores classes: the first shaped `[N, classes]` with at least two
    /// classes (a scikit-learn classifier's first output is its `[N]` label, its second the
    /// probabilities), else the first.
    pub fn class_output(&self) -> usize {
        self.outputs
            .iter()
            .position(|o| o.classes().is_some())
            .unwrap_or(0)
    }

    /// Whether output `i` holds probabilities: a Softmax writes it, or it is named so
    /// (`probabilities`, as skl2onnx names it).
    pub fn gives_probabilities(&self, i: usize) -> bool {
        self.outputs
            .get(i)
            .is_some_and(|o| o.from_softmax || o.name.to_ascii_lowercase().contains("prob"))
    }
}

/// One output of a run, as `f32` whatever the model computes in.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The graph's name for it.
    pub name: String,
    /// Its shape in this run.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl Output {
    /// The values of row `i` of a `[n, k]` output.
    pub fn row(&self, i: usize) -> &[f32] {
        let k = self.shape.iter().skip(1).product::<usize>();
        &self.data[i * k..(i + 1) * k]
    }

    /// Number of rows (the batch).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }
}

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Backend {
    /// The native engine for int8 models it fully covers (it is several times faster than
    /// tract on them), tract for everything else; the native engine for everything in builds
    /// without tract.
    #[default]
    Auto,
    /// edgekd's own engine ([`crate::native`]): int8 kernels, plus the float layers students
    /// are made of.
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
}

impl Default for Options {
    fn default() -> Options {
        Options {
            backend: Backend::Auto,
            threads: 1,
            limits: crate::Limits::default(),
        }
    }
}

enum Engine {
    Native(crate::native::NativeModel),
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
        let engine = match options.backend {
            Backend::Native => {
                Engine::Native(crate::native::NativeModel::load(&proto, &info, threads)?)
            }
            // A float graph is not lowered just to be refused (that copied every weight into
            // the native engine's tensors before handing the file to tract); its initializers
            // are still checked the way lowering checks them, so a corrupt file is reported
            // the same way.
            Backend::Auto
                if !proto
                    .graph
                    .as_ref()
                    .is_some_and(crate::native::graph::may_be_integer) =>
            {
                match proto
                    .graph
                    .as_ref()
                    .map(crate::native::graph::check_initializers)
                {
                    Some(Err(e @ Error::Corrupt { .. })) => return Err(e),
                    #[cfg(feature = "tract")]
                    _ => Engine::Tract(crate::backend::tract::TractModel::load(bytes, &info)?),
                    #[cfg(not(feature = "tract"))]
                    _ => Engine::Native(crate::native::NativeModel::load(&proto, &info, threads)?),
                }
            }
            Backend::Auto => match crate::native::NativeModel::load(&proto, &info, threads) {
                // A file that does not decode is corrupt for every engine: say so once.
                Err(e @ Error::Corrupt { .. }) => return Err(e),
                Ok(m) if m.is_integer() => Engine::Native(m),
                #[cfg(feature = "tract")]
                _ => Engine::Tract(crate::backend::tract::TractModel::load(bytes, &info)?),
                // Without tract, the native engine is the only one `auto` can pick.
                #[cfg(not(feature = "tract"))]
                other => Engine::Native(other?),
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
