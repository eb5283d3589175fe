//! Lowering the layers: `MatMulInteger`, `ConvInteger`, and `MatMul`, `Gemm` and `Conv` in
//! float or (fed by `DequantizeLinear`) as integer layers.

use super::{corrupt, unsupported, Lowering, Node};
use crate::error::Result;
use crate::native::ops::float::{FloatConv, FloatDense};
use crate::native::ops::integer::{
    ConvGeometry, Epilogue, IntegerConv, IntegerMatMul, PackedWeights,
};
use crate::native::ops::Attrs;
use crate::native::tensor::{Data, Tensor};
use crate::proto::NodeProto;

pub(super) fn matmul_integer<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    let b = l
        .constant(nd.input(1))
        .ok_or_else(|| unsupported(nd.node, "weights must be constant"))?;
    let zp = match l.constant(nd.input(3)) {
        Some(z) => z.to_i64().map_err(|e| nd.bad(e))?,
        None if nd.input(3).is_empty() => vec![],
        None => return Err(unsupported(nd.node, "weight zero point must be constant")),
    };
    let weights = PackedWeights::from_matmul_b(b, &zp, l.isa).map_err(|e| nd.bad(e))?;
    let (epilogue, out) = l.absorb(nd.output(), weights.rows(), 1, 2, Epilogue::Int32);
    let op = IntegerMatMul { weights, epilogue };
    l.integer(nd.node, Box::new(op), &[nd.input(0), nd.input(2)], out)
}

pub(super) fn conv_integer<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    let w = l
        .constant(nd.input(1))
        .ok_or_else(|| unsupported(nd.node, "weights must be constant"))?
        .clone();
    let zp = match l.constant(nd.input(3)) {
        Some(z) => z.to_i64().map_err(|e| nd.bad(e))?,
        None if nd.input(3).is_empty() => vec![],
        None => return Err(unsupported(nd.node, "weight zero point must be constant")),
    };
    // Before anything reads w.shape[0]: this checks the weights are 4-D (found by
    // fuzzing: scalar ConvInteger weights indexed an empty shape).
    let geometry = l.conv_geometry(nd.node, &w.shape)?;
    let (epilogue, out) = l.absorb(nd.output(), w.shape[0], 3, 4, Epilogue::Int32);
    let op = l.conv(nd.node, &w, &zp, geometry, epilogue)?;
    l.integer(nd.node, Box::new(op), &[nd.input(0), nd.input(2)], out)
}

pub(super) fn matmul<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    let quantized = l
        .dequantized_activation(nd.input(0))
        .zip(l.dequantized_weights(nd.input(1), 1));
    let Some(((x, xz, xs), (w, wz, ws))) = quantized else {
        let w = l.float_weights(nd.node, nd.input(1))?;
        let n = w.shape.get(1).copied().unwrap_or(0);
        let (affine, out) = l.float_tail(nd.node, nd.output(), n, 1, 2, vec![])?;
        let op = FloatDense::from_matmul_b(&w, affine, l.isa).map_err(|e| nd.bad(e))?;
        return l.push_to(nd.node, Box::new(op), &[nd.input(0)], &[out]);
    };
    let weights = PackedWeights::from_matmul_b(&w, &wz, l.isa).map_err(|e| nd.bad(e))?;
    let epilogue = Epilogue::Float {
        int_bias: vec![],
        scale: ws.iter().map(|s| s * xs).collect(),
        bias: vec![],
        relu: false,
    };
    let (epilogue, out) = l.absorb(nd.output(), weights.rows(), 1, 2, epilogue);
    let op = IntegerMatMul { weights, epilogue };
    l.integer(nd.node, Box::new(op), &[x, xz.unwrap_or("")], out)
}

pub(super) fn gemm<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    if nd.attrs.int("transA", 0) != 0 {
        return Err(unsupported(nd.node, "transA"));
    }
    let trans_b = nd.attrs.int("transB", 0) != 0;
    let beta = nd.attrs.float("beta", 1.0);
    let bias = match nd.input(2) {
        "" => vec![],
        c => l
            .constant(c)
            .ok_or_else(|| unsupported(nd.node, "bias must be constant"))?
            .to_f32()
            .iter()
            .map(|b| b * beta)
            .collect(),
    };
    let alpha = nd.attrs.float("alpha", 1.0);
    let quantized = l
        .dequantized_activation(nd.input(0))
        .zip(l.dequantized_weights(nd.input(1), if trans_b { 0 } else { 1 }))
        .filter(|_| alpha == 1.0);
    let Some(((x, xz, xs), (w, wz, ws))) = quantized else {
        let mut w = l.float_weights(nd.node, nd.input(1))?;
        if let Data::F32(v) = &mut w.data {
            v.iter_mut().for_each(|x| *x *= alpha);
        }
        let n = w.shape.get(usize::from(!trans_b)).copied().unwrap_or(0);
        let (affine, out) = l.float_tail(nd.node, nd.output(), n, 1, 2, bias)?;
        let op = if trans_b {
            FloatDense::from_rows(&w, affine, l.isa)
        } else {
            FloatDense::from_matmul_b(&w, affine, l.isa)
        }
        .map_err(|e| nd.bad(e))?;
        return l.push_to(nd.node, Box::new(op), &[nd.input(0)], &[out]);
    };
    let weights = if trans_b {
        PackedWeights::from_rows(&w, &wz, l.isa)
    } else {
        PackedWeights::from_matmul_b(&w, &wz, l.isa)
    }
    .map_err(|e| nd.bad(e))?;
    let epilogue = Epilogue::Float {
        int_bias: vec![],
        scale: ws.iter().map(|s| s * xs).collect(),
        bias,
        relu: false,
    };
    let (epilogue, out) = l.absorb(nd.output(), weights.rows(), 1, 2, epilogue);
    let op = IntegerMatMul { weights, epilogue };
    l.integer(nd.node, Box::new(op), &[x, xz.unwrap_or("")], out)
}

pub(super) fn conv<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    let bias = match nd.input(2) {
        "" => vec![],
        b => l
            .constant(b)
            .ok_or_else(|| unsupported(nd.node, "bias must be constant"))?
            .to_f32(),
    };
    let quantized = l
        .dequantized_activation(nd.input(0))
        .zip(l.dequantized_weights(nd.input(1), 0));
    let Some(((x, xz, xs), (w, wz, ws))) = quantized else {
        let w = l.float_weights(nd.node, nd.input(1))?;
        let filters = w.shape.first().copied().unwrap_or(0);
        let (affine, out) = l.float_tail(nd.node, nd.output(), filters, 3, 4, bias)?;
        let geometry = l.conv_geometry(nd.node, &w.shape)?;
        let op = FloatConv {
            weights: w.as_f32().map_err(|e| nd.bad(e))?.to_vec(),
            filters,
            channels: w.shape[1],
            geometry,
            affine,
        };
        return l.push_to(nd.node, Box::new(op), &[nd.input(0)], &[out]);
    };
    let epilogue = Epilogue::Float {
        int_bias: vec![],
        scale: ws.iter().map(|s| s * xs).collect(),
        bias,
        relu: false,
    };
    let geometry = l.conv_geometry(nd.node, &w.shape)?;
    let (epilogue, out) = l.absorb(nd.output(), w.shape[0], 3, 4, epilogue);
    let op = l.conv(nd.node, &w, &wz, geometry, epilogue)?;
    l.integer(nd.node, Box::new(op), &[x, xz.unwrap_or("")], out)
}

impl Lowering<'_> {
    pub(super) fn conv(
        &self,
        node: &NodeProto,
        w: &Tensor,
        zp: &[i64],
        geometry: ConvGeometry,
        epilogue: Epilogue,
    ) -> Result<IntegerConv> {
        let weights =
            PackedWeights::from_rows(w, zp, self.isa).map_err(|e| unsupported(node, &e))?;
        Ok(IntegerConv {
            weights,
            channels: w.shape[1],
            geometry,
            epilogue,
        })
    }

    /// A `Conv`'s kernel, strides, padding, dilations and groups, for weights of `shape`.
    pub(super) fn conv_geometry(&self, node: &NodeProto, shape: &[usize]) -> Result<ConvGeometry> {
        let attrs = Attrs(&node.attribute);
        let bad = |e: String| unsupported(node, &e);
        let auto_pad = attrs.string("auto_pad", "NOTSET");
        if auto_pad != "NOTSET" && auto_pad != "VALID" {
            return Err(unsupported(node, &format!("auto_pad {auto_pad}")));
        }
        let [o, c, kh, kw] = shape[..] else {
            return Err(unsupported(node, "only 2-D convolution"));
        };
        if c == 0 || kh == 0 || kw == 0 {
            return Err(corrupt(format!(
                "node `{}`: empty convolution weights",
                node.name
            )));
        }
        let group = attrs.int("group", 1);
        let group = usize::try_from(group)
            .ok()
            .filter(|&g| g > 0 && o % g == 0)
            .ok_or_else(|| {
                corrupt(format!(
                    "node `{}`: group {group} does not divide {o} filters",
                    node.name
                ))
            })?;
        let s = attrs.sizes("strides", vec![1, 1]).map_err(bad)?;
        let p = attrs.sizes("pads", vec![0; 4]).map_err(bad)?;
        let d = attrs.sizes("dilations", vec![1, 1]).map_err(bad)?;
        let k = attrs.sizes("kernel_shape", vec![kh, kw]).map_err(bad)?;
        match (&s[..], &p[..], &d[..]) {
            (&[s0, s1], &[p0, p1, p2, p3], &[d0, d1])
                if k == [kh, kw] && d0 > 0 && d1 > 0 && s0 > 0 && s1 > 0 =>
            {
                // Padding wider than the kernel's reach only adds outputs that see no input;
                // a crafted file used it (found by fuzzing: 16,777,215 columns of padding
                // turned a 6x53 image into 200 million outputs).
                let (span_h, span_w) = ((kh - 1) * d0 + 1, (kw - 1) * d1 + 1);
                if p0.max(p2) >= span_h || p1.max(p3) >= span_w {
                    return Err(unsupported(
                        node,
                        &format!("pads {p:?} reach past a {kh}x{kw} kernel"),
                    ));
                }
                Ok(ConvGeometry {
                    kernel: [kh, kw],
                    strides: [s0, s1],
                    pads: [p0, p1, p2, p3],
                    dilations: [d0, d1],
                    group,
                })
            }
            _ => Err(unsupported(node, "strides, pads or dilations are not 2-D")),
        }
    }
}
