//! Lowering everything but the layers: constants, quantization, arithmetic, activations,
//! shapes and pooling.

use super::{corrupt, unsupported, Lowering, Node};
use crate::error::Result;
use crate::native::ops::elementwise::{Arith, Binary, Cast, Softmax, Unary};
use crate::native::ops::pool::{GlobalAveragePool, Pool, Reduce};
use crate::native::ops::quantize::{DequantizeLinear, DynamicQuantizeLinear, QuantizeLinear};
use crate::native::ops::shape::{Flatten, Identity, Reshape};
use crate::native::ops::Attrs;
use crate::native::tensor::Tensor;
use crate::proto::NodeProto;

pub(super) fn constant<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    let t = nd
        .attrs
        .tensor("value")
        .ok_or_else(|| unsupported(nd.node, "only tensor `value` constants"))?;
    let t = Tensor::from_proto(t).map_err(corrupt)?;
    let name = nd
        .node
        .output
        .first()
        .ok_or_else(|| corrupt("Constant without output".into()))?;
    l.add_const(name, t);
    Ok(())
}

pub(super) fn quantize_linear<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    l.push(
        nd.node,
        Box::new(QuantizeLinear),
        &[nd.input(0), nd.input(1), nd.input(2)],
    )
}

pub(super) fn dequantize_linear<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    let op = DequantizeLinear {
        axis: nd.attrs.int("axis", 1),
    };
    l.push(
        nd.node,
        Box::new(op),
        &[nd.input(0), nd.input(1), nd.input(2)],
    )
}

pub(super) fn dynamic_quantize_linear<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    l.push(nd.node, Box::new(DynamicQuantizeLinear), &nd.first())
}

pub(super) fn arithmetic<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    let arith = match nd.node.op_type.as_str() {
        "Add" => Arith::Add,
        "Sub" => Arith::Sub,
        "Mul" => Arith::Mul,
        _ => Arith::Div,
    };
    l.push(
        nd.node,
        Box::new(Binary(arith)),
        &[nd.input(0), nd.input(1)],
    )
}

pub(super) fn relu<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    l.push(nd.node, Box::new(Unary::Relu), &nd.first())
}

pub(super) fn sigmoid<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    l.push(nd.node, Box::new(Unary::Sigmoid), &nd.first())
}

pub(super) fn clip<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    let op = Unary::Clip {
        min: nd.attrs.float("min", f32::NEG_INFINITY),
        max: nd.attrs.float("max", f32::INFINITY),
    };
    l.push(
        nd.node,
        Box::new(op),
        &[nd.input(0), nd.input(1), nd.input(2)],
    )
}

pub(super) fn cast<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    let to = nd.attrs.int("to", 0) as i32;
    l.push(nd.node, Box::new(Cast { to }), &nd.first())
}

pub(super) fn softmax<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    let op = Softmax {
        axis: nd.attrs.int("axis", -1),
    };
    l.push(nd.node, Box::new(op), &nd.first())
}

pub(super) fn flatten<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    let op = Flatten {
        axis: nd.attrs.int("axis", 1),
    };
    l.push(nd.node, Box::new(op), &nd.first())
}

pub(super) fn reshape<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    l.push(nd.node, Box::new(Reshape), &[nd.input(0), nd.input(1)])
}

pub(super) fn identity<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    l.push(nd.node, Box::new(Identity), &nd.first())
}

pub(super) fn pool<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    let reduce = if nd.node.op_type == "MaxPool" {
        Reduce::Max
    } else {
        Reduce::Average(nd.attrs.int("count_include_pad", 0) != 0)
    };
    let op = l.pool(nd.node, reduce)?;
    l.push(nd.node, Box::new(op), &nd.first())
}

pub(super) fn global_average_pool<'g>(l: &mut Lowering<'g>, nd: &Node<'g>) -> Result<()> {
    l.push(nd.node, Box::new(GlobalAveragePool), &nd.first())
}

impl Lowering<'_> {
    pub(super) fn pool(&self, node: &NodeProto, reduce: Reduce) -> Result<Pool> {
        let attrs = Attrs(&node.attribute);
        let bad = |e: String| unsupported(node, &e);
        let auto_pad = attrs.string("auto_pad", "NOTSET");
        if auto_pad != "NOTSET" && auto_pad != "VALID" {
            return Err(unsupported(node, &format!("auto_pad {auto_pad}")));
        }
        if attrs.sizes("dilations", vec![1, 1]).map_err(bad)? != [1, 1]
            || attrs.int("storage_order", 0) != 0
            || node.output.len() > 1
        {
            return Err(unsupported(
                node,
                "dilations, storage order or indices output",
            ));
        }
        let k = attrs.sizes("kernel_shape", vec![]).map_err(bad)?;
        let s = attrs.sizes("strides", vec![1, 1]).map_err(bad)?;
        let p = attrs.sizes("pads", vec![0; 4]).map_err(bad)?;
        match (&k[..], &s[..], &p[..]) {
            // ONNX requires pads smaller than the kernel; larger ones only multiply outputs.
            (&[kh, kw], _, &[p0, p1, p2, p3]) if p0.max(p2) >= kh || p1.max(p3) >= kw => Err(
                unsupported(node, &format!("pads {p:?} reach past a {kh}x{kw} window")),
            ),
            (&[kh, kw], &[sh, sw], &[p0, p1, p2, p3]) => Ok(Pool {
                reduce,
                kernel: [kh, kw],
                strides: [sh, sw],
                pads: [p0, p1, p2, p3],
                ceil: attrs.int("ceil_mode", 0) != 0,
            }),
            _ => Err(unsupported(node, "only 2-D pooling")),
        }
    }
}
