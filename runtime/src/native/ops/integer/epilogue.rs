//! What happens to each int32 accumulator of an integer layer: kept, or rescaled to f32 with
//! bias and ReLU, resolved once per run per output channel.

/// What happens to each int32 accumulator.
#[derive(Debug)]
pub enum Epilogue {
    /// Kept as int32 (`MatMulInteger` / `ConvInteger` semantics).
    Int32,
    /// `f32(acc + int_bias[c]) · scale[c] + bias[c]`, then ReLU when asked: the rescaling
    /// that follows integer layers (QOperator's `Add`/`Cast`/`Mul`, QDQ's scales and float
    /// bias) done while the accumulator is in a register. One-element vectors apply to every
    /// channel; empty ones add nothing.
    Float {
        /// int32 bias, added before the conversion (as QOperator graphs do).
        int_bias: Vec<i32>,
        /// Activation scale times weight scale.
        scale: Vec<f32>,
        /// Float bias.
        bias: Vec<f32>,
        /// Clamp at zero.
        relu: bool,
    },
}

/// One output channel's conversion, resolved from the [`Epilogue`] once per run so the
/// per-value work is an add, a convert, a multiply-add and a max.
#[derive(Clone, Copy, Debug)]
pub(super) struct Requant {
    int_bias: i32,
    scale: f32,
    bias: f32,
    relu: bool,
}

impl Epilogue {
    pub(super) fn requant(&self, channels: usize) -> Vec<Requant> {
        fn pick<T: Copy>(v: &[T], c: usize, default: T) -> T {
            match v.len() {
                0 => default,
                1 => v[0],
                _ => v.get(c).copied().unwrap_or(default),
            }
        }
        (0..channels)
            .map(|c| match self {
                Epilogue::Int32 => Requant {
                    int_bias: 0,
                    scale: 1.0,
                    bias: 0.0,
                    relu: false,
                },
                Epilogue::Float {
                    int_bias,
                    scale,
                    bias,
                    relu,
                } => Requant {
                    int_bias: pick(int_bias, c, 0),
                    scale: pick(scale, c, 1.0),
                    bias: pick(bias, c, 0.0),
                    relu: *relu,
                },
            })
            .collect()
    }
}

/// An output element type the accumulators can be written as.
pub(super) trait Accumulated: Copy + Default + Send {
    fn from_acc(acc: i32, r: &Requant) -> Self;
}

impl Accumulated for i32 {
    #[inline]
    fn from_acc(acc: i32, _: &Requant) -> i32 {
        acc
    }
}

impl Accumulated for f32 {
    #[inline]
    fn from_acc(acc: i32, r: &Requant) -> f32 {
        let y = acc.wrapping_add(r.int_bias) as f32 * r.scale + r.bias;
        if r.relu && y < 0.0 {
            0.0
        } else {
            y
        }
    }
}
