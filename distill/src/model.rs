//! The models a [`ModelSpec`] describes, as candle modules over seeded parameters.
//!
//! Parameters live in [`Params`], an ordered list of candle `Var`s, rather than a `VarMap`
//! filled through `VarBuilder` initialisers: candle's CPU random generator cannot be seeded,
//! and edgekd promises the same result for the same seed.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;

use crate::conv::Conv2dRelu;
use crate::dense::Dense;
use crate::error::{Error, Result};
use crate::random::{rng, Stream};
use crate::spec::{LayerPlan, ModelSpec, ParamInfo};

/// A model's parameters, in [`ModelSpec::parameters`] order.
#[derive(Debug, Clone)]
pub struct Params {
    /// (description, variable) pairs.
    pub vars: Vec<(ParamInfo, Var)>,
}

impl Params {
    /// Fresh parameters drawn like PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    pub fn init(spec: &ModelSpec, seed: u64, device: &Device) -> Result<Params> {
        let mut r = rng(seed, Stream::Init, 0);
        let vars = spec
            .parameters()
            .into_iter()
            .map(|p| {
                let bound = 1.0 / (p.fan_in as f32).sqrt();
                let n: usize = p.shape.iter().product();
                let values: Vec<f32> = (0..n).map(|_| r.random_range(-bound..bound)).collect();
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

    /// The variables alone, for the optimizer.
    pub fn vars(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Named tensors, for saving.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.vars
            .iter()
            .map(|(p, v)| (p.name.clone(), v.as_tensor().clone()))
            .collect()
    }

    fn get(&self, name: &str) -> Tensor {
        self.vars
            .iter()
            .find(|(p, _)| p.name == name)
            .map(|(_, v)| v.as_tensor().clone())
            .expect("plan and parameters come from one spec")
    }
}

enum Layer {
    /// Convolution with its ReLU fused, then 2x2 max pooling.
    Conv(Conv2dRelu),
    Flatten,
    /// A hidden layer carries its ReLU (fused into the layer) and then dropout.
    Dense {
        dense: Dense,
        hidden: bool,
    },
}

/// What a forward pass yields: the logits and the last hidden layer (for hint distillation).
#[derive(Debug, Clone)]
pub struct Output {
    /// `[n, classes]` unnormalised scores.
    pub logits: Tensor,
    /// `[n, feature_dim]` activations of the last hidden layer (the input when there is none).
    pub features: Tensor,
}

/// A classifier built from a [`ModelSpec`].
pub struct Model {
    spec: ModelSpec,
    params: Params,
    layers: Vec<Layer>,
    dropout_rng: Mutex<StdRng>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("spec", &self.spec.name)
            .finish()
    }
}

impl Model {
    /// A model with fresh, seeded parameters.
    pub fn new(spec: &ModelSpec, seed: u64, device: &Device) -> Result<Model> {
        Model::from_params(spec, Params::init(spec, seed, device)?)
    }

    /// A model over existing parameters (which must match the spec).
    pub fn from_params(spec: &ModelSpec, params: Params) -> Result<Model> {
        spec.validate()?;
        let layers = spec
            .plan()
            .into_iter()
            .map(|l| match l {
                LayerPlan::Conv { name, conv, .. } => Layer::Conv(Conv2dRelu::new(
                    params.get(&format!("{name}.weight")),
                    params.get(&format!("{name}.bias")),
                    conv.padding,
                )),
                LayerPlan::Flatten => Layer::Flatten,
                LayerPlan::Linear { name, hidden, .. } => Layer::Dense {
                    dense: Dense::new(
                        params.get(&format!("{name}.weight")),
                        params.get(&format!("{name}.bias")),
                        hidden,
                    ),
                    hidden,
                },
            })
            .collect();
        Ok(Model {
            spec: spec.clone(),
            params,
            layers,
            dropout_rng: Mutex::new(rng(0, Stream::Dropout, 0)),
        })
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Its parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The device its parameters live on (the CPU: edgekd's fused layers are CPU kernels).
    pub fn device(&self) -> Device {
        self.params
            .vars
            .first()
            .map_or(Device::Cpu, |(_, v)| v.device().clone())
    }

    /// Restarts the dropout mask stream (the trainer does this per epoch, so resumed runs replay).
    pub fn reseed_dropout(&self, seed: u64, epoch: usize) {
        *self.dropout_rng.lock().unwrap_or_else(|e| e.into_inner()) =
            rng(seed, Stream::Dropout, epoch);
    }

    /// Forward pass on `[n, features]` input; `train` switches dropout on.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Result<Output> {
        let n = xs.dim(0)?;
        let mut x = if matches!(self.layers.first(), Some(Layer::Conv(_))) {
            let s = self.spec.input;
            xs.reshape((n, s.channels, s.rows, s.cols))?
        } else {
            self.dropout(xs, self.spec.input_dropout, train)?
        };
        let mut features = x.clone();
        for layer in &self.layers {
            x = match layer {
                Layer::Conv(c) => c.forward(&x)?.max_pool2d(2)?,
                Layer::Flatten => {
                    let flat = x.flatten_from(1)?;
                    features = flat.clone();
                    self.dropout(&flat, self.spec.dropout, train)?
                }
                Layer::Dense {
                    dense,
                    hidden: true,
                } => {
                    let h = dense.forward(&x)?;
                    features = h.clone();
                    self.dropout(&h, self.spec.dropout, train)?
                }
                Layer::Dense {
                    dense,
                    hidden: false,
                } => dense.forward(&x)?,
            };
        }
        Ok(Output {
            logits: x,
            features,
        })
    }

    fn dropout(&self, x: &Tensor, p: f32, train: bool) -> Result<Tensor> {
        if !train || p == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - p;
        let scale = 1.0 / keep;
        let n = x.elem_count();
        let mask: Vec<f32> = {
            let mut r = self.dropout_rng.lock().unwrap_or_else(|e| e.into_inner());
            (0..n)
                .map(|_| if r.random::<f32>() < keep { scale } else { 0.0 })
                .collect()
        };
        Ok((x * Tensor::from_vec(mask, x.shape(), x.device())?)?)
    }
}

impl ModuleT for Model {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward(xs, train)
            .map(|o| o.logits)
            .map_err(|e| match e {
                Error::Candle(c) => c,
                other => candle_core::Error::Msg(other.to_string()),
            })
    }
}

/// Evaluation-mode logits as nested vectors, for tests comparing models.
#[cfg(test)]
pub(crate) fn logits_vec(m: &Model, x: &Tensor) -> Vec<Vec<f32>> {
    m.forward(x, false)
        .unwrap()
        .logits
        .to_vec2::<f32>()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_shapes_for_every_kind() {
        let x = Tensor::zeros((3, 784), DType::F32, &Device::Cpu).unwrap();
        for s in [
            "mlp:",
            "mlp:16-8",
            "cnn:lenet5",
            "cnn:lenet5-half",
            "cnn:c4-c8-f16",
        ] {
            let spec = ModelSpec::parse(s).unwrap().with_dropout(0.5, 0.2).unwrap();
            let m = Model::new(&spec, 1, &Device::Cpu).unwrap();
            let out = m.forward(&x, true).unwrap();
            assert_eq!(out.logits.dims(), &[3, 10], "{s}");
            assert_eq!(out.features.dims(), &[3, spec.feature_dim()], "{s}");
        }
    }

    #[test]
    fn same_seed_same_weights_and_masks() {
        let spec = ModelSpec::parse("mlp:32")
            .unwrap()
            .with_dropout(0.5, 0.0)
            .unwrap();
        let x = Tensor::ones((4, 784), DType::F32, &Device::Cpu).unwrap();
        let run = |seed| {
            let m = Model::new(&spec, seed, &Device::Cpu).unwrap();
            m.reseed_dropout(seed, 1);
            m.forward(&x, true)
                .unwrap()
                .logits
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn dropout_is_off_in_evaluation() {
        let spec = ModelSpec::parse("mlp:32")
            .unwrap()
            .with_dropout(0.5, 0.2)
            .unwrap();
        let m = Model::new(&spec, 1, &Device::Cpu).unwrap();
        let x = Tensor::ones((2, 784), DType::F32, &Device::Cpu).unwrap();
        let (a, b) = (logits_vec(&m, &x), logits_vec(&m, &x));
        assert_eq!(a, b);
    }

    #[test]
    fn loading_checks_names_and_shapes() {
        let spec = ModelSpec::parse("mlp:8").unwrap();
        let p = Params::init(&spec, 1, &Device::Cpu).unwrap();
        let mut t = p.tensors();
        let path = std::path::Path::new("m.safetensors");
        assert!(Params::from_tensors(&spec, t.clone(), path).is_ok());
        t.insert(
            "fc1.bias".into(),
            Tensor::zeros(9, DType::F32, &Device::Cpu).unwrap(),
        );
        assert!(Params::from_tensors(&spec, t.clone(), path)
            .unwrap_err()
            .to_string()
            .contains("shape [9]"));
        t.remove("fc1.bias");
        assert!(Params::from_tensors(&spec, t, path)
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }
}
