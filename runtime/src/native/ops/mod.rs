//! The operators of the native engine, one file per family.

pub mod elementwise;
pub mod float;
pub mod integer;
pub mod pool;
pub mod quantize;
pub mod shape;

use crate::native::tensor::Tensor;
use crate::proto::AttributeProto;

/// One operator, its constants and attributes bound at load time.
pub trait Op: Send + Sync + std::fmt::Debug {
    /// Computes the outputs from the inputs (`None` for an omitted optional input).
    /// `threads` is how many threads the operator may use.
    fn run(&self, inputs: &[Option<&Tensor>], threads: usize) -> Result<Vec<Tensor>, String>;
}

/// The `i`th input, which the operator requires.
pub fn required<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor, String> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} is missing"))
}

/// A node's attributes, by name.
#[derive(Clone, Copy)]
pub struct Attrs<'a>(pub &'a [AttributeProto]);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.iter().find(|a| a.name == name)
    }

    /// An INT attribute, or `default`.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }

    /// A FLOAT attribute, or `default`.
    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }

    /// An INTS attribute, or `None` when absent.
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        self.get(name).map(|a| a.ints.as_slice())
    }

    /// A STRING attribute, or `default`.
    pub fn string(&self, name: &str, default: &str) -> String {
        self.get(name).map_or(default.to_owned(), |a| {
            String::from_utf8_lossy(&a.s).into_owned()
        })
    }

    /// A TENSOR attribute.
    pub fn tensor(&self, name: &str) -> Option<&crate::proto::TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }

    /// INTS of non-negative values that fit `usize`, or `default`.
    pub fn sizes(&self, name: &str, default: Vec<usize>) -> Result<Vec<usize>, String> {
        match self.ints(name) {
            None => Ok(default),
            Some(v) => v
                .iter()
                .map(|&x| usize::try_from(x).map_err(|_| format!("attribute {name} holds {x}")))
                .collect(),
        }
    }
}

/// Splits `out` into row blocks of `row_len` and hands them to `f(first_row, block)` on up
/// to `threads` threads; single-threaded when there is too little work to pay for spawning.
pub fn par_rows<T: Send>(
    out: &mut [T],
    row_len: usize,
    threads: usize,
    work_per_row: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let rows = out.len().checked_div(row_len).unwrap_or(0);
    // Spawning a thread costs tens of microseconds: below ~a million multiply-adds the
    // split loses more than it gains.
    let worth = rows.saturating_mul(work_per_row) >= 1 << 20;
    let threads = threads.min(rows).max(1);
    if threads == 1 || !worth {
        f(0, out);
        return;
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        for (i, block) in out.chunks_mut(per * row_len).enumerate() {
            let f = &f;
            s.spawn(move || f(i * per, block));
        }
    });
}
