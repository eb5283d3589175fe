//! Lowering convolutions: `Conv` in f32, or in int8 when fed a `DequantizeLinear` of int8
//! values with `DequantizeLinear`d int8 weights (QDQ); `ConvInteger` and `QLinearConv`.

use super::layers::{
    apply_bias, emit, f32_out, input_zero_point, int8_input, int_requant, output_params,
    zero_points, Layer, QuantConst,
};
use super::weights::{cached, pack_f, pack_q, signed_weights, weight_sums};
use super::{corrupt, Builder, Node, Val};
use crate::engine::ir::{Elem, Window};
use crate::engine::kernels::requant::Output;
use crate::error::Result;

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
    let x = b.f32_act(n, xn)?;
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
    let wv = signed_weights(&w, wzp, per)
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
    let wv = signed_weights(&w, wzp, per)
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
