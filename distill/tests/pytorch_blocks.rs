//! edgekd's convolution, batch normalization and residual layers against PyTorch: a ResNet
//! basic block with a projection shortcut and a MobileNetV2 inverted residual block, fixed
//! weights, one training-mode forward and backward pass. The reference values come from
//! `scripts/torch_reference_blocks.py` (committed beside them in
//! `tests/fixtures/pytorch-blocks.json`); every output, gradient and running statistic must
//! match to 1e-4 (relative, plus 1e-4 absolute).

use std::collections::HashMap;

use candle_core::{Device, Module, Tensor, Var};
use edgekd_distill::batchnorm::{add_act, BatchNorm};
use edgekd_distill::conv2d::Conv2d;
use edgekd_distill::plan::Activation;
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

struct Reference(serde_json::Map<String, Value>);

impl Reference {
    fn values(&self, key: &str) -> Vec<f32> {
        self.0[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing"))
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    }

    fn shape(&self, key: &str) -> Vec<usize> {
        self.0[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    }

    fn var(&self, name: &str) -> Var {
        let shape = self.shape(&format!("{name}.shape"));
        Var::from_vec(self.values(name), shape, &Device::Cpu).unwrap()
    }
}

fn load(block: &str) -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pytorch-blocks.json"
    );
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Reference(all[block].as_object().unwrap().clone())
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= TOLERANCE * (1.0 + w.abs()),
            "{what}[{i}]: edgekd {g}, PyTorch {w}"
        );
    }
}

/// One convolution + batch normalization of the block, its variables kept for the checks.
struct ConvBn {
    name: &'static str,
    conv: Conv2d,
    bn: BatchNorm,
    vars: Vec<(String, Var)>,
    running: (Var, Var),
}

impl ConvBn {
    fn new(
        r: &Reference,
        name: &'static str,
        stride: usize,
        padding: usize,
        groups: usize,
        act: Activation,
    ) -> ConvBn {
        let w = r.var(&format!("{name}.weight"));
        let g = r.var(&format!("{name}.bn.weight"));
        let b = r.var(&format!("{name}.bn.bias"));
        let c = g.elem_count();
        let mean = Var::zeros(c, candle_core::DType::F32, &Device::Cpu).unwrap();
        let var = Var::ones(c, candle_core::DType::F32, &Device::Cpu).unwrap();
        ConvBn {
            name,
            conv: Conv2d::new(w.as_tensor().clone(), stride, padding, groups),
            bn: BatchNorm::new(
                g.as_tensor().clone(),
                b.as_tensor().clone(),
                mean.clone(),
                var.clone(),
                act,
            ),
            vars: vec![
                (format!("{name}.weight"), w),
                (format!("{name}.bn.weight"), g),
                (format!("{name}.bn.bias"), b),
            ],
            running: (mean, var),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.bn
            .forward(&self.conv.forward(x).unwrap(), true)
            .unwrap()
    }
}

/// Runs `forward` on the reference input, back-propagates the reference weighting, and
/// checks output, input gradient, every parameter gradient and the running statistics.
fn check(r: &Reference, layers: &[ConvBn], forward: impl Fn(&Tensor) -> Tensor) {
    let x = Var::from_vec(r.values("input"), r.shape("input_shape"), &Device::Cpu).unwrap();
    let y = forward(x.as_tensor());
    assert_eq!(y.dims(), r.shape("output_shape").as_slice());
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_close(&flat(&y), &r.values("output"), "output");
    let mix = Tensor::from_vec(r.values("mix"), y.shape(), &Device::Cpu).unwrap();
    let grads = (y * mix).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close(
        &flat(grads.get(x.as_tensor()).unwrap()),
        &r.values("grad.input"),
        "grad.input",
    );
    let mut seen: HashMap<String, ()> = HashMap::new();
    for l in layers {
        for (name, v) in &l.vars {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            assert_close(&flat(g), &r.values(&format!("grad.{name}")), name);
            seen.insert(name.clone(), ());
        }
        let (mean, var) = &l.running;
        assert_close(
            &flat(mean.as_tensor()),
            &r.values(&format!("{}.bn.running_mean", l.name)),
            "running mean",
        );
        assert_close(
            &flat(var.as_tensor()),
            &r.values(&format!("{}.bn.running_var", l.name)),
            "running var",
        );
    }
    assert!(!seen.is_empty());
}

#[test]
fn a_resnet_basic_block_with_a_projection_matches_pytorch() {
    let r = load("resnet_block");
    let layers = [
        ConvBn::new(&r, "conv1", 2, 1, 1, Activation::Relu),
        ConvBn::new(&r, "conv2", 1, 1, 1, Activation::Identity),
        ConvBn::new(&r, "shortcut", 2, 0, 1, Activation::Identity),
    ];
    check(&r, &layers, |x| {
        let main = layers[1].forward(&layers[0].forward(x));
        add_act(&main, &layers[2].forward(x), Activation::Relu).unwrap()
    });
}

#[test]
fn a_mobilenetv2_inverted_residual_block_matches_pytorch() {
    let r = load("mobilenetv2_block");
    let hidden = r.shape("depthwise.weight.shape")[0];
    let layers = [
        ConvBn::new(&r, "expand", 1, 0, 1, Activation::Relu6),
        ConvBn::new(&r, "depthwise", 1, 1, hidden, Activation::Relu6),
        ConvBn::new(&r, "project", 1, 0, 1, Activation::Identity),
    ];
    check(&r, &layers, |x| {
        let y = layers[2].forward(&layers[1].forward(&layers[0].forward(x)));
        add_act(&y, x, Activation::Identity).unwrap()
    });
}
