//! The standard architectures behind the spec strings: LeNet-5, the CIFAR ResNets of He et
//! al. (2016, §4.2) and MobileNetV2 (Sandler et al. 2018) with a width multiplier, adapted to
//! small images as the CIFAR literature does.

use crate::architecture::{Architecture, ConvLayer, InvertedResidual, ResBlock};

/// LeNet-5's two conv blocks (5x5; the first same-padded) and dense layers.
pub fn lenet(c1: usize, c2: usize, f1: usize, f2: usize) -> Architecture {
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

/// The CIFAR ResNet of depth `depth` = 6n + 2: a 3x3 stem of `width` channels, three stages
/// of n basic blocks of `width`, 2·`width` and 4·`width` channels, stride 2 at the start of
/// the second and third (He et al. 2016 §4.2 use width 16). None unless depth = 6n + 2, n ≥ 1.
pub fn resnet(depth: usize, width: usize) -> Option<Architecture> {
    if depth < 8 || !(depth - 2).is_multiple_of(6) || width == 0 {
        return None;
    }
    let n = (depth - 2) / 6;
    let mut blocks = Vec::with_capacity(3 * n);
    for stage in 0..3 {
        let channels = width << stage;
        for b in 0..n {
            blocks.push(ResBlock {
                mid: channels,
                out: channels,
                stride: if stage > 0 && b == 0 { 2 } else { 1 },
            });
        }
    }
    Some(Architecture::Resnet {
        stem: width,
        blocks,
    })
}

/// `v` rounded to the nearest multiple of 8, at least 8, and never more than 10% below `v`:
/// how the MobileNet reference code rounds scaled channel counts (`_make_divisible`).
pub fn make_divisible(v: f64) -> usize {
    let rounded = (((v + 4.0) as usize) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * v {
        rounded + 8
    } else {
        rounded
    }
}

/// MobileNetV2 inverted-residual stages: (expansion t, channels c, blocks n, stride s), as in
/// Sandler et al. 2018, Table 2.
const MOBILENETV2_STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// MobileNetV2 with width multiplier `width`, adapted to small images: the stem and the
/// first stride-2 stage (24 channels) run at stride 1, so the strides left are those of the
/// 32-, 64- and 160-channel stages and a 32x32 input ends at 4x4 (224x224 ImageNet inputs
/// end at 7x7 with the paper's five stride-2 steps). Channels are `make_divisible(c · width)`;
/// the 1280-channel head is scaled only for widths above 1, as in the paper's code.
pub fn mobilenetv2(width: f64) -> Architecture {
    let stem = make_divisible(32.0 * width);
    let mut input = stem;
    let mut blocks = Vec::new();
    for (i, &(t, c, n, s)) in MOBILENETV2_STAGES.iter().enumerate() {
        let out = make_divisible(c as f64 * width);
        // The small-image adaptation: the first stride-2 stage keeps the resolution.
        let s = if i == 1 { 1 } else { s };
        for b in 0..n {
            blocks.push(InvertedResidual {
                hidden: input * t,
                out,
                stride: if b == 0 { s } else { 1 },
                expand: t != 1,
            });
            input = out;
        }
    }
    Architecture::Mobilenetv2 {
        stem,
        stem_stride: 1,
        blocks,
        head: make_divisible(1280.0 * width.max(1.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_rounding_matches_the_reference_code() {
        // _make_divisible(v, 8) from the TensorFlow/torchvision MobileNet code, by hand.
        for (v, want) in [
            (32.0 * 0.5, 16),
            (16.0 * 0.5, 8),
            (24.0 * 0.5, 16),
            (96.0 * 0.5, 48),
            (160.0 * 0.5, 80),
            (320.0 * 0.5, 160),
            (32.0 * 0.25, 8),
            (24.0 * 0.25, 8),
            (96.0 * 0.75, 72),
            (160.0 * 0.35, 56),
            (1280.0, 1280),
        ] {
            assert_eq!(make_divisible(v), want, "{v}");
        }
    }

    #[test]
    fn resnet_depths_are_six_n_plus_two() {
        for (depth, blocks) in [(8, 3), (20, 9), (56, 27), (110, 54)] {
            let Some(Architecture::Resnet { blocks: b, stem }) = resnet(depth, 16) else {
                panic!("{depth}");
            };
            assert_eq!((b.len(), stem), (blocks, 16));
            assert_eq!(b.iter().filter(|b| b.stride == 2).count(), 2);
            assert_eq!(b.last().unwrap().out, 64);
        }
        assert!(resnet(21, 16).is_none() && resnet(2, 16).is_none());
    }
}
