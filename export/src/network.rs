//! A trained model as plain arrays, layer by layer: what every export format lowers from.

use candle_core::Tensor;
use edgekd_distill::batchnorm::EPS as BN_EPS;
pub use edgekd_distill::plan::Activation;
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

/// A 2-D convolution with bias (batch normalization folded into it where there was one).
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
    /// Stride in both directions.
    pub stride: usize,
    /// Channel groups (1: dense; `in_channels`: depthwise).
    pub groups: usize,
    /// Row-major `[out, in / groups, k, k]`.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
}

impl Conv {
    /// Weights per output channel.
    pub fn fan_in(&self) -> usize {
        self.in_channels / self.groups * self.kernel * self.kernel
    }

    /// The weight tensor's dimensions.
    pub fn weight_dims(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.groups,
            self.kernel,
            self.kernel,
        ]
    }

    /// The output size for an `h`x`w` input.
    pub fn output(&self, h: usize, w: usize) -> (usize, usize) {
        let side = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        (side(h), side(w))
    }
}

/// One step of the forward pass.
#[derive(Debug, Clone)]
pub enum Layer {
    /// Convolution + ReLU + 2x2 max pool (LeNet-style).
    Conv(Conv),
    /// Convolution (batch normalization folded in) and its activation.
    ConvAct(Conv, Activation),
    /// `act(main(x) + shortcut(x))`, the shortcut the identity when absent.
    Residual {
        /// The block's layers.
        main: Vec<Layer>,
        /// The projection, where the shape changes.
        shortcut: Option<Box<Layer>>,
        /// After the addition.
        act: Activation,
    },
    /// Mean over each channel's plane, to a vector.
    GlobalAvgPool,
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
    /// Copies a model's parameters out of candle, folding each batch normalization into the
    /// convolution before it.
    pub fn from_model(model: &Model) -> Result<Network> {
        let spec = model.spec().clone();
        let tensors = model.params().tensors();
        let get = |name: &str| -> Result<Vec<f32>> {
            let t: &Tensor = tensors.get(name).ok_or_else(|| Error::Model {
                reason: format!("parameter `{name}` is missing"),
            })?;
            Ok(t.flatten_all()?.to_vec1::<f32>()?)
        };
        let layers = layers(spec.plan(), &get)?;
        Ok(Network { spec, layers })
    }

    /// Whether the model takes images (`[N, C, H, W]`) rather than vectors (`[N, C*H*W]`).
    pub fn takes_images(&self) -> bool {
        !matches!(self.spec.architecture, Architecture::Mlp { .. })
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

    /// Number of weights and biases (after folding).
    pub fn param_count(&self) -> usize {
        fn count(layers: &[Layer]) -> usize {
            layers
                .iter()
                .map(|l| match l {
                    Layer::Conv(c) | Layer::ConvAct(c, _) => c.weight.len() + c.bias.len(),
                    Layer::Dense(d) => d.weight.len() + d.bias.len(),
                    Layer::Residual { main, shortcut, .. } => {
                        count(main)
                            + shortcut
                                .as_deref()
                                .map_or(0, |s| count(std::slice::from_ref(s)))
                    }
                    Layer::Flatten | Layer::GlobalAvgPool => 0,
                })
                .sum()
        }
        count(&self.layers)
    }
}

/// The network's layers for `plan`, weights read through `get`.
fn layers(plan: Vec<LayerPlan>, get: &dyn Fn(&str) -> Result<Vec<f32>>) -> Result<Vec<Layer>> {
    plan.into_iter()
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
                    stride: 1,
                    groups: 1,
                }),
                LayerPlan::ConvBn { name, conv, act } => {
                    let bn = |what: &str| get(&format!("{name}.bn.{what}"));
                    let (gamma, beta) = (bn("weight")?, bn("bias")?);
                    let (mean, var) = (bn("running_mean")?, bn("running_var")?);
                    let mut weight = get(&format!("{name}.weight"))?;
                    let per_channel = weight.len() / conv.out_channels.max(1);
                    let mut bias = vec![0f32; conv.out_channels];
                    // BN(conv(x)) = γ (W x - μ) / σ + β = (γ/σ · W) x + (β - γ μ / σ).
                    for o in 0..conv.out_channels {
                        let a = gamma[o] / (var[o] + BN_EPS).sqrt();
                        weight[o * per_channel..(o + 1) * per_channel]
                            .iter_mut()
                            .for_each(|w| *w *= a);
                        bias[o] = beta[o] - mean[o] * a;
                    }
                    Layer::ConvAct(
                        Conv {
                            name,
                            in_channels: conv.in_channels,
                            out_channels: conv.out_channels,
                            kernel: conv.kernel,
                            padding: conv.padding,
                            stride: conv.stride,
                            groups: conv.groups,
                            weight,
                            bias,
                        },
                        act,
                    )
                }
                LayerPlan::Residual {
                    main,
                    shortcut,
                    act,
                } => Layer::Residual {
                    main: layers(main, get)?,
                    shortcut: match shortcut {
                        Some(s) => Some(Box::new(
                            layers(vec![*s], get)?.pop().expect("one layer in, one out"),
                        )),
                        None => None,
                    },
                    act,
                },
                LayerPlan::GlobalAvgPool => Layer::GlobalAvgPool,
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
        .collect()
}
