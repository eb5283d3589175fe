//! Element-wise operators: broadcasting `Add`/`Sub`/`Mul`/`Div`, `Relu`, `Clip`, `Sigmoid`,
//! `Cast` and `Softmax`.

use super::{required, Op};
use crate::native::tensor::{volume, Data, Tensor};

/// The arithmetic of a binary operator.
#[derive(Debug, Clone, Copy)]
pub enum Arith {
    /// `Add`
    Add,
    /// `Sub`
    Sub,
    /// `Mul`
    Mul,
    /// `Div`
    Div,
}

/// A broadcasting binary operator on f32 or i32 pairs.
#[derive(Debug)]
pub struct Binary(pub Arith);

/// The numpy-style broadcast of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        let lead = rank - s.len();
        if i < lead {
            1
        } else {
            s[i - lead]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// Applies `f` over the broadcast of `a` and `b`. The trailing dimensions in which each
/// operand is either fully present or fully broadcast are run as one flat inner loop, so
/// per-channel constants (`[C, 1, 1]` against `[N, C, H, W]`) cost one index step per row.
fn zip<T: Copy>(
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    f: impl Fn(T, T) -> T,
) -> Result<(Vec<usize>, Vec<T>), String> {
    let shape = broadcast(sa, sb)?;
    let n = volume(&shape)?;
    if a.len() == n && b.len() == n {
        return Ok((shape, a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()));
    }
    let rank = shape.len();
    let strides = |s: &[usize]| {
        let mut st = vec![0usize; rank];
        let lead = rank - s.len();
        let mut acc = 1;
        for i in (0..s.len()).rev() {
            st[lead + i] = if s[i] == 1 { 0 } else { acc };
            acc *= s[i];
        }
        st
    };
    let (ta, tb) = (strides(sa), strides(sb));
    // How many trailing dimensions share each operand's broadcast pattern.
    let mut inner = 1;
    let mut split = rank;
    let (mut full_a, mut full_b) = (None, None);
    while split > 0 {
        let d = split - 1;
        if shape[d] != 1 {
            let (fa, fb) = (ta[d] != 0, tb[d] != 0);
            if *full_a.get_or_insert(fa) != fa || *full_b.get_or_insert(fb) != fb {
                break;
            }
        }
        inner *= shape[d];
        split = d;
    }
    let (step_a, step_b) = (
        full_a.unwrap_or(false) as usize,
        full_b.unwrap_or(false) as usize,
    );
    let mut out = Vec::with_capacity(n);
    let mut index = vec![0usize; split];
    for _ in 0..n / inner.max(1) {
        let oa: usize = index.iter().zip(&ta).map(|(i, s)| i * s).sum();
        let ob: usize = index.iter().zip(&tb).map(|(i, s)| i * s).sum();
        for i in 0..inner {
            out.push(f(a[oa + i * step_a], b[ob + i * step_b]));
        }
        for d in (0..split).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok((shape, out))
}

impl Op for Binary {
    fn run(&self, inputs: &[Option<&Tensor>], _: usize) -> Result<Vec<Tensor>, String> {
        let (a, b) = (required(inputs, 0)?, required(inputs, 1)?);
        let (shape, data) = match (&a.data, &b.data) {
            (Data::F32(x), Data::F32(y)) => {
                let f = match self.0 {
                    Arith::Add => |x: f32, y: f32| x + y,
                    Arith::Sub => |x, y| x - y,
                    Arith::Mul => |x, y| x * y,
                    Arith::Div => |x, y| x / y,
                };
                let (s, v) = zip(x, &a.shape, y, &b.shape, f)?;
                (s, Data::F32(v))
            }
            (Data::I32(x), Data::I32(y)) => {
                if matches!(self.0, Arith::Div) && y.contains(&0) {
                    return Err("integer division by zero".into());
                }
                let f = match self.0 {
                    Arith::Add => |x: i32, y: i32| x.wrapping_add(y),
                    Arith::Sub => |x: i32, y: i32| x.wrapping_sub(y),
                    Arith::Mul => |x: i32, y: i32| x.wrapping_mul(y),
                    Arith::Div => |x: i32, y: i32| x.wrapping_div(y),
                };
                let (s, v) = zip(x, &a.shape, y, &b.shape, f)?;
                (s, Data::I32(v))
            }
            (x, y) => {
                return Err(format!(
                    "{:?} of {} and {} is not supported",
                    self.0,
                    x.type_name(),
                    y.type_name()
                ))
            }
        };
        Ok(vec![Tensor::new(shape, data)?])
    }
}

/// A float function applied to each value.
#[derive(Debug)]
pub enum Unary {
    /// `max(x, 0)`
    Relu,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// Clamp to `[min, max]` (from attributes before opset 11, inputs after).
    Clip {
        /// Bound from attributes, when given there.
        min: f32,
        /// Bound from attributes, when given there.
        max: f32,
    },
}

impl Op for Unary {
    fn run(&self, inputs: &[Option<&Tensor>], _: usize) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0)?;
        let v = x.as_f32()?;
        let out = match self {
            Unary::Relu => v.iter().map(|&x| x.max(0.0)).collect(),
            Unary::Sigmoid => v.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
            Unary::Clip { min, max } => {
                let bound = |i: usize, default: f32| match inputs.get(i).copied().flatten() {
                    Some(t) => t.scalar_f32(),
                    None => Ok(default),
                };
                let (lo, hi) = (bound(1, *min)?, bound(2, *max)?);
                v.iter().map(|&x| x.max(lo).min(hi)).collect()
            }
        };
        Ok(vec![Tensor::f32(x.shape.clone(), out)?])
    }
}

/// Type conversion to f32 or i32.
#[derive(Debug)]
pub struct Cast {
    /// ONNX data type code of the target.
    pub to: i32,
}

impl Op for Cast {
    fn run(&self, inputs: &[Option<&Tensor>], _: usize) -> Result<Vec<Tensor>, String> {
        use crate::proto::data_type;
        let x = required(inputs, 0)?;
        let data = match self.to {
            data_type::FLOAT => Data::F32(x.to_f32()),
            // float16 values are held as f32 rounded to float16: storage behaves as in the
            // file, arithmetic is done in f32 (as tract and ONNX Runtime do on most CPUs).
            data_type::FLOAT16 => Data::F32(x.to_f32().into_iter().map(round_f16).collect()),
            data_type::INT32 => match &x.data {
                Data::F32(v) => Data::I32(v.iter().map(|&f| f as i32).collect()),
                _ => Data::I32(x.to_i64()?.iter().map(|&i| i as i32).collect()),
            },
            other => return Err(format!("Cast to ONNX type {other} is not supported")),
        };
        Ok(vec![Tensor::new(x.shape.clone(), data)?])
    }
}

/// Softmax over one axis (opset 13 semantics).
#[derive(Debug)]
pub struct Softmax {
    /// The axis (may be negative).
    pub axis: i64,
}

impl Op for Softmax {
    fn run(&self, inputs: &[Option<&Tensor>], _: usize) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0)?;
        let v = x.as_f32()?;
        let rank = x.shape.len() as i64;
        let axis = if self.axis < 0 {
            self.axis + rank
        } else {
            self.axis
        };
        if axis != rank - 1 {
            return Err(format!(
                "Softmax over axis {} of a rank-{rank} tensor: only the last axis is supported",
                self.axis
            ));
        }
        let k = *x.shape.last().unwrap_or(&1);
        let mut out = v.to_vec();
        if k > 0 {
            for row in out.chunks_exact_mut(k) {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for y in row.iter_mut() {
                    *y = (*y - m).exp();
                    sum += *y;
                }
                for y in row.iter_mut() {
                    *y /= sum;
                }
            }
        }
        Ok(vec![Tensor::f32(x.shape.clone(), out)?])
    }
}

/// `x` rounded to the nearest float16 (ties to even), as f32.
pub fn round_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_per_channel_and_general() {
        // [1, 2, 2, 2] + [2, 1, 1]: per-channel.
        let a = Tensor::f32(vec![1, 2, 2, 2], (0..8).map(|i| i as f32).collect()).unwrap();
        let b = Tensor::f32(vec![2, 1, 1], vec![100.0, 200.0]).unwrap();
        let y = Binary(Arith::Add).run(&[Some(&a), Some(&b)], 1).unwrap();
        assert_eq!(
            y[0].as_f32().unwrap(),
            &[100.0, 101.0, 102.0, 103.0, 204.0, 205.0, 206.0, 207.0]
        );
        // [2, 1] * [1, 3]: both sides broadcast.
        let a = Tensor::f32(vec![2, 1], vec![1.0, 2.0]).unwrap();
        let b = Tensor::f32(vec![1, 3], vec![1.0, 10.0, 100.0]).unwrap();
        let y = Binary(Arith::Mul).run(&[Some(&a), Some(&b)], 1).unwrap();
        assert_eq!(y[0].shape, vec![2, 3]);
        assert_eq!(
            y[0].as_f32().unwrap(),
            &[1.0, 10.0, 100.0, 2.0, 20.0, 200.0]
        );
        // [3] - [2, 3]: the row repeats.
        let a = Tensor::f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        let b = Tensor::f32(vec![2, 3], vec![1.0; 6]).unwrap();
        let y = Binary(Arith::Sub).run(&[Some(&a), Some(&b)], 1).unwrap();
        assert_eq!(y[0].as_f32().unwrap(), &[0.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
        let bad = Tensor::f32(vec![4], vec![0.0; 4]).unwrap();
        assert!(Binary(Arith::Add).run(&[Some(&a), Some(&bad)], 1).is_err());
    }
}
