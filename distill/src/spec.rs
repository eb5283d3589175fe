//! Model specifications: the spec strings users type (`mlp:1200-1200`, `cnn:lenet5`), and the
//! serialisable description a checkpoint carries so later stages can rebuild the model.

use serde::{Deserialize, Serialize};

pub use crate::architecture::{Architecture, ConvLayer, InvertedResidual, ResBlock};
use crate::dataset::NUM_CLASSES;
use crate::error::{Error, Result};
use crate::input::{InputShape, Normalization};
pub use crate::plan::LayerPlan;
use crate::plan::{output_shape, Shape};
use crate::zoo::{lenet, mobilenetv2, resnet};

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

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Uniform in `[-bound, bound)`.
    Uniform(f32),
    /// Every element this value (batch normalization's scale 1, shift 0, running statistics).
    Constant(f32),
}

/// One parameter tensor of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    /// Name in the safetensors file, e.g. `fc1.weight`.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Inputs feeding each output unit.
    pub fan_in: usize,
    /// How it is initialised.
    pub init: Init,
    /// Whether the optimizer updates it (batch normalization's running statistics are
    /// updated by the forward pass instead).
    pub trainable: bool,
    /// Whether weight decay applies: to weights, not to biases or normalization parameters.
    pub decay: bool,
}

impl ParamInfo {
    fn weight(name: String, shape: Vec<usize>, fan_in: usize, bound: f32) -> ParamInfo {
        ParamInfo {
            name,
            shape,
            fan_in,
            init: Init::Uniform(bound),
            trainable: true,
            decay: true,
        }
    }

    fn bias(name: String, outputs: usize, fan_in: usize) -> ParamInfo {
        ParamInfo {
            name,
            shape: vec![outputs],
            fan_in,
            init: Init::Uniform(1.0 / (fan_in as f32).sqrt()),
            trainable: true,
            decay: false,
        }
    }

    /// Batch normalization's four tensors under `{prefix}.bn`.
    fn batch_norm(prefix: &str, channels: usize) -> [ParamInfo; 4] {
        let p = |what: &str, value: f32, trainable: bool| ParamInfo {
            name: format!("{prefix}.bn.{what}"),
            shape: vec![channels],
            fan_in: 1,
            init: Init::Constant(value),
            trainable,
            decay: false,
        };
        [
            p("weight", 1.0, true),
            p("bias", 0.0, true),
            p("running_mean", 0.0, false),
            p("running_var", 1.0, false),
        ]
    }
}

impl ModelSpec {
    /// Parses a spec string for MNIST-shaped input, with no dropout (callers set the input
    /// and classes from their data).
    ///
    /// - `mlp:H1-H2-...` (e.g. `mlp:1200-1200`, `mlp:64`; `mlp:` alone is logistic regression)
    /// - `cnn:lenet5`, `cnn:lenet5-half`
    /// - `cnn:cA-cB-fC` (5x5 same-padded conv blocks with A and B channels, then an FC layer of C)
    /// - `resnet:N` (N = 6n + 2: 8, 14, 20, 32, 44, 56, 110) and `resnet:N-wK` (first stage K
    ///   channels wide instead of 16)
    /// - `mobilenetv2:W` (width multiplier W, e.g. 0.25, 0.5, 1.0)
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
        let (kind, body) = spec.split_once(':').ok_or_else(|| {
            bad("expected KIND:LAYERS, e.g. mlp:800-800, cnn:lenet5, resnet:20 or mobilenetv2:0.5")
        })?;
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
            "cnn" => match body {
                "lenet5" => lenet(6, 16, 120, 84),
                "lenet5-half" => lenet(3, 8, 60, 42),
                _ => {
                    let (mut convs, mut fc) = (vec![], vec![]);
                    for tok in body.split('-') {
                        if let Some(c) = tok.strip_prefix('c') {
                            if !fc.is_empty() {
                                return Err(bad(
                                    "conv blocks (cN) must come before fully connected layers (fN)",
                                ));
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
            },
            "resnet" => {
                let (depth, width) = match body.split_once("-w") {
                    Some((d, w)) => (d, num(w)?),
                    None => (body, 16),
                };
                let depth: usize = depth
                    .parse()
                    .map_err(|_| bad("expected resnet:N or resnet:N-wK, e.g. resnet:20"))?;
                resnet(depth, width).ok_or_else(|| {
                    bad("the depth N must be 6n + 2: 8, 14, 20, 32, 44, 56, 110, ...")
                })?
            }
            "mobilenetv2" => {
                let width: f64 = body
                    .parse()
                    .ok()
                    .filter(|w: &f64| (0.1..=4.0).contains(w))
                    .ok_or_else(|| {
                        bad("expected a width multiplier from 0.1 to 4, e.g. mobilenetv2:0.5")
                    })?;
                mobilenetv2(width)
            }
            _ => {
                return Err(bad(&format!(
                    "unknown model kind `{kind}` (use mlp, cnn, resnet or mobilenetv2)"
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

    /// Checks rates, and that every layer takes what the one before it gives (a conv block
    /// that leaves no feature map, a block whose shortcut does not match, ...).
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
        let i = self.input;
        let mut shape = match self.architecture {
            Architecture::Mlp { .. } => Shape::Flat(i.len()),
            _ => Shape::Map(i.channels, i.rows, i.cols),
        };
        for (k, layer) in self.plan().iter().enumerate() {
            shape = output_shape(layer, shape).ok_or_else(|| {
                bad(match layer {
                    LayerPlan::Conv { .. } => format!(
                        "conv block {} leaves no feature map to pool from {}",
                        k + 1,
                        show(shape)
                    ),
                    _ => format!("layer {} cannot take {}", k + 1, show(shape)),
                })
            })?;
        }
        Ok(())
    }

    /// The forward pass's layers, in order, with their sizes.
    pub fn plan(&self) -> Vec<LayerPlan> {
        crate::plan::layers(&self.architecture, self.input, self.classes)
    }

    /// Every parameter tensor (and batch-normalization statistic), in a fixed order.
    pub fn parameters(&self) -> Vec<ParamInfo> {
        fn walk(layers: &[LayerPlan], out: &mut Vec<ParamInfo>) {
            for layer in layers {
                match layer {
                    LayerPlan::Conv {
                        name,
                        in_channels,
                        conv,
                    } => {
                        let fan_in = in_channels * conv.kernel * conv.kernel;
                        out.push(ParamInfo::weight(
                            format!("{name}.weight"),
                            vec![conv.out_channels, *in_channels, conv.kernel, conv.kernel],
                            fan_in,
                            1.0 / (fan_in as f32).sqrt(),
                        ));
                        out.push(ParamInfo::bias(
                            format!("{name}.bias"),
                            conv.out_channels,
                            fan_in,
                        ));
                    }
                    LayerPlan::ConvBn { name, conv, .. } => {
                        let fan_in = conv.fan_in();
                        // He et al.'s variance 2 / fan_in, for layers followed by ReLU.
                        out.push(ParamInfo::weight(
                            format!("{name}.weight"),
                            vec![
                                conv.out_channels,
                                conv.in_channels / conv.groups,
                                conv.kernel,
                                conv.kernel,
                            ],
                            fan_in,
                            (6.0 / fan_in as f32).sqrt(),
                        ));
                        out.extend(ParamInfo::batch_norm(name, conv.out_channels));
                    }
                    LayerPlan::Residual { main, shortcut, .. } => {
                        walk(main, out);
                        if let Some(s) = shortcut {
                            walk(std::slice::from_ref(s), out);
                        }
                    }
                    LayerPlan::Linear {
                        name,
                        inputs,
                        outputs,
                        ..
                    } => {
                        out.push(ParamInfo::weight(
                            format!("{name}.weight"),
                            vec![*outputs, *inputs],
                            *inputs,
                            1.0 / (*inputs as f32).sqrt(),
                        ));
                        out.push(ParamInfo::bias(format!("{name}.bias"), *outputs, *inputs));
                    }
                    LayerPlan::Flatten | LayerPlan::GlobalAvgPool => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.plan(), &mut out);
        out
    }

    /// Number of trainable scalars (batch normalization's running statistics excluded).
    pub fn param_count(&self) -> usize {
        self.parameters()
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    /// Multiply-accumulates for one sample's forward pass (convolutions and dense layers).
    pub fn macs(&self) -> usize {
        fn walk(layers: &[LayerPlan], mut shape: Shape, total: &mut usize) -> Shape {
            for layer in layers {
                let out = output_shape(layer, shape).expect("validated specs fit");
                match (layer, out) {
                    (
                        LayerPlan::Conv {
                            in_channels, conv, ..
                        },
                        Shape::Map(_, h, w),
                    ) => {
                        // Before pooling: twice the pooled size (floor), as the conv ran.
                        let (oh, ow) = match shape {
                            Shape::Map(_, ih, iw) => (
                                ih + 2 * conv.padding + 1 - conv.kernel,
                                iw + 2 * conv.padding + 1 - conv.kernel,
                            ),
                            Shape::Flat(_) => (2 * h, 2 * w),
                        };
                        *total +=
                            oh * ow * conv.out_channels * in_channels * conv.kernel * conv.kernel;
                    }
                    (LayerPlan::ConvBn { conv, .. }, Shape::Map(c, h, w)) => {
                        *total += h * w * c * conv.fan_in();
                    }
                    (LayerPlan::Residual { main, shortcut, .. }, _) => {
                        walk(main, shape, total);
                        if let Some(s) = shortcut {
                            walk(std::slice::from_ref(s), shape, total);
                        }
                    }
                    (
                        LayerPlan::Linear {
                            inputs, outputs, ..
                        },
                        _,
                    ) => *total += inputs * outputs,
                    _ => {}
                }
                shape = out;
            }
            shape
        }
        let i = self.input;
        let start = match self.architecture {
            Architecture::Mlp { .. } => Shape::Flat(i.len()),
            _ => Shape::Map(i.channels, i.rows, i.cols),
        };
        let mut total = 0;
        walk(&self.plan(), start, &mut total);
        total
    }

    /// Width of the features the model exposes for hint distillation: the input of its output
    /// layer (an MLP's last hidden layer, a ResNet's or MobileNet's pooled last feature map).
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

    /// The most values one layer produces for one sample (the widest feature map): what a
    /// batch's activations cost.
    pub fn largest_activation(&self) -> usize {
        let i = self.input;
        let start = match self.architecture {
            Architecture::Mlp { .. } => Shape::Flat(i.len()),
            _ => Shape::Map(i.channels, i.rows, i.cols),
        };
        crate::plan::walk_shapes(&self.plan(), start).map_or(i.len(), |(_, largest)| largest)
    }

    /// Size of the trainable weights in bytes at 4 bytes per parameter.
    pub fn f32_bytes(&self) -> usize {
        self.param_count() * 4
    }
}

fn show(shape: Shape) -> String {
    match shape {
        Shape::Map(c, h, w) => format!("{c}x{h}x{w} feature maps"),
        Shape::Flat(n) => format!("{n} values"),
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
