//! Hand-built ONNX graphs and reference arithmetic, shared by the native engine's tests
//! (`tests/native.rs`) and the differential fuzz target (`fuzz/fuzz_targets/engine_conv.rs`,
//! which includes this file by path).
#![allow(dead_code)]

use edgekd_runtime::proto::{
    data_type, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};
use prost::Message;

/// A float value; a negative dimension is the free batch size.
pub fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<Option<i64>> = dims.iter().map(|&d| (d >= 0).then_some(d)).collect();
    ValueInfoProto::float_tensor(name, &dims)
}

pub fn tensor(name: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type,
        raw_data: raw,
        ..Default::default()
    }
}

pub fn f32s(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    tensor(
        name,
        dims,
        data_type::FLOAT,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

pub fn i8s(name: &str, dims: &[i64], v: &[i8]) -> TensorProto {
    tensor(
        name,
        dims,
        data_type::INT8,
        v.iter().map(|&x| x as u8).collect(),
    )
}

pub fn i32s(name: &str, dims: &[i64], v: &[i32]) -> TensorProto {
    tensor(
        name,
        dims,
        data_type::INT32,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

pub fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        attribute: attrs,
        ..Default::default()
    }
}

/// `x` -> (`xq`, `xs`, `xz`) by DynamicQuantizeLinear.
pub fn dynamic_quantize() -> NodeProto {
    NodeProto {
        op_type: "DynamicQuantizeLinear".into(),
        input: vec!["x".into()],
        output: vec!["xq".into(), "xs".into(), "xz".into()],
        name: "dq".into(),
        ..Default::default()
    }
}

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 2,
        i: v,
        ..Default::default()
    }
}

pub fn model(
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    input: ValueInfoProto,
    output: &str,
) -> Vec<u8> {
    ModelProto::opset13(GraphProto {
        node: nodes,
        name: "test".into(),
        initializer: inits,
        input: vec![input],
        output: vec![value(output, &[])],
        ..Default::default()
    })
    .encode_to_vec()
}

/// A deterministic spread of values in [-r, r].
pub fn spread(n: usize, seed: u64, r: i64) -> Vec<i64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 33) as i64).rem_euclid(2 * r + 1) - r
        })
        .collect()
}

/// A convolution's shape: input `[c, h, w]`, `o` outputs, kernel `k` (`[kh, kw]`), taps
/// `dilation` pixels apart.
#[derive(Debug, Clone, Copy)]
pub struct ConvCase {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: [usize; 2],
    pub group: usize,
    pub stride: usize,
    /// ONNX order: top, left, bottom, right.
    pub pad: [usize; 4],
    pub dilation: usize,
}

impl ConvCase {
    /// The kernel's reach in pixels, `[kh, kw]` with dilation.
    pub fn span(&self) -> [usize; 2] {
        self.k.map(|k| (k - 1) * self.dilation + 1)
    }

    pub fn out_hw(&self) -> (usize, usize) {
        let [sh, sw] = self.span();
        (
            (self.h + self.pad[0] + self.pad[2] - sh) / self.stride + 1,
            (self.w + self.pad[1] + self.pad[3] - sw) / self.stride + 1,
        )
    }

    /// Weights `[o, c/group, kh, kw]`.
    pub fn weight_len(&self) -> usize {
        self.o * (self.c / self.group) * self.k[0] * self.k[1]
    }

    fn attrs(&self) -> Vec<AttributeProto> {
        vec![
            ints("strides", &[self.stride as i64; 2]),
            ints("pads", &self.pad.map(|p| p as i64)),
            ints("dilations", &[self.dilation as i64; 2]),
            int("group", self.group as i64),
        ]
    }

    fn weight_dims(&self) -> [i64; 4] {
        let cg = self.c / self.group;
        [self.o as i64, cg as i64, self.k[0] as i64, self.k[1] as i64]
    }

    fn input(&self) -> ValueInfoProto {
        value("x", &[-1, self.c as i64, self.h as i64, self.w as i64])
    }

    /// DynamicQuantizeLinear -> ConvInteger -> Cast to f32: the int32 sums, as floats.
    pub fn int8_model(&self, weights: &[i8]) -> Vec<u8> {
        model(
            vec![
                dynamic_quantize(),
                node("ConvInteger", &["xq", "w", "xz"], "acc", self.attrs()),
                node("Cast", &["acc"], "out", vec![int("to", 1)]),
            ],
            vec![i8s("w", &self.weight_dims(), weights)],
            self.input(),
            "out",
        )
    }

    /// f32 `Conv` with a bias, then `Relu`.
    pub fn f32_model(&self, weights: &[f32], bias: &[f32]) -> Vec<u8> {
        model(
            vec![
                node("Conv", &["x", "w", "b"], "conv", self.attrs()),
                node("Relu", &["conv"], "out", vec![]),
            ],
            vec![
                f32s("w", &self.weight_dims(), weights),
                f32s("b", &[self.o as i64], bias),
            ],
            self.input(),
            "out",
        )
    }

    /// `Σ f(input value or None for padding, weight index)` over every output `[n, o, oh, ow]`,
    /// with the sum of the terms' magnitudes (for float tolerances).
    fn sums<T: Copy>(
        &self,
        batch: usize,
        x: &[T],
        term: impl Fn(Option<T>, usize) -> f64,
    ) -> Vec<(f64, f64)> {
        let (c, h, w, o, [kh, kw]) = (self.c, self.h, self.w, self.o, self.k);
        let cg = c / self.group;
        let (oh, ow) = self.out_hw();
        let mut out = Vec::with_capacity(batch * o * oh * ow);
        for img in 0..batch {
            for oc in 0..o {
                let g = oc / (o / self.group);
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (mut acc, mut mag) = (0f64, 0f64);
                        for ic in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let d = self.dilation;
                                    let y = (oy * self.stride + ky * d) as i64 - self.pad[0] as i64;
                                    let xx =
                                        (ox * self.stride + kx * d) as i64 - self.pad[1] as i64;
                                    let inside = y >= 0 && xx >= 0 && y < h as i64 && xx < w as i64;
                                    let v = inside.then(|| {
                                        x[((img * c + g * cg + ic) * h + y as usize) * w
                                            + xx as usize]
                                    });
                                    let t = term(v, ((oc * cg + ic) * kh + ky) * kw + kx);
                                    acc += t;
                                    mag += t.abs();
                                }
                            }
                        }
                        out.push((acc, mag));
                    }
                }
            }
        }
        out
    }

    /// What `int8_model` computes on `x` (`batch` images): DynamicQuantizeLinear per the spec,
    /// then exact integer sums.
    pub fn int8_reference(&self, batch: usize, x: &[f32], weights: &[i8]) -> Vec<f32> {
        let (lo, hi) = x
            .iter()
            .fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
        let scale = (hi - lo) / 255.0;
        let zp = if scale == 0.0 {
            0
        } else {
            (-lo / scale).round_ties_even().clamp(0.0, 255.0) as i64
        };
        let q: Vec<i64> = x
            .iter()
            .map(|&v| {
                let r = if scale == 0.0 {
                    0
                } else {
                    (v / scale).round_ties_even() as i64
                };
                (r + zp).clamp(0, 255)
            })
            .collect();
        self.sums(batch, &q, |a, wi| {
            ((a.unwrap_or(zp) - zp) * weights[wi] as i64) as f64
        })
        .into_iter()
        .map(|(s, _)| s as f32)
        .collect()
    }

    /// What `f32_model` computes on `x`, in f64, with each output's sum of |terms|.
    pub fn f32_reference(
        &self,
        batch: usize,
        x: &[f32],
        weights: &[f32],
        bias: &[f32],
    ) -> Vec<(f32, f32)> {
        let (oh, ow) = self.out_hw();
        self.sums(batch, x, |a, wi| {
            a.unwrap_or(0.0) as f64 * weights[wi] as f64
        })
        .into_iter()
        .enumerate()
        .map(|(i, (s, mag))| {
            let b = bias[(i / (oh * ow)) % self.o] as f64;
            ((s + b).max(0.0) as f32, (mag + b.abs()) as f32)
        })
        .collect()
    }
}
