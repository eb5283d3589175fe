//! The models a [`ModelSpec`] describes, as candle modules over seeded parameters
//! ([`crate::params`]): MLPs, LeNet-style CNNs, ResNets and MobileNetV2s, walked from the
//! spec's [`LayerPlan`].

use std::sync::{Arc, Mutex};

use candle_core::{Device, Module, ModuleT, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

use crate::batchnorm::{add_act, BatchNorm};
use crate::conv::Conv2dRelu;
use crate::conv2d::Conv2d;
use crate::dense::Dense;
use crate::error::{Error, Result};
pub use crate::params::Params;
use crate::plan::Activation;
use crate::qat::Qat;
use crate::random::{rng, Stream};
use crate::spec::{LayerPlan, ModelSpec};

enum Layer {
    /// Convolution with its ReLU fused, then 2x2 max pooling.
    Conv(Conv2dRelu),
    /// Convolution, then batch normalization with its activation fused.
    ConvBn(Conv2d, BatchNorm),
    /// `act(main(x) + shortcut(x))`.
    Residual {
        main: Vec<Layer>,
        shortcut: Option<Box<Layer>>,
        act: Activation,
    },
    GlobalAvgPool,
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
    /// `[n, feature_dim]`: the output layer's input (the input itself when there is no
    /// hidden layer).
    pub features: Tensor,
}

/// A classifier built from a [`ModelSpec`].
pub struct Model {
    spec: ModelSpec,
    params: Params,
    layers: Vec<Layer>,
    dropout_rng: Mutex<StdRng>,
    /// Fake quantization, in quantization-aware training.
    qat: Option<Arc<Qat>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("spec", &self.spec.name)
            .finish()
    }
}

fn build(plan: Vec<LayerPlan>, params: &Params) -> Vec<Layer> {
    plan.into_iter()
        .map(|l| match l {
            LayerPlan::Conv { name, conv, .. } => Layer::Conv(Conv2dRelu::new(
                params.get(&format!("{name}.weight")),
                params.get(&format!("{name}.bias")),
                conv.padding,
            )),
            LayerPlan::ConvBn { name, conv, act } => {
                let bn = |what: &str| format!("{name}.bn.{what}");
                Layer::ConvBn(
                    Conv2d::new(
                        params.get(&format!("{name}.weight")),
                        conv.stride,
                        conv.padding,
                        conv.groups,
                    ),
                    BatchNorm::new(
                        params.get(&bn("weight")),
                        params.get(&bn("bias")),
                        params.var(&bn("running_mean")),
                        params.var(&bn("running_var")),
                        act,
                    ),
                )
            }
            LayerPlan::Residual {
                main,
                shortcut,
                act,
            } => Layer::Residual {
                main: build(main, params),
                shortcut: shortcut.map(|s| {
                    Box::new(
                        build(vec![*s], params)
                            .pop()
                            .expect("one layer in, one out"),
                    )
                }),
                act,
            },
            LayerPlan::GlobalAvgPool => Layer::GlobalAvgPool,
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
        .collect()
}

impl Model {
    /// A model with fresh, seeded parameters.
    pub fn new(spec: &ModelSpec, seed: u64, device: &Device) -> Result<Model> {
        Model::from_params(spec, Params::init(spec, seed, device)?)
    }

    /// A model over existing parameters (which must match the spec).
    pub fn from_params(spec: &ModelSpec, params: Params) -> Result<Model> {
        spec.validate()?;
        let layers = build(spec.plan(), &params);
        Ok(Model {
            spec: spec.clone(),
            params,
            layers,
            dropout_rng: Mutex::new(rng(0, Stream::Dropout, 0)),
            qat: None,
        })
    }

    /// The model with int8 simulated in its forward pass while `qat` is active (weights and
    /// the inputs of every weighted layer on their grids; see [`crate::qat`]).
    pub fn with_qat(mut self, qat: Arc<Qat>) -> Model {
        self.qat = Some(qat);
        self
    }

    /// The same model (the same parameters) computing in float: what leaves a QAT run to
    /// teach, be pruned or be evaluated as an ordinary model.
    pub fn without_qat(mut self) -> Model {
        self.qat = None;
        self
    }

    /// Its quantization-aware training state, if any.
    pub fn qat(&self) -> Option<&Qat> {
        self.qat.as_deref()
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

    /// Forward pass on `[n, features]` input; `train` switches dropout on and makes batch
    /// normalization use (and update its running statistics from) the batch.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Result<Output> {
        let n = xs.dim(0)?;
        let mut x = match self.layers.first() {
            Some(Layer::Dense { .. }) | None => self.dropout(xs, self.spec.input_dropout, train)?,
            _ => {
                let s = self.spec.input;
                xs.reshape((n, s.channels, s.rows, s.cols))?
            }
        };
        let mut features = x.clone();
        // Counts the exporter's calibration taps as the layers are walked (see `crate::qat`).
        let mut tap = 0;
        for layer in &self.layers {
            x = match layer {
                Layer::Flatten => {
                    let flat = x.flatten_from(1)?;
                    features = flat.clone();
                    self.dropout(&flat, self.spec.dropout, train)?
                }
                Layer::GlobalAvgPool => {
                    let pooled = x.mean((2, 3))?;
                    features = pooled.clone();
                    self.dropout(&pooled, self.spec.dropout, train)?
                }
                Layer::Dense { hidden: true, .. } => {
                    let h = self.run(layer, &x, train, &mut tap)?;
                    features = h.clone();
                    self.dropout(&h, self.spec.dropout, train)?
                }
                other => self.run(other, &x, train, &mut tap)?,
            };
        }
        Ok(Output {
            logits: x,
            features,
        })
    }

    fn dropout(&self, x: &Tensor, p: f32, train: bool) -> Result<Tensor> {
        // No dropout while int8 is simulated: the grids are set on the activations the
        // exported model will see, not on rescaled, partly zeroed ones.
        if !train || p == 0.0 || self.qat().is_some_and(Qat::is_active) {
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

impl Model {
    /// One layer (no dropout, no features to record); under QAT the weighted ones see their
    /// input and weight fake-quantized, `tap` counting their inputs in the exporter's order.
    fn run(&self, layer: &Layer, x: &Tensor, train: bool, tap: &mut usize) -> Result<Tensor> {
        let q = self.qat.as_deref().filter(|q| q.is_active());
        let mut input = |x: &Tensor| -> Result<Tensor> {
            *tap += 1;
            match q {
                Some(q) => q.activation(*tap - 1, x, train),
                None => Ok(x.clone()),
            }
        };
        let weight = |w: &Tensor| -> Result<Option<Tensor>> { q.map(|q| q.weight(w)).transpose() };
        Ok(match layer {
            Layer::Conv(c) => {
                let x = input(x)?;
                match weight(c.weight())? {
                    Some(w) => c.with_weight(w).forward(&x)?,
                    None => c.forward(&x)?,
                }
                .max_pool2d(2)?
            }
            Layer::ConvBn(conv, bn) => {
                let x = input(x)?;
                let y = match weight(conv.weight())? {
                    Some(w) => conv.with_weight(w).forward(&x)?,
                    None => conv.forward(&x)?,
                };
                bn.forward(&y, train)?
            }
            Layer::Residual {
                main,
                shortcut,
                act,
            } => {
                let mut y = x.clone();
                for l in main {
                    y = self.run(l, &y, train, tap)?;
                }
                let s = match shortcut {
                    Some(s) => self.run(s, x, train, tap)?,
                    None => x.clone(),
                };
                if let Some(q) = q {
                    q.addend(*tap, &y, train)?;
                    q.addend(*tap + 1, &s, train)?;
                }
                *tap += 2;
                add_act(&y, &s, *act)?
            }
            Layer::GlobalAvgPool => x.mean((2, 3))?,
            Layer::Flatten => x.flatten_from(1)?,
            Layer::Dense { dense, .. } => {
                let x = input(x)?;
                match weight(dense.weight())? {
                    Some(w) => dense.with_weight(w).forward(&x)?,
                    None => dense.forward(&x)?,
                }
            }
        })
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
    use candle_core::DType;

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
    fn resnets_and_mobilenets_take_any_image_size() {
        for (s, c, h) in [
            ("resnet:8", 1, 28),
            ("resnet:14-w8", 3, 32),
            ("mobilenetv2:0.25", 3, 32),
            ("mobilenetv2:0.35", 1, 28),
        ] {
            let mut spec = ModelSpec::parse(s).unwrap();
            spec.input = crate::InputShape {
                channels: c,
                rows: h,
                cols: h,
            };
            spec.validate().unwrap();
            let m = Model::new(&spec, 1, &Device::Cpu).unwrap();
            let x = Tensor::ones((2, c * h * h), DType::F32, &Device::Cpu).unwrap();
            let out = m.forward(&x, true).unwrap();
            assert_eq!(out.logits.dims(), &[2, 10], "{s}");
            assert_eq!(out.features.dims(), &[2, spec.feature_dim()], "{s}");
            let eval = m.forward(&x, false).unwrap();
            assert_eq!(eval.logits.dims(), &[2, 10], "{s}");
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
