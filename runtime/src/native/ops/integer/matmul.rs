//! `[.., M, K] x [K, N]` integer matrix products with constant weights.

use super::epilogue::{Accumulated, Epilogue};
use super::packed::{Act, PackedWeights};
use crate::native::ops::{par_rows, required, Op};
use crate::native::tensor::{volume, Data, Tensor};

/// `[.., M, K] x [K, N]` with constant weights. Inputs: activations, optional zero point.
#[derive(Debug)]
pub struct IntegerMatMul {
    /// Weights, one packed row per output column.
    pub weights: PackedWeights,
    /// Output conversion.
    pub epilogue: Epilogue,
}

impl Op for IntegerMatMul {
    fn run(&self, inputs: &[Option<&Tensor>], threads: usize) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0)?;
        let act = Act::of(x)?;
        let za = act.zero_point(inputs.get(1).copied().flatten())?;
        let w = &self.weights;
        let (&k, lead) = x.shape.split_last().ok_or("activations are a scalar")?;
        if k != w.k {
            return Err(format!(
                "activations of shape {:?} against weights with {} inputs",
                x.shape, w.k
            ));
        }
        let rows = volume(lead)?;
        let n = w.rows;
        let mut shape = lead.to_vec();
        shape.push(n);
        let out = match self.epilogue {
            Epilogue::Int32 => Data::I32(self.compute(&act, za, rows, threads)),
            Epilogue::Float { .. } => Data::F32(self.compute(&act, za, rows, threads)),
        };
        Ok(vec![Tensor::new(shape, out)?])
    }
}

impl IntegerMatMul {
    fn compute<T: Accumulated>(&self, act: &Act, za: i32, rows: usize, threads: usize) -> Vec<T> {
        let w = &self.weights;
        let n = w.rows;
        let mut out = vec![T::default(); rows * n];
        let requant = self.epilogue.requant(n);
        par_rows(&mut out, n, threads, n * w.k, |first, block| {
            let mut a = vec![0i8; w.k_pad];
            let mut acc = vec![0i32; n];
            for (r, dst) in block.chunks_exact_mut(n).enumerate() {
                act.copy((first + r) * w.k, &mut a[..w.k]);
                w.accumulate(&a, za, &mut acc);
                for ((d, &x), q) in dst.iter_mut().zip(&acc).zip(&requant) {
                    *d = T::from_acc(x, q);
                }
            }
        });
        out
    }
}
