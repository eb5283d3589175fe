//! An architecture as the forward pass walks it ([`LayerPlan`]): what the model builds its
//! modules from, the exporter lowers to ONNX, and parameters and MACs are counted over.

use crate::architecture::{Architecture, ConvLayer, InvertedResidual, ResBlock};
use crate::input::InputShape;

/// The nonlinearity after a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None (a linear layer, e.g. MobileNetV2's projection).
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

/// A convolution followed by batch normalization (no bias: the normalization's shift is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvBn {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Channel groups (1: dense; `in_channels`: depthwise).
    pub groups: usize,
}

impl ConvBn {
    /// A dense `kernel`x`kernel` convolution with "same" padding.
    fn dense(in_channels: usize, out_channels: usize, kernel: usize, stride: usize) -> ConvBn {
        ConvBn {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding: kernel / 2,
            groups: 1,
        }
    }

    /// The output size for a `h`x`w` input.
    pub fn output(&self, h: usize, w: usize) -> (usize, usize) {
        let side = |n: usize| (n + 2 * self.padding).saturating_sub(self.kernel) / self.stride + 1;
        (side(h), side(w))
    }

    /// Weights per output channel.
    pub fn fan_in(&self) -> usize {
        self.in_channels / self.groups * self.kernel * self.kernel
    }
}

/// A layer as the forward pass walks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerPlan {
    /// Convolution (stride 1) with bias, then ReLU and 2x2 max pooling (LeNet-style).
    Conv {
        /// Parameter prefix, e.g. `conv1` (`conv1.weight`, `conv1.bias`).
        name: String,
        /// Input channels.
        in_channels: usize,
        /// Output channels, kernel and padding.
        conv: ConvLayer,
    },
    /// Convolution without bias, batch normalization, then `act`: parameters `{name}.weight`
    /// and `{name}.bn.{weight,bias,running_mean,running_var}`.
    ConvBn {
        /// Parameter prefix, e.g. `stem` or `s1.b0.conv1`.
        name: String,
        /// The convolution.
        conv: ConvBn,
        /// What follows the normalization.
        act: Activation,
    },
    /// `act(main(x) + shortcut(x))`, the shortcut being the identity when absent.
    Residual {
        /// The block's layers.
        main: Vec<LayerPlan>,
        /// A projection (a 1x1 [`LayerPlan::ConvBn`]) where the shape changes.
        shortcut: Option<Box<LayerPlan>>,
        /// After the addition.
        act: Activation,
    },
    /// `[n, c, h, w]` to `[n, c]`: the mean over each channel's plane.
    GlobalAvgPool,
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

/// The shape of the values between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `[channels, rows, cols]` feature maps.
    Map(usize, usize, usize),
    /// A vector of this width.
    Flat(usize),
}

impl Shape {
    /// Values per sample.
    pub fn len(&self) -> usize {
        match *self {
            Shape::Map(c, h, w) => c * h * w,
            Shape::Flat(n) => n,
        }
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The layers of `architecture` for `input` images and `classes` outputs.
pub fn layers(architecture: &Architecture, input: InputShape, classes: usize) -> Vec<LayerPlan> {
    let mut plan = Vec::new();
    let dense = |plan: &mut Vec<LayerPlan>, inputs: usize, widths: &[usize]| {
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
            outputs: classes,
            hidden: false,
        });
    };
    match architecture {
        Architecture::Mlp { hidden } => dense(&mut plan, input.len(), hidden),
        Architecture::Cnn { convs, fc } => {
            let (mut ch, mut h, mut w) = (input.channels, input.rows, input.cols);
            for (i, c) in convs.iter().enumerate() {
                plan.push(LayerPlan::Conv {
                    name: format!("conv{}", i + 1),
                    in_channels: ch,
                    conv: *c,
                });
                ch = c.out_channels;
                h = (h + 2 * c.padding + 1).saturating_sub(c.kernel) / 2;
                w = (w + 2 * c.padding + 1).saturating_sub(c.kernel) / 2;
            }
            plan.push(LayerPlan::Flatten);
            dense(&mut plan, ch * h * w, fc);
        }
        Architecture::Resnet { stem, blocks } => {
            plan.push(conv_bn(
                "stem",
                ConvBn::dense(input.channels, *stem, 3, 1),
                Activation::Relu,
            ));
            let mut ch = *stem;
            for (i, b) in blocks.iter().enumerate() {
                plan.push(res_block(&format!("b{i}"), ch, b));
                ch = b.out;
            }
            plan.push(LayerPlan::GlobalAvgPool);
            dense(&mut plan, ch, &[]);
        }
        Architecture::Mobilenetv2 {
            stem,
            stem_stride,
            blocks,
            head,
        } => {
            let first = ConvBn::dense(input.channels, *stem, 3, *stem_stride);
            plan.push(conv_bn("stem", first, Activation::Relu6));
            let mut ch = *stem;
            for (i, b) in blocks.iter().enumerate() {
                plan.extend(inverted_residual(&format!("b{i}"), ch, b));
                ch = b.out;
            }
            plan.push(conv_bn(
                "head",
                ConvBn::dense(ch, *head, 1, 1),
                Activation::Relu6,
            ));
            plan.push(LayerPlan::GlobalAvgPool);
            dense(&mut plan, *head, &[]);
        }
    }
    plan
}

fn conv_bn(name: &str, conv: ConvBn, act: Activation) -> LayerPlan {
    LayerPlan::ConvBn {
        name: name.into(),
        conv,
        act,
    }
}

fn res_block(name: &str, input: usize, b: &ResBlock) -> LayerPlan {
    let main = vec![
        conv_bn(
            &format!("{name}.conv1"),
            ConvBn::dense(input, b.mid, 3, b.stride),
            Activation::Relu,
        ),
        conv_bn(
            &format!("{name}.conv2"),
            ConvBn::dense(b.mid, b.out, 3, 1),
            Activation::Identity,
        ),
    ];
    let shortcut = (b.stride != 1 || input != b.out).then(|| {
        Box::new(conv_bn(
            &format!("{name}.shortcut"),
            ConvBn {
                padding: 0,
                ..ConvBn::dense(input, b.out, 1, b.stride)
            },
            Activation::Identity,
        ))
    });
    LayerPlan::Residual {
        main,
        shortcut,
        act: Activation::Relu,
    }
}

fn inverted_residual(name: &str, input: usize, b: &InvertedResidual) -> Vec<LayerPlan> {
    let mut main = Vec::new();
    if b.expand {
        main.push(conv_bn(
            &format!("{name}.expand"),
            ConvBn::dense(input, b.hidden, 1, 1),
            Activation::Relu6,
        ));
    }
    let hidden = if b.expand { b.hidden } else { input };
    main.push(conv_bn(
        &format!("{name}.depthwise"),
        ConvBn {
            groups: hidden,
            ..ConvBn::dense(hidden, hidden, 3, b.stride)
        },
        Activation::Relu6,
    ));
    main.push(conv_bn(
        &format!("{name}.project"),
        ConvBn::dense(hidden, b.out, 1, 1),
        Activation::Identity,
    ));
    if b.stride == 1 && input == b.out {
        vec![LayerPlan::Residual {
            main,
            shortcut: None,
            act: Activation::Identity,
        }]
    } else {
        // No addition where the shape changes: the block is its layers in sequence.
        main
    }
}

/// The shape after `layer` for an input of shape `x`, or None when it does not fit.
pub fn output_shape(layer: &LayerPlan, x: Shape) -> Option<Shape> {
    match (layer, x) {
        (LayerPlan::Conv { conv, .. }, Shape::Map(_, h, w)) => {
            let (oh, ow) = (
                (h + 2 * conv.padding + 1).checked_sub(conv.kernel)?,
                (w + 2 * conv.padding + 1).checked_sub(conv.kernel)?,
            );
            (oh >= 2 && ow >= 2).then_some(Shape::Map(conv.out_channels, oh / 2, ow / 2))
        }
        (LayerPlan::ConvBn { conv, .. }, Shape::Map(c, h, w)) => {
            let fits = c == conv.in_channels
                && h + 2 * conv.padding >= conv.kernel
                && w + 2 * conv.padding >= conv.kernel;
            fits.then(|| {
                let (oh, ow) = conv.output(h, w);
                Shape::Map(conv.out_channels, oh, ow)
            })
        }
        (LayerPlan::Residual { main, shortcut, .. }, x) => {
            let out = main.iter().try_fold(x, |s, l| output_shape(l, s))?;
            match shortcut.as_deref() {
                None => (out == x).then_some(out),
                Some(s) => (output_shape(s, x)? == out).then_some(out),
            }
        }
        (LayerPlan::GlobalAvgPool, Shape::Map(c, _, _)) => Some(Shape::Flat(c)),
        (LayerPlan::Flatten, s) => Some(Shape::Flat(s.len())),
        (
            LayerPlan::Linear {
                inputs, outputs, ..
            },
            Shape::Flat(n),
        ) => (n == *inputs).then_some(Shape::Flat(*outputs)),
        _ => None,
    }
}

/// The output shape of `layers` from `x`, and the largest value count any layer on the way
/// (inside blocks too) produces per sample; None when a layer does not fit.
pub fn walk_shapes(layers: &[LayerPlan], x: Shape) -> Option<(Shape, usize)> {
    let mut shape = x;
    let mut largest = x.len();
    for layer in layers {
        if let LayerPlan::Residual { main, shortcut, .. } = layer {
            let (_, inner) = walk_shapes(main, shape)?;
            largest = largest.max(inner);
            if let Some(s) = shortcut {
                largest = largest.max(walk_shapes(std::slice::from_ref(s), shape)?.1);
            }
        }
        shape = output_shape(layer, shape)?;
        largest = largest.max(shape.len());
    }
    Some((shape, largest))
}
