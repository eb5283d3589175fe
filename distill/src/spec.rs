//! Model specifications: the spec strings users type (`mlp:1200-1200`, `cnn:lenet5`), and the
//! serialisable description a checkpoint carries so later stages can rebuild the model.

use serde::{Deserialize, Serialize};

use crate::dataset::NUM_CLASSES;
use crate::error::{Error, Result};
use crate::input::{InputShape, Normalization};

/// One 2-D convolution (stride 1), followed by ReLU and 2x2 max pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvLayer {
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Zero padding on each side.
    pub padding: usize,
}

/// The layer structure of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Architecture {
    /// Fully connected layers with ReLU between them.
    Mlp {
        /// Hidden layer widths (empty: a linear classifier).
        hidden: Vec<usize>,
    },
    /// Convolution blocks, then fully connected layers.
    Cnn {
        /// Convolution blocks, each conv + ReLU + 2x2 max pool.
        convs: Vec<ConvLayer>,
        /// Hidden fully connected widths after flattening.
        fc: Vec<usize>,
    },
}

/// Everything needed to rebuild a model: what `model.toml` in a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The spec string it was made from, e.g. `mlp:800-800`.
    pub name: String,
    /// Layers.
    pub architecture: Architecture,
    /// Dropout probability after each hidden layer during training.
    pub dropout: f32,
    /// Dropout probability on the input during training (Hinton et al. used 0.2).
    pub input_dropout: f32,
    /// Input geometry.
    pub input: InputShape,
    /// Number of output classes.
    pub classes: usize,
    /// The classes' names in output order, when the data named them (an image folder's class
    /// folders); empty for digits, whose names are their indices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
    /// The normalization the model was trained with.
    pub normalization: Normalization,
}

/// One parameter tensor of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Name in the safetensors file, e.g. `fc1.weight`.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Inputs feeding each output unit (for initialisation).
    pub fan_in: usize,
}

/// A layer as the forward pass walks it; exporters lower models from this list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerPlan {
    /// Convolution (stride 1), then ReLU and 2x2 max pooling.
    Conv {
        /// Parameter prefix, e.g. `conv1` (`conv1.weight`, `conv1.bias`).
        name: String,
        /// Input channels.
        in_channels: usize,
        /// Output channels, kernel and padding.
        conv: ConvLayer,
    },
    /// `[n, c, h, w]` to `[n, c*h*w]`.
    Flatten,
    /// Dense layer `x W^T + b`, followed by ReLU when `hidden`.
    Linear {
        /// Parameter prefix, e.g. `fc1` or `out`.
        name: String,
        /// Input width.
        inputs: usize,
        /// Output width.
        outputs: usize,
        /// Whether ReLU (and, in training, dropout) follows.
        hidden: bool,
    },
}

impl ModelSpec {
    /// Parses a spec string for MNIST-shaped input, with no dropout.
    ///
    /// - `mlp:H1-H2-...` (e.g. `mlp:1200-1200`, `mlp:64`; `mlp:` alone is logistic regression)
    /// - `cnn:lenet5`, `cnn:lenet5-half`
    /// - `cnn:cA-cB-fC` (5x5 same-padded conv blocks with A and B channels, then an FC layer of C)
    ///
    /// ```
    /// let s = edgekd_distill::ModelSpec::parse("mlp:800-800").unwrap();
    /// assert_eq!(s.param_count(), 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10);
    /// ```
    pub fn parse(spec: &str) -> Result<ModelSpec> {
        let bad = |reason: &str| Error::Spec {
            spec: spec.into(),
            reason: reason.into(),
        };
        let (kind, body) = spec
            .split_once(':')
            .ok_or_else(|| bad("expected KIND:LAYERS, e.g. mlp:800-800 or cnn:lenet5"))?;
        let num = |t: &str| -> Result<usize> {
            match t.parse::<usize>() {
                Ok(n) if (1..=65536).contains(&n) => Ok(n),
                _ => Err(bad(&format!("`{t}` is not a layer width in 1..=65536"))),
            }
        };
        let architecture = match kind {
            "mlp" => Architecture::Mlp {
                hidden: if body.is_empty() {
                    vec![]
                } else {
                    body.split('-').map(num).collect::<Result<_>>()?
                },
            },
            "cnn" => {
                match body {
                    "lenet5" => lenet(6, 16, 120, 84),
                    "lenet5-half" => lenet(3, 8, 60, 42),
                    _ => {
                        let (mut convs, mut fc) = (vec![], vec![]);
                        for tok in body.split('-') {
                            if let Some(c) = tok.strip_prefix('c') {
                                if !fc.is_empty() {
                                    return Err(bad("conv blocks (cN) must come before fully connected layers (fN)"));
                                }
                                convs.push(ConvLayer {
                                    out_channels: num(c)?,
                                    kernel: 5,
                                    padding: 2,
                                });
                            } else if let Some(f) = tok.strip_prefix('f') {
                                fc.push(num(f)?);
                            } else {
                                return Err(bad("CNN layers are lenet5, lenet5-half, or cN (conv) and fN (dense) tokens, e.g. cnn:c32-c64-f1024"));
                            }
                        }
                        if convs.is_empty() {
                            return Err(bad("a CNN needs at least one conv block (cN)"));
                        }
                        Architecture::Cnn { convs, fc }
                    }
                }
            }
            _ => {
                return Err(bad(&format!(
                    "unknown model kind `{kind}` (use mlp or cnn)"
                )))
            }
        };
        let spec = ModelSpec {
            name: spec.into(),
            architecture,
            dropout: 0.0,
            input_dropout: 0.0,
            input: InputShape::MNIST,
            classes: NUM_CLASSES,
            class_names: vec![],
            normalization: Normalization::MNIST,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Returns the spec with these dropout rates.
    pub fn with_dropout(mut self, hidden: f32, input: f32) -> Result<ModelSpec> {
        self.dropout = hidden;
        self.input_dropout = input;
        self.validate()?;
        Ok(self)
    }

    /// Checks rates and that every conv block leaves a non-empty feature map.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::Spec {
            spec: self.name.clone(),
            reason,
        };
        for (what, p) in [
            ("dropout", self.dropout),
            ("input dropout", self.input_dropout),
        ] {
            if !(0.0..0.95).contains(&p) {
                return Err(bad(format!("{what} {p} is outside [0, 0.95)")));
            }
        }
        if self.classes < 2 || self.input.is_empty() {
            return Err(bad(format!(
                "needs at least 2 classes and a non-empty input, got {} and {:?}",
                self.classes, self.input
            )));
        }
        let (mut h, mut w) = (self.input.rows, self.input.cols);
        if let Architecture::Cnn { convs, .. } = &self.architecture {
            for (i, c) in convs.iter().enumerate() {
                let (oh, ow) = (
                    (h + 2 * c.padding).checked_sub(c.kernel - 1),
                    (w + 2 * c.padding).checked_sub(c.kernel - 1),
                );
                match (oh, ow) {
                    (Some(oh), Some(ow)) if oh >= 2 && ow >= 2 => (h, w) = (oh / 2, ow / 2),
                    _ => {
                        return Err(bad(format!(
                            "conv block {} leaves no {h}x{w} feature map to pool",
                            i + 1
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    /// The forward pass's layers, in order, with their sizes.
    pub fn plan(&self) -> Vec<LayerPlan> {
        let mut plan = Vec::new();
        let linear = |plan: &mut Vec<LayerPlan>, inputs: usize, widths: &[usize]| {
            let mut inputs = inputs;
            for (i, &w) in widths.iter().enumerate() {
                plan.push(LayerPlan::Linear {
                    name: format!("fc{}", i + 1),
                    inputs,
                    outputs: w,
                    hidden: true,
                });
                inputs = w;
            }
            plan.push(LayerPlan::Linear {
                name: "out".into(),
                inputs,
                outputs: self.classes,
                hidden: false,
            });
        };
        match &self.architecture {
            Architecture::Mlp { hidden } => linear(&mut plan, self.input.len(), hidden),
            Architecture::Cnn { convs, fc } => {
                let (mut ch, mut h, mut w) =
                    (self.input.channels, self.input.rows, self.input.cols);
                for (i, c) in convs.iter().enumerate() {
                    plan.push(LayerPlan::Conv {
                        name: format!("conv{}", i + 1),
                        in_channels: ch,
                        conv: *c,
                    });
                    ch = c.out_channels;
                    h = (h + 2 * c.padding + 1 - c.kernel) / 2;
                    w = (w + 2 * c.padding + 1 - c.kernel) / 2;
                }
                plan.push(LayerPlan::Flatten);
                linear(&mut plan, ch * h * w, fc);
            }
        }
        plan
    }

    /// Every parameter tensor, in a fixed order.
    pub fn parameters(&self) -> Vec<ParamInfo> {
        let mut out = Vec::new();
        for layer in self.plan() {
            match layer {
                LayerPlan::Conv {
                    name,
                    in_channels,
                    conv,
                } => {
                    let fan_in = in_channels * conv.kernel * conv.kernel;
                    out.push(ParamInfo {
                        name: format!("{name}.weight"),
                        shape: vec![conv.out_channels, in_channels, conv.kernel, conv.kernel],
                        fan_in,
                    });
                    out.push(ParamInfo {
                        name: format!("{name}.bias"),
                        shape: vec![conv.out_channels],
                        fan_in,
                    });
                }
                LayerPlan::Linear {
                    name,
                    inputs,
                    outputs,
                    ..
                } => {
                    out.push(ParamInfo {
                        name: format!("{name}.weight"),
                        shape: vec![outputs, inputs],
                        fan_in: inputs,
                    });
                    out.push(ParamInfo {
                        name: format!("{name}.bias"),
                        shape: vec![outputs],
                        fan_in: inputs,
                    });
                }
                LayerPlan::Flatten => {}
            }
        }
        out
    }

    /// Number of trainable scalars.
    pub fn param_count(&self) -> usize {
        self.parameters()
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    /// Multiply-accumulates for one sample's forward pass (convolutions and dense layers).
    pub fn macs(&self) -> usize {
        let (mut h, mut w) = (self.input.rows, self.input.cols);
        let mut total = 0;
        for layer in self.plan() {
            match layer {
                LayerPlan::Conv {
                    in_channels, conv, ..
                } => {
                    let (oh, ow) = (
                        h + 2 * conv.padding + 1 - conv.kernel,
                        w + 2 * conv.padding + 1 - conv.kernel,
                    );
                    total += oh * ow * conv.out_channels * in_channels * conv.kernel * conv.kernel;
                    (h, w) = (oh / 2, ow / 2);
                }
                LayerPlan::Linear {
                    inputs, outputs, ..
                } => total += inputs * outputs,
                LayerPlan::Flatten => {}
            }
        }
        total
    }

    /// Width of the features the model exposes for hint distillation (its last hidden layer).
    pub fn feature_dim(&self) -> usize {
        self.plan()
            .iter()
            .rev()
            .find_map(|l| match l {
                LayerPlan::Linear {
                    inputs,
                    hidden: false,
                    ..
                } => Some(*inputs),
                _ => None,
            })
            .expect("every plan ends in the output layer")
    }

    /// Size of the weights in bytes at 4 bytes per parameter.
    pub fn f32_bytes(&self) -> usize {
        self.param_count() * 4
    }
}

fn lenet(c1: usize, c2: usize, f1: usize, f2: usize) -> Architecture {
    Architecture::Cnn {
        convs: vec![
            ConvLayer {
                out_channels: c1,
                kernel: 5,
                padding: 2,
            },
            ConvLayer {
                out_channels: c2,
                kernel: 5,
                padding: 0,
            },
        ],
        fc: vec![f1, f2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlp_sizes_are_counted_by_hand() {
        let s = ModelSpec::parse("mlp:1200-1200").unwrap();
        let p = 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10;
        assert_eq!(s.param_count(), p);
        assert_eq!(s.macs(), 784 * 1200 + 1200 * 1200 + 1200 * 10);
        assert_eq!(s.feature_dim(), 1200);
        assert_eq!(
            ModelSpec::parse("mlp:64").unwrap().param_count(),
            784 * 64 + 64 + 64 * 10 + 10
        );
    }

    #[test]
    fn lenet5_matches_the_classic_counts() {
        let s = ModelSpec::parse("cnn:lenet5").unwrap();
        // conv1 6x1x5x5+6, conv2 16x6x5x5+16, fc 400->120->84->10.
        let p = 156 + 2416 + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10);
        assert_eq!(s.param_count(), p);
        assert_eq!(p, 61_706);
        assert_eq!(
            s.macs(),
            28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10
        );
        assert!(ModelSpec::parse("cnn:lenet5-half").unwrap().param_count() < p / 2);
        let wide = ModelSpec::parse("cnn:c32-c64-f1024").unwrap();
        assert_eq!(wide.parameters()[4].shape, vec![1024, 64 * 7 * 7]);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (s, needle) in [
            ("mlp", "KIND:LAYERS"),
            ("mlp:12-x", "`x`"),
            ("mlp:0", "`0`"),
            ("rnn:4", "unknown model kind"),
            ("cnn:f10", "at least one conv"),
            ("cnn:c4-f10-c4", "must come before"),
            ("cnn:c4-c4-c4-c4-c4-c4", "no"),
        ] {
            let err = ModelSpec::parse(s).unwrap_err().to_string();
            assert!(err.contains(needle), "{s}: {err}");
        }
        assert!(ModelSpec::parse("mlp:8")
            .unwrap()
            .with_dropout(1.5, 0.0)
            .is_err());
    }

    #[test]
    fn specs_round_trip_through_toml() {
        let s = ModelSpec::parse("cnn:lenet5")
            .unwrap()
            .with_dropout(0.5, 0.2)
            .unwrap();
        let text = toml::to_string(&s).unwrap();
        assert_eq!(toml::from_str::<ModelSpec>(&text).unwrap(), s);
    }
}
