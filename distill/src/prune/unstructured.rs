//! Unstructured (magnitude) pruning: the smallest weights set to zero, every shape kept. The
//! file compresses better; a dense kernel multiplies the zeros all the same, so it runs no
//! faster — what structured pruning is for.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::plan::Scope;
use crate::error::{Error, Result};
use crate::model::{Model, Params};

/// What zeroing did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sparsity {
    /// The fraction asked for.
    pub target: f64,
    /// Per weight tensor: name, elements, zeros after.
    pub tensors: Vec<(String, usize, usize)>,
}

impl Sparsity {
    /// Zeros over all weight tensors, as a fraction of their elements.
    pub fn achieved(&self) -> f64 {
        let (n, z) = self
            .tensors
            .iter()
            .fold((0, 0), |(n, z), t| (n + t.1, z + t.2));
        z as f64 / n.max(1) as f64
    }
}

/// The value below which (in magnitude) the `fraction` smallest of `values` lie.
fn threshold(mut magnitudes: Vec<f32>, fraction: f64) -> f32 {
    let k = (magnitudes.len() as f64 * fraction).round() as usize;
    if k == 0 {
        return 0.0;
    }
    let k = k.min(magnitudes.len());
    let (_, kth, _) = magnitudes.select_nth_unstable_by(k - 1, f32::total_cmp);
    *kth
}

/// Zeros the `sparsity` fraction of smallest-magnitude weights of every convolution and dense
/// layer (biases and batch normalization untouched), per tensor or over all of them.
pub fn sparsify(model: &Model, sparsity: f64, scope: Scope) -> Result<(Model, Sparsity)> {
    if !(sparsity > 0.0 && sparsity < 1.0) {
        return Err(Error::Config(format!(
            "--sparsity is the fraction of weights set to zero, in (0, 1); got {sparsity}"
        )));
    }
    let spec = model.spec();
    let weights: Vec<(String, Vec<f32>)> = model
        .params()
        .vars
        .iter()
        .filter(|(p, _)| p.decay)
        .map(|(p, v)| {
            Ok((
                p.name.clone(),
                v.as_tensor().flatten_all()?.to_vec1::<f32>()?,
            ))
        })
        .collect::<Result<_>>()?;
    let global = match scope {
        Scope::Global => Some(threshold(
            weights
                .iter()
                .flat_map(|(_, w)| w.iter().map(|v| v.abs()))
                .collect(),
            sparsity,
        )),
        Scope::Layer => None,
    };
    let mut tensors = model.params().tensors();
    let mut report = Sparsity {
        target: sparsity,
        tensors: vec![],
    };
    for (name, w) in weights {
        let t = global.unwrap_or_else(|| threshold(w.iter().map(|v| v.abs()).collect(), sparsity));
        // Ties at the threshold all go: at most a few more zeros than asked.
        let cut: Vec<f32> = w
            .iter()
            .map(|&v| if v.abs() <= t { 0.0 } else { v })
            .collect();
        let zeros = cut.iter().filter(|v| **v == 0.0).count();
        let shape = tensors[&name].shape().clone();
        let device = tensors[&name].device().clone();
        report.tensors.push((name.clone(), cut.len(), zeros));
        tensors.insert(name, Tensor::from_vec(cut, shape, &device)?);
    }
    let params = Params::from_tensors(spec, tensors, std::path::Path::new("sparse model"))?;
    Ok((Model::from_params(spec, params)?, report))
}
