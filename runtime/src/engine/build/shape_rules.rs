//! ONNX's shape rules, shared by constant folding and the shape operators' lowering: numpy
//! broadcasting (and element-wise arithmetic on broadcast constants), the shape `Reshape`
//! asks for, and the axes of `Squeeze`/`Unsqueeze`.

use crate::engine::tensor::{volume, Data, Tensor};

/// The row-major strides of `shape`.
pub(super) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy broadcasting of two shapes.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> std::result::Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            (x, y) => Err(format!(
                "shapes {a:?} and {b:?} do not broadcast ({x} vs {y})"
            )),
        })
        .collect()
}

/// The index into a tensor of `shape` (right-aligned, broadcast) of output position `idx`.
pub(super) fn source_index(shape: &[usize], out: &[usize], idx: &[usize]) -> usize {
    let off = out.len() - shape.len();
    let st = strides(shape);
    (0..shape.len())
        .map(|i| {
            if shape[i] == 1 {
                0
            } else {
                idx[off + i] * st[i]
            }
        })
        .sum()
}

pub(super) fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        f(&idx);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// `a op b` element by element with broadcasting, in f32 or i64.
pub(super) fn binary(op: &str, a: &Tensor, b: &Tensor) -> std::result::Result<Tensor, String> {
    let out = broadcast(&a.shape, &b.shape)?;
    let ints = !matches!(a.data, Data::F32(_)) && !matches!(b.data, Data::F32(_));
    let mut fv = Vec::new();
    let mut iv = Vec::new();
    let (af, bf) = (a.to_f32(), b.to_f32());
    let (ai, bi) = (
        a.to_i64().unwrap_or_default(),
        b.to_i64().unwrap_or_default(),
    );
    let mut err = None;
    for_each_index(&out, |idx| {
        let (i, j) = (
            source_index(&a.shape, &out, idx),
            source_index(&b.shape, &out, idx),
        );
        if ints {
            let (x, y) = (ai[i], bi[j]);
            iv.push(match op {
                "Add" => x.wrapping_add(y),
                "Sub" => x.wrapping_sub(y),
                "Mul" => x.wrapping_mul(y),
                "Div" if y != 0 => x / y,
                "Equal" => (x == y) as i64,
                _ => {
                    err = Some(format!("{op} of integers {x} and {y}"));
                    0
                }
            });
        } else {
            let (x, y) = (af[i], bf[j]);
            fv.push(match op {
                "Add" => x + y,
                "Sub" => x - y,
                "Mul" => x * y,
                "Div" => x / y,
                _ => (x == y) as i64 as f32,
            });
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if ints {
        Tensor::new(out, Data::I64(iv))
    } else {
        Tensor::new(out, Data::F32(fv))
    }
}

/// The shape `Reshape` asks for (0 copies the input's dimension, -1 takes the rest).
pub(crate) fn reshape_target(
    from: &[usize],
    spec: &[i64],
    allow_zero: bool,
) -> std::result::Result<Vec<usize>, String> {
    let total = volume(from)?;
    let mut known = 1usize;
    let mut free = None;
    let mut out = Vec::with_capacity(spec.len());
    for (i, &d) in spec.iter().enumerate() {
        out.push(match d {
            -1 if free.is_none() => {
                free = Some(i);
                1
            }
            0 if !allow_zero => *from.get(i).ok_or("shape 0 past the input's rank")?,
            d if d >= 0 => d as usize,
            d => return Err(format!("bad dimension {d} in shape {spec:?}")),
        });
        if free != Some(i) {
            known = known.checked_mul(out[i]).ok_or("shape overflows")?;
        }
    }
    if let Some(i) = free {
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {from:?} to {spec:?}"));
        }
        out[i] = total / known;
    }
    if volume(&out)? != total {
        return Err(format!(
            "cannot reshape {from:?} ({total} values) to {out:?}"
        ));
    }
    Ok(out)
}

/// The shape after `Squeeze` or `Unsqueeze` of `axes`.
pub(crate) fn squeeze_shape(
    op: &str,
    shape: &[usize],
    axes: &[i64],
) -> std::result::Result<Vec<usize>, String> {
    if op == "Unsqueeze" {
        let rank = shape.len() + axes.len();
        let mut ax: Vec<usize> = axes
            .iter()
            .map(|&v| axis(v, rank))
            .collect::<std::result::Result<_, _>>()?;
        ax.sort_unstable();
        let mut out = shape.to_vec();
        for a in ax {
            out.insert(a.min(out.len()), 1);
        }
        Ok(out)
    } else {
        let rank = shape.len();
        let ax: Vec<usize> = if axes.is_empty() {
            (0..rank).filter(|&i| shape[i] == 1).collect()
        } else {
            axes.iter()
                .map(|&v| axis(v, rank))
                .collect::<std::result::Result<_, _>>()?
        };
        Ok(shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !ax.contains(i))
            .map(|(_, &d)| d)
            .collect())
    }
}

/// A possibly negative axis of a tensor of rank `rank`.
pub(super) fn axis(a: i64, rank: usize) -> std::result::Result<usize, String> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    (0..r.max(1))
        .contains(&v)
        .then_some(v as usize)
        .ok_or_else(|| format!("axis {a} for rank {rank}"))
}
