//! A model's parameters: seeded initialisation, and loading from named tensors checked
//! against the spec.
//!
//! Parameters live in [`Params`], an ordered list of candle `Var`s, rather than a `VarMap`
//! filled through `VarBuilder` initialisers: candle's CPU random generator cannot be seeded,
//! and edgekd promises the same result for the same seed.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

use crate::error::{Error, Result};
use crate::random::{rng, Stream};
use crate::spec::{Init, ModelSpec, ParamInfo};

/// A model's parameters, in [`ModelSpec::parameters`] order.
#[derive(Debug, Clone)]
pub struct Params {
    /// (description, variable) pairs.
    pub vars: Vec<(ParamInfo, Var)>,
}

impl Params {
    /// Fresh parameters as the spec says: uniform ones drawn in order from the seed's init
    /// stream (PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for dense layers),
    /// constants (batch normalization) filled.
    pub fn init(spec: &ModelSpec, seed: u64, device: &Device) -> Result<Params> {
        let mut r = rng(seed, Stream::Init, 0);
        let vars = spec
            .parameters()
            .into_iter()
            .map(|p| {
                let n: usize = p.shape.iter().product();
                let values: Vec<f32> = match p.init {
                    Init::Uniform(bound) => (0..n).map(|_| r.random_range(-bound..bound)).collect(),
                    Init::Constant(c) => vec![c; n],
                };
                let var = Var::from_tensor(&Tensor::from_vec(values, p.shape.clone(), device)?)?;
                Ok((p, var))
            })
            .collect::<Result<_>>()?;
        Ok(Params { vars })
    }

    /// Parameters from named tensors (a safetensors file), checked name by name against the spec.
    pub fn from_tensors(
        spec: &ModelSpec,
        mut tensors: HashMap<String, Tensor>,
        source: &std::path::Path,
    ) -> Result<Params> {
        let bad = |reason: String| Error::Checkpoint {
            path: source.into(),
            reason,
        };
        let mut vars = Vec::new();
        for p in spec.parameters() {
            let t = tensors.remove(&p.name).ok_or_else(|| {
                bad(format!(
                    "tensor `{}` of spec {} is missing",
                    p.name, spec.name
                ))
            })?;
            if t.dims() != p.shape.as_slice() {
                return Err(bad(format!(
                    "tensor `{}` has shape {:?}, spec {} needs {:?}",
                    p.name,
                    t.dims(),
                    spec.name,
                    p.shape
                )));
            }
            let t = t.to_dtype(DType::F32)?;
            // A NaN or infinite weight poisons every output; say where instead of training on it.
            if let Some((i, v)) = t
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .enumerate()
                .find(|(_, v)| !v.is_finite())
            {
                return Err(bad(format!(
                    "tensor `{}` holds {v} at element {i}; the checkpoint is broken",
                    p.name
                )));
            }
            vars.push((p, Var::from_tensor(&t)?));
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(bad(format!(
                "unexpected tensor `{extra}` for spec {}",
                spec.name
            )));
        }
        Ok(Params { vars })
    }

    /// The trainable variables, for the optimizer, each with whether weight decay applies.
    pub fn trainable(&self) -> Vec<(Var, bool)> {
        self.vars
            .iter()
            .filter(|(p, _)| p.trainable)
            .map(|(p, v)| (v.clone(), p.decay))
            .collect()
    }

    /// Named tensors, for saving.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.vars
            .iter()
            .map(|(p, v)| (p.name.clone(), v.as_tensor().clone()))
            .collect()
    }

    pub(crate) fn get(&self, name: &str) -> Tensor {
        self.vars
            .iter()
            .find(|(p, _)| p.name == name)
            .map(|(_, v)| v.as_tensor().clone())
            .expect("plan and parameters come from one spec")
    }

    /// The variable itself (batch normalization's running statistics are set through it).
    pub(crate) fn var(&self, name: &str) -> Var {
        self.vars
            .iter()
            .find(|(p, _)| p.name == name)
            .map(|(_, v)| v.clone())
            .expect("plan and parameters come from one spec")
    }
}
