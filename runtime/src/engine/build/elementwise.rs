//! Lowering element-wise operators: arithmetic, activations, softmax and casts. Where a node
//! only rescales, shifts or clamps the output of a step with no other reader, it is folded
//! into that step instead of becoming one; a residual `Add` folds into the layer writing one
//! side.

use std::sync::Arc;

use super::quantize::scalar;
use super::shape_rules::broadcast;
use super::{corrupt, Builder, Node, Val};
use crate::engine::ir::{ActId, Arith, Elem, Operand, Step, Unary};
use crate::engine::kernels::requant::Output;
use crate::engine::tensor::{Data, Tensor};
use crate::error::Result;
use crate::proto::data_type;

/// The per-channel vector a constant of `shape` is for a value of `out` with channels along
/// `axis`: its values (one, or one per channel), when it varies along no other axis.
fn per_channel(t: &Tensor, out: &[usize], axis: usize) -> Option<Vec<f32>> {
    if t.shape.len() > out.len() {
        return None;
    }
    let off = out.len() - t.shape.len();
    let fits = t
        .shape
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || (i + off == axis && d == out[axis]));
    fits.then(|| t.to_f32())
}

/// Folds `act op c` into the layer writing `a` (sole reader), when the layer's epilogue can
/// take it: a scale or shift of an f32 output before any clamp, an int32 bias of an int32 one.
fn fold_into_layer(b: &mut Builder, a: ActId, op: Arith, c: &Tensor, const_first: bool) -> bool {
    let Some(s) = b.sole_producer(a) else {
        return false;
    };
    let act = b.acts[a].clone();
    let axis = if act.nhwc {
        1
    } else {
        act.shape.len().saturating_sub(1)
    };
    let Step::Conv(conv) = &mut b.steps[s] else {
        return false;
    };
    if conv.residual.is_some() {
        return false;
    }
    let Some(v) = per_channel(c, &act.shape, axis) else {
        return false;
    };
    let o = conv.requant.bias.len();
    let at = |i: usize| if v.len() == 1 { v[0] } else { v[i] };
    let r = &mut conv.requant;
    match (r.out, op) {
        (Output::I32, Arith::Add) if matches!(c.data, Data::I32(_)) => {
            (0..o).for_each(|i| r.bias[i] += at(i) as i32);
            true
        }
        (Output::F32 { lo, hi }, _) if lo == f32::NEG_INFINITY && hi == f32::INFINITY => {
            // After the graph's own float operators (a Cast of the sums, or a fold before
            // this one), only folds that keep their rounding are taken: a first Mul (`x · c`
            // as `x · 1 · c`) and an Add or Sub onto `x · m` with nothing added yet. Others
            // (`(x · m1) · m2` as `x · (m1 · m2)`, ...) regroup the arithmetic, and a
            // QuantizeLinear after them could land a level off; they stay steps of their own.
            if r.float_ops {
                let (unscaled, no_add) = (
                    r.mult.iter().all(|&m| m == 1.0),
                    r.add.iter().all(|&a| a == 0.0),
                );
                let exact = match (op, const_first) {
                    (Arith::Mul, _) => unscaled && no_add,
                    (Arith::Add, _) | (Arith::Sub, false) => no_add,
                    _ => false,
                };
                if !exact {
                    return false;
                }
            }
            match (op, const_first) {
                (Arith::Add, _) => (0..o).for_each(|i| r.add[i] += at(i)),
                (Arith::Sub, false) => (0..o).for_each(|i| r.add[i] -= at(i)),
                (Arith::Sub, true) => (0..o).for_each(|i| {
                    r.mult[i] = -r.mult[i];
                    r.add[i] = at(i) - r.add[i];
                }),
                (Arith::Mul, _) => (0..o).for_each(|i| {
                    r.mult[i] *= at(i);
                    r.add[i] *= at(i);
                }),
                (Arith::Div, false) => (0..o).for_each(|i| {
                    r.mult[i] /= at(i);
                    r.add[i] /= at(i);
                }),
                _ => return false,
            }
            r.float_ops = true;
            true
        }
        _ => false,
    }
}

/// A constant as the operand of an element-wise step with a value of `shape`, laid out in that
/// value's storage order.
fn const_operand(t: &Tensor, shape: &[usize], nhwc: bool) -> Operand {
    let rank = shape.len().max(t.shape.len());
    let mut s = vec![1; rank - t.shape.len()];
    s.extend(&t.shape);
    let v = t.to_f32();
    if nhwc && rank == 4 && s[1] > 1 && s[2] * s[3] > 1 {
        let [n, c, h, w] = [s[0], s[1], s[2], s[3]];
        let mut p = vec![0.0; v.len()];
        for i in 0..n {
            for ch in 0..c {
                for y in 0..h * w {
                    p[(i * h * w + y) * c + ch] = v[(i * c + ch) * h * w + y];
                }
            }
        }
        return Operand::Const(Arc::new(p), vec![n, h, w, c]);
    }
    if nhwc && rank == 4 {
        s = vec![s[0], s[2], s[3], s[1]];
    }
    Operand::Const(Arc::new(v), s)
}

fn arith_of(op: &str) -> Arith {
    match op {
        "Add" => Arith::Add,
        "Sub" => Arith::Sub,
        "Mul" => Arith::Mul,
        "Div" => Arith::Div,
        "Max" => Arith::Max,
        _ => Arith::Min,
    }
}

pub(super) fn arithmetic<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    if n.node.input.len() != 2 {
        return Err(n.bad(format!("{} inputs", n.node.input.len())));
    }
    let op = arith_of(&n.node.op_type);
    let (an, bn) = (n.input(0), n.input(1));
    // Two int8 values of one shape added: int8 arithmetic, no f32 copies.
    if let (Arith::Add, Val::Dequantized(qa), Val::Dequantized(qb)) =
        (op, b.value(n, an)?, b.value(n, bn)?)
    {
        let (sa, sb) = (b.acts[qa].shape.clone(), b.acts[qb].shape.clone());
        if sa == sb && b.qparams(qa).is_some() && b.qparams(qb).is_some() {
            let nhwc = b.acts[qa].nhwc;
            let qb = b.layout(qb, nhwc);
            let y = b.act(sa, Elem::F32, nhwc);
            b.step(Step::QAdd {
                a: qa,
                b: qb,
                y,
                lo: f32::NEG_INFINITY,
                hi: f32::INFINITY,
            });
            b.bind(n.output(), Val::Act(y));
            return Ok(());
        }
    }
    let (ca, cb) = (b.constant(an), b.constant(bn));
    let (x, c, const_first) = match (ca, cb) {
        (None, Some(c)) => (an, Some(c), false),
        (Some(c), None) => (bn, Some(c), true),
        (None, None) => (an, None, false),
        (Some(_), Some(_)) => return Err(n.bad("constant inputs that were not folded")),
    };
    let a = b.f32_act(n, x)?;
    if let Some(c) = &c {
        if fold_into_layer(b, a, op, c, const_first) {
            b.absorbed(x);
            b.bind(n.output(), Val::Act(a));
            return Ok(());
        }
    }
    if b.acts[a].elem != Elem::F32 {
        return Err(n.bad(format!("{:?} input", b.acts[a].elem)));
    }
    let Some(c) = c else {
        let other = b.f32_act(n, bn)?;
        let (sa, so) = (b.acts[a].shape.clone(), b.acts[other].shape.clone());
        let nhwc = sa == so && b.acts[a].nhwc;
        let (a, o) = (b.layout(a, nhwc), b.layout(other, nhwc));
        let shape =
            broadcast(&sa, &so).map_err(|e| corrupt(format!("node `{}`: {e}", n.node.name)))?;
        // A residual connection: folded into the layer writing one side when it can be.
        if op == Arith::Add && nhwc && b.acts[o].elem == Elem::F32 {
            for (mine, theirs) in [(a, o), (o, a)] {
                if let Some(s) = b
                    .sole_producer(mine)
                    .filter(|&s| b.producer_before(theirs, s))
                {
                    if let Step::Conv(conv) = &mut b.steps[s] {
                        let free = matches!(conv.requant.out, Output::F32 { lo, hi } if lo == f32::NEG_INFINITY && hi == f32::INFINITY);
                        if free && conv.residual.is_none() {
                            conv.residual = Some(theirs);
                            let name = if mine == a { an } else { bn };
                            b.absorbed(name);
                            b.bind(n.output(), Val::Act(mine));
                            return Ok(());
                        }
                    }
                }
            }
        }
        let y = b.act(shape, Elem::F32, nhwc);
        b.step(Step::Binary {
            a: Operand::Act(a),
            b: Operand::Act(o),
            y,
            op,
            lo: f32::NEG_INFINITY,
            hi: f32::INFINITY,
        });
        b.bind(n.output(), Val::Act(y));
        return Ok(());
    };
    let act = b.acts[a].clone();
    let shape = broadcast(&act.shape, &c.shape)
        .map_err(|e| corrupt(format!("node `{}`: {e}", n.node.name)))?;
    let a = if shape == act.shape {
        a
    } else {
        b.layout(a, false)
    };
    let nhwc = b.acts[a].nhwc;
    let k = const_operand(&c, &shape, nhwc);
    let (l, r) = if const_first {
        (k, Operand::Act(a))
    } else {
        (Operand::Act(a), k)
    };
    let y = b.act(shape, Elem::F32, nhwc);
    b.step(Step::Binary {
        a: l,
        b: r,
        y,
        op,
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    });
    b.bind(n.output(), Val::Act(y));
    Ok(())
}

/// `clamp(x, lo, hi)`: folded into the step writing x when it clamps, else a step.
fn clamp<'g>(b: &mut Builder<'g>, n: &Node<'g>, lo: f32, hi: f32) -> Result<()> {
    let xn = n.input(0);
    let a = b.f32_act(n, xn)?;
    let tighten = |l: &mut f32, h: &mut f32| {
        let nl = l.max(lo).min(hi);
        *h = h.min(hi).max(nl);
        *l = nl;
    };
    if let Some(s) = b.sole_producer(a) {
        let fused = match &mut b.steps[s] {
            Step::Conv(c) => match &mut c.requant.out {
                Output::F32 { lo: l, hi: h } => {
                    tighten(l, h);
                    true
                }
                _ => false,
            },
            Step::QAdd { lo: l, hi: h, .. } | Step::Binary { lo: l, hi: h, .. } => {
                tighten(l, h);
                true
            }
            _ => false,
        };
        if fused {
            b.absorbed(xn);
            b.bind(n.output(), Val::Act(a));
            return Ok(());
        }
    }
    unary_step(b, n, a, Unary::Clip(lo, hi));
    Ok(())
}

fn unary_step<'g>(b: &mut Builder<'g>, n: &Node<'g>, a: ActId, op: Unary) {
    let act = b.acts[a].clone();
    let y = b.act(act.shape, Elem::F32, act.nhwc);
    b.step(Step::Unary { x: a, y, op });
    b.bind(n.output(), Val::Act(y));
}

pub(super) fn relu<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    clamp(b, n, 0.0, f32::INFINITY)
}

pub(super) fn clip<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let (lo, hi) = if b.opset < 11 {
        (
            n.attrs.float("min", f32::NEG_INFINITY),
            n.attrs.float("max", f32::INFINITY),
        )
    } else {
        (
            scalar(b, n, n.input(1))?.unwrap_or(f32::NEG_INFINITY),
            scalar(b, n, n.input(2))?.unwrap_or(f32::INFINITY),
        )
    };
    clamp(b, n, lo, hi)
}

pub(super) fn unary<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let a = b.f32_act(n, n.input(0))?;
    let op = match n.node.op_type.as_str() {
        "Sigmoid" => Unary::Sigmoid,
        "Tanh" => Unary::Tanh,
        "Exp" => Unary::Exp,
        "Neg" => Unary::Neg,
        "Abs" => Unary::Abs,
        _ => Unary::Sqrt,
    };
    unary_step(b, n, a, op);
    Ok(())
}

pub(super) fn softmax<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let a = b.f32_act(n, n.input(0))?;
    let a = b.layout(a, false);
    let shape = b.acts[a].shape.clone();
    let rank = shape.len() as i64;
    let legacy = b.opset < 13;
    let axis = n.attrs.int("axis", if legacy { 1 } else { -1 });
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..rank.max(1)).contains(&axis) {
        return Err(corrupt(format!(
            "node `{}`: axis {axis} of a rank-{rank} value",
            n.node.name
        )));
    }
    // Before opset 13 the input is viewed as rows of everything from `axis` on; since 13 the
    // axis alone, which is the same when it is the last one.
    if !legacy && axis != rank - 1 {
        return Err(n.bad(format!("axis {axis} other than the last")));
    }
    let cols = shape[axis as usize..].iter().product::<usize>().max(1);
    let y = b.act(shape, Elem::F32, false);
    b.step(Step::Softmax {
        x: a,
        y,
        log: n.node.op_type == "LogSoftmax",
        cols,
    });
    b.bind(n.output(), Val::Act(y));
    Ok(())
}

pub(super) fn cast<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let to = n.attrs.int("to", 0) as i32;
    let xn = n.input(0);
    let v = b.value(n, xn)?;
    let a = match v {
        Val::Act(a) => a,
        Val::Dequantized(q) => b.dequantize(q),
        Val::Const(_) => return Err(n.bad("constant input")),
    };
    let act = b.acts[a].clone();
    match (act.elem, to) {
        (Elem::F32, data_type::FLOAT) => b.bind(n.output(), Val::Act(a)),
        (Elem::F32, data_type::FLOAT16) => unary_step(b, n, a, Unary::RoundF16),
        (Elem::I32, data_type::FLOAT) => {
            // An integer layer's sums become floats in its epilogue.
            if let Some(s) = b.sole_producer(a) {
                if let Step::Conv(c) = &mut b.steps[s] {
                    if c.requant.out == Output::I32 {
                        c.requant.float_ops = true;
                        c.requant.out = Output::F32 {
                            lo: f32::NEG_INFINITY,
                            hi: f32::INFINITY,
                        };
                        b.acts[a].elem = Elem::F32;
                        b.absorbed(xn);
                        b.bind(n.output(), Val::Act(a));
                        return Ok(());
                    }
                }
            }
            convert(b, n, a, Elem::F32);
        }
        (Elem::I64 | Elem::Q8(_) | Elem::Q8Dynamic { .. }, data_type::FLOAT) => {
            convert(b, n, a, Elem::F32)
        }
        (Elem::I32, data_type::INT32) | (Elem::I64, data_type::INT64) => {
            b.bind(n.output(), Val::Act(a))
        }
        (Elem::F32 | Elem::I32, data_type::INT64) => convert(b, n, a, Elem::I64),
        (Elem::F32 | Elem::I64, data_type::INT32) => convert(b, n, a, Elem::I32),
        (e, t) => return Err(n.bad(format!("cast of {e:?} to ONNX type {t}"))),
    }
    Ok(())
}

fn convert<'g>(b: &mut Builder<'g>, n: &Node<'g>, a: ActId, elem: Elem) {
    let act = b.acts[a].clone();
    let y = b.act(act.shape, elem, act.nhwc);
    b.step(Step::Convert { x: a, y });
    b.bind(n.output(), Val::Act(y));
}
