//! Checkpoint directories: `model.toml` (the spec) beside `model.safetensors` (the weights), so
//! any later stage rebuilds the model from the directory alone. Every file is written atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::atomic;
use crate::error::{Error, Result};
use crate::model::{Model, Params};
use crate::spec::ModelSpec;

/// The spec file's name inside a checkpoint directory.
pub const SPEC_FILE: &str = "model.toml";
/// The weights file's name inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The end-of-run report's name inside a checkpoint directory.
pub const REPORT_FILE: &str = "report.json";

/// Writes named tensors to a safetensors file atomically.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    atomic::write_with(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(std::io::Error::other)
    })
}

/// Reads a safetensors file, naming it in any error.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(Error::Checkpoint {
            path: path.into(),
            reason: "file not found".into(),
        });
    }
    let bytes = std::fs::read(path).map_err(Error::io("reading", path))?;
    tensors_from_bytes(&bytes, path, device)
}

/// Parses safetensors bytes; `path` names them in errors.
fn tensors_from_bytes(
    bytes: &[u8],
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load_buffer(bytes, device).map_err(|source| Error::Weights {
        path: path.into(),
        source,
    })
}

/// Writes `value` as pretty JSON, atomically.
pub fn save_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Format {
        path: path.into(),
        reason: e.to_string(),
    })?;
    atomic::write(path, text.as_bytes())
}

/// Reads JSON into `T`, naming the file in any error.
pub fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(Error::io("reading", path))?;
    serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// Saves a model's spec and weights into `dir` (created if needed).
pub fn save_model(dir: &Path, model: &Model) -> Result<()> {
    crate::atomic::create_dir(dir)?;
    let spec = toml::to_string(model.spec()).map_err(|e| Error::Format {
        path: dir.join(SPEC_FILE),
        reason: e.to_string(),
    })?;
    save_tensors(&dir.join(WEIGHTS_FILE), &model.params().tensors())?;
    let ranges = dir.join(crate::qat::RANGES_FILE);
    let learned = model.qat().map(|q| q.learned());
    match learned {
        // Ranges exist once simulation has run; before that a QAT run is still a float one.
        Some(l) if l.taps.iter().skip(1).any(Option::is_some) => save_json(&ranges, &l)?,
        // Ranges left by an earlier QAT run into this directory describe other weights.
        _ if ranges.exists() => {
            std::fs::remove_file(&ranges).map_err(Error::io("removing", &ranges))?
        }
        _ => {}
    }
    atomic::write(&dir.join(SPEC_FILE), spec.as_bytes())
}

/// Reads the spec of the checkpoint in `dir`.
pub fn load_spec(dir: &Path) -> Result<ModelSpec> {
    let path = dir.join(SPEC_FILE);
    if !dir.is_dir() {
        let what = if dir.exists() {
            "not a directory"
        } else {
            "no such directory"
        };
        return Err(Error::Checkpoint {
            path: dir.into(),
            reason: format!(
                "{what} (a checkpoint is a directory holding model.toml and model.safetensors)"
            ),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
    parse_spec(&text, &path)
}

/// Parses and validates a spec file's text; `path` names it in errors.
pub fn parse_spec(text: &str, path: &Path) -> Result<ModelSpec> {
    let spec: ModelSpec = toml::from_str(text).map_err(|e| Error::Format {
        path: path.into(),
        reason: e.to_string(),
    })?;
    spec.validate()?;
    Ok(spec)
}

/// Rebuilds the model saved in `dir`, on the CPU (where edgekd trains).
pub fn load(dir: &Path) -> Result<Model> {
    load_model(dir, &Device::Cpu)
}

/// Rebuilds the model saved in `dir` on `device`.
pub fn load_model(dir: &Path, device: &Device) -> Result<Model> {
    let spec = load_spec(dir)?;
    let path = dir.join(WEIGHTS_FILE);
    let params = Params::from_tensors(&spec, load_tensors(&path, device)?, &path)?;
    Model::from_params(&spec, params)
}

/// Builds the model `spec` describes from the bytes of its safetensors weights file, checking
/// every tensor's name, type and shape against the spec; `path` names the file in errors.
pub fn model_from_weights(
    spec: &ModelSpec,
    weights: &[u8],
    path: &Path,
    device: &Device,
) -> Result<Model> {
    let tensors = tensors_from_bytes(weights, path, device)?;
    Model::from_params(spec, Params::from_tensors(spec, tensors, path)?)
}

/// A checkpoint's weights as where a student starts (a pruned model recovered by distillation
/// or by fine-tuning), instead of a seeded initialisation.
#[derive(Debug, Clone)]
pub struct StartWeights {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its tensors; every run that starts from them gets its own copy.
    pub tensors: HashMap<String, Tensor>,
    /// SHA-256 of its weights file: part of each run's identity.
    pub sha256: String,
}

impl StartWeights {
    /// A fresh model over a copy of these weights.
    pub fn model(&self, spec: &ModelSpec) -> Result<Model> {
        let path = self.dir.join(WEIGHTS_FILE);
        Model::from_params(
            spec,
            Params::from_tensors(spec, self.tensors.clone(), &path)?,
        )
    }
}

/// The spec and weights of the checkpoint in `dir`, to train on from where it is.
pub fn load_start(dir: &Path) -> Result<(ModelSpec, StartWeights)> {
    use sha2::Digest;
    let spec = load_spec(dir)?;
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).map_err(Error::io("reading", &path))?;
    let tensors = tensors_from_bytes(&bytes, &path, &Device::Cpu)?;
    // Checked now, not at the first run.
    Params::from_tensors(&spec, tensors.clone(), &path)?;
    let start = StartWeights {
        dir: dir.into(),
        tensors,
        sha256: crate::digest::hex(&sha2::Sha256::digest(&bytes)),
    };
    Ok((spec, start))
}

/// The activation ranges a quantization-aware training run left in `dir`, if it was one.
pub fn load_learned_ranges(dir: &Path) -> Result<Option<crate::qat::LearnedRanges>> {
    let path = dir.join(crate::qat::RANGES_FILE);
    if path.is_file() {
        load_json(&path).map(Some)
    } else {
        Ok(None)
    }
}

/// Where a run keeps what `--resume` needs.
pub fn state_dir(dir: &Path) -> PathBuf {
    dir.join("train-state")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::logits_vec;

    #[test]
    fn a_saved_model_reloads_with_identical_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ModelSpec::parse("cnn:lenet5-half")
            .unwrap()
            .with_dropout(0.3, 0.0)
            .unwrap();
        let m = Model::new(&spec, 3, &Device::Cpu).unwrap();
        save_model(dir.path(), &m).unwrap();
        let back = load_model(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(back.spec(), &spec);
        let x = Tensor::ones((2, 784), candle_core::DType::F32, &Device::Cpu).unwrap();
        let (a, b) = (logits_vec(&m, &x), logits_vec(&back, &x));
        assert_eq!(a, b);
    }

    #[test]
    fn broken_checkpoints_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_model(&dir.path().join("nope"), &Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("no such directory"));
        let m = Model::new(&ModelSpec::parse("mlp:4").unwrap(), 1, &Device::Cpu).unwrap();
        save_model(dir.path(), &m).unwrap();
        std::fs::write(dir.path().join(WEIGHTS_FILE), b"garbage").unwrap();
        let err = load_model(dir.path(), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("safetensors"),
            "{err}"
        );
        std::fs::write(dir.path().join(SPEC_FILE), b"kind = 3").unwrap();
        assert!(load_model(dir.path(), &Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("model.toml"));
    }
}
