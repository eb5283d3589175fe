//! Lowering quantization: `QuantizeLinear` folded into the step that writes its input (the
//! step then writes int8), `DequantizeLinear` of a run-time value kept as the int8 value
//! (layers read it as int8) and of a constant kept both ways (QDQ weights and biases), and
//! `DynamicQuantizeLinear`.

use std::sync::Arc;

use super::layers::QuantConst;
use super::{corrupt, Builder, Node, Val};
use crate::engine::ir::{Elem, PoolKind, QParams, Step, Weights};
use crate::engine::kernels::requant::{quantize, Output};
use crate::engine::tensor::{Data, Tensor};
use crate::error::Result;

/// A constant scalar input (`""`: absent).
pub(super) fn scalar(b: &Builder, n: &Node, name: &str) -> Result<Option<f32>> {
    if name.is_empty() {
        return Ok(None);
    }
    let t = b
        .constant(name)
        .ok_or_else(|| n.bad(format!("`{name}` must be constant")))?;
    match t.to_f32()[..] {
        [v] => Ok(Some(v)),
        _ => Err(n.bad(format!(
            "`{name}` must hold one value (per-tensor quantization)"
        ))),
    }
}

/// Per-tensor parameters of a `QuantizeLinear`/`DequantizeLinear` of a run-time value.
fn act_params(b: &Builder, n: &Node) -> Result<QParams> {
    let scale = scalar(b, n, n.input(1))?.ok_or_else(|| n.bad("a scale is required"))?;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(corrupt(format!("node `{}`: scale {scale}", n.node.name)));
    }
    let (zp, unsigned) = match n.input(2) {
        "" => (0, true),
        z => {
            let t = b
                .constant(z)
                .ok_or_else(|| n.bad("the zero point must be constant"))?;
            let unsigned = match t.data {
                Data::U8(_) => true,
                Data::I8(_) => false,
                _ => return Err(n.bad(format!("{} zero point", t.type_name()))),
            };
            match t.to_i64().map_err(|e| n.bad(e))?[..] {
                [v] => (v as i32, unsigned),
                _ => return Err(n.bad("one zero point (per-tensor quantization)")),
            }
        }
    };
    Ok(QParams {
        scale,
        zp: if unsigned { zp - 128 } else { zp },
        unsigned,
    })
}

/// The int8 clamp bounds of an f32 clamp `[lo, hi]` quantized with `q`.
fn q_bounds(lo: f32, hi: f32, q: QParams) -> (i32, i32) {
    let lo = if lo == f32::NEG_INFINITY {
        -128
    } else {
        quantize(lo / q.scale, q.zp, -128, 127) as i32
    };
    let hi = if hi == f32::INFINITY {
        127
    } else {
        quantize(hi / q.scale, q.zp, -128, 127) as i32
    };
    (lo, hi.max(lo))
}

pub(super) fn quantize_linear<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let xn = n.input(0);
    if let Some(t) = b.constant(xn) {
        return quantize_constant(b, n, &t);
    }
    let q = act_params(b, n)?;
    let a = match b.value(n, xn)? {
        // Quantizing a value just dequantized with the same parameters gives it back.
        Val::Dequantized(q0) if b.qparams(q0) == Some(q) => {
            b.bind(n.output(), Val::Act(q0));
            return Ok(());
        }
        Val::Dequantized(q0) => b.dequantize(q0),
        Val::Act(a) if b.acts[a].elem == Elem::F32 => a,
        Val::Act(_) => return Err(n.bad("the input is not f32")),
        Val::Const(_) => unreachable!("constants handled above"),
    };
    if let Some(s) = b.sole_producer(a) {
        let fused = match &mut b.steps[s] {
            // Only integer layers: their epilogue can store int8; the float kernels write f32.
            Step::Conv(c) => match c.requant.out {
                Output::F32 { lo, hi }
                    if c.residual.is_none()
                        && matches!(*c.weights, Weights::Q(_) | Weights::QDepthwise(_)) =>
                {
                    let r = &mut c.requant;
                    if r.float_ops {
                        r.div = q.scale;
                    } else {
                        r.mult.iter_mut().for_each(|m| *m /= q.scale);
                        r.add.iter_mut().for_each(|v| *v /= q.scale);
                    }
                    let (lo, hi) = q_bounds(lo, hi, q);
                    r.out = Output::Q8 { zp: q.zp, lo, hi };
                    true
                }
                _ => false,
            },
            Step::QAdd { .. } | Step::GlobalAveragePool { .. } => true,
            Step::Pool {
                kind: PoolKind::Average(_),
                ..
            } => true,
            _ => false,
        };
        if fused {
            b.acts[a].elem = Elem::Q8(q);
            b.absorbed(xn);
            b.bind(n.output(), Val::Act(a));
            return Ok(());
        }
    }
    let act = b.acts[a].clone();
    let y = b.act(act.shape, Elem::Q8(q), act.nhwc);
    b.step(Step::Quantize { x: a, y, q });
    b.bind(n.output(), Val::Act(y));
    Ok(())
}

/// `QuantizeLinear` of a constant (weights stored in f32 next to their quantization): the
/// integer tensor, so that a following `DequantizeLinear` sees quantized weights.
fn quantize_constant<'g>(b: &mut Builder<'g>, n: &Node<'g>, t: &Tensor) -> Result<()> {
    let axis_of = |rank: usize| {
        let a = n.attrs.int("axis", 1);
        (if a < 0 { a + rank as i64 } else { a }) as usize
    };
    let scales = b
        .constant(n.input(1))
        .ok_or_else(|| n.bad("constant scale"))?
        .to_f32();
    let zp = match n.input(2) {
        "" => None,
        z => Some(b.constant(z).ok_or_else(|| n.bad("constant zero point"))?),
    };
    let unsigned = zp.as_ref().is_none_or(|z| matches!(z.data, Data::U8(_)));
    let zps = zp
        .map(|z| z.to_i64())
        .transpose()
        .map_err(|e| n.bad(e))?
        .unwrap_or_default();
    let qc = QuantConst {
        values: Arc::new(t.clone()),
        scales,
        zps,
        axis: axis_of(t.shape.len()),
    };
    let per = t
        .shape
        .get(qc.axis + 1..)
        .map_or(1, |s| s.iter().product::<usize>());
    let len = t.shape.get(qc.axis).copied().unwrap_or(1);
    let (lo, hi) = if unsigned { (0, 255) } else { (-128, 127) };
    let ints: Vec<i64> = t
        .to_f32()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (s, z) = qc.at((i / per) % len.max(1));
            ((v / s).round_ties_even() as i64 + z).clamp(lo, hi)
        })
        .collect();
    let data = if unsigned {
        Data::U8(ints.iter().map(|&v| v as u8).collect())
    } else {
        Data::I8(ints.iter().map(|&v| v as i8).collect())
    };
    let q = Tensor::new(t.shape.clone(), data).map_err(corrupt)?;
    b.bind(n.output(), Val::Const(Arc::new(q)));
    Ok(())
}

pub(super) fn dequantize_linear<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let xn = n.input(0);
    if let Some(t) = b.constant(xn) {
        // Weights and biases: kept as integers for the layer that reads them, and as f32 for
        // anything else.
        let scales = b
            .constant(n.input(1))
            .ok_or_else(|| n.bad("constant scale"))?
            .to_f32();
        let zps = match n.input(2) {
            "" => vec![],
            z => b
                .constant(z)
                .ok_or_else(|| n.bad("constant zero point"))?
                .to_i64()
                .map_err(|e| n.bad(e))?,
        };
        let rank = t.shape.len();
        let a = n.attrs.int("axis", 1);
        let axis = (if a < 0 { a + rank as i64 } else { a }).max(0) as usize;
        let len = t.shape.get(axis).copied().unwrap_or(1);
        if scales.is_empty()
            || (scales.len() != 1 && scales.len() != len)
            || (zps.len() > 1 && zps.len() != scales.len())
        {
            return Err(corrupt(format!(
                "node `{}`: {} scales for {:?} along axis {axis}",
                n.node.name,
                scales.len(),
                t.shape
            )));
        }
        let qc = QuantConst {
            values: t.clone(),
            scales,
            zps,
            axis,
        };
        let per = t
            .shape
            .get(axis + 1..)
            .map_or(1, |s| s.iter().product::<usize>());
        let ints = t.to_i64().map_err(|e| n.bad(e))?;
        let vals = ints
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (s, z) = qc.at((i / per.max(1)) % len.max(1));
                (v - z) as f32 * s
            })
            .collect();
        let f = Tensor::f32(t.shape.clone(), vals).map_err(corrupt)?;
        b.quant_consts.insert(n.output(), qc);
        b.bind(n.output(), Val::Const(Arc::new(f)));
        return Ok(());
    }
    let a = match b.value(n, xn)? {
        Val::Act(a) => a,
        Val::Dequantized(_) | Val::Const(_) => return Err(n.bad("the input is not int8")),
    };
    if let Elem::Q8Dynamic { .. } = b.acts[a].elem {
        // The parameters are the ones computed with the values.
        b.bind(n.output(), Val::Dequantized(a));
        return Ok(());
    }
    let q = act_params(b, n)?;
    match b.acts[a].elem {
        Elem::Q8(own) if own == q => b.bind(n.output(), Val::Dequantized(a)),
        Elem::Q8(_) => {
            // Another interpretation of the same bytes: a copy under the stated parameters.
            let act = b.acts[a].clone();
            let y = b.act(act.shape, Elem::Q8(q), act.nhwc);
            b.step(Step::Copy { x: a, y });
            b.bind(n.output(), Val::Dequantized(y));
        }
        _ => return Err(n.bad("the input is not int8")),
    }
    Ok(())
}

pub(super) fn dynamic_quantize_linear<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let x = b.f32_act(n, n.input(0))?;
    let act = b.acts[x].clone();
    let scale = b.act(vec![], Elem::F32, false);
    let zp = b.act(vec![], Elem::I32, false);
    let y = b.act(act.shape, Elem::Q8Dynamic { scale, zp }, act.nhwc);
    b.step(Step::DynamicQuantize { x, y, scale, zp });
    let outs = &n.node.output;
    b.bind(n.output(), Val::Act(y));
    if let Some(s) = outs.get(1).filter(|s| !s.is_empty()) {
        b.bind(s, Val::Act(scale));
    }
    if let Some(z) = outs.get(2).filter(|s| !s.is_empty()) {
        b.bind(z, Val::Act(zp));
    }
    Ok(())
}
