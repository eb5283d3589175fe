//! Lowering dense layers: `MatMul` and `Gemm` in f32 or QDQ int8, `MatMulInteger` and
//! `QLinearMatMul`, each as a 1x1 convolution over the rows of its input.

use std::sync::Arc;

use super::layers::{
    apply_bias, emit, f32_out, input_zero_point, int8_input, int_requant, output_params,
    zero_points, Layer,
};
use super::weights::{cached, weight_sums};
use super::{corrupt, Builder, Node, Val};
use crate::engine::ir::{Elem, Weights, Window};
use crate::engine::kernels::qgemm::QPacked;
use crate::engine::kernels::requant::{Output, Requant};
use crate::engine::kernels::sgemm::FPacked;
use crate::engine::tensor::Tensor;
use crate::error::Result;

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
    let x = b.f32_act(n, xn)?;
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
    let (k, o, sv) = integer_weights(b, n, &w, n.input(3))?;
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
    let (k, o, sv) = integer_weights(b, n, &w, n.input(5))?;
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

/// Integer weights `[K, N]` with their zero points (input `zp`) as `[N][K]` int8 in the
/// signed domain, with K and N.
fn integer_weights(b: &Builder, n: &Node, w: &Tensor, zp: &str) -> Result<(usize, usize, Vec<i8>)> {
    let [k, o] = w.shape[..] else {
        return Err(n.bad("weights of rank other than 2"));
    };
    let wzp = zero_points(b, n, zp, o)?;
    let vals = w.to_i64().map_err(|e| n.bad(e))?;
    let sv = (0..o * k)
        .map(|i| {
            i8::try_from(vals[(i % k) * o + i / k] - wzp(i / k))
                .map_err(|_| n.bad("weights minus their zero point leave int8"))
        })
        .collect::<Result<_>>()?;
    Ok((k, o, sv))
}
