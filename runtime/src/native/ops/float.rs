//! Float `MatMul`/`Gemm`/`Conv` with constant weights: the layers of f32 and f16 students.
//!
//! With these the native engine runs every variant edgekd exports, so a device build can
//! leave tract out (it is most of the binary). Sums are taken in a fixed order (8 lanes,
//! then a fixed reduction, no fused multiply-add) on every instruction set, so an x86 host
//! and an ARM board compute bit-identical logits from the same file.

use super::integer::{ConvGeometry, Epilogue};
use super::{par_rows, required, Op};
use crate::native::kernels::{self, Isa};
use crate::native::tensor::{volume, Data, Tensor};

/// A bias and ReLU per output channel, from the element-wise tail absorbed into the layer.
#[derive(Debug)]
pub struct Affine {
    bias: Vec<f32>,
    relu: bool,
}

impl Affine {
    /// The tail an [`Epilogue::Float`] with no scales describes, expanded to `channels`.
    pub fn from_epilogue(e: &Epilogue, channels: usize) -> Result<Affine, String> {
        match e {
            Epilogue::Float {
                int_bias,
                scale,
                bias,
                relu,
            } if int_bias.is_empty() && scale.is_empty() => {
                let bias = match bias.len() {
                    0 => vec![0.0; channels],
                    1 => vec![bias[0]; channels],
                    n if n == channels => bias.clone(),
                    n => return Err(format!("{n} bias values for {channels} channels")),
                };
                Ok(Affine { bias, relu: *relu })
            }
            _ => Err("a float layer takes only a bias and a ReLU after it".into()),
        }
    }

    #[inline]
    fn apply(&self, c: usize, x: f32) -> f32 {
        let y = x + self.bias[c];
        if self.relu && y < 0.0 {
            0.0
        } else {
            y
        }
    }
}

/// `[.., M, K] x W` with constant weights stored as `n` rows of `k` (one per output column).
#[derive(Debug)]
pub struct FloatDense {
    /// Weights, row `j` holding output column `j`'s `k` coefficients.
    pub weights: Vec<f32>,
    /// Inputs per row.
    pub k: usize,
    /// Outputs per row.
    pub n: usize,
    /// Bias and ReLU.
    pub affine: Affine,
    /// Kernel instruction set.
    pub isa: Isa,
}

impl FloatDense {
    /// From a `[K, N]` MatMul B.
    pub fn from_matmul_b(b: &Tensor, affine: Affine, isa: Isa) -> Result<FloatDense, String> {
        let [k, n] = b.shape[..] else {
            return Err(format!(
                "weights of shape {:?}: only 2-D is supported",
                b.shape
            ));
        };
        let v = b.as_f32()?;
        let weights = (0..n)
            .flat_map(|j| (0..k).map(move |p| v[p * n + j]))
            .collect();
        Ok(FloatDense {
            weights,
            k,
            n,
            affine,
            isa,
        })
    }

    /// From `[N, K]` rows (Gemm with transB).
    pub fn from_rows(w: &Tensor, affine: Affine, isa: Isa) -> Result<FloatDense, String> {
        let [n, k] = w.shape[..] else {
            return Err(format!(
                "weights of shape {:?}: only 2-D is supported",
                w.shape
            ));
        };
        Ok(FloatDense {
            weights: w.as_f32()?.to_vec(),
            k,
            n,
            affine,
            isa,
        })
    }
}

impl Op for FloatDense {
    fn run(&self, inputs: &[Option<&Tensor>], threads: usize) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0)?;
        let xs = x.as_f32()?;
        let (&k, lead) = x.shape.split_last().ok_or("activations are a scalar")?;
        if k != self.k {
            return Err(format!(
                "activations of shape {:?} against weights with {} inputs",
                x.shape, self.k
            ));
        }
        let (n, rows) = (self.n, volume(lead)?);
        let mut out = vec![0f32; rows * n];
        par_rows(&mut out, n, threads, n * k, |first, block| {
            let rows = block.len() / n.max(1);
            let x = &xs[first * k..(first + rows) * k];
            kernels::matmul_f32(self.isa, x, &self.weights, k, n, block);
            for dst in block.chunks_exact_mut(n) {
                for (c, d) in dst.iter_mut().enumerate() {
                    *d = self.affine.apply(c, *d);
                }
            }
        });
        let mut shape = lead.to_vec();
        shape.push(n);
        Ok(vec![Tensor::new(shape, Data::F32(out))?])
    }
}

/// `[N, C, H, W]` f32 activations convolved with constant `[O, C/g, kh, kw]` weights.
#[derive(Debug)]
pub struct FloatConv {
    /// Weights, one row of `C/g · kh · kw` per output channel.
    pub weights: Vec<f32>,
    /// Output channels.
    pub filters: usize,
    /// Input channels per group.
    pub channels: usize,
    /// Kernel, strides, padding, dilations, groups.
    pub geometry: ConvGeometry,
    /// Bias and ReLU.
    pub affine: Affine,
}

impl Op for FloatConv {
    fn run(&self, inputs: &[Option<&Tensor>], threads: usize) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0)?;
        let xs = x.as_f32()?;
        let g = &self.geometry;
        let [n, c, h, w] = g.input(&x.shape, self.channels)?;
        let [oh, ow] = g.output(h, w)?;
        let per_image = volume(&[self.filters, oh, ow])?;
        let mut out = vec![0f32; volume(&[n, per_image])?];
        let work = per_image * self.channels * g.kernel[0] * g.kernel[1];
        par_rows(&mut out, per_image, threads, work, |first, block| {
            for (i, dst) in block.chunks_exact_mut(per_image).enumerate() {
                let image = &xs[(first + i) * c * h * w..][..c * h * w];
                self.image(image, [h, w], [oh, ow], dst);
            }
        });
        Ok(vec![Tensor::new(
            vec![n, self.filters, oh, ow],
            Data::F32(out),
        )?])
    }
}

impl FloatConv {
    /// One image: each kernel tap adds weight × (shifted, strided) input row to a row of
    /// accumulators over zero-padded planes. Students' convolutions have few channels, where
    /// this beats gathering patches, and with stride 1 the inner loop vectorizes.
    fn image(&self, image: &[f32], [h, w]: [usize; 2], [oh, ow]: [usize; 2], out: &mut [f32]) {
        let g = &self.geometry;
        let [kh, kw] = g.kernel;
        let [sh, sw] = g.strides;
        let [dh, dw] = g.dilations;
        let [pt, pl, pb, pr] = g.pads;
        let (ph, pwid) = (h + pt + pb, w + pl + pr);
        let plane = oh * ow;
        let per_group = self.filters / g.group;
        let taps = self.channels * kh * kw;
        let mut padded = vec![0f32; self.channels * ph * pwid];
        for grp in 0..g.group {
            g.fill_planes(image, self.channels, grp, [h, w], pwid, &mut padded);
            for o in grp * per_group..(grp + 1) * per_group {
                let acc = &mut out[o * plane..(o + 1) * plane];
                acc.fill(0.0);
                for (t, &wt) in self.weights[o * taps..(o + 1) * taps].iter().enumerate() {
                    let (ch, ky, kx) = (t / (kh * kw), (t / kw) % kh, t % kw);
                    for oy in 0..oh {
                        let start = (ch * ph + oy * sh + ky * dh) * pwid + kx * dw;
                        let dst = &mut acc[oy * ow..(oy + 1) * ow];
                        if sw == 1 {
                            for (d, &v) in dst.iter_mut().zip(&padded[start..start + ow]) {
                                *d += wt * v;
                            }
                        } else {
                            let src = padded[start..].iter().step_by(sw);
                            for (d, &v) in dst.iter_mut().zip(src) {
                                *d += wt * v;
                            }
                        }
                    }
                }
                for d in acc.iter_mut() {
                    *d = self.affine.apply(o, *d);
                }
            }
        }
    }
}
