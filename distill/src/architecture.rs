//! The layer structure a model spec names, as data: what `model.toml` records, width by
//! width, so a checkpoint whose layers were pruned to other widths rebuilds like any other.
//! [`crate::zoo`] makes the standard ones; [`crate::plan`] turns one into layers.

use serde::{Deserialize, Serialize};

/// One LeNet-style block: a 2-D convolution (stride 1), ReLU, 2x2 max pooling.
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

/// A ResNet basic block (He et al. 2016): 3x3 conv + BN + ReLU, 3x3 conv + BN, added to the
/// shortcut, ReLU. The shortcut is the identity when the shape is unchanged, else a 1x1
/// convolution + BN (a projection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResBlock {
    /// Channels between the two convolutions.
    pub mid: usize,
    /// Output channels.
    pub out: usize,
    /// Stride of the first convolution (and of the projection).
    pub stride: usize,
}

/// A MobileNetV2 inverted residual block (Sandler et al. 2018): 1x1 expansion + BN + ReLU6
/// (absent when `expand` is false, as in the first block), 3x3 depthwise + BN + ReLU6, 1x1
/// linear projection + BN; added to the input when stride is 1 and the widths match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvertedResidual {
    /// Channels of the expansion and the depthwise convolution.
    pub hidden: usize,
    /// Output channels.
    pub out: usize,
    /// Stride of the depthwise convolution.
    pub stride: usize,
    /// Whether a 1x1 expansion convolution comes first (else `hidden` is the input width).
    pub expand: bool,
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
    /// A CIFAR-style ResNet: a 3x3 stem conv + BN + ReLU, basic blocks, global average
    /// pooling, one dense layer.
    Resnet {
        /// Stem output channels.
        stem: usize,
        /// The blocks, in order.
        blocks: Vec<ResBlock>,
    },
    /// MobileNetV2: a 3x3 stem conv + BN + ReLU6, inverted residual blocks, a 1x1 conv + BN +
    /// ReLU6 head, global average pooling, one dense layer.
    Mobilenetv2 {
        /// Stem output channels.
        stem: usize,
        /// Stem stride (2 in the paper, 1 for small images).
        stem_stride: usize,
        /// The blocks, in order.
        blocks: Vec<InvertedResidual>,
        /// Head (last 1x1 convolution) output channels.
        head: usize,
    },
}
