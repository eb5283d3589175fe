//! Running a program: every value at its planned offset in one arena, each step reading and
//! writing there. Convolutions are in [`conv`], the quantization steps in [`quant`],
//! everything else in [`ops`].

mod conv;
mod geometry;
mod ops;
mod quant;

use super::build::Program;
use super::ir::{Act, Step};
use super::kernels::sgemm::FloatMode;
use super::kernels::Isa;
use super::plan::Placement;
use super::pool::Pool;

/// What a step needs to find its values.
pub(crate) struct Ctx<'a> {
    pub base: *mut u8,
    pub offsets: &'a [usize],
    pub acts: &'a [Act],
    pub isa: Isa,
    pub mode: FloatMode,
    pub pool: &'a Pool,
}

// SAFETY: steps split across threads write disjoint parts of their output value and only
// read the others; the arena outlives every task (`Pool::run` returns when all are done).
unsafe impl Sync for Ctx<'_> {}

impl Ctx<'_> {
    /// Value `a`'s first element.
    pub fn ptr<T>(&self, a: usize) -> *mut T {
        // SAFETY: offsets lie inside the arena.
        unsafe { self.base.add(self.offsets[a]) as *mut T }
    }

    /// Value `a` as a slice of `T`.
    ///
    /// # Safety
    /// `a` must hold `T`s, and no one may write it while the slice is alive.
    pub unsafe fn slice<T>(&self, a: usize) -> &[T] {
        std::slice::from_raw_parts(self.ptr::<T>(a), self.acts[a].len())
    }

    /// Value `a` as a mutable slice of `T`.
    ///
    /// # Safety
    /// `a` must hold `T`s and be the step's own output.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut<T>(&self, a: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.ptr::<T>(a), self.acts[a].len())
    }
}

/// An arena of 64-byte-aligned bytes.
pub(crate) struct Arena(Vec<Block>);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([u8; 64]);

impl Arena {
    pub fn new(bytes: usize) -> Arena {
        Arena(vec![Block([0; 64]); bytes.div_ceil(64)])
    }

    pub fn base(&mut self) -> *mut u8 {
        self.0.as_mut_ptr() as *mut u8
    }
}

/// Runs step `i` of `program`.
///
/// # Safety
/// The arena behind `cx` must be laid out by `placement` for `program`, with every value the
/// step reads already computed.
pub(crate) unsafe fn run_step(cx: &Ctx, program: &Program, placement: &Placement, i: usize) {
    match &program.steps[i] {
        Step::Conv(c) => conv::run(cx, c, placement.pads[i]),
        step => ops::run(cx, step),
    }
}
