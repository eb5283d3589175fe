//! Teachers: checkpoints edgekd trained (candle models), and ONNX classifiers from any
//! exporter (PyTorch, TensorFlow, scikit-learn), run through the runtime crate
//! ([`crate::onnx_teacher`]).

use std::path::Path;

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use crate::checkpoint;
use crate::digest::hex;
use crate::error::{Error, Result};
use crate::input::{InputShape, Normalization};
use crate::model::{Model, Output};
use crate::onnx_teacher::{OnnxOptions, OnnxTeacher};
use crate::spec::ModelSpec;

/// A teacher of either kind.
#[derive(Debug)]
pub enum Teacher {
    /// A checkpoint written by `edgekd train` or `distill`.
    Checkpoint(Model),
    /// An ONNX classifier.
    Onnx(OnnxTeacher),
}

impl Teacher {
    /// Loads a teacher: a checkpoint directory written by `edgekd train` or `distill`, or an
    /// ONNX classifier file.
    pub fn load(path: &Path, onnx: &OnnxOptions) -> Result<Teacher> {
        if path.is_file() {
            Ok(Teacher::Onnx(OnnxTeacher::load(path, onnx)?))
        } else {
            Ok(Teacher::Checkpoint(checkpoint::load_model(
                path,
                &Device::Cpu,
            )?))
        }
    }

    /// How reports and errors name it.
    pub fn name(&self) -> String {
        match self {
            Teacher::Checkpoint(m) => m.spec().name.clone(),
            Teacher::Onnx(t) => t.path().display().to_string(),
        }
    }

    /// SHA-256 of everything its logits depend on besides the input: a checkpoint's spec and
    /// weights; an ONNX file's bytes, the output used, how it is read and the input convention.
    /// Keys the on-disk logit cache.
    pub fn sha256(&self) -> Result<String> {
        let m = match self {
            Teacher::Onnx(t) => return Ok(t.sha256()),
            Teacher::Checkpoint(m) => m,
        };
        let mut h = Sha256::new();
        h.update(b"checkpoint");
        h.update(serde_json::to_string(m.spec()).expect("specs serialise"));
        for (p, v) in &m.params().vars {
            h.update(p.name.as_bytes());
            for x in v.as_tensor().flatten_all()?.to_vec1::<f32>()? {
                h.update(x.to_le_bytes());
            }
        }
        Ok(hex(&h.finalize()))
    }

    /// Where its logits are made: a checkpoint's device, the CPU for an ONNX file.
    pub fn device(&self) -> Device {
        match self {
            Teacher::Checkpoint(m) => m.device(),
            Teacher::Onnx(_) => Device::Cpu,
        }
    }

    /// The candle model, for a checkpoint teacher.
    pub fn model(&self) -> Option<&Model> {
        match self {
            Teacher::Checkpoint(m) => Some(m),
            Teacher::Onnx(_) => None,
        }
    }

    /// Number of classes it scores.
    pub fn classes(&self) -> usize {
        match self {
            Teacher::Checkpoint(m) => m.spec().classes,
            Teacher::Onnx(t) => t.classes(),
        }
    }

    /// Says what does not fit when this teacher cannot teach `student` (it sees the
    /// student's batches, so it must take the same images and score the same classes).
    pub fn check_fits(&self, student: &ModelSpec) -> Result<()> {
        let mismatch = |what: String| {
            Err(Error::Config(format!(
                "teacher {} cannot teach student {}: {what}",
                self.name(),
                student.name
            )))
        };
        if self.classes() != student.classes {
            return mismatch(format!(
                "it scores {} classes, the data has {}",
                self.classes(),
                student.classes
            ));
        }
        if let Teacher::Checkpoint(m) = self {
            if m.spec().normalization != student.normalization {
                return mismatch("they normalise inputs differently".into());
            }
        }
        let input = self.input();
        if input != student.input {
            return mismatch(format!(
                "it takes {input} images, the data is {} (an image folder is decoded at the \
                 teacher's size and colour unless --image-size or --color say otherwise)",
                student.input
            ));
        }
        Ok(())
    }

    /// The images it takes.
    pub fn input(&self) -> InputShape {
        match self {
            Teacher::Checkpoint(m) => m.spec().input,
            Teacher::Onnx(t) => t.input(),
        }
    }

    /// Logits (detached) and, for a checkpoint teacher, the last hidden layer, for a batch of
    /// `images` normalised with `norm`.
    pub fn forward(&self, images: &Tensor, norm: Normalization) -> Result<Output> {
        match self {
            Teacher::Checkpoint(m) => {
                let out = m.forward(images, false)?;
                Ok(Output {
                    logits: out.logits.detach(),
                    features: out.features.detach(),
                })
            }
            Teacher::Onnx(t) => {
                let logits = t.logits(images, norm)?;
                Ok(Output {
                    features: logits.clone(),
                    logits,
                })
            }
        }
    }
}
