//! Recognising neighbours a step absorbs: `DequantizeLinear` in front of a float layer (the
//! QDQ pattern, run as an integer layer), and the element-wise tail behind one (int32 bias,
//! cast, rescale, float bias, ReLU) folded into its epilogue.

use super::{unsupported, Lowering};
use crate::error::Result;
use crate::native::ops::float::Affine;
use crate::native::ops::integer::Epilogue;
use crate::native::ops::Attrs;
use crate::native::tensor::{Data, Tensor};
use crate::proto::NodeProto;

impl<'g> Lowering<'g> {
    /// The producer of `name` when it is a `DequantizeLinear`.
    pub(super) fn dequantized(&self, name: &str) -> Option<&'g NodeProto> {
        self.producers
            .get(name)
            .copied()
            .filter(|n| n.op_type == "DequantizeLinear" && n.input.len() >= 2)
    }

    /// `DequantizeLinear(x_q, scale, zp)` of a run-time int8 tensor with one constant scale:
    /// the quantized value's name, its zero point's name (if any), and the scale.
    pub(super) fn dequantized_activation(
        &self,
        name: &str,
    ) -> Option<(&'g str, Option<&'g str>, f32)> {
        let dq = self.dequantized(name)?;
        let scale = self.constant(&dq.input[1])?.scalar_f32().ok()?;
        if self.constant(&dq.input[0]).is_some() {
            return None;
        }
        let zp = dq
            .input
            .get(2)
            .map(String::as_str)
            .filter(|z| !z.is_empty());
        Some((dq.input[0].as_str(), zp, scale))
    }

    /// `DequantizeLinear` of constant int8 weights: the int tensor, zero points and scales
    /// (one, or one per channel along `axis`, which must be `channel_axis`).
    pub(super) fn dequantized_weights(
        &self,
        name: &str,
        channel_axis: usize,
    ) -> Option<(Tensor, Vec<i64>, Vec<f32>)> {
        let dq = self.dequantized(name)?;
        let w = self.constant(&dq.input[0])?;
        if !matches!(w.data, Data::I8(_) | Data::U8(_)) {
            return None;
        }
        let scales = self.constant(&dq.input[1])?.as_f32().ok()?.to_vec();
        let zp = match dq.input.get(2).filter(|z| !z.is_empty()) {
            Some(z) => self.constant(z)?.to_i64().ok()?,
            None => vec![],
        };
        if scales.len() > 1 {
            let rank = w.shape.len() as i64;
            let axis = Attrs(&dq.attribute).int("axis", 1);
            let axis = if axis < 0 { axis + rank } else { axis };
            if axis != channel_axis as i64 || w.shape.get(channel_axis) != Some(&scales.len()) {
                return None;
            }
        }
        Some((w.clone(), zp, scales))
    }

    /// `node`'s other input when it is a constant vector over the output channels (one value,
    /// or `channels` along the axis `from_end` places from the last, in at most `max_rank`
    /// dimensions).
    pub(super) fn channel_constant(
        &self,
        node: &NodeProto,
        value: &str,
        channels: usize,
        from_end: usize,
        max_rank: usize,
    ) -> Option<Tensor> {
        let other = node.input.iter().take(2).find(|i| i.as_str() != value)?;
        let t = self.constant(other)?;
        let rank = t.shape.len();
        let fits = t.len() == 1
            || (t.len() == channels
                && rank >= from_end
                && rank <= max_rank
                && t.shape[rank - from_end] == channels);
        (fits && node.input.len() == 2 && node.input.iter().any(|i| i == value)).then(|| t.clone())
    }

    /// Folds the element-wise tail of an integer layer into its epilogue: QOperator's
    /// `Add(int32 bias) → Cast(f32) → Mul(scale)`, a float bias `Add`, and a `Relu`. Returns the
    /// epilogue and the value the fused step now produces.
    pub(super) fn absorb(
        &mut self,
        mut out: &'g str,
        channels: usize,
        from_end: usize,
        max_rank: usize,
        mut epilogue: Epilogue,
    ) -> (Epilogue, &'g str) {
        let mut absorbed = Vec::new();
        if let Epilogue::Int32 = epilogue {
            let mut at = out;
            let mut int_bias = vec![];
            if let Some(add) = self.sole_consumer(at, "Add") {
                match self.channel_constant(add, at, channels, from_end, max_rank) {
                    Some(Tensor {
                        data: Data::I32(b), ..
                    }) => {
                        int_bias = b;
                        absorbed.push(add);
                        at = &add.output[0];
                    }
                    _ => return (epilogue, out),
                }
            }
            let Some(cast) = self.sole_consumer(at, "Cast").filter(|c| {
                Attrs(&c.attribute).int("to", 0) == crate::proto::data_type::FLOAT as i64
            }) else {
                return (epilogue, out);
            };
            let Some(mul) = self.sole_consumer(&cast.output[0], "Mul") else {
                return (epilogue, out);
            };
            let Some(Tensor {
                data: Data::F32(scale),
                ..
            }) = self.channel_constant(mul, &cast.output[0], channels, from_end, max_rank)
            else {
                return (epilogue, out);
            };
            absorbed.extend([cast, mul]);
            out = &mul.output[0];
            epilogue = Epilogue::Float {
                int_bias,
                scale,
                bias: vec![],
                relu: false,
            };
        }
        if let Epilogue::Float { bias, relu, .. } = &mut epilogue {
            if bias.is_empty() {
                if let Some(add) = self.sole_consumer(out, "Add") {
                    if let Some(Tensor {
                        data: Data::F32(b), ..
                    }) = self.channel_constant(add, out, channels, from_end, max_rank)
                    {
                        *bias = b;
                        absorbed.push(add);
                        out = &add.output[0];
                    }
                }
            }
            if let Some(r) = self.sole_consumer(out, "Relu") {
                *relu = true;
                absorbed.push(r);
                out = &r.output[0];
            }
        }
        for n in absorbed {
            self.absorbed.insert(&n.output[0]);
        }
        (epilogue, out)
    }
    /// The constant f32 weights of a float layer.
    pub(super) fn float_weights(&self, node: &NodeProto, name: &str) -> Result<Tensor> {
        match self.constant(name) {
            Some(
                w @ Tensor {
                    data: Data::F32(_), ..
                },
            ) => Ok(w.clone()),
            Some(w) => Err(unsupported(node, &format!("{} weights", w.type_name()))),
            None => Err(unsupported(node, "weights must be constant")),
        }
    }

    /// Absorbs a float layer's bias `Add` and `Relu` (after `bias`, the layer's own).
    pub(super) fn float_tail(
        &mut self,
        node: &NodeProto,
        output: &'g str,
        channels: usize,
        from_end: usize,
        max_rank: usize,
        bias: Vec<f32>,
    ) -> Result<(Affine, &'g str)> {
        let epilogue = Epilogue::Float {
            int_bias: vec![],
            scale: vec![],
            bias,
            relu: false,
        };
        let (epilogue, out) = self.absorb(output, channels, from_end, max_rank, epilogue);
        let affine =
            Affine::from_epilogue(&epilogue, channels).map_err(|e| unsupported(node, &e))?;
        Ok((affine, out))
    }
}
