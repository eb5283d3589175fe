//! int8 graphs: per-channel symmetric int8 weights and int32 biases in every encoding; they
//! differ in how activations are quantized and which operators carry the arithmetic, because
//! no single int8 encoding is fast in both tract and ONNX Runtime (measured: tract runs
//! s8xs8 `MatMulInteger` on integer kernels but decodes QDQ weights to float; ONNX Runtime
//! fuses QDQ into its integer kernels but runs the s8xs8 QOperator form slowly).

use crate::lower::{conv_attrs, WeightedOps};
use crate::network::{Conv, Dense};
use crate::onnx::{Attr, Elem, Graph};
use crate::quantize::{self, ActQuant, ChannelQuant};

/// Which operators carry the int8 arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `QuantizeLinear` (s8, symmetric) then `MatMulInteger` / `ConvInteger` into int32, int32
    /// bias `Add`, rescale to f32. tract's fast form.
    QOperator,
    /// `QuantizeLinear`/`DequantizeLinear` (u8, asymmetric) around float `MatMul` / `Conv`
    /// whose int8 weights and int32 biases are `DequantizeLinear`d. ONNX Runtime's fast form.
    Qdq,
}

impl Encoding {
    /// Name used in file names and reports.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::QOperator => "qop",
            Encoding::Qdq => "qdq",
        }
    }

    /// The largest weight magnitude on the int8 grid. QDQ keeps 7 bits (±63): ONNX Runtime's
    /// x86 u8 x s8 kernels add pairs of products in int16, which saturates with full 8-bit
    /// weights (255 * 127 * 2 > 32767). Measured on an AVX2 host: an mlp:64 QDQ file with
    /// ±127 weights gave logits 3.6 away from ONNX Runtime's own unfused evaluation; with ±63,
    /// 4e-6. ONNX Runtime's quantizer calls this `reduce_range`.
    pub fn weight_levels(self) -> i8 {
        match self {
            Encoding::QOperator => 127,
            Encoding::Qdq => 63,
        }
    }

    /// How activations are quantized in this encoding, from a calibrated range.
    pub fn activation(self, r: quantize::Range) -> ActQuant {
        match self {
            Encoding::QOperator => ActQuant::symmetric_i8(r),
            Encoding::Qdq => ActQuant::asymmetric_u8(r),
        }
    }
}

/// Statically quantized layers; `acts[i]` quantizes the input of weighted layer `i`.
pub struct Static {
    /// The encoding.
    pub encoding: Encoding,
    /// Calibrated activation parameters, one per weighted layer.
    pub acts: Vec<ActQuant>,
}

/// Weights quantized ahead of time; activations quantized per batch at run time
/// (`DynamicQuantizeLinear`, u8), so no calibration is needed.
pub struct Dynamic;

/// Dimensions that broadcast a per-channel vector over `[N, C, H, W]`.
fn channel_dims(c: usize) -> [usize; 3] {
    [c, 1, 1]
}

/// Quantizes the activation `x` with scale and zero point as constants; returns the int tensor.
fn quantize_input(g: &mut Graph, x: &str, layer: &str, enc: Encoding, a: ActQuant) -> [String; 3] {
    let s = g.f32s(&format!("{layer}.x_scale"), &[], &[a.scale]);
    let z = match enc {
        Encoding::QOperator => g.i8s(&format!("{layer}.x_zp"), &[], &[a.zero_point as i8]),
        Encoding::Qdq => g.u8s(&format!("{layer}.x_zp"), &[], &[a.zero_point as u8]),
    };
    let q = g.node(
        "QuantizeLinear",
        &format!("{layer}.x_q"),
        &[x, &s, &z],
        vec![],
    );
    [q, s, z]
}

/// int32 accumulator + int32 bias, to f32 at `scale` per output channel.
fn rescale(
    g: &mut Graph,
    acc: &str,
    layer: &str,
    bias: &[i32],
    scale: &[f32],
    dims: &[usize],
    out: &str,
) -> String {
    let b = g.i32s(&format!("{layer}.b_q"), dims, bias);
    let with_bias = g.node("Add", &format!("{layer}.acc_b"), &[acc, &b], vec![]);
    let f = g.node(
        "Cast",
        &format!("{layer}.acc_f"),
        &[&with_bias],
        vec![Attr::Int("to", Elem::F32 as i64)],
    );
    let s = g.f32s(&format!("{layer}.y_scale"), dims, scale);
    g.node("Mul", out, &[&f, &s], vec![])
}

/// The int32 bias `DequantizeLinear`d at the accumulator's per-channel scale.
fn dequantized_bias(g: &mut Graph, layer: &str, bias: &[i32], scale: &[f32]) -> String {
    let n = bias.len();
    let b = g.i32s(&format!("{layer}.b_q"), &[n], bias);
    let s = g.f32s(&format!("{layer}.b_scale"), &[n], scale);
    // No zero points: they default to 0 of the input's type, which symmetric grids use.
    g.node(
        "DequantizeLinear",
        &format!("{layer}.bias"),
        &[&b, &s],
        vec![Attr::Int("axis", 0)],
    )
}

/// int8 weights `DequantizeLinear`d per channel along `axis`.
fn dequantized_weight(
    g: &mut Graph,
    layer: &str,
    dims: &[usize],
    values: &[i8],
    scales: &[f32],
    axis: i64,
) -> String {
    let n = scales.len();
    let w = g.i8s(&format!("{layer}.w_q"), dims, values);
    let s = g.f32s(&format!("{layer}.w_scale"), &[n], scales);
    g.node(
        "DequantizeLinear",
        &format!("{layer}.weight"),
        &[&w, &s],
        vec![Attr::Int("axis", axis)],
    )
}

/// Accumulator scales: input scale times each channel's weight scale.
fn acc_scales(input_scale: f32, w: &ChannelQuant) -> Vec<f32> {
    w.scales.iter().map(|s| input_scale * s).collect()
}

impl WeightedOps for Static {
    fn activations(&self) -> Elem {
        Elem::F32
    }

    fn dense(&mut self, g: &mut Graph, x: &str, d: &Dense, index: usize, out: &str) -> String {
        let a = self.acts[index];
        let wq = quantize::per_channel(&d.weight, d.outputs, self.encoding.weight_levels());
        // MatMul's B is [inputs, outputs]: channels become columns.
        let wt = quantize::transpose(&wq.values, d.outputs, d.inputs);
        let bias = quantize::bias(&d.bias, a.scale, &wq.scales);
        let scales = acc_scales(a.scale, &wq);
        let [xq, s, z] = quantize_input(g, x, &d.name, self.encoding, a);
        match self.encoding {
            Encoding::QOperator => {
                let w = g.i8s(&format!("{}.w_q", d.name), &[d.inputs, d.outputs], &wt);
                let acc = g.node(
                    "MatMulInteger",
                    &format!("{}.acc", d.name),
                    &[&xq, &w],
                    vec![],
                );
                rescale(g, &acc, &d.name, &bias, &scales, &[d.outputs], out)
            }
            Encoding::Qdq => {
                let xd = g.node(
                    "DequantizeLinear",
                    &format!("{}.x_dq", d.name),
                    &[&xq, &s, &z],
                    vec![],
                );
                let w = dequantized_weight(g, &d.name, &[d.inputs, d.outputs], &wt, &wq.scales, 1);
                let mm = g.node("MatMul", &format!("{}.matmul", d.name), &[&xd, &w], vec![]);
                let b = dequantized_bias(g, &d.name, &bias, &scales);
                g.node("Add", out, &[&mm, &b], vec![])
            }
        }
    }

    fn conv(&mut self, g: &mut Graph, x: &str, c: &Conv, index: usize, out: &str) -> String {
        let a = self.acts[index];
        let wq = quantize::per_channel(&c.weight, c.out_channels, self.encoding.weight_levels());
        let bias = quantize::bias(&c.bias, a.scale, &wq.scales);
        let scales = acc_scales(a.scale, &wq);
        let dims = c.weight_dims();
        let [xq, s, z] = quantize_input(g, x, &c.name, self.encoding, a);
        match self.encoding {
            Encoding::QOperator => {
                let w = g.i8s(&format!("{}.w_q", c.name), &dims, &wq.values);
                let acc = g.node(
                    "ConvInteger",
                    &format!("{}.acc", c.name),
                    &[&xq, &w],
                    conv_attrs(c),
                );
                rescale(
                    g,
                    &acc,
                    &c.name,
                    &bias,
                    &scales,
                    &channel_dims(c.out_channels),
                    out,
                )
            }
            Encoding::Qdq => {
                let xd = g.node(
                    "DequantizeLinear",
                    &format!("{}.x_dq", c.name),
                    &[&xq, &s, &z],
                    vec![],
                );
                let w = dequantized_weight(g, &c.name, &dims, &wq.values, &wq.scales, 0);
                let b = dequantized_bias(g, &c.name, &bias, &scales);
                g.node("Conv", out, &[&xd, &w, &b], conv_attrs(c))
            }
        }
    }

    /// QOperator: the two float inputs are added as they are (each convolution already
    /// rescaled its int32 accumulator to f32, so the scales are reconciled in float, and the
    /// next layer quantizes the sum at its own calibrated scale). QDQ: each input is
    /// quantized at its own calibrated scale and dequantized before a float `Add`, the
    /// DQ-Add-Q pattern ONNX Runtime fuses into one integer addition (which rescales both
    /// inputs to the output's scale).
    fn add(&mut self, g: &mut Graph, a: &str, b: &str, index: usize, out: &str) -> String {
        match self.encoding {
            Encoding::QOperator => g.node("Add", out, &[a, b], vec![]),
            Encoding::Qdq => {
                let da = self.fake_quantize(g, a, &format!("{out}.a"), index);
                let db = self.fake_quantize(g, b, &format!("{out}.b"), index + 1);
                g.node("Add", out, &[&da, &db], vec![])
            }
        }
    }
}

impl Static {
    /// `DequantizeLinear(QuantizeLinear(x))` at tap `index`'s calibrated parameters.
    fn fake_quantize(&self, g: &mut Graph, x: &str, name: &str, index: usize) -> String {
        let [q, s, z] = quantize_input(g, x, name, self.encoding, self.acts[index]);
        g.node(
            "DequantizeLinear",
            &format!("{name}.x_dq"),
            &[&q, &s, &z],
            vec![],
        )
    }
}

impl Dynamic {
    /// Seven-bit weights: activations are u8 here, so the same int16 saturation as in QDQ
    /// applies in ONNX Runtime (see [`Encoding::weight_levels`]).
    pub const WEIGHT_LEVELS: i8 = 63;

    /// `DynamicQuantizeLinear` of `x`: the u8 tensor, its scale and zero point.
    fn quantize(g: &mut Graph, x: &str, layer: &str) -> [String; 3] {
        let names = [
            format!("{layer}.x_q"),
            format!("{layer}.x_scale"),
            format!("{layer}.x_zp"),
        ];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        g.node_with_outputs("DynamicQuantizeLinear", &refs, &[x], vec![]);
        names
    }

    /// f32 accumulator times `x_scale * weight_scale`, plus the f32 bias.
    #[allow(clippy::too_many_arguments)]
    fn rescale(
        g: &mut Graph,
        acc: &str,
        x_scale: &str,
        layer: &str,
        w: &ChannelQuant,
        bias: &[f32],
        dims: &[usize],
        out: &str,
    ) -> String {
        let f = g.node(
            "Cast",
            &format!("{layer}.acc_f"),
            &[acc],
            vec![Attr::Int("to", Elem::F32 as i64)],
        );
        let ws = g.f32s(&format!("{layer}.w_scale"), dims, &w.scales);
        let scale = g.node("Mul", &format!("{layer}.y_scale"), &[x_scale, &ws], vec![]);
        let y = g.node("Mul", &format!("{layer}.scaled"), &[&f, &scale], vec![]);
        let b = g.f32s(&format!("{layer}.bias"), dims, bias);
        g.node("Add", out, &[&y, &b], vec![])
    }
}

impl WeightedOps for Dynamic {
    fn activations(&self) -> Elem {
        Elem::F32
    }

    fn dense(&mut self, g: &mut Graph, x: &str, d: &Dense, _: usize, out: &str) -> String {
        let wq = quantize::per_channel(&d.weight, d.outputs, Dynamic::WEIGHT_LEVELS);
        let wt = quantize::transpose(&wq.values, d.outputs, d.inputs);
        let [xq, xs, xz] = Self::quantize(g, x, &d.name);
        let w = g.i8s(&format!("{}.w_q", d.name), &[d.inputs, d.outputs], &wt);
        let acc = g.node(
            "MatMulInteger",
            &format!("{}.acc", d.name),
            &[&xq, &w, &xz],
            vec![],
        );
        Self::rescale(g, &acc, &xs, &d.name, &wq, &d.bias, &[d.outputs], out)
    }

    fn conv(&mut self, g: &mut Graph, x: &str, c: &Conv, _: usize, out: &str) -> String {
        let wq = quantize::per_channel(&c.weight, c.out_channels, Dynamic::WEIGHT_LEVELS);
        let dims = c.weight_dims();
        let [xq, xs, xz] = Self::quantize(g, x, &c.name);
        let w = g.i8s(&format!("{}.w_q", c.name), &dims, &wq.values);
        let acc = g.node(
            "ConvInteger",
            &format!("{}.acc", c.name),
            &[&xq, &w, &xz],
            conv_attrs(c),
        );
        Self::rescale(
            g,
            &acc,
            &xs,
            &c.name,
            &wq,
            &c.bias,
            &channel_dims(c.out_channels),
            out,
        )
    }
}
