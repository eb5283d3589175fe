//! Lowering the layers: `Conv`, `MatMul` and `Gemm` in f32, or in int8 when fed a
//! `DequantizeLinear` of int8 values with `DequantizeLinear`d int8 weights (QDQ); and the
//! integer operators `ConvInteger`, `MatMulInteger`, `QLinearConv`, `QLinearMatMul`. Every
//! one becomes a [`Conv`] step: a dense layer is a 1x1 convolution over one pixel per row.

use std::sync::Arc;

use super::{corrupt, Builder, Node, Val};
use crate::engine::ir::{Conv, Elem, QParams, Step, Weights, Window};
use crate::engine::kernels::depthwise::{FDepthwise, QDepthwise};
use crate::engine::kernels::qgemm::{self, QPacked};
use crate::engine::kernels::requant::{Output, Requant};
use crate::engine::kernels::sgemm::{self, FPacked};
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

/// A convolution's attributes, for an input of `[c, h, w]` and weights `[o, c/g, kh, kw]`.
fn window(n: &Node, h: usize, w: usize, kh: usize, kw: usize) -> Result<Window> {
    let a = &n.attrs;
    let sizes = |name: &str, d: Vec<usize>| a.sizes(name, d).map_err(|e| n.bad(e));
    let strides = sizes("strides", vec![1, 1])?;
    let dilations = sizes("dilations", vec![1, 1])?;
    let mut pads = sizes("pads", vec![0; 4])?;
    let (&[s0, s1], &[d0, d1], 4) = (&strides[..], &dilations[..], pads.len()) else {
        return Err(n.bad("only 2-D convolutions"));
    };
    if s0 == 0 || s1 == 0 || d0 == 0 || d1 == 0 {
        return Err(corrupt(format!(
            "node `{}`: zero stride or dilation",
            n.node.name
        )));
    }
    match a.string("auto_pad", "NOTSET").as_str() {
        "NOTSET" | "VALID" => {}
        same @ ("SAME_UPPER" | "SAME_LOWER") => {
            for (i, (size, k, s, d)) in [(h, kh, s0, d0), (w, kw, s1, d1)].into_iter().enumerate() {
                let out = size.div_ceil(s);
                let total = ((out - 1) * s + (k - 1) * d + 1).saturating_sub(size);
                let (small, big) = (total / 2, total - total / 2);
                (pads[i], pads[i + 2]) = if same == "SAME_UPPER" {
                    (small, big)
                } else {
                    (big, small)
                };
            }
        }
        other => return Err(n.bad(format!("auto_pad {other}"))),
    }
    let window = Window {
        kernel: [kh, kw],
        strides: [s0, s1],
        pads: [pads[0], pads[1], pads[2], pads[3]],
        dilations: [d0, d1],
    };
    // Padding past the kernel's reach only adds outputs that see no input (a crafted file
    // used it to turn a 6x53 image into 200 million outputs).
    let (span_h, span_w) = ((kh - 1) * d0 + 1, (kw - 1) * d1 + 1);
    if pads[0].max(pads[2]) >= span_h || pads[1].max(pads[3]) >= span_w {
        return Err(n.bad(format!("pads {pads:?} reach past a {kh}x{kw} kernel")));
    }
    Ok(window)
}

/// The layer's int8 input: the int8 value behind a dequantized input (with static
/// parameters), when there is one.
fn int8_input(b: &Builder, name: &str) -> Option<usize> {
    match b.env.get(name) {
        Some(Val::Dequantized(q)) => b.qparams(*q).map(|_| *q),
        _ => None,
    }
}

/// Weights `[o][tap][ci]` (row-major `[o, cin, kh, kw]` for a convolution) as int8 in the
/// signed domain, from int8 or uint8 values and per-channel zero points; None when a value
/// minus its zero point leaves int8.
fn signed_weights(
    values: &Tensor,
    zp: impl Fn(usize) -> i64,
    per_channel: usize,
) -> Option<Vec<i8>> {
    let v = values.to_i64().ok()?;
    v.iter()
        .enumerate()
        .map(|(i, &x)| i8::try_from(x - zp(i / per_channel)).ok())
        .collect()
}

/// Packs `[o, cin/g, kh, kw]` weights for `groups` groups: depthwise when every group has one
/// input and one output channel, else one GEMM whose columns are the groups' output channels,
/// each group starting a new panel (so a panel never spans two groups).
fn pack_q(o: usize, cg: usize, taps: usize, groups: usize, w: &[i8]) -> Weights {
    let at = |oc: usize, ci: usize, t: usize| w[(oc * cg + ci) * taps + t];
    if groups > 1 && cg == 1 && o == groups {
        return Weights::QDepthwise(QDepthwise::pack(o, taps, |ch, t| at(ch, 0, t)));
    }
    let og = o / groups;
    let padded = og.div_ceil(qgemm::NR) * qgemm::NR;
    Weights::Q(QPacked::pack(groups * padded, taps, cg, |col, t, ci| {
        let (g, l) = (col / padded, col % padded);
        if l < og {
            at(g * og + l, ci, t)
        } else {
            0
        }
    }))
}

fn pack_f(o: usize, cg: usize, taps: usize, groups: usize, w: &[f32]) -> Weights {
    let at = |oc: usize, ci: usize, t: usize| w[(oc * cg + ci) * taps + t];
    if groups > 1 && cg == 1 && o == groups {
        return Weights::FDepthwise(FDepthwise::pack(o, taps, |ch, t| at(ch, 0, t)));
    }
    let og = o / groups;
    let padded = og.div_ceil(sgemm::NR) * sgemm::NR;
    Weights::F(FPacked::pack(groups * padded, taps, cg, |col, t, ci| {
        let (g, l) = (col / padded, col % padded);
        if l < og {
            at(g * og + l, ci, t)
        } else {
            0.0
        }
    }))
}

/// Per-output-channel sums of int8 weights (for the input zero point's correction), for `o`
/// outputs in `groups` groups.
fn weight_sums(w: &Weights, o: usize, groups: usize) -> Vec<i32> {
    match w {
        Weights::Q(p) => {
            let og = o / groups;
            let padded = og.div_ceil(qgemm::NR) * qgemm::NR;
            (0..o)
                .map(|oc| p.col_sums[(oc / og) * padded + oc % og])
                .collect()
        }
        Weights::QDepthwise(d) => d.sums.clone(),
        _ => vec![],
    }
}

/// Packs (or finds packed) weights under `key`.
fn cached(b: &Builder, key: String, pack: impl FnOnce() -> Weights) -> Arc<Weights> {
    let mut cache = b.cache.lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(key).or_insert_with(|| Arc::new(pack())).clone()
}

/// What a layer is, after its operator's attributes are read.
struct Layer {
    /// Input value (NHWC for images, rows for dense layers).
    x: usize,
    out_shape: Vec<usize>,
    nhwc: bool,
    window: Window,
    groups: usize,
    weights: Arc<Weights>,
    requant: Requant,
    input_zp: i32,
    out_elem: Elem,
}

fn emit<'g>(b: &mut Builder<'g>, n: &Node<'g>, l: Layer) {
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

fn f32_out(n: usize, add: Vec<f32>) -> Requant {
    Requant {
        bias: vec![0; n],
        mult: vec![1.0; n],
        add,
        out: Output::F32 {
            lo: f32::NEG_INFINITY,
            hi: f32::INFINITY,
        },
    }
}

/// The int32 epilogue of an int8 layer with input zero point `za`: `acc - za · Σw`.
fn int_requant(sums: &[i32], za: i32) -> Requant {
    let n = sums.len();
    Requant {
        bias: sums.iter().map(|&s| -za * s).collect(),
        mult: vec![1.0; n],
        add: vec![0.0; n],
        out: Output::I32,
    }
}

/// The shape and window of a convolution of `x` by weights `[o, cg, kh, kw]`.
fn conv_geometry<'g>(
    b: &mut Builder<'g>,
    n: &Node<'g>,
    x: usize,
    wshape: &[usize],
) -> Result<(usize, Window, usize, Vec<usize>)> {
    let [o, cg, kh, kw] = wshape[..] else {
        return Err(n.bad("only 2-D convolutions"));
    };
    let act = b.acts[x].clone();
    if act.shape.len() != 4 {
        return Err(n.bad(format!("input of rank {}", act.shape.len())));
    }
    let [batch, c, h, w] = act.nchw();
    if cg == 0 || kh == 0 || kw == 0 || c == 0 {
        return Err(corrupt(format!(
            "node `{}`: empty convolution",
            n.node.name
        )));
    }
    let groups = usize::try_from(n.attrs.int("group", 1)).unwrap_or(0);
    if groups == 0 || c != cg * groups || o % groups != 0 {
        return Err(corrupt(format!(
            "node `{}`: weights {wshape:?} with {groups} groups do not fit {c} input channels",
            n.node.name
        )));
    }
    let win = window(n, h, w, kh, kw)?;
    let (oh, ow) = win.output(h, w, false).ok_or_else(|| {
        corrupt(format!(
            "node `{}`: the kernel does not fit the {h}x{w} input",
            n.node.name
        ))
    })?;
    if oh == 0 || ow == 0 || h == 0 || w == 0 {
        return Err(corrupt(format!(
            "node `{}`: convolution over an empty image",
            n.node.name
        )));
    }
    let x = b.layout(x, true);
    Ok((x, win, groups, vec![batch, o, oh, ow]))
}

/// `Conv`: f32, or int8 between `DequantizeLinear`s.
pub(super) fn conv<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let (xn, wn, bn) = (n.input(0), n.input(1), n.input(2));
    let w = b
        .constant(wn)
        .ok_or_else(|| n.bad("weights must be constant"))?;
    let quantized = int8_input(b, xn).zip(b.quant_consts.get(wn).cloned());
    if let Some((q, wq)) = quantized {
        if let Some(()) = qdq_conv(b, n, q, &wq, bn)? {
            return Ok(());
        }
    }
    let x = b.f32_act(n, xn)?.ok_or_else(|| n.bad("constant input"))?;
    let wv = w.as_f32().map_err(|e| n.bad(e))?.to_vec();
    let (x, window, groups, out_shape) = conv_geometry(b, n, x, &w.shape)?;
    let o = w.shape[0];
    let bias = match bn {
        "" => vec![0.0; o],
        name => b
            .constant(name)
            .ok_or_else(|| n.bad("bias must be constant"))?
            .to_f32(),
    };
    if bias.len() != o {
        return Err(corrupt(format!(
            "node `{}`: {} biases for {o} filters",
            n.node.name,
            bias.len()
        )));
    }
    let (cg, taps) = (w.shape[1], window.taps());
    let weights = cached(b, format!("f:{wn}:{groups}"), || {
        pack_f(o, cg, taps, groups, &wv)
    });
    let requant = f32_out(o, bias);
    emit(
        b,
        n,
        Layer {
            x,
            out_shape,
            nhwc: true,
            window,
            groups,
            weights,
            requant,
            input_zp: 0,
            out_elem: Elem::F32,
        },
    );
    Ok(())
}

/// The int8 form of a QDQ `Conv`: None when the weights do not fit int8 after their zero
/// points (the f32 form runs instead).
fn qdq_conv<'g>(
    b: &mut Builder<'g>,
    n: &Node<'g>,
    q: usize,
    wq: &QuantConst,
    bn: &str,
) -> Result<Option<()>> {
    let shape = wq.values.shape.clone();
    if shape.len() != 4 || (wq.scales.len() != 1 && wq.axis != 0) {
        return Ok(None);
    }
    let o = shape[0];
    let per = shape[1..].iter().product::<usize>();
    let Some(wv) = signed_weights(&wq.values, |oc| wq.at(oc).1, per) else {
        return Ok(None);
    };
    let xq = b.qparams(q).expect("int8_input checked");
    let (x, window, groups, out_shape) = conv_geometry(b, n, q, &shape)?;
    let weights = cached(b, format!("q:{}:{groups}", n.input(1)), || {
        pack_q(o, shape[1], window.taps(), groups, &wv)
    });
    let mut requant = int_requant(&weight_sums(&weights, o, groups), xq.zp);
    apply_bias(b, n, bn, xq.scale, &|oc| wq.at(oc).0, &mut requant)?;
    emit(
        b,
        n,
        Layer {
            x,
            out_shape,
            nhwc: true,
            window,
            groups,
            weights,
            requant,
            input_zp: xq.zp,
            out_elem: Elem::F32,
        },
    );
    Ok(Some(()))
}

/// Scales an int8 layer's sums to f32 (`x_scale · w_scale[o]`) and adds its bias: int32 at
/// that scale (QDQ biases) into the sums, an f32 one after the scaling.
fn apply_bias(
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

/// `ConvInteger(x, w, x_zp, w_zp)`: int32 out (the following `Add`/`Cast`/`Mul` fold in).
pub(super) fn conv_integer<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let w = b
        .constant(n.input(1))
        .ok_or_else(|| n.bad("weights must be constant"))?;
    if w.shape.len() != 4 {
        return Err(n.bad("only 2-D convolution"));
    }
    let Val::Act(x) = b.value(n, n.input(0))? else {
        return Err(n.bad("int8 input must be computed"));
    };
    let za = input_zero_point(b, n, x, n.input(2))?;
    let o = w.shape[0];
    let per = w.shape[1..].iter().product::<usize>();
    let wzp = zero_points(b, n, n.input(3), o)?;
    let wv = signed_weights(&w, |oc| wzp(oc), per)
        .ok_or_else(|| n.bad("weights minus their zero point leave int8"))?;
    let (x, window, groups, out_shape) = conv_geometry(b, n, x, &w.shape)?;
    let weights = cached(b, format!("q:{}:{groups}", n.input(1)), || {
        pack_q(o, w.shape[1], window.taps(), groups, &wv)
    });
    let requant = int_requant(&weight_sums(&weights, o, groups), za);
    emit(
        b,
        n,
        Layer {
            x,
            out_shape,
            nhwc: true,
            window,
            groups,
            weights,
            requant,
            input_zp: za,
            out_elem: Elem::I32,
        },
    );
    Ok(())
}

/// The input zero point in the signed domain: the int8 value's own (a given zero point
/// input must agree with it), 0 for a dynamic one (corrected at run time).
fn input_zero_point(b: &Builder, n: &Node, x: usize, given: &str) -> Result<i32> {
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
fn zero_points(b: &Builder, n: &Node, name: &str, o: usize) -> Result<impl Fn(usize) -> i64> {
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

/// `QLinearConv`: int8 in, int8 out.
pub(super) fn qlinear_conv<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let Val::Act(x) = b.value(n, n.input(0))? else {
        return Err(n.bad("int8 input must be computed"));
    };
    let scalar = |name: &str| b.constant(name).and_then(|t| t.to_f32().first().copied());
    let xs = scalar(n.input(1)).ok_or_else(|| n.bad("constant input scale"))?;
    let za = input_zero_point(b, n, x, n.input(2))?;
    if b.qparams(x)
        .is_none_or(|q| (q.scale - xs).abs() > 1e-6 * xs.abs())
    {
        return Err(n.bad("an input scale other than the value's own"));
    }
    let w = b
        .constant(n.input(3))
        .ok_or_else(|| n.bad("weights must be constant"))?;
    let ws = b
        .constant(n.input(4))
        .ok_or_else(|| n.bad("weight scales must be constant"))?
        .to_f32();
    if w.shape.len() != 4 {
        return Err(n.bad("only 2-D convolution"));
    }
    let o = w.shape[0];
    let wzp = zero_points(b, n, n.input(5), o)?;
    let per = w.shape[1..].iter().product::<usize>();
    let wv = signed_weights(&w, |oc| wzp(oc), per)
        .ok_or_else(|| n.bad("weights minus their zero point leave int8"))?;
    let out = output_params(b, n, n.input(6), n.input(7))?;
    let (x, window, groups, out_shape) = conv_geometry(b, n, x, &w.shape)?;
    let weights = cached(b, format!("q:{}:{groups}", n.input(3)), || {
        pack_q(o, w.shape[1], window.taps(), groups, &wv)
    });
    let mut requant = int_requant(&weight_sums(&weights, o, groups), za);
    let wscale = |oc: usize| if ws.len() == 1 { ws[0] } else { ws[oc] };
    requant.mult = (0..o).map(|oc| xs * wscale(oc) / out.scale).collect();
    if !n.input(8).is_empty() {
        let bias = b
            .constant(n.input(8))
            .ok_or_else(|| n.bad("bias must be constant"))?
            .to_i64()
            .map_err(|e| n.bad(e))?;
        for oc in 0..o {
            requant.bias[oc] += bias[oc] as i32;
        }
    }
    requant.out = Output::Q8 {
        zp: out.zp,
        lo: -128,
        hi: 127,
    };
    emit(
        b,
        n,
        Layer {
            x,
            out_shape,
            nhwc: true,
            window,
            groups,
            weights,
            requant,
            input_zp: za,
            out_elem: Elem::Q8(out),
        },
    );
    Ok(())
}

/// Output scale and zero point of a `QLinear*` node (signed domain).
fn output_params(b: &Builder, n: &Node, scale: &str, zp: &str) -> Result<QParams> {
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

/// A dense layer's input as rows: its value, the row count and the features per row.
fn rows<'g>(b: &mut Builder<'g>, x: usize) -> (usize, Vec<usize>) {
    let x = b.layout(x, false);
    (x, b.acts[x].shape.clone())
}

/// Emits a dense layer `x · W` (`w(o, k)`) as a 1x1 convolution over the rows of `x`.
#[allow(clippy::too_many_arguments)]
fn dense<'g>(
    b: &mut Builder<'g>,
    n: &Node<'g>,
    x: usize,
    k: usize,
    o: usize,
    weights: Arc<Weights>,
    requant: Requant,
    input_zp: i32,
    out_elem: Elem,
) -> Result<()> {
    let (x, shape) = rows(b, x);
    if shape.last() != Some(&k) {
        return Err(corrupt(format!(
            "node `{}`: input {shape:?} does not end in {k} features",
            n.node.name
        )));
    }
    let mut out_shape = shape[..shape.len() - 1].to_vec();
    out_shape.push(o);
    let window = Window {
        kernel: [1, 1],
        strides: [1, 1],
        pads: [0; 4],
        dilations: [1, 1],
    };
    emit(
        b,
        n,
        Layer {
            x,
            out_shape,
            nhwc: false,
            window,
            groups: 1,
            weights,
            requant,
            input_zp,
            out_elem,
        },
    );
    Ok(())
}

/// `MatMul` by a constant `[K, N]`: f32, or int8 between `DequantizeLinear`s.
pub(super) fn matmul<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    gemm_like(b, n, false, 1.0, None)
}

/// `Gemm(A, B, C)` with constant B: `alpha · A · B' + beta · C`.
pub(super) fn gemm<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    if n.attrs.int("transA", 0) != 0 {
        return Err(n.bad("transA"));
    }
    let beta = n.attrs.float("beta", 1.0);
    gemm_like(
        b,
        n,
        n.attrs.int("transB", 0) != 0,
        n.attrs.float("alpha", 1.0),
        Some(beta),
    )
}

fn gemm_like<'g>(
    b: &mut Builder<'g>,
    n: &Node<'g>,
    trans_b: bool,
    alpha: f32,
    beta: Option<f32>,
) -> Result<()> {
    let (xn, wn) = (n.input(0), n.input(1));
    let w = b
        .constant(wn)
        .ok_or_else(|| n.bad("weights must be constant"))?;
    let [r, c] = w.shape[..] else {
        return Err(n.bad("weights of rank other than 2"));
    };
    let (k, o) = if trans_b { (c, r) } else { (r, c) };
    // w[k][o] at position k * o_stride...
    let idx = move |oc: usize, kk: usize| if trans_b { oc * c + kk } else { kk * c + oc };
    let bias_name = if beta.is_some() { n.input(2) } else { "" };
    let quantized = int8_input(b, xn).zip(b.quant_consts.get(wn).cloned());
    if let Some((q, wq)) = quantized.filter(|_| alpha == 1.0 && beta.unwrap_or(1.0) == 1.0) {
        let axis = if trans_b { 0 } else { 1 };
        if wq.scales.len() == 1 || wq.axis == axis {
            let vals = wq.values.to_i64().map_err(|e| n.bad(e))?;
            let signed: Option<Vec<i8>> = (0..o * k)
                .map(|i| {
                    let (oc, kk) = (i / k, i % k);
                    i8::try_from(vals[idx(oc, kk)] - wq.at(oc).1).ok()
                })
                .collect();
            if let Some(sv) = signed {
                let xq = b.qparams(q).expect("int8_input checked");
                let weights = cached(b, format!("q:{wn}:{trans_b}"), || {
                    Weights::Q(QPacked::pack(o, 1, k, |oc, _, kk| sv[oc * k + kk]))
                });
                let mut requant = int_requant(&weight_sums(&weights, o, 1), xq.zp);
                apply_bias(b, n, bias_name, xq.scale, &|oc| wq.at(oc).0, &mut requant)?;
                return dense(b, n, q, k, o, weights, requant, xq.zp, Elem::F32);
            }
        }
    }
    let x = b.f32_act(n, xn)?.ok_or_else(|| n.bad("constant input"))?;
    let wv = w.to_f32();
    let weights = cached(b, format!("f:{wn}:{trans_b}:{alpha}"), || {
        Weights::F(FPacked::pack(o, 1, k, |oc, _, kk| alpha * wv[idx(oc, kk)]))
    });
    let mut add = vec![0.0; o];
    if !bias_name.is_empty() {
        let bias = b
            .constant(bias_name)
            .ok_or_else(|| n.bad("bias must be constant"))?;
        let bv = bias.to_f32();
        match bv.len() {
            1 => add.iter_mut().for_each(|a| *a = bv[0]),
            l if l == o => add.copy_from_slice(&bv),
            _ => return Err(n.bad(format!("bias of shape {:?}", bias.shape))),
        }
        let beta = beta.unwrap_or(1.0);
        add.iter_mut().for_each(|a| *a *= beta);
    }
    dense(b, n, x, k, o, weights, f32_out(o, add), 0, Elem::F32)
}

/// `MatMulInteger(a, b, a_zp, b_zp)`: int32 out.
pub(super) fn matmul_integer<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let w = b
        .constant(n.input(1))
        .ok_or_else(|| n.bad("weights must be constant"))?;
    let Val::Act(x) = b.value(n, n.input(0))? else {
        return Err(n.bad("int8 input must be computed"));
    };
    let za = input_zero_point(b, n, x, n.input(2))?;
    let [k, o] = w.shape[..] else {
        return Err(n.bad("weights of rank other than 2"));
    };
    let wzp = zero_points(b, n, n.input(3), o)?;
    let vals = w.to_i64().map_err(|e| n.bad(e))?;
    let sv: Vec<i8> = (0..o * k)
        .map(|i| {
            i8::try_from(vals[(i % k) * o + i / k] - wzp(i / k))
                .map_err(|_| n.bad("weights minus their zero point leave int8"))
        })
        .collect::<Result<_>>()?;
    let weights = cached(b, format!("q:{}:mm", n.input(1)), || {
        Weights::Q(QPacked::pack(o, 1, k, |oc, _, kk| sv[oc * k + kk]))
    });
    let requant = int_requant(&weight_sums(&weights, o, 1), za);
    dense(b, n, x, k, o, weights, requant, za, Elem::I32)
}

/// `QLinearMatMul`: int8 in, int8 out.
pub(super) fn qlinear_matmul<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let Val::Act(x) = b.value(n, n.input(0))? else {
        return Err(n.bad("int8 input must be computed"));
    };
    let xs = b
        .constant(n.input(1))
        .and_then(|t| t.to_f32().first().copied())
        .ok_or_else(|| n.bad("constant input scale"))?;
    let za = input_zero_point(b, n, x, n.input(2))?;
    let w = b
        .constant(n.input(3))
        .ok_or_else(|| n.bad("weights must be constant"))?;
    let ws = b
        .constant(n.input(4))
        .ok_or_else(|| n.bad("weight scales must be constant"))?
        .to_f32();
    let [k, o] = w.shape[..] else {
        return Err(n.bad("weights of rank other than 2"));
    };
    let wzp = zero_points(b, n, n.input(5), o)?;
    let vals = w.to_i64().map_err(|e| n.bad(e))?;
    let sv: Vec<i8> = (0..o * k)
        .map(|i| {
            i8::try_from(vals[(i % k) * o + i / k] - wzp(i / k))
                .map_err(|_| n.bad("weights minus their zero point leave int8"))
        })
        .collect::<Result<_>>()?;
    let out = output_params(b, n, n.input(6), n.input(7))?;
    let weights = cached(b, format!("q:{}:mm", n.input(3)), || {
        Weights::Q(QPacked::pack(o, 1, k, |oc, _, kk| sv[oc * k + kk]))
    });
    let mut requant = int_requant(&weight_sums(&weights, o, 1), za);
    requant.mult = (0..o)
        .map(|oc| xs * (if ws.len() == 1 { ws[0] } else { ws[oc] }) / out.scale)
        .collect();
    requant.out = Output::Q8 {
        zp: out.zp,
        lo: -128,
        hi: 127,
    };
    dense(b, n, x, k, o, weights, requant, za, Elem::Q8(out))
}
