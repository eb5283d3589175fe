//! What a model becomes for one input shape: run-time values ([`Act`]) and the steps that
//! compute them ([`Step`]), every layer already fused with what it absorbs, every weight
//! packed. [`crate::engine::plan`] then places the values in one arena.

use std::sync::Arc;

use super::kernels::depthwise::{FDepthwise, QDepthwise};
use super::kernels::qgemm::QPacked;
use super::kernels::requant::Requant;
use super::kernels::sgemm::FPacked;

/// A run-time value, by index.
pub(crate) type ActId = usize;

/// Scale and zero point of int8 values (zero point in the signed domain: a u8 value `v`
/// with zero point `z` is held as `v - 128` with zero point `z - 128`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QParams {
    pub scale: f32,
    pub zp: i32,
    /// The file's type is uint8 (values are held shifted by -128).
    pub unsigned: bool,
}

/// Element type of a run-time value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Elem {
    F32,
    /// int8 with known parameters.
    Q8(QParams),
    /// int8 whose parameters are computed at run time (`DynamicQuantizeLinear`): they live
    /// in the two scalar values named here.
    Q8Dynamic {
        scale: ActId,
        zp: ActId,
    },
    I32,
    I64,
}

impl Elem {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Elem::F32 | Elem::I32 => 4,
            Elem::Q8(_) | Elem::Q8Dynamic { .. } => 1,
            Elem::I64 => 8,
        }
    }

    pub fn is_q8(self) -> bool {
        matches!(self, Elem::Q8(_) | Elem::Q8Dynamic { .. })
    }
}

/// A run-time value: its logical (ONNX) shape, element type, and whether a 4-D value is
/// stored channels-last (NHWC) rather than as ONNX lays it out (NCHW).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Act {
    pub shape: Vec<usize>,
    pub elem: Elem,
    pub nhwc: bool,
}

impl Act {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> usize {
        self.len() * self.elem.size()
    }

    /// `[n, c, h, w]` of a 4-D value.
    pub fn nchw(&self) -> [usize; 4] {
        match self.shape[..] {
            [n, c, h, w] => [n, c, h, w],
            _ => panic!("a 4-D value"),
        }
    }
}

/// Where a convolution's window sits: kernel, strides, padding (top, left, bottom, right),
/// dilations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
}

impl Window {
    /// Output rows and columns for an `h`x`w` input, None when the window does not fit.
    pub fn output(&self, h: usize, w: usize, ceil: bool) -> Option<(usize, usize)> {
        let side = |n: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize| {
            let span = (k - 1) * d + 1;
            let padded = n + p0 + p1;
            (padded >= span).then(|| {
                let q = padded - span;
                if ceil {
                    q.div_ceil(s) + 1
                } else {
                    q / s + 1
                }
            })
        };
        Some((
            side(
                h,
                self.kernel[0],
                self.strides[0],
                self.dilations[0],
                self.pads[0],
                self.pads[2],
            )?,
            side(
                w,
                self.kernel[1],
                self.strides[1],
                self.dilations[1],
                self.pads[1],
                self.pads[3],
            )?,
        ))
    }

    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
}

/// The most values a gathered row holds: a layer with few input channels is packed as one tap
/// of its whole window when `taps · channels` is at most this, and the engine gathers each
/// output row's window into a block of this size.
pub(crate) const GATHER_MAX: usize = 128;

/// The weights of a convolution or dense layer, packed for its kernel.
#[derive(Debug)]
pub(crate) enum Weights {
    /// int8, through the int8 GEMM.
    Q(QPacked),
    /// int8, one filter per channel.
    QDepthwise(QDepthwise),
    /// f32, through the f32 GEMM.
    F(FPacked),
    /// f32, one filter per channel.
    FDepthwise(FDepthwise),
}

/// A convolution (or a dense layer: a 1x1 convolution over a 1x1 image) and everything it
/// absorbed: bias, scale, activation, output quantization.
#[derive(Debug)]
pub(crate) struct Conv {
    pub x: ActId,
    pub y: ActId,
    pub window: Window,
    /// Channel groups; the packed weights hold one group's worth per `groups` (all groups'
    /// output channels, in order).
    pub groups: usize,
    pub weights: Arc<Weights>,
    /// The epilogue: int32 sums to the output (int8 layers), or bias and clamp (f32 ones,
    /// which use `add` and the F32 clamp; `bias` and `mult` unused).
    pub requant: Requant,
    /// Zero point of the int8 input, in the signed domain (the row of padding holds it).
    pub input_zp: i32,
    /// An f32 value of the output's shape and layout added before the clamp (a residual
    /// connection folded in).
    pub residual: Option<ActId>,
}

/// An element-wise operation of two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

/// One operand of an element-wise operation: a run-time value, or a constant laid out to
/// broadcast against the other operand as stored.
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Act(ActId),
    /// Values and their (storage-order) shape, rank-aligned with the output.
    Const(Arc<Vec<f32>>, Vec<usize>),
}

/// Element-wise functions of one value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Unary {
    Clip(f32, f32),
    Sigmoid,
    Tanh,
    Exp,
    Neg,
    Abs,
    Sqrt,
    /// Rounded to the nearest float16 (a cast to f16 and back).
    RoundF16,
}

/// Pooling over each channel's plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PoolKind {
    Max,
    /// Average; whether padding counts in the divisor.
    Average(bool),
}

/// One step of a program.
#[derive(Debug)]
pub(crate) enum Step {
    /// NCHW to NHWC (or back) of a 4-D value, any element type.
    Relayout { x: ActId, y: ActId, to_nhwc: bool },
    /// f32 to int8.
    Quantize { x: ActId, y: ActId, q: QParams },
    /// int8 (static or dynamic parameters) to f32.
    Dequantize { x: ActId, y: ActId },
    /// f32 to int8 with parameters from the batch's range (u8 semantics of ONNX
    /// `DynamicQuantizeLinear`), writing the scale and zero point values too.
    DynamicQuantize {
        x: ActId,
        y: ActId,
        scale: ActId,
        zp: ActId,
    },
    /// A convolution or dense layer, int8 or f32, plain or depthwise.
    Conv(Conv),
    /// `act(dq(a) + dq(b))` of two int8 values, to f32 or int8.
    QAdd {
        a: ActId,
        b: ActId,
        y: ActId,
        lo: f32,
        hi: f32,
    },
    /// `clamp(a op b, lo, hi)` with numpy broadcasting over the values as stored, f32.
    Binary {
        a: Operand,
        b: Operand,
        y: ActId,
        op: Arith,
        lo: f32,
        hi: f32,
    },
    /// An element-wise function, f32.
    Unary { x: ActId, y: ActId, op: Unary },
    /// Softmax (or log-softmax) over rows of `cols` values (NCHW order).
    Softmax {
        x: ActId,
        y: ActId,
        log: bool,
        cols: usize,
    },
    /// Max or average pooling of NHWC values, f32 or int8 (same parameters out).
    Pool {
        x: ActId,
        y: ActId,
        kind: PoolKind,
        window: Window,
    },
    /// Mean over each channel's plane, NHWC in, `[n, c, 1, 1]` out (f32 or int8).
    GlobalAveragePool { x: ActId, y: ActId },
    /// A value copied into another of the same bytes (a reshape that cannot alias).
    Copy { x: ActId, y: ActId },
    /// A permutation of axes (logical layout in and out), f32.
    Transpose {
        x: ActId,
        y: ActId,
        perm: Vec<usize>,
    },
    /// Values laid one after another along `axis`, f32.
    Concat {
        xs: Vec<ActId>,
        y: ActId,
        axis: usize,
    },
    /// Index of the largest value along the last axis, i64 out.
    ArgMax { x: ActId, y: ActId },
    /// f32 to i32 / i64 / f32 conversions (truncating toward zero).
    Convert { x: ActId, y: ActId },
}

impl Step {
    /// The values the step reads.
    pub fn inputs(&self) -> Vec<ActId> {
        let op = |o: &Operand| match o {
            Operand::Act(a) => Some(*a),
            Operand::Const(..) => None,
        };
        match self {
            Step::Relayout { x, .. }
            | Step::Quantize { x, .. }
            | Step::Unary { x, .. }
            | Step::Softmax { x, .. }
            | Step::Pool { x, .. }
            | Step::GlobalAveragePool { x, .. }
            | Step::Copy { x, .. }
            | Step::Transpose { x, .. }
            | Step::ArgMax { x, .. }
            | Step::Convert { x, .. }
            | Step::DynamicQuantize { x, .. } => vec![*x],
            Step::Dequantize { x, .. } => vec![*x],
            Step::Conv(c) => std::iter::once(c.x).chain(c.residual).collect(),
            Step::QAdd { a, b, .. } => vec![*a, *b],
            Step::Binary { a, b, .. } => op(a).into_iter().chain(op(b)).collect(),
            Step::Concat { xs, .. } => xs.clone(),
        }
    }

    /// The values the step writes.
    pub fn outputs(&self) -> Vec<ActId> {
        match self {
            Step::DynamicQuantize { y, scale, zp, .. } => vec![*y, *scale, *zp],
            Step::Conv(c) => vec![c.y],
            Step::Relayout { y, .. }
            | Step::Quantize { y, .. }
            | Step::Dequantize { y, .. }
            | Step::QAdd { y, .. }
            | Step::Binary { y, .. }
            | Step::Unary { y, .. }
            | Step::Softmax { y, .. }
            | Step::Pool { y, .. }
            | Step::GlobalAveragePool { y, .. }
            | Step::Copy { y, .. }
            | Step::Transpose { y, .. }
            | Step::Concat { y, .. }
            | Step::ArgMax { y, .. }
            | Step::Convert { y, .. } => vec![*y],
        }
    }
}
