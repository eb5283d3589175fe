//! What every layer lowering shares: the [`Layer`] a lowering fills in and emits as one
//! [`Conv`] step (a dense layer is a 1x1 convolution over one pixel per row), its epilogues,
//! and the zero points and scales of int8 operands. The lowerings themselves are in
//! [`super::conv`] and [`super::dense`], weight packing in [`super::weights`].

use std::sync::Arc;

use super::{corrupt, Builder, Node, Val};
use crate::engine::ir::{Conv, Elem, QParams, Step, Weights, Window};
use crate::engine::kernels::requant::{Output, Requant};
use crate::engine::tensor::{Data, Tensor};
use crate::error::Result;

/// Constant int8 values with their scale and zero point, per tensor or along an axis: what a
/// `DequantizeLinear` of an initializer (QDQ weights and biases) was.
#[derive(Debug, Clone)]
pub(crate) struct QuantConst {
    /// The integer values (int8, uint8 or int32).
    pub values: Arc<Tensor>,
    /// One scale, or one per index of `axis`.
    pub scales: Vec<f32>,
    /// Zero points (empty: zero), like `scales`.
    pub zps: Vec<i64>,
    pub axis: usize,
}

impl QuantConst {
    /// Scale and zero point of index `i` along the axis.
    pub(super) fn at(&self, i: usize) -> (f32, i64) {
        let pick = |n: usize| if n == 1 { 0 } else { i };
        (
            self.scales[pick(self.scales.len())],
            self.zps.get(pick(self.zps.len())).copied().unwrap_or(0),
        )
    }
}

/// The layer's int8 input: the int8 value behind a dequantized input (with static
/// parameters), when there is one.
pub(super) fn int8_input(b: &Builder, name: &str) -> Option<usize> {
    match b.env.get(name) {
        Some(Val::Dequantized(q)) => b.qparams(*q).map(|_| *q),
        _ => None,
    }
}

/// What a layer is, after its operator's attributes are read.
pub(super) struct Layer {
    /// Input value (NHWC for images, rows for dense layers).
    pub x: usize,
    pub out_shape: Vec<usize>,
    pub nhwc: bool,
    pub window: Window,
    pub groups: usize,
    pub weights: Arc<Weights>,
    pub requant: Requant,
    pub input_zp: i32,
    pub out_elem: Elem,
}

pub(super) fn emit<'g>(b: &mut Builder<'g>, n: &Node<'g>, l: Layer) {
    let y = b.act(l.out_shape, l.out_elem, l.nhwc);
    b.step(Step::Conv(Conv {
        x: l.x,
        y,
        window: l.window,
        groups: l.groups,
        weights: l.weights,
        requant: l.requant,
        input_zp: l.input_zp,
        residual: None,
    }));
    b.bind(n.output(), Val::Act(y));
}

pub(super) fn f32_out(n: usize, add: Vec<f32>) -> Requant {
    Requant {
        bias: vec![0; n],
        mult: vec![1.0; n],
        add,
        div: 1.0,
        float_ops: false,
        out: Output::F32 {
            lo: f32::NEG_INFINITY,
            hi: f32::INFINITY,
        },
    }
}

/// The int32 epilogue of an int8 layer with input zero point `za`: `acc - za · Σw`.
pub(super) fn int_requant(sums: &[i32], za: i32) -> Requant {
    let n = sums.len();
    Requant {
        bias: sums.iter().map(|&s| -za * s).collect(),
        mult: vec![1.0; n],
        add: vec![0.0; n],
        div: 1.0,
        float_ops: false,
        out: Output::I32,
    }
}

/// Scales an int8 layer's sums to f32 (`x_scale · w_scale[o]`) and adds its bias: int32 at
/// that scale (QDQ biases) into the sums, an f32 one after the scaling.
pub(super) fn apply_bias(
    b: &Builder,
    n: &Node,
    bn: &str,
    x_scale: f32,
    w_scale: &dyn Fn(usize) -> f32,
    r: &mut Requant,
) -> Result<()> {
    let o = r.bias.len();
    r.mult = (0..o).map(|oc| x_scale * w_scale(oc)).collect();
    r.out = Output::F32 {
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    };
    if bn.is_empty() {
        return Ok(());
    }
    match b.quant_consts.get(bn) {
        Some(bq) if matches!(bq.values.data, Data::I32(_)) => {
            // Kept as integers only when their scale is the accumulator's (it always is in
            // quantizers' output); otherwise added in float below.
            let v = bq.values.to_i64().map_err(|e| n.bad(e))?;
            let exact = (0..o).all(|oc| {
                let (s, z) = bq.at(oc);
                z == 0 && (s - r.mult[oc]).abs() <= 1e-6 * s.abs().max(1e-30)
            });
            if exact && v.len() == o {
                for oc in 0..o {
                    r.bias[oc] += v[oc] as i32;
                }
                return Ok(());
            }
        }
        _ => {}
    }
    let bias = b
        .constant(bn)
        .ok_or_else(|| n.bad("bias must be constant"))?
        .to_f32();
    if bias.len() != o {
        return Err(corrupt(format!(
            "node `{}`: {} biases for {o} outputs",
            n.node.name,
            bias.len()
        )));
    }
    r.add = bias;
    Ok(())
}

/// The input zero point in the signed domain: the int8 value's own (a given zero point
/// input must agree with it), 0 for a dynamic one (corrected at run time).
pub(super) fn input_zero_point(b: &Builder, n: &Node, x: usize, given: &str) -> Result<i32> {
    match b.acts[x].elem {
        Elem::Q8(q) => {
            if !given.is_empty() {
                if let Some(z) = b.constant(given) {
                    let shift = if matches!(z.data, Data::U8(_)) {
                        128
                    } else {
                        0
                    };
                    let v = z.to_i64().map_err(|e| n.bad(e))?;
                    if v.len() != 1 || v[0] - shift != q.zp as i64 {
                        return Err(n.bad("an input zero point other than the value's own"));
                    }
                }
            }
            Ok(q.zp)
        }
        Elem::Q8Dynamic { .. } => Ok(0),
        _ => Err(n.bad("the input is not int8")),
    }
}

/// Weight zero points: one, or one per output channel, as a function of the channel.
pub(super) fn zero_points(
    b: &Builder,
    n: &Node,
    name: &str,
    o: usize,
) -> Result<impl Fn(usize) -> i64> {
    let v = match name {
        "" => vec![0],
        z => b
            .constant(z)
            .ok_or_else(|| n.bad("weight zero point must be constant"))?
            .to_i64()
            .map_err(|e| n.bad(e))?,
    };
    if v.len() != 1 && v.len() != o {
        return Err(corrupt(format!(
            "node `{}`: {} weight zero points for {o} outputs",
            n.node.name,
            v.len()
        )));
    }
    Ok(move |oc: usize| if v.len() == 1 { v[0] } else { v[oc] })
}

/// Output scale and zero point of a `QLinear*` node (signed domain).
pub(super) fn output_params(b: &Builder, n: &Node, scale: &str, zp: &str) -> Result<QParams> {
    let s = b
        .constant(scale)
        .and_then(|t| t.to_f32().first().copied())
        .ok_or_else(|| n.bad("constant output scale"))?;
    let z = b
        .constant(zp)
        .ok_or_else(|| n.bad("constant output zero point"))?;
    let shift = if matches!(z.data, Data::U8(_)) {
        128
    } else {
        0
    };
    let v = z.to_i64().map_err(|e| n.bad(e))?;
    Ok(QParams {
        scale: s,
        zp: (v[0] - shift) as i32,
        unsigned: shift != 0,
    })
}
