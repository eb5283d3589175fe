//! One module per subcommand, and what the ones that load models share.

pub mod bench;
pub mod compare;
#[cfg(feature = "train")]
pub mod data;
#[cfg(feature = "train")]
pub mod demo;
#[cfg(feature = "train")]
pub mod distill;
#[cfg(feature = "train")]
pub mod eval;
#[cfg(feature = "train")]
pub mod export;
#[cfg(feature = "train")]
pub mod prune;
pub mod run;
pub mod soak;
#[cfg(feature = "train")]
pub mod teacher_logits;
#[cfg(feature = "train")]
pub mod train;

/// Whether two paths name the same existing directory or file.
pub fn same_path(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Size limits for files from strangers, shared by the commands that load models.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LimitArgs {
    /// Refuse model files larger than this [default: 2147483648, protobuf's own ceiling]
    #[arg(long, value_name = "BYTES")]
    pub max_model_bytes: Option<u64>,
    /// Refuse a model that declares a tensor, or an IDX file whose header declares an array,
    /// of more elements than this; checked before anything is allocated [default: 268435456]
    #[arg(long, value_name = "N")]
    pub max_tensor_elements: Option<u64>,
}

impl LimitArgs {
    /// The runtime's limits, defaults filled in.
    pub fn limits(&self) -> edgekd_runtime::Limits {
        let d = edgekd_runtime::Limits::default();
        edgekd_runtime::Limits {
            max_model_bytes: self.max_model_bytes.unwrap_or(d.max_model_bytes),
            max_tensor_elements: self.max_tensor_elements.unwrap_or(d.max_tensor_elements),
        }
    }

    /// The same flags, for a child process.
    pub fn to_args(self) -> Vec<String> {
        let l = self.limits();
        vec![
            format!("--max-model-bytes={}", l.max_model_bytes),
            format!("--max-tensor-elements={}", l.max_tensor_elements),
        ]
    }
}

/// Loads an ONNX model on the given engine, naming the file in any error.
pub fn load_model(
    path: &std::path::Path,
    backend: edgekd_runtime::Backend,
    threads: usize,
    float: edgekd_runtime::FloatMode,
    limits: &LimitArgs,
) -> anyhow::Result<edgekd_runtime::Model> {
    use anyhow::Context;
    if threads == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    if path.is_dir() {
        anyhow::bail!("{} is a directory; give an .onnx file", path.display());
    }
    let options = edgekd_runtime::Options {
        backend,
        threads,
        limits: limits.limits(),
        float,
    };
    edgekd_runtime::Model::load_with(path, options)
        .with_context(|| format!("loading {}", path.display()))
}
