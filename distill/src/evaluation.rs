//! Running a model, or a teacher, over a whole dataset in order: logits, accuracy, top-1
//! agreement.

use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::batch::make_batch;
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::input::Normalization;
use crate::loss::SoftTargets;
use crate::model::Model;
use crate::spec::ModelSpec;
use crate::teacher::Teacher;

/// Accuracy of a model on a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Correct predictions.
    pub correct: usize,
    /// Samples.
    pub total: usize,
    /// Predicted class per sample.
    #[serde(skip)]
    pub predictions: Vec<u32>,
}

impl Evaluation {
    /// Fraction correct.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
    /// Wrong predictions.
    pub fn errors(&self) -> usize {
        self.total - self.correct
    }
    /// Fraction of samples on which two models predict the same class.
    pub fn agreement(&self, other: &Evaluation) -> f64 {
        top1_agreement(&self.predictions, &other.predictions)
    }
}

/// Fraction of positions where two prediction lists name the same class.
pub fn top1_agreement(a: &[u32], b: &[u32]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// Samples per evaluation batch: 1000, fewer for models whose feature maps would make a
/// layer's output larger than [`EVAL_VALUES`] floats (above glibc's mmap threshold every such
/// buffer is mapped and page-faulted afresh).
const EVAL_BATCH: usize = 1000;
/// Floats one layer's output may hold in an evaluation batch (16 MiB).
const EVAL_VALUES: usize = 4 << 20;

fn eval_batch(spec: &ModelSpec) -> usize {
    (EVAL_VALUES / spec.largest_activation().max(1)).clamp(1, EVAL_BATCH)
}

/// Logits of `model` on all of `data`, in order, without augmentation.
pub fn logits_of(model: &Model, data: &Dataset, norm: Normalization) -> Result<Tensor> {
    check_input(model.spec(), data)?;
    // Detached: cached teacher logits must not drag the teacher's graph into every backward pass.
    in_batches(data, norm, &model.device(), eval_batch(model.spec()), |x| {
        Ok(model.forward(x, false)?.logits.detach())
    })
}

/// A teacher's logits on all of `data`, in order, without augmentation, fed batches
/// normalised with `norm` (the student's).
pub fn teacher_logits_of(teacher: &Teacher, data: &Dataset, norm: Normalization) -> Result<Tensor> {
    let batch = teacher.model().map_or(EVAL_BATCH, |m| eval_batch(m.spec()));
    in_batches(data, norm, &teacher.device(), batch, |x| {
        Ok(teacher.forward(x, norm)?.logits)
    })
}

/// Refuses data whose images are not the ones `spec` takes, saying both.
pub(crate) fn check_input(spec: &ModelSpec, data: &Dataset) -> Result<()> {
    if data.shape() == spec.input {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{} takes {} images, the data holds {} ones",
        spec.name,
        spec.input,
        data.shape()
    )))
}

/// `f` over all of `data` in evaluation-sized batches, the results stacked in order.
fn in_batches(
    data: &Dataset,
    norm: Normalization,
    device: &Device,
    batch: usize,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let idx: Vec<usize> = (0..data.len()).collect();
    let parts = idx
        .chunks(batch)
        .map(|c| f(&make_batch(data, c, norm, None, device)?.images))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// Accuracy of `model` on `data`.
pub fn evaluate(model: &Model, data: &Dataset) -> Result<Evaluation> {
    let logits = logits_of(model, data, model.spec().normalization)?;
    let predictions = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let correct = predictions
        .iter()
        .zip(&data.labels)
        .filter(|(p, l)| **p == **l as u32)
        .count();
    Ok(Evaluation {
        correct,
        total: data.len(),
        predictions,
    })
}

/// How teachers do on a test set.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherTest {
    /// Each teacher's errors, in order.
    pub errors: Vec<usize>,
    /// Their combined top-1 per sample (the argmax of the mean of their distributions): what
    /// a student's agreement with "the teacher" is measured against.
    pub ensemble: Vec<u32>,
}

/// Runs every teacher once over `data`, its batches normalised with `norm` (the student's;
/// a checkpoint teacher is tested the way it was trained, an ONNX one converts any input).
pub fn test_teachers(
    teachers: &[Teacher],
    data: &Dataset,
    norm: Normalization,
) -> Result<TeacherTest> {
    let logits: Vec<Tensor> = teachers
        .iter()
        .map(|t| {
            let norm = t.model().map_or(norm, |m| m.spec().normalization);
            teacher_logits_of(t, data, norm)
        })
        .collect::<Result<_>>()?;
    let mut errors = Vec::with_capacity(logits.len());
    for l in &logits {
        let pred = l.argmax(D::Minus1)?.to_vec1::<u32>()?;
        errors.push(
            pred.iter()
                .zip(&data.labels)
                .filter(|(p, y)| **p != **y as u32)
                .count(),
        );
    }
    let combined = SoftTargets::combine(&logits, &vec![1.0; logits.len()], 1.0)?;
    Ok(TeacherTest {
        errors,
        ensemble: combined.top1()?,
    })
}
