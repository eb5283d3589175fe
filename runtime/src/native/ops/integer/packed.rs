//! Constant int8 weights packed for the kernels, and a run's int8 activations, both in the
//! signed domain.

use crate::native::kernels::{self, padded, Isa, Weights};
use crate::native::tensor::{volume, Data, Tensor};

/// Constant weights as rows of `k` zero-point-free int8 values, padded to the kernel unit.
#[derive(Debug)]
pub struct PackedWeights {
    pub(super) rows: usize,
    pub(super) k: usize,
    pub(super) k_pad: usize,
    pub(super) data: Vec<i8>,
    pub(super) sums: Vec<i32>,
    pub(super) isa: Isa,
}

impl PackedWeights {
    /// Packs `rows` rows of `k` values, `value(row, p)` being the weight minus its zero point.
    pub fn pack(
        rows: usize,
        k: usize,
        isa: Isa,
        value: impl Fn(usize, usize) -> i64,
    ) -> Result<PackedWeights, String> {
        let k_pad = padded(k);
        let len = rows.checked_mul(k_pad).ok_or("weight matrix too large")?;
        let mut data = vec![0i8; len];
        let mut sums = vec![0i32; rows];
        let mut has_min = false;
        for r in 0..rows {
            for p in 0..k {
                let v = value(r, p);
                let v = i8::try_from(v)
                    .map_err(|_| format!("weight {v} (after its zero point) does not fit int8"))?;
                has_min |= v == i8::MIN;
                data[r * k_pad + p] = v;
                sums[r] += v as i32;
            }
        }
        // The SIMD kernels require weights in [-127, 127]; see `kernels`.
        let isa = if has_min { Isa::PORTABLE } else { isa };
        Ok(PackedWeights {
            rows,
            k,
            k_pad,
            data,
            sums,
            isa,
        })
    }

    /// Packs a `[K, N]` MatMul B (channels are columns) with its zero point (one, or one per
    /// column).
    pub fn from_matmul_b(b: &Tensor, zp: &[i64], isa: Isa) -> Result<PackedWeights, String> {
        let [k, n] = b.shape[..] else {
            return Err(format!(
                "weights of shape {:?}: only 2-D is supported",
                b.shape
            ));
        };
        let v = b.to_i64()?;
        let zp = per_channel(zp, n)?;
        PackedWeights::pack(n, k, isa, |r, p| v[p * n + r] - zp[r])
    }

    /// Packs `[N, K]` rows (Gemm with transB, and Conv's `[O, C/g, kh, kw]` flattened).
    pub fn from_rows(w: &Tensor, zp: &[i64], isa: Isa) -> Result<PackedWeights, String> {
        let n = *w.shape.first().ok_or("weights are a scalar")?;
        let k = volume(&w.shape[1..])?;
        let v = w.to_i64()?;
        let zp = per_channel(zp, n)?;
        PackedWeights::pack(n, k, isa, |r, p| v[r * k + p] - zp[r])
    }

    /// Number of rows (output channels).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `acc[r] = Σ a'·w'[r] - za'·Σ w'[r]` for one padded activation row.
    pub(super) fn accumulate(&self, a: &[i8], za: i32, acc: &mut [i32]) {
        kernels::dots(self.isa, Weights::Rows, a, &self.data, self.k_pad, acc);
        for (x, s) in acc.iter_mut().zip(&self.sums) {
            *x = x.wrapping_sub(za.wrapping_mul(*s));
        }
    }
}

/// A zero point given once or per channel, expanded to one per channel.
pub(super) fn per_channel(zp: &[i64], n: usize) -> Result<Vec<i64>, String> {
    match zp.len() {
        0 => Ok(vec![0; n]),
        1 => Ok(vec![zp[0]; n]),
        m if m == n => Ok(zp.to_vec()),
        m => Err(format!("{m} zero points for {n} channels")),
    }
}

/// The int8 activations of a run, read in the signed domain.
pub(super) enum Act<'a> {
    I8(&'a [i8]),
    U8(&'a [u8]),
}

impl<'a> Act<'a> {
    pub(super) fn of(t: &'a Tensor) -> Result<Act<'a>, String> {
        match &t.data {
            Data::I8(v) => Ok(Act::I8(v)),
            Data::U8(v) => Ok(Act::U8(v)),
            other => Err(format!(
                "integer activations must be i8 or u8, found {}",
                other.type_name()
            )),
        }
    }

    /// The zero point in the signed domain, from the optional zero-point input.
    pub(super) fn zero_point(&self, zp: Option<&Tensor>) -> Result<i32, String> {
        let z = match zp {
            None => 0,
            Some(t) if t.len() == 1 => t.to_i64()?[0] as i32,
            Some(t) => {
                return Err(format!(
                    "the activation zero point has {} values; only one per tensor is supported",
                    t.len()
                ))
            }
        };
        Ok(match self {
            Act::I8(_) => z,
            Act::U8(_) => z - 128,
        })
    }

    /// Copies `dst.len()` values from `start`, in the signed domain.
    pub(super) fn copy(&self, start: usize, dst: &mut [i8]) {
        match self {
            Act::I8(v) => dst.copy_from_slice(&v[start..start + dst.len()]),
            Act::U8(v) => {
                let n = dst.len();
                for (d, &s) in dst.iter_mut().zip(&v[start..start + n]) {
                    *d = (s ^ 0x80) as i8;
                }
            }
        }
    }
}
