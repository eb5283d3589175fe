//! A trained model as plain arrays, layer by layer: what every export format lowers from.

use candle_core::Tensor;
use edgekd_distill::spec::{Architecture, LayerPlan};
use edgekd_distill::{Model, ModelSpec};

use crate::error::{Error, Result};

/// A dense layer, `y = x W^T + b`.
#[derive(Debug, Clone)]
pub struct Dense {
    /// Parameter prefix in the checkpoint (`fc1`, `out`).
    pub name: String,
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
    /// Row-major `[outputs, inputs]`.
    pub weight: Vec<f32>,
    /// `[outputs]`.
    pub bias: Vec<f32>,
    /// ReLU follows.
    pub relu: bool,
}

/// A stride-1 convolution, always followed by ReLU and 2x2 max pooling.
#[derive(Debug, Clone)]
pub struct Conv {
    /// Parameter prefix (`conv1`).
    pub name: String,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Row-major `[out, in, k, k]`.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
}

impl Conv {
    /// Weights per output channel.
    pub fn fan_in(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }
}

/// One step of the forward pass.
#[derive(Debug, Clone)]
pub enum Layer {
    /// Convolution + ReLU + max pool.
    Conv(Conv),
    /// Image to vector.
    Flatten,
    /// Dense layer (+ ReLU).
    Dense(Dense),
}

/// The layers of a trained model (dropout dropped: export is inference).
#[derive(Debug, Clone)]
pub struct Network {
    /// The spec it was trained from.
    pub spec: ModelSpec,
    /// Layers in forward order.
    pub layers: Vec<Layer>,
}

impl Network {
    /// Copies a model's parameters out of candle.
    pub fn from_model(model: &Model) -> Result<Network> {
        let spec = model.spec().clone();
        let tensors = model.params().tensors();
        let get = |name: &str| -> Result<Vec<f32>> {
            let t: &Tensor = tensors.get(name).ok_or_else(|| Error::Model {
                reason: format!("parameter `{name}` is missing"),
            })?;
            Ok(t.flatten_all()?.to_vec1::<f32>()?)
        };
        let layers = spec
            .plan()
            .into_iter()
            .map(|l| {
                Ok(match l {
                    LayerPlan::Conv {
                        name,
                        in_channels,
                        conv,
                    } => Layer::Conv(Conv {
                        weight: get(&format!("{name}.weight"))?,
                        bias: get(&format!("{name}.bias"))?,
                        name,
                        in_channels,
                        out_channels: conv.out_channels,
                        kernel: conv.kernel,
                        padding: conv.padding,
                    }),
                    LayerPlan::Flatten => Layer::Flatten,
                    LayerPlan::Linear {
                        name,
                        inputs,
                        outputs,
                        hidden,
                    } => Layer::Dense(Dense {
                        weight: get(&format!("{name}.weight"))?,
                        bias: get(&format!("{name}.bias"))?,
                        name,
                        inputs,
                        outputs,
                        relu: hidden,
                    }),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Network { spec, layers })
    }

    /// Whether the model takes images (`[N, C, H, W]`) rather than vectors (`[N, C*H*W]`).
    pub fn takes_images(&self) -> bool {
        matches!(self.spec.architecture, Architecture::Cnn { .. })
    }

    /// The input's dimensions after the batch.
    pub fn input_dims(&self) -> Vec<usize> {
        let s = self.spec.input;
        if self.takes_images() {
            vec![s.channels, s.rows, s.cols]
        } else {
            vec![s.len()]
        }
    }

    /// Number of weights and biases.
    pub fn param_count(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l {
                Layer::Conv(c) => c.weight.len() + c.bias.len(),
                Layer::Dense(d) => d.weight.len() + d.bias.len(),
                Layer::Flatten => 0,
            })
            .sum()
    }
}
