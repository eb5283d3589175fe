//! Fully connected layers as one candle op: `relu(x · Wᵀ + b)` forward, and a backward pass
//! written as three GEMM calls and one pass over the output gradient.
//!
//! Why not candle-nn's `Linear` followed by `relu`: that records four graph nodes (transpose,
//! matmul, broadcast add, relu), and candle's backward for them allocates a zero tensor for
//! every gradient it accumulates, builds relu's mask out of three temporaries and sums the bias
//! gradient through a broadcast. At MNIST MLP sizes those passes cost more than the matrix
//! products themselves (784-1200-1200-10 at batch 128: 43 ms of backward for about 14 ms of
//! GEMM). The products here go to the same `gemm` crate candle's own matmul uses, so the two
//! agree to rounding; the gain is in everything around them.

use candle_core::{CpuStorage, CustomOp3, Layout, Module, Result as CandleResult, Shape, Tensor};

use crate::gemm::{matmul, matmul_serial, op_error, threads, values, with_values, MatMul};

/// `y = x · Wᵀ + b`, then ReLU when `relu` is set: a hidden or output layer of an MLP.
#[derive(Debug, Clone)]
pub struct Dense {
    weight: Tensor,
    bias: Tensor,
    relu: bool,
}

impl Dense {
    /// A layer over `weight` (`[out, in]`) and `bias` (`[out]`), sharing their storage (so an
    /// optimizer that updates the variables in place updates the layer).
    pub fn new(weight: Tensor, bias: Tensor, relu: bool) -> Dense {
        Dense { weight, bias, relu }
    }

    /// The weight, `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The same layer computing with `weight` instead (a fake-quantized copy, in QAT).
    pub fn with_weight(&self, weight: Tensor) -> Dense {
        Dense {
            weight,
            ..self.clone()
        }
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        x.contiguous()?.apply_op3(
            &self.weight.contiguous()?,
            &self.bias.contiguous()?,
            DenseOp { relu: self.relu },
        )
    }
}

struct DenseOp {
    relu: bool,
}

impl CustomOp3 for DenseOp {
    fn name(&self) -> &'static str {
        if self.relu {
            "dense-relu"
        } else {
            "dense"
        }
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        x_layout: &Layout,
        ws: &CpuStorage,
        w_layout: &Layout,
        bs: &CpuStorage,
        b_layout: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let (&[n, k], &[out, k2], &[out2]) = (x_layout.dims(), w_layout.dims(), b_layout.dims())
        else {
            return Err(op_error(format!(
                "dense layer expects x [n, in], weight [out, in], bias [out]; got {:?}, {:?}, {:?}",
                x_layout.dims(),
                w_layout.dims(),
                b_layout.dims()
            )));
        };
        if k != k2 || out != out2 {
            return Err(op_error(format!(
                "dense layer: x [{n}, {k}] does not fit weight [{out}, {k2}] and bias [{out2}]"
            )));
        }
        let (x, w, b) = (
            values(xs, x_layout, "dense layer input")?,
            values(ws, w_layout, "dense layer weight")?,
            values(bs, b_layout, "dense layer bias")?,
        );
        let mut y = Vec::with_capacity(n * out);
        for _ in 0..n {
            y.extend_from_slice(b);
        }
        // x[n, k] · Wᵀ: element (l, j) of Wᵀ is W[j, l], at j * k + l.
        matmul((n, out, k), &mut y, true, x, (k, 1), w, (1, k));
        if self.relu {
            y.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, k) = x.dims2()?;
        let out = w.dim(0)?;
        // The gradient at the pre-activation: ReLU passes it where the output is positive.
        let g = with_values(grad, "dense layer output gradient", |g| {
            if !self.relu {
                return Ok(g.to_vec());
            }
            with_values(res, "dense layer output", |y| {
                Ok(g.iter()
                    .zip(y)
                    .map(|(&g, &y)| if y > 0.0 { g } else { 0.0 })
                    .collect::<Vec<f32>>())
            })
        })?;
        let mut db = vec![0f32; out];
        for row in g.chunks_exact(out) {
            db.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
        }
        // dW[out, k] = gᵀ · x (element (i, l) of gᵀ is g[l, i], at l * out + i), and
        // dx[n, k] = g · W unless the input is data (the first layer's), which needs none.
        let mut dw = vec![0f32; out * k];
        let mut dx = x.track_op().then(|| vec![0f32; n * k]);
        with_values(x, "dense layer input", |xv| {
            with_values(w, "dense layer weight", |wv| {
                let weight_grad = |dw: &mut [f32], on: MatMul| {
                    on((out, k, n), dw, false, &g, (1, out), xv, (k, 1))
                };
                let input_grad = |dx: &mut [f32], on: MatMul| {
                    on((n, k, out), dx, false, &g, (out, 1), wv, (k, 1))
                };
                match dx.as_mut() {
                    // Two independent products: one thread each beats splitting each one,
                    // whose inner dimension (the batch, for dW) is too short to share well.
                    Some(dx) if threads() > 1 => {
                        rayon::join(
                            || weight_grad(&mut dw, matmul_serial),
                            || input_grad(dx, matmul_serial),
                        );
                    }
                    Some(dx) => {
                        weight_grad(&mut dw, matmul);
                        input_grad(dx, matmul);
                    }
                    None => weight_grad(&mut dw, matmul),
                }
                Ok(())
            })
        })?;
        let dx = dx
            .map(|dx| Tensor::from_vec(dx, (n, k), x.device()))
            .transpose()?;
        Ok((
            dx,
            Some(Tensor::from_vec(dw, (out, k), w.device())?),
            Some(Tensor::from_vec(db, out, w.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::testing::assert_matches_reference;
    use candle_core::{Device, Var};
    use candle_nn::Linear;

    fn random(shape: (usize, usize), seed: u64) -> Vec<f32> {
        // A small LCG: the test needs varied values, not good randomness.
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..shape.0 * shape.1)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Forward values and all three gradients against candle-nn's Linear (+ relu), with the
    /// input a variable too, for both a hidden and an output layer.
    #[test]
    fn matches_candle_nn_linear_forward_and_backward() {
        let dev = Device::Cpu;
        let (n, k, out) = (7, 13, 5);
        for relu in [false, true] {
            let x = Var::from_vec(random((n, k), 1), (n, k), &dev).unwrap();
            let w = Var::from_vec(random((out, k), 2), (out, k), &dev).unwrap();
            let b = Var::from_vec(random((1, out), 3), out, &dev).unwrap();
            // A weighted sum, so each output element gets its own gradient.
            let fused = Dense::new(w.as_tensor().clone(), b.as_tensor().clone(), relu)
                .forward(x.as_tensor())
                .unwrap();
            let reference = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()))
                .forward(x.as_tensor())
                .unwrap();
            let reference = if relu {
                reference.relu().unwrap()
            } else {
                reference
            };
            if relu {
                let zeros = fused.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(zeros.contains(&0.0) && zeros.iter().any(|&v| v > 0.0));
            }
            assert_matches_reference(
                &fused,
                &reference,
                &[(&x, "dx"), (&w, "dW"), (&b, "db")],
                1e-5,
            );
        }
    }

    #[test]
    fn data_inputs_get_no_gradient_and_shapes_that_do_not_fit_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(random((3, 4), 5), (3, 4), &dev).unwrap();
        let w = Var::from_vec(random((2, 4), 6), (2, 4), &dev).unwrap();
        let b = Var::from_vec(vec![0.5f32, -0.5], 2, &dev).unwrap();
        let layer = Dense::new(w.as_tensor().clone(), b.as_tensor().clone(), true);
        let grads = layer
            .forward(&x)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(&x).is_none());
        assert!(grads.get(w.as_tensor()).is_some());
        let wrong = Tensor::zeros((3, 5), candle_core::DType::F32, &dev).unwrap();
        let err = layer.forward(&wrong).unwrap_err().to_string();
        assert!(err.contains("does not fit weight [2, 4]"), "{err}");
    }
}
