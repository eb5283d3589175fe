//! From an ONNX graph to a list of native steps: constants decoded and folded, the QDQ
//! `MatMul`/`Gemm`/`Conv` patterns fused into integer operators, dead steps dropped.

use std::collections::{HashMap, HashSet};

use super::kernels::Isa;
use super::ops::elementwise::{Arith, Binary, Cast, Softmax, Unary};
use super::ops::float::{Affine, FloatConv, FloatDense};
use super::ops::integer::{ConvGeometry, Epilogue, IntegerConv, IntegerMatMul, PackedWeights};
use super::ops::pool::{GlobalAveragePool, Pool, Reduce};
use super::ops::quantize::{DequantizeLinear, DynamicQuantizeLinear, QuantizeLinear};
use super::ops::shape::{Flatten, Identity, Reshape};
use super::ops::{Attrs, Op};
use super::tensor::{Data, Tensor};
use crate::error::{Error, Result};
use crate::proto::{GraphProto, NodeProto};

pub(super) const BACKEND: &str = "native";

/// Where a step finds a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ref {
    /// A constant, by index.
    Const(usize),
    /// A value computed during the run, by slot.
    Dyn(usize),
}

/// One operator applied at run time.
#[derive(Debug)]
pub struct Step {
    /// The operator.
    pub op: Box<dyn Op>,
    /// Its inputs (`None`: omitted optional input).
    pub inputs: Vec<Option<Ref>>,
    /// The slots its outputs go to.
    pub outputs: Vec<usize>,
    /// `op_type` and node name, for errors.
    pub label: String,
}

/// A lowered graph.
#[derive(Debug)]
pub struct Plan {
    /// Constants.
    pub consts: Vec<Tensor>,
    /// Steps in execution order.
    pub steps: Vec<Step>,
    /// Number of run-time slots; slot 0 is the graph input.
    pub slots: usize,
    /// Graph outputs.
    pub outputs: Vec<(String, Ref)>,
    /// How many steps run integer arithmetic.
    pub integer_steps: usize,
}

fn unsupported(node: &NodeProto, what: &str) -> Error {
    let op = if what.is_empty() {
        node.op_type.clone()
    } else {
        format!("{} ({what})", node.op_type)
    };
    Error::unsupported_op(op, &node.domain, &node.name, BACKEND)
}

fn corrupt(reason: String) -> Error {
    Error::Corrupt { reason }
}

/// Lowering state.
struct Lowering<'g> {
    consts: Vec<Tensor>,
    values: HashMap<&'g str, Ref>,
    producers: HashMap<&'g str, &'g NodeProto>,
    steps: Vec<Step>,
    slots: usize,
    integer_steps: usize,
    isa: Isa,
    /// How many nodes (and graph outputs) read each value.
    consumers: HashMap<&'g str, usize>,
    /// A reader of each value (the only one, where `consumers` says 1).
    consumer_of: HashMap<&'g str, &'g NodeProto>,
    /// Nodes folded into an earlier step, by first output.
    absorbed: HashSet<&'g str>,
}

impl<'g> Lowering<'g> {
    fn constant(&self, name: &str) -> Option<&Tensor> {
        match self.values.get(name) {
            Some(Ref::Const(i)) => Some(&self.consts[*i]),
            _ => None,
        }
    }

    fn add_const(&mut self, name: &'g str, t: Tensor) {
        self.consts.push(t);
        self.values.insert(name, Ref::Const(self.consts.len() - 1));
    }

    /// The producer of `name` when it is a `DequantizeLinear`.
    fn dequantized(&self, name: &str) -> Option<&'g NodeProto> {
        self.producers
            .get(name)
            .copied()
            .filter(|n| n.op_type == "DequantizeLinear" && n.input.len() >= 2)
    }

    /// `DequantizeLinear(x_q, scale, zp)` of a run-time int8 tensor with one constant scale:
    /// the quantized value's name, its zero point's name (if any), and the scale.
    fn dequantized_activation(&self, name: &str) -> Option<(&'g str, Option<&'g str>, f32)> {
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
    fn dequantized_weights(
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

    fn input_ref(&self, node: &NodeProto, name: &str) -> Result<Option<Ref>> {
        if name.is_empty() {
            return Ok(None);
        }
        self.values.get(name).copied().map(Some).ok_or_else(|| {
            corrupt(format!(
                "node `{}` ({}) reads `{name}`, which nothing before it produces",
                node.name, node.op_type
            ))
        })
    }

    /// Adds a step, or evaluates it now when every input is a constant.
    fn push(&mut self, node: &'g NodeProto, op: Box<dyn Op>, inputs: &[&'g str]) -> Result<()> {
        let outputs: Vec<&'g str> = node.output.iter().map(String::as_str).collect();
        self.push_to(node, op, inputs, &outputs)
    }

    /// [`Self::push`] with the outputs named by the caller (a fused chain's last node's).
    fn push_to(
        &mut self,
        node: &'g NodeProto,
        op: Box<dyn Op>,
        inputs: &[&'g str],
        output_names: &[&'g str],
    ) -> Result<()> {
        let refs = inputs
            .iter()
            .map(|n| self.input_ref(node, n))
            .collect::<Result<Vec<_>>>()?;
        let label = format!("{} `{}`", node.op_type, node.name);
        let all_const = refs.iter().all(|r| !matches!(r, Some(Ref::Dyn(_))));
        if all_const && !refs.is_empty() {
            let args: Vec<Option<&Tensor>> = refs
                .iter()
                .map(|r| {
                    r.map(|r| match r {
                        Ref::Const(i) => &self.consts[i],
                        Ref::Dyn(_) => unreachable!("checked above"),
                    })
                })
                .collect();
            let outs = op
                .run(&args, 1)
                .map_err(|e| corrupt(format!("{label}: {e}")))?;
            for (name, t) in output_names.iter().zip(outs) {
                self.add_const(name, t);
            }
            return Ok(());
        }
        let outputs = output_names
            .iter()
            .map(|name| {
                self.values.insert(name, Ref::Dyn(self.slots));
                self.slots += 1;
                self.slots - 1
            })
            .collect();
        self.steps.push(Step {
            op,
            inputs: refs,
            outputs,
            label,
        });
        Ok(())
    }

    /// Adds an integer step writing `output`.
    fn integer(
        &mut self,
        node: &'g NodeProto,
        op: Box<dyn Op>,
        inputs: &[&'g str],
        output: &'g str,
    ) -> Result<()> {
        self.integer_steps += 1;
        self.push_to(node, op, inputs, &[output])
    }

    /// The node reading `value`, when exactly one does and it is not a graph output.
    fn sole_consumer(&self, value: &str, op_type: &str) -> Option<&'g NodeProto> {
        if self.consumers.get(value) != Some(&1) {
            return None;
        }
        self.consumer_of
            .get(value)
            .copied()
            .filter(|n| n.op_type == op_type && n.domain.is_empty())
    }

    /// `node`'s other input when it is a constant vector over the output channels (one value,
    /// or `channels` along the axis `from_end` places from the last, in at most `max_rank`
    /// dimensions).
    fn channel_constant(
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
    fn absorb(
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

    fn lower(&mut self, node: &'g NodeProto) -> Result<()> {
        let attrs = Attrs(&node.attribute);
        let input = |i: usize| node.input.get(i).map(String::as_str).unwrap_or("");
        let first: Vec<&str> = node.input.iter().take(1).map(String::as_str).collect();
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(unsupported(node, ""));
        }
        let bad = |e: String| unsupported(node, &e);
        let output = node.output.first().map(String::as_str).unwrap_or("");
        match node.op_type.as_str() {
            "Constant" => {
                let t = attrs
                    .tensor("value")
                    .ok_or_else(|| unsupported(node, "only tensor `value` constants"))?;
                let t = Tensor::from_proto(t).map_err(corrupt)?;
                let name = node
                    .output
                    .first()
                    .ok_or_else(|| corrupt("Constant without output".into()))?;
                self.add_const(name, t);
                Ok(())
            }
            "MatMulInteger" => {
                let b = self
                    .constant(input(1))
                    .ok_or_else(|| unsupported(node, "weights must be constant"))?;
                let zp = match self.constant(input(3)) {
                    Some(z) => z.to_i64().map_err(bad)?,
                    None if input(3).is_empty() => vec![],
                    None => return Err(unsupported(node, "weight zero point must be constant")),
                };
                let weights = PackedWeights::from_matmul_b(b, &zp, self.isa).map_err(bad)?;
                let (epilogue, out) = self.absorb(output, weights.rows(), 1, 2, Epilogue::Int32);
                let op = IntegerMatMul { weights, epilogue };
                self.integer(node, Box::new(op), &[input(0), input(2)], out)
            }
            "ConvInteger" => {
                let w = self
                    .constant(input(1))
                    .ok_or_else(|| unsupported(node, "weights must be constant"))?
                    .clone();
                let zp = match self.constant(input(3)) {
                    Some(z) => z.to_i64().map_err(bad)?,
                    None if input(3).is_empty() => vec![],
                    None => return Err(unsupported(node, "weight zero point must be constant")),
                };
                // Before anything reads w.shape[0]: this checks the weights are 4-D (found by
                // fuzzing: scalar ConvInteger weights indexed an empty shape).
                let geometry = self.conv_geometry(node, &w.shape)?;
                let (epilogue, out) = self.absorb(output, w.shape[0], 3, 4, Epilogue::Int32);
                let op = self.conv(node, &w, &zp, geometry, epilogue)?;
                self.integer(node, Box::new(op), &[input(0), input(2)], out)
            }
            "MatMul" => {
                let quantized = self
                    .dequantized_activation(input(0))
                    .zip(self.dequantized_weights(input(1), 1));
                let Some(((x, xz, xs), (w, wz, ws))) = quantized else {
                    let w = self.float_weights(node, input(1))?;
                    let n = w.shape.get(1).copied().unwrap_or(0);
                    let (affine, out) = self.float_tail(node, output, n, 1, 2, vec![])?;
                    let op = FloatDense::from_matmul_b(&w, affine, self.isa).map_err(bad)?;
                    return self.push_to(node, Box::new(op), &[input(0)], &[out]);
                };
                let weights = PackedWeights::from_matmul_b(&w, &wz, self.isa).map_err(bad)?;
                let epilogue = Epilogue::Float {
                    int_bias: vec![],
                    scale: ws.iter().map(|s| s * xs).collect(),
                    bias: vec![],
                    relu: false,
                };
                let (epilogue, out) = self.absorb(output, weights.rows(), 1, 2, epilogue);
                let op = IntegerMatMul { weights, epilogue };
                self.integer(node, Box::new(op), &[x, xz.unwrap_or("")], out)
            }
            "Gemm" => {
                if attrs.int("transA", 0) != 0 {
                    return Err(unsupported(node, "transA"));
                }
                let trans_b = attrs.int("transB", 0) != 0;
                let beta = attrs.float("beta", 1.0);
                let bias = match input(2) {
                    "" => vec![],
                    c => self
                        .constant(c)
                        .ok_or_else(|| unsupported(node, "bias must be constant"))?
                        .to_f32()
                        .iter()
                        .map(|b| b * beta)
                        .collect(),
                };
                let alpha = attrs.float("alpha", 1.0);
                let quantized = self
                    .dequantized_activation(input(0))
                    .zip(self.dequantized_weights(input(1), if trans_b { 0 } else { 1 }))
                    .filter(|_| alpha == 1.0);
                let Some(((x, xz, xs), (w, wz, ws))) = quantized else {
                    let mut w = self.float_weights(node, input(1))?;
                    if let Data::F32(v) = &mut w.data {
                        v.iter_mut().for_each(|x| *x *= alpha);
                    }
                    let n = w.shape.get(usize::from(!trans_b)).copied().unwrap_or(0);
                    let (affine, out) = self.float_tail(node, output, n, 1, 2, bias)?;
                    let op = if trans_b {
                        FloatDense::from_rows(&w, affine, self.isa)
                    } else {
                        FloatDense::from_matmul_b(&w, affine, self.isa)
                    }
                    .map_err(bad)?;
                    return self.push_to(node, Box::new(op), &[input(0)], &[out]);
                };
                let weights = if trans_b {
                    PackedWeights::from_rows(&w, &wz, self.isa)
                } else {
                    PackedWeights::from_matmul_b(&w, &wz, self.isa)
                }
                .map_err(bad)?;
                let epilogue = Epilogue::Float {
                    int_bias: vec![],
                    scale: ws.iter().map(|s| s * xs).collect(),
                    bias,
                    relu: false,
                };
                let (epilogue, out) = self.absorb(output, weights.rows(), 1, 2, epilogue);
                let op = IntegerMatMul { weights, epilogue };
                self.integer(node, Box::new(op), &[x, xz.unwrap_or("")], out)
            }
            "Conv" => {
                let bias = match input(2) {
                    "" => vec![],
                    b => self
                        .constant(b)
                        .ok_or_else(|| unsupported(node, "bias must be constant"))?
                        .to_f32(),
                };
                let quantized = self
                    .dequantized_activation(input(0))
                    .zip(self.dequantized_weights(input(1), 0));
                let Some(((x, xz, xs), (w, wz, ws))) = quantized else {
                    let w = self.float_weights(node, input(1))?;
                    let filters = w.shape.first().copied().unwrap_or(0);
                    let (affine, out) = self.float_tail(node, output, filters, 3, 4, bias)?;
                    let geometry = self.conv_geometry(node, &w.shape)?;
                    let op = FloatConv {
                        weights: w.as_f32().map_err(bad)?.to_vec(),
                        filters,
                        channels: w.shape[1],
                        geometry,
                        affine,
                    };
                    return self.push_to(node, Box::new(op), &[input(0)], &[out]);
                };
                let epilogue = Epilogue::Float {
                    int_bias: vec![],
                    scale: ws.iter().map(|s| s * xs).collect(),
                    bias,
                    relu: false,
                };
                let geometry = self.conv_geometry(node, &w.shape)?;
                let (epilogue, out) = self.absorb(output, w.shape[0], 3, 4, epilogue);
                let op = self.conv(node, &w, &wz, geometry, epilogue)?;
                self.integer(node, Box::new(op), &[x, xz.unwrap_or("")], out)
            }
            "QuantizeLinear" => self.push(
                node,
                Box::new(QuantizeLinear),
                &[input(0), input(1), input(2)],
            ),
            "DequantizeLinear" => {
                let op = DequantizeLinear {
                    axis: attrs.int("axis", 1),
                };
                self.push(node, Box::new(op), &[input(0), input(1), input(2)])
            }
            "DynamicQuantizeLinear" => self.push(node, Box::new(DynamicQuantizeLinear), &first),
            "Add" | "Sub" | "Mul" | "Div" => {
                let arith = match node.op_type.as_str() {
                    "Add" => Arith::Add,
                    "Sub" => Arith::Sub,
                    "Mul" => Arith::Mul,
                    _ => Arith::Div,
                };
                self.push(node, Box::new(Binary(arith)), &[input(0), input(1)])
            }
            "Relu" => self.push(node, Box::new(Unary::Relu), &first),
            "Sigmoid" => self.push(node, Box::new(Unary::Sigmoid), &first),
            "Clip" => {
                let op = Unary::Clip {
                    min: attrs.float("min", f32::NEG_INFINITY),
                    max: attrs.float("max", f32::INFINITY),
                };
                self.push(node, Box::new(op), &[input(0), input(1), input(2)])
            }
            "Cast" => {
                let to = attrs.int("to", 0) as i32;
                self.push(node, Box::new(Cast { to }), &first)
            }
            "Softmax" => {
                let op = Softmax {
                    axis: attrs.int("axis", -1),
                };
                self.push(node, Box::new(op), &first)
            }
            "Flatten" => {
                let op = Flatten {
                    axis: attrs.int("axis", 1),
                };
                self.push(node, Box::new(op), &first)
            }
            "Reshape" => self.push(node, Box::new(Reshape), &[input(0), input(1)]),
            "Identity" | "Dropout" => self.push(node, Box::new(Identity), &first),
            "MaxPool" | "AveragePool" => {
                let reduce = if node.op_type == "MaxPool" {
                    Reduce::Max
                } else {
                    Reduce::Average(attrs.int("count_include_pad", 0) != 0)
                };
                let op = self.pool(node, reduce)?;
                self.push(node, Box::new(op), &first)
            }
            "GlobalAveragePool" => self.push(node, Box::new(GlobalAveragePool), &first),
            _ => Err(unsupported(node, "")),
        }
    }

    fn pool(&self, node: &NodeProto, reduce: Reduce) -> Result<Pool> {
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

    fn conv(
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
    fn conv_geometry(&self, node: &NodeProto, shape: &[usize]) -> Result<ConvGeometry> {
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

    /// The constant f32 weights of a float layer.
    fn float_weights(&self, node: &NodeProto, name: &str) -> Result<Tensor> {
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
    fn float_tail(
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

/// Checks every initializer in order, as lowering meets them: a type the engine does not hold
/// is `UnsupportedOp`, a declared shape its stored values do not fill is `Corrupt`. Nothing is
/// decoded, so this is cheap enough to run on graphs the engine will not take.
pub fn check_initializers(graph: &GraphProto) -> Result<()> {
    use crate::proto::data_type as dt;
    for t in &graph.initializer {
        if ![
            dt::FLOAT,
            dt::FLOAT16,
            dt::INT8,
            dt::UINT8,
            dt::INT32,
            dt::INT64,
        ]
        .contains(&t.data_type)
        {
            return Err(Error::UnsupportedOp {
                op: format!("initializers of ONNX element type {}", t.data_type),
                domain: String::new(),
                node: t.name.clone(),
                backend: BACKEND,
            });
        }
        Tensor::layout(t).map_err(corrupt)?;
    }
    Ok(())
}

/// Whether lowering `graph` could produce an integer step: those come only from
/// `MatMulInteger`/`ConvInteger` and from float ops fed by `DequantizeLinear`.
pub fn may_be_integer(graph: &GraphProto) -> bool {
    graph.node.iter().any(|n| {
        matches!(
            n.op_type.as_str(),
            "MatMulInteger" | "ConvInteger" | "DequantizeLinear"
        )
    })
}

/// Lowers `graph`, whose run-time input is `input`.
pub fn lower(graph: &GraphProto, input: &str, isa: Isa) -> Result<Plan> {
    let mut l = Lowering {
        consts: Vec::new(),
        values: HashMap::new(),
        producers: HashMap::new(),
        steps: Vec::new(),
        slots: 1,
        integer_steps: 0,
        isa,
        consumers: HashMap::new(),
        consumer_of: HashMap::new(),
        absorbed: HashSet::new(),
    };
    check_initializers(graph)?;
    for t in &graph.initializer {
        let tensor = Tensor::from_proto(t).map_err(corrupt)?;
        l.add_const(&t.name, tensor);
    }
    l.values.insert(input, Ref::Dyn(0));
    for node in &graph.node {
        for o in &node.output {
            l.producers.insert(o, node);
        }
    }
    // Only what the outputs depend on is lowered: exporters leave dead branches behind.
    let mut needed: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut live = vec![false; graph.node.len()];
    for (i, node) in graph.node.iter().enumerate().rev() {
        if node.output.iter().any(|o| needed.contains(o.as_str())) {
            live[i] = true;
            needed.extend(node.input.iter().map(String::as_str));
        }
    }
    for (node, _) in graph.node.iter().zip(&live).filter(|(_, &l)| l) {
        for i in node.input.iter().filter(|i| !i.is_empty()) {
            *l.consumers.entry(i).or_default() += 1;
            l.consumer_of.insert(i, node);
        }
    }
    for o in &graph.output {
        *l.consumers.entry(&o.name).or_default() += 1;
    }
    for (node, _) in graph.node.iter().zip(&live).filter(|(_, &l)| l) {
        if node
            .output
            .first()
            .is_some_and(|o| l.absorbed.contains(o.as_str()))
        {
            continue;
        }
        l.lower(node)?;
    }
    let outputs = graph
        .output
        .iter()
        .map(|o| {
            l.values
                .get(o.name.as_str())
                .map(|r| (o.name.clone(), *r))
                .ok_or_else(|| corrupt(format!("nothing produces the output `{}`", o.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    // Fusion leaves the float side of QDQ pairs unused; drop such steps.
    let mut used: HashSet<usize> = outputs
        .iter()
        .filter_map(|(_, r)| match r {
            Ref::Dyn(s) => Some(*s),
            Ref::Const(_) => None,
        })
        .collect();
    let mut steps: Vec<Step> = Vec::new();
    for step in l.steps.into_iter().rev() {
        if step.outputs.iter().any(|o| used.contains(o)) {
            used.extend(step.inputs.iter().filter_map(|r| match r {
                Some(Ref::Dyn(s)) => Some(*s),
                _ => None,
            }));
            steps.push(step);
        }
    }
    steps.reverse();
    Ok(Plan {
        consts: l.consts,
        steps,
        slots: l.slots,
        outputs,
        integer_steps: l.integer_steps,
    })
}
