//! Lowering the operators that only move values: `Reshape` and its relatives (int8 values
//! stay int8), `Identity`, `Transpose`, `Concat`, and `ArgMax`.

use super::shape_rules::{reshape_target, squeeze_shape};
use super::{corrupt, Builder, Node, Val};
use crate::engine::ir::{Elem, Step};
use crate::error::Result;

/// `Flatten`, `Reshape`, `Squeeze`, `Unsqueeze`: the same values under another shape (int8
/// values stay int8).
pub(super) fn reshape<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let v = b.value(n, n.input(0))?;
    let (a, dequantized) = match v {
        Val::Act(a) => (a, false),
        Val::Dequantized(q) => (q, true),
        Val::Const(_) => return Err(n.bad("constant input that was not folded")),
    };
    let from = b.acts[a].shape.clone();
    let bad = |e: String| corrupt(format!("node `{}`: {e}", n.node.name));
    let op = n.node.op_type.as_str();
    let to = match op {
        "Flatten" => {
            let rank = from.len() as i64;
            let ax = n.attrs.int("axis", 1);
            let ax = if ax < 0 { ax + rank } else { ax };
            if !(0..=rank).contains(&ax) {
                return Err(bad(format!("axis {ax} for rank {rank}")));
            }
            let ax = ax as usize;
            vec![from[..ax].iter().product(), from[ax..].iter().product()]
        }
        "Reshape" => {
            let spec = b
                .constant(n.input(1))
                .ok_or_else(|| n.bad("the shape must be constant"))?;
            let spec = spec.to_i64().map_err(|e| n.bad(e))?;
            reshape_target(&from, &spec, n.attrs.int("allowzero", 0) != 0).map_err(bad)?
        }
        _ => {
            let axes = match (b.opset >= 13, n.input(1)) {
                (true, "") => vec![],
                (true, name) => b
                    .constant(name)
                    .ok_or_else(|| n.bad("the axes must be constant"))?
                    .to_i64()
                    .map_err(|e| n.bad(e))?,
                (false, _) => n
                    .attrs
                    .ints("axes")
                    .map(<[i64]>::to_vec)
                    .unwrap_or_default(),
            };
            squeeze_shape(op, &from, &axes).map_err(bad)?
        }
    };
    let a = b.layout(a, false);
    let elem = b.acts[a].elem;
    let y = b.act(to, elem, false);
    b.step(Step::Copy { x: a, y });
    b.bind(n.output(), Val::run_time(y, dequantized));
    Ok(())
}

pub(super) fn identity<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let v = b.value(n, n.input(0))?;
    b.bind(n.output(), v);
    Ok(())
}

pub(super) fn transpose<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let a = b.f32_act(n, n.input(0))?;
    let a = b.layout(a, false);
    let shape = b.acts[a].shape.clone();
    let rank = shape.len();
    let perm: Vec<usize> = match n.attrs.ints("perm") {
        Some(p) => p
            .iter()
            .map(|&v| (if v < 0 { v + rank as i64 } else { v }) as usize)
            .collect(),
        None => (0..rank).rev().collect(),
    };
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(corrupt(format!(
            "node `{}`: perm {perm:?} for rank {rank}",
            n.node.name
        )));
    }
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let y = b.act(out, Elem::F32, false);
    b.step(Step::Transpose { x: a, y, perm });
    b.bind(n.output(), Val::Act(y));
    Ok(())
}

pub(super) fn concat<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let mut xs = Vec::new();
    for name in &n.node.input {
        let a = b.f32_act(n, name)?;
        xs.push(b.layout(a, false));
    }
    let first = b.acts[*xs.first().ok_or_else(|| n.bad("no inputs"))?]
        .shape
        .clone();
    let rank = first.len() as i64;
    let ax = n.attrs.int("axis", 0);
    let ax = if ax < 0 { ax + rank } else { ax };
    if !(0..rank).contains(&ax) {
        return Err(corrupt(format!(
            "node `{}`: axis {ax} for rank {rank}",
            n.node.name
        )));
    }
    let ax = ax as usize;
    let mut out = first.clone();
    out[ax] = 0;
    for &x in &xs {
        let s = &b.acts[x].shape;
        if s.len() != first.len()
            || s.iter()
                .zip(&first)
                .enumerate()
                .any(|(i, (a, f))| i != ax && a != f)
        {
            return Err(corrupt(format!(
                "node `{}`: shapes {first:?} and {s:?} do not concatenate",
                n.node.name
            )));
        }
        out[ax] += s[ax];
    }
    let y = b.act(out, Elem::F32, false);
    b.step(Step::Concat { xs, y, axis: ax });
    b.bind(n.output(), Val::Act(y));
    Ok(())
}

pub(super) fn argmax<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let a = b.f32_act(n, n.input(0))?;
    let a = b.layout(a, false);
    let shape = b.acts[a].shape.clone();
    let rank = shape.len() as i64;
    let ax = n.attrs.int("axis", 0);
    let ax = if ax < 0 { ax + rank } else { ax };
    if ax != rank - 1 || n.attrs.int("select_last_index", 0) != 0 {
        return Err(n.bad("only the last axis, first index"));
    }
    let mut out = shape.clone();
    if n.attrs.int("keepdims", 1) != 0 {
        *out.last_mut().expect("rank checked") = 1;
    } else {
        out.pop();
    }
    let y = b.act(out, Elem::I64, false);
    b.step(Step::ArgMax { x: a, y });
    b.bind(n.output(), Val::Act(y));
    Ok(())
}
