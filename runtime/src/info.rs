//! What a model file declares about itself ([`ModelInfo`]: inputs, outputs, opset, metadata)
//! and what a run returns ([`Output`]): the vocabulary the loader, every backend and the
//! preprocessing share, in a module that needs none of them.

use std::collections::BTreeMap;

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
