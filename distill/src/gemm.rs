//! What the hand-written layers ([`crate::dense`], [`crate::conv`]) share: reading candle's CPU
//! storage as `f32` slices, and one matrix product over the `gemm` crate (candle's own CPU
//! GEMM, run with candle's thread count).

use candle_core::{
    backend::BackendStorage, CpuStorage, Layout, Result as CandleResult, Storage, Tensor,
};

/// A candle error from one of edgekd's ops.
pub(crate) fn op_error(msg: String) -> candle_core::Error {
    candle_core::Error::Msg(msg)
}

/// The f32 values of a contiguous CPU storage, as laid out by `layout`; `what` names the
/// operand in errors (e.g. "dense layer input").
pub(crate) fn values<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> CandleResult<&'a [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| op_error(format!("{what} is not contiguous")))?;
    match storage {
        CpuStorage::F32(v) => Ok(&v[start..end]),
        other => Err(op_error(format!(
            "{what} is {:?}, only f32 is supported",
            other.dtype()
        ))),
    }
}

/// Runs `f` over a tensor's f32 values (made contiguous first if they are not).
pub(crate) fn with_values<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> CandleResult<R>,
) -> CandleResult<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(values(cpu, layout, what)?),
        _ => Err(op_error(format!("{what} is not on the CPU"))),
    }
}

/// Threads the training ops use: candle's count (`RAYON_NUM_THREADS`, else every core).
pub(crate) fn threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// The signature of [`matmul`] and [`matmul_serial`], for code that picks one.
pub(crate) type MatMul =
    fn((usize, usize, usize), &mut [f32], bool, &[f32], (usize, usize), &[f32], (usize, usize));

/// `dst[m, n] (+)= a · b` for row-major `dst`, where `a[i, l]` sits at `a[i * a_rs + l * a_cs]`
/// and `b[l, j]` at `b[l * b_rs + j * b_cs]`. With `accumulate`, adds to what `dst` holds.
/// Runs on [`threads`] threads.
pub(crate) fn matmul(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) {
    let parallelism = match threads() {
        1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    };
    matmul_on(
        parallelism,
        dims,
        dst,
        accumulate,
        a,
        a_strides,
        b,
        b_strides,
    )
}

/// [`matmul`] on one thread, for callers that already split their work across threads.
pub(crate) fn matmul_serial(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) {
    let none = gemm::Parallelism::None;
    matmul_on(none, dims, dst, accumulate, a, a_strides, b, b_strides)
}

#[allow(clippy::too_many_arguments)]
fn matmul_on(
    parallelism: gemm::Parallelism,
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
) {
    assert!(dst.len() >= m * n, "destination too small");
    assert!(m == 0 || k == 0 || (m - 1) * a_rs + (k - 1) * a_cs < a.len());
    assert!(k == 0 || n == 0 || (k - 1) * b_rs + (n - 1) * b_cs < b.len());
    // SAFETY: the asserts above keep every index the GEMM touches inside the three slices, and
    // `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Checks shared by the tests of the hand-written ops.
#[cfg(test)]
pub(crate) mod testing {
    use candle_core::{Tensor, Var};

    /// Element by element, to `tol` relative to the reference (plus `tol` absolute).
    pub fn assert_close(fused: &Tensor, reference: &Tensor, tol: f32, what: &str) {
        let a = fused.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: fused {x} vs reference {y}"
            );
        }
    }

    /// A fused op's output against the candle composition it replaces, then the gradient of
    /// a weighted sum of each (its own weight per element) for every variable.
    pub fn assert_matches_reference(
        fused: &Tensor,
        reference: &Tensor,
        vars: &[(&Var, &str)],
        tol: f32,
    ) {
        assert_close(fused, reference, tol, "output");
        let weights: Vec<f32> = (0..fused.elem_count())
            .map(|i| (i as f32 * 0.13).sin())
            .collect();
        let mix = Tensor::from_vec(weights, fused.shape(), fused.device()).unwrap();
        let grads = |t: &Tensor| (t * &mix).unwrap().sum_all().unwrap().backward().unwrap();
        let (g1, g2) = (grads(fused), grads(reference));
        for (var, what) in vars {
            let (a, b) = (g1.get(var.as_tensor()), g2.get(var.as_tensor()));
            assert_close(a.unwrap(), b.unwrap(), tol, what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_products_match_the_definition() {
        // a = [[1, 2, 3], [4, 5, 6]] stored transposed (column-major), b = [[1, 0], [0, 1], [1, 1]].
        let a_t = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut dst = [10.0f32; 4];
        matmul((2, 2, 3), &mut dst, false, &a_t, (1, 2), &b, (2, 1));
        assert_eq!(dst, [4.0, 5.0, 10.0, 11.0]);
        matmul((2, 2, 3), &mut dst, true, &a_t, (1, 2), &b, (2, 1));
        assert_eq!(dst, [8.0, 10.0, 20.0, 22.0]);
    }
}
