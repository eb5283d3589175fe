//! 2-D pooling on f32: `MaxPool`, `AveragePool`, `GlobalAveragePool`.

use super::{required, Op};
use crate::native::tensor::Tensor;

/// Max or average over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// `MaxPool`
    Max,
    /// `AveragePool`; `true` counts padding in the divisor (`count_include_pad`).
    Average(bool),
}

/// The values and dimensions of an `[N, C, H, W]` float input.
fn planes(x: &Tensor) -> Result<(&[f32], [usize; 4]), String> {
    match x.shape[..] {
        [n, c, h, w] => Ok((x.as_f32()?, [n, c, h, w])),
        _ => Err(format!(
            "pooling input of shape {:?}: expected [N, C, H, W]",
            x.shape
        )),
    }
}

/// Windowed pooling over `[N, C, H, W]`.
#[derive(Debug)]
pub struct Pool {
    /// Max or average.
    pub reduce: Reduce,
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Strides.
    pub strides: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pads: [usize; 4],
    /// Round output sizes up instead of down.
    pub ceil: bool,
}

impl Pool {
    fn out_dim(&self, size: usize, i: usize) -> Result<usize, String> {
        let padded = size + self.pads[i] + self.pads[i + 2];
        let (k, s) = (self.kernel[i], self.strides[i]);
        if padded < k || s == 0 || k == 0 {
            return Err(format!(
                "a {}x{} window does not fit a dimension of {size}",
                self.kernel[0], self.kernel[1]
            ));
        }
        let span = padded - k;
        Ok(if self.ceil {
            span.div_ceil(s)
        } else {
            span / s
        } + 1)
    }
}

impl Op for Pool {
    fn run(&self, inputs: &[Option<&Tensor>], _: usize) -> Result<Vec<Tensor>, String> {
        let (v, [n, c, h, w]) = planes(required(inputs, 0)?)?;
        let (oh, ow) = (self.out_dim(h, 0)?, self.out_dim(w, 1)?);
        let mut out = Vec::with_capacity(n * c * oh * ow);
        // Without padding every window lies inside the plane: no edge tests per value.
        let inside = self.pads == [0; 4]
            && (oh - 1) * self.strides[0] + self.kernel[0] <= h
            && (ow - 1) * self.strides[1] + self.kernel[1] <= w;
        if inside {
            let area = (self.kernel[0] * self.kernel[1]) as f32;
            let [kh, kw] = self.kernel;
            let [sh, sw] = self.strides;
            for plane in v.chunks_exact(h * w).take(n * c) {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let base = oy * sh * w + ox * sw;
                        let mut m = f32::NEG_INFINITY;
                        let mut sum = 0.0;
                        for ky in 0..kh {
                            for &x in &plane[base + ky * w..base + ky * w + kw] {
                                // A plain comparison, not `f32::max`: its NaN rules cost a
                                // compare-and-blend per value.
                                if x > m {
                                    m = x;
                                }
                                sum += x;
                            }
                        }
                        out.push(match self.reduce {
                            Reduce::Max => m,
                            Reduce::Average(_) => sum / area,
                        });
                    }
                }
            }
            return Ok(vec![Tensor::f32(vec![n, c, oh, ow], out)?]);
        }
        for plane in v.chunks_exact(h * w).take(n * c) {
            for oy in 0..oh {
                for ox in 0..ow {
                    let y0 = (oy * self.strides[0]) as isize - self.pads[0] as isize;
                    let x0 = (ox * self.strides[1]) as isize - self.pads[1] as isize;
                    let mut acc = match self.reduce {
                        Reduce::Max => f32::NEG_INFINITY,
                        Reduce::Average(_) => 0.0,
                    };
                    let mut count = 0usize;
                    let mut window = 0usize;
                    for ky in 0..self.kernel[0] as isize {
                        for kx in 0..self.kernel[1] as isize {
                            let (y, x) = (y0 + ky, x0 + kx);
                            // Ceil mode may hang a window past the padded edge: it counts
                            // for nothing.
                            if y < h as isize + self.pads[2] as isize
                                && x < w as isize + self.pads[3] as isize
                            {
                                window += 1;
                            }
                            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                                continue;
                            }
                            let val = plane[y as usize * w + x as usize];
                            count += 1;
                            acc = match self.reduce {
                                Reduce::Max => acc.max(val),
                                Reduce::Average(_) => acc + val,
                            };
                        }
                    }
                    out.push(match self.reduce {
                        Reduce::Max => acc,
                        Reduce::Average(true) => acc / window.max(1) as f32,
                        Reduce::Average(false) => acc / count.max(1) as f32,
                    });
                }
            }
        }
        Ok(vec![Tensor::f32(vec![n, c, oh, ow], out)?])
    }
}

/// Mean over each `H x W` plane.
#[derive(Debug)]
pub struct GlobalAveragePool;

impl Op for GlobalAveragePool {
    fn run(&self, inputs: &[Option<&Tensor>], _: usize) -> Result<Vec<Tensor>, String> {
        let (v, [n, c, h, w]) = planes(required(inputs, 0)?)?;
        let hw = (h * w).max(1);
        let out = v
            .chunks(hw)
            .take(n * c)
            .map(|p| p.iter().sum::<f32>() / hw as f32)
            .collect();
        Ok(vec![Tensor::f32(vec![n, c, 1, 1], out)?])
    }
}
