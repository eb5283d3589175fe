//! Nodes evaluated while lowering: everything whose inputs are constants (shape arithmetic
//! that exporters emit around `Reshape`, `Constant`s, casts of weights), and `Shape`, whose
//! answer the concrete input shape fixes.

use std::sync::Arc;

use super::shape_rules::{
    axis, binary, broadcast, for_each_index, reshape_target, source_index, squeeze_shape, strides,
};
use super::{corrupt, Builder, Node, Val};
use crate::engine::tensor::{volume, Data, Tensor};
use crate::error::Result;

/// Operators evaluated when their inputs are known.
const FOLDABLE: &[&str] = &[
    "Constant",
    "ConstantOfShape",
    "Shape",
    "Size",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Reshape",
    "Flatten",
    "Cast",
    "Identity",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Slice",
    "Transpose",
    "Range",
    "Equal",
    "Where",
    "Expand",
];

/// Evaluates `n` now when it can be; returns whether it did.
pub(super) fn try_fold<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<bool> {
    let op = n.node.op_type.as_str();
    if !FOLDABLE.contains(&op) {
        return Ok(false);
    }
    let bad = |e: String| corrupt(format!("node `{}` ({op}): {e}", n.node.name));
    if op == "Shape" || op == "Size" {
        let shape: Vec<usize> = match b.value(n, n.input(0))? {
            Val::Const(t) => t.shape.clone(),
            Val::Act(a) | Val::Dequantized(a) => b.acts[a].shape.clone(),
        };
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let t = if op == "Size" {
            Tensor::new(vec![], Data::I64(vec![dims.iter().product()]))
        } else {
            let rank = dims.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
            let start = clamp(n.attrs.int("start", 0));
            let end = clamp(n.attrs.int("end", rank));
            let picked = dims[start..end.max(start)].to_vec();
            Tensor::new(vec![picked.len()], Data::I64(picked))
        }
        .map_err(bad)?;
        b.bind(n.output(), Val::Const(Arc::new(t)));
        return Ok(true);
    }
    let mut inputs = Vec::new();
    for name in &n.node.input {
        if name.is_empty() {
            inputs.push(None);
            continue;
        }
        match b.constant(name) {
            Some(t) => inputs.push(Some(t)),
            None => return Ok(false),
        }
    }
    let outs = eval(n, &inputs).map_err(bad)?;
    for (name, t) in n.node.output.iter().zip(outs) {
        b.bind(name, Val::Const(Arc::new(t)));
    }
    Ok(true)
}

fn input(inputs: &[Option<Arc<Tensor>>], i: usize) -> std::result::Result<&Tensor, String> {
    inputs
        .get(i)
        .and_then(|t| t.as_deref())
        .ok_or_else(|| format!("input {i} is missing"))
}

/// Values picked by flat index `f(i)` for each output index `i`, of the same type.
fn gather_flat(t: &Tensor, idx: impl Iterator<Item = usize>) -> Data {
    match &t.data {
        Data::F32(v) => Data::F32(idx.map(|i| v[i]).collect()),
        Data::I8(v) => Data::I8(idx.map(|i| v[i]).collect()),
        Data::U8(v) => Data::U8(idx.map(|i| v[i]).collect()),
        Data::I32(v) => Data::I32(idx.map(|i| v[i]).collect()),
        Data::I64(v) => Data::I64(idx.map(|i| v[i]).collect()),
    }
}

/// Evaluates one node on constant inputs.
fn eval(n: &Node, inputs: &[Option<Arc<Tensor>>]) -> std::result::Result<Vec<Tensor>, String> {
    let a = &n.attrs;
    let op = n.node.op_type.as_str();
    let x = || input(inputs, 0);
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        "Constant" => {
            if let Some(t) = a.tensor("value") {
                return one(Tensor::from_proto(t)?);
            }
            if let Some(v) = a.ints("value_ints") {
                return one(Tensor::new(vec![v.len()], Data::I64(v.to_vec()))?);
            }
            let (f, i) = (
                a.float("value_float", f32::NAN),
                a.int("value_int", i64::MIN),
            );
            if !f.is_nan() {
                return one(Tensor::new(vec![], Data::F32(vec![f]))?);
            }
            if i != i64::MIN {
                return one(Tensor::new(vec![], Data::I64(vec![i]))?);
            }
            Err("only tensor, float, int and ints constants".into())
        }
        "Identity" => one(x()?.clone()),
        "Cast" => {
            let t = x()?;
            let to = a.int("to", 1) as i32;
            use crate::proto::data_type as dt;
            let data = match to {
                dt::FLOAT => Data::F32(t.to_f32()),
                dt::FLOAT16 => Data::F32(t.to_f32().iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()),
                dt::INT64 => Data::I64(match t.to_i64() {
                    Ok(v) => v,
                    Err(_) => t.to_f32().iter().map(|&v| v as i64).collect(),
                }),
                dt::INT32 => Data::I32(match t.to_i64() {
                    Ok(v) => v.iter().map(|&v| v as i32).collect(),
                    Err(_) => t.to_f32().iter().map(|&v| v as i32).collect(),
                }),
                9 /* BOOL */ => Data::I64(t.to_f32().iter().map(|&v| (v != 0.0) as i64).collect()),
                other => return Err(format!("cast to ONNX type {other}")),
            };
            one(Tensor::new(t.shape.clone(), data)?)
        }
        "Add" | "Sub" | "Mul" | "Div" | "Equal" => one(binary(op, x()?, input(inputs, 1)?)?),
        "Where" => {
            let (c, p, q) = (x()?, input(inputs, 1)?, input(inputs, 2)?);
            let out = broadcast(&broadcast(&c.shape, &p.shape)?, &q.shape)?;
            let (cv, pv, qv) = (c.to_f32(), p.to_f32(), q.to_f32());
            let ints = !matches!(p.data, Data::F32(_));
            let mut v = Vec::new();
            for_each_index(&out, |idx| {
                let pick = cv[source_index(&c.shape, &out, idx)] != 0.0;
                v.push(if pick {
                    pv[source_index(&p.shape, &out, idx)]
                } else {
                    qv[source_index(&q.shape, &out, idx)]
                });
            });
            one(Tensor::new(
                out,
                if ints {
                    Data::I64(v.iter().map(|&f| f as i64).collect())
                } else {
                    Data::F32(v)
                },
            )?)
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = x()?.to_i64()?.iter().map(|&d| d.max(0) as usize).collect();
            let n = volume(&shape)?;
            let value = a.tensor("value").map(Tensor::from_proto).transpose()?;
            let data = match value.map(|v| v.data) {
                Some(Data::I64(v)) => Data::I64(vec![v[0]; n]),
                Some(Data::I32(v)) => Data::I32(vec![v[0]; n]),
                Some(d) => Data::F32(vec![Tensor::new(vec![1], d)?.to_f32()[0]; n]),
                None => Data::F32(vec![0.0; n]),
            };
            one(Tensor::new(shape, data)?)
        }
        "Range" => {
            let (s, l, d) = (
                x()?.to_f32()[0],
                input(inputs, 1)?.to_f32()[0],
                input(inputs, 2)?.to_f32()[0],
            );
            if d == 0.0 {
                return Err("range with a zero step".into());
            }
            let n = ((l - s) / d).ceil().max(0.0) as usize;
            let ints = !matches!(x()?.data, Data::F32(_));
            let v: Vec<f32> = (0..n).map(|i| s + i as f32 * d).collect();
            one(Tensor::new(
                vec![n],
                if ints {
                    Data::I64(v.iter().map(|&f| f as i64).collect())
                } else {
                    Data::F32(v)
                },
            )?)
        }
        "Unsqueeze" | "Squeeze" => {
            let t = x()?;
            let axes: Vec<i64> = match inputs.get(1).and_then(|t| t.as_deref()) {
                Some(ax) => ax.to_i64()?,
                None => a.ints("axes").map(<[i64]>::to_vec).unwrap_or_default(),
            };
            one(Tensor::new(
                squeeze_shape(op, &t.shape, &axes)?,
                t.data.clone(),
            )?)
        }
        "Reshape" => {
            let t = x()?;
            let spec = input(inputs, 1)?.to_i64()?;
            one(Tensor::new(
                reshape_target(&t.shape, &spec, a.int("allowzero", 0) != 0)?,
                t.data.clone(),
            )?)
        }
        "Flatten" => {
            let t = x()?;
            let ax = axis(a.int("axis", 1), t.shape.len() + 1)?;
            let lead: usize = t.shape[..ax].iter().product();
            one(Tensor::new(
                vec![lead, t.len() / lead.max(1)],
                t.data.clone(),
            )?)
        }
        "Expand" => {
            let t = x()?;
            let shape: Vec<usize> = input(inputs, 1)?
                .to_i64()?
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            let out = broadcast(&t.shape, &shape)?;
            let mut idx_list = Vec::new();
            for_each_index(&out, |idx| idx_list.push(source_index(&t.shape, &out, idx)));
            one(Tensor::new(out, gather_flat(t, idx_list.into_iter()))?)
        }
        "Concat" => {
            let parts: Vec<&Tensor> = (0..inputs.len())
                .map(|i| input(inputs, i))
                .collect::<std::result::Result<_, _>>()?;
            let rank = parts[0].shape.len();
            let ax = axis(a.int("axis", 0), rank)?;
            let mut shape = parts[0].shape.clone();
            shape[ax] = parts
                .iter()
                .map(|p| p.shape.get(ax).copied().unwrap_or(0))
                .sum();
            let outer: usize = shape[..ax].iter().product();
            let mut f = Vec::new();
            let ints = parts.iter().all(|p| !matches!(p.data, Data::F32(_)));
            for o in 0..outer {
                for p in &parts {
                    let inner: usize = p.shape[ax..].iter().product();
                    let vals = if ints {
                        p.to_i64()?.iter().map(|&v| v as f64).collect::<Vec<_>>()
                    } else {
                        p.to_f32().iter().map(|&v| v as f64).collect()
                    };
                    f.extend_from_slice(&vals[o * inner..(o + 1) * inner]);
                }
            }
            let data = if ints {
                Data::I64(f.iter().map(|&v| v as i64).collect())
            } else {
                Data::F32(f.iter().map(|&v| v as f32).collect())
            };
            one(Tensor::new(shape, data)?)
        }
        "Gather" => {
            let (t, ix) = (x()?, input(inputs, 1)?);
            let ax = axis(a.int("axis", 0), t.shape.len())?;
            let dim = t.shape[ax] as i64;
            let idx: Vec<usize> = ix
                .to_i64()?
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + dim } else { i };
                    (0..dim)
                        .contains(&j)
                        .then_some(j as usize)
                        .ok_or(format!("index {i} out of {dim}"))
                })
                .collect::<std::result::Result<_, _>>()?;
            let outer: usize = t.shape[..ax].iter().product();
            let inner: usize = t.shape[ax + 1..].iter().product();
            let mut flat = Vec::new();
            for o in 0..outer {
                for &i in &idx {
                    for k in 0..inner {
                        flat.push((o * t.shape[ax] + i) * inner + k);
                    }
                }
            }
            let mut shape = t.shape[..ax].to_vec();
            shape.extend_from_slice(&ix.shape);
            shape.extend_from_slice(&t.shape[ax + 1..]);
            one(Tensor::new(shape, gather_flat(t, flat.into_iter()))?)
        }
        "Slice" => {
            let t = x()?;
            let rank = t.shape.len();
            let starts = input(inputs, 1)?.to_i64()?;
            let ends = input(inputs, 2)?.to_i64()?;
            let axes: Vec<usize> = match inputs.get(3).and_then(|t| t.as_deref()) {
                Some(v) => v
                    .to_i64()?
                    .iter()
                    .map(|&v| axis(v, rank))
                    .collect::<std::result::Result<_, _>>()?,
                None => (0..starts.len()).collect(),
            };
            let steps = match inputs.get(4).and_then(|t| t.as_deref()) {
                Some(v) => v.to_i64()?,
                None => vec![1; starts.len()],
            };
            let mut ranges: Vec<Vec<usize>> = t.shape.iter().map(|&d| (0..d).collect()).collect();
            for (k, &ax) in axes.iter().enumerate() {
                let d = t.shape[ax] as i64;
                let st = steps[k];
                if st == 0 {
                    return Err("slice step 0".into());
                }
                let norm = |v: i64, lo: i64, hi: i64| (if v < 0 { v + d } else { v }).clamp(lo, hi);
                let (mut s, e) = if st > 0 {
                    (norm(starts[k], 0, d), norm(ends[k], 0, d))
                } else {
                    (norm(starts[k], -1, d - 1), norm(ends[k], -1, d - 1))
                };
                let mut r = Vec::new();
                while (st > 0 && s < e) || (st < 0 && s > e) {
                    r.push(s as usize);
                    s += st;
                }
                ranges[ax] = r;
            }
            let shape: Vec<usize> = ranges.iter().map(Vec::len).collect();
            let st = strides(&t.shape);
            let mut flat = Vec::new();
            for_each_index(&shape, |idx| {
                flat.push(
                    idx.iter()
                        .enumerate()
                        .map(|(d, &i)| ranges[d][i] * st[d])
                        .sum(),
                )
            });
            one(Tensor::new(shape, gather_flat(t, flat.into_iter()))?)
        }
        "Transpose" => {
            let t = x()?;
            let rank = t.shape.len();
            let perm: Vec<usize> = match a.ints("perm") {
                Some(p) => p
                    .iter()
                    .map(|&v| axis(v, rank))
                    .collect::<std::result::Result<_, _>>()?,
                None => (0..rank).rev().collect(),
            };
            let shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
            let st = strides(&t.shape);
            let mut flat = Vec::new();
            for_each_index(&shape, |idx| {
                flat.push(idx.iter().zip(&perm).map(|(&i, &p)| i * st[p]).sum())
            });
            one(Tensor::new(shape, gather_flat(t, flat.into_iter()))?)
        }
        other => Err(format!("{other} is not evaluated on constants")),
    }
}
