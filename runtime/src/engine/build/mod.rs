//! From an ONNX graph and a concrete input shape to a [`Program`]: nodes whose inputs are all
//! constants (weights, shapes) are evaluated now, the rest become [`Step`]s. A node that only
//! rescales, shifts, clamps or quantizes the output of a layer with no other reader is folded
//! into that layer's epilogue ("fusion into the producer"), so `DequantizeLinear → Conv →
//! Relu → QuantizeLinear` (QDQ) and `QuantizeLinear → ConvInteger → Add → Cast → Mul`
//! (QOperator) both become one int8 convolution writing int8 or f32.
//!
//! Each operator is lowered by the function [`LOWERINGS`] names for it: layers in
//! [`layers`], quantization in [`quantize`], arithmetic and activations in [`elementwise`],
//! pooling in [`pool`], reshapes and the like in [`shape`]; [`fold`] evaluates constants.

mod conv;
mod dense;
mod elementwise;
mod fold;
mod layers;
mod pool;
mod quantize;
mod shape;
mod shape_rules;
mod weights;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::ir::{Act, ActId, Elem, QParams, Step, Weights};
use super::tensor::{Attrs, Tensor};
use crate::error::{Error, Result};
use crate::proto::{GraphProto, NodeProto};

pub(crate) const BACKEND: &str = "native";

/// A value while lowering.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    /// Known now: weights, shapes, folded expressions.
    Const(Arc<Tensor>),
    /// Computed at run time.
    Act(ActId),
    /// `DequantizeLinear` of an int8 run-time value, not yet materialized: layers that take
    /// int8 read the int8 value itself.
    Dequantized(ActId),
}

impl Val {
    /// Run-time value `y`: an int8 one standing for its dequantized values, or `y` itself.
    fn run_time(y: ActId, dequantized: bool) -> Val {
        if dequantized {
            Val::Dequantized(y)
        } else {
            Val::Act(y)
        }
    }
}

/// Weights packed by earlier plans of the same model, by initializer name and layout: a
/// model run at several batch sizes packs each layer once.
pub(crate) type WeightCache = Mutex<HashMap<String, Arc<Weights>>>;

/// What [`build`] produces.
#[derive(Debug)]
pub(crate) struct Program {
    pub acts: Vec<Act>,
    pub steps: Vec<Step>,
    /// What each step does, for profiles: the node it came from and the nodes folded in.
    pub labels: Vec<String>,
    /// The graph input's value (f32, NCHW as given).
    pub input: ActId,
    /// The graph outputs: name and value, or a constant the graph outputs as it is.
    pub outputs: Vec<(String, Result<ActId, Arc<Tensor>>)>,
}

pub(crate) fn unsupported(node: &NodeProto, what: &str) -> Error {
    let op = if what.is_empty() {
        node.op_type.clone()
    } else {
        format!("{} ({what})", node.op_type)
    };
    Error::unsupported_op(op, &node.domain, &node.name, BACKEND)
}

pub(crate) fn corrupt(reason: String) -> Error {
    Error::Corrupt { reason }
}

/// Lowering state.
pub(crate) struct Builder<'g> {
    pub env: HashMap<&'g str, Val>,
    pub acts: Vec<Act>,
    pub steps: Vec<Step>,
    labels: Vec<String>,
    /// The node being lowered, as profiles name it.
    current: (String, String),
    /// The step that writes each value.
    producer: Vec<Option<usize>>,
    /// How many live nodes (and graph outputs) read each ONNX value.
    readers: HashMap<&'g str, usize>,
    /// The ONNX values each run-time value was named by (for the reader counts).
    names: Vec<Vec<&'g str>>,
    /// f32 copies of dequantized values, made once each.
    materialized: HashMap<ActId, ActId>,
    /// `DequantizeLinear`s of constants (QDQ weights and biases), by output name.
    pub quant_consts: HashMap<&'g str, layers::QuantConst>,
    /// The default domain's opset version.
    pub opset: i64,
    pub cache: &'g WeightCache,
}

/// One node being lowered, with what every lowering reads of it.
pub(crate) struct Node<'g> {
    pub node: &'g NodeProto,
    pub attrs: Attrs<'g>,
}

impl<'g> Node<'g> {
    /// Input `i`'s name, or "" when it is omitted.
    pub fn input(&self, i: usize) -> &'g str {
        self.node.input.get(i).map(String::as_str).unwrap_or("")
    }

    /// The first output's name.
    pub fn output(&self) -> &'g str {
        self.node.output.first().map(String::as_str).unwrap_or("")
    }

    /// The node's operator is unsupported for the reason given.
    pub fn bad(&self, reason: impl AsRef<str>) -> Error {
        unsupported(self.node, reason.as_ref())
    }
}

impl<'g> Builder<'g> {
    /// A new run-time value.
    pub fn act(&mut self, shape: Vec<usize>, elem: Elem, nhwc: bool) -> ActId {
        self.acts.push(Act { shape, elem, nhwc });
        self.producer.push(None);
        self.names.push(Vec::new());
        self.acts.len() - 1
    }

    /// Appends a step; its outputs are now produced by it.
    pub fn step(&mut self, step: Step) {
        for y in step.outputs() {
            self.producer[y] = Some(self.steps.len());
        }
        self.labels
            .push(format!("{} `{}`", self.current.0, self.current.1));
        self.steps.push(step);
    }

    /// Names an ONNX value.
    pub fn bind(&mut self, name: &'g str, v: Val) {
        if let Val::Act(a) | Val::Dequantized(a) = v {
            self.names[a].push(name);
        }
        self.env.insert(name, v);
    }

    pub fn value(&self, n: &Node<'g>, name: &str) -> Result<Val> {
        self.env.get(name).cloned().ok_or_else(|| {
            corrupt(format!(
                "node `{}` ({}) reads `{name}`, which nothing before it produces",
                n.node.name, n.node.op_type
            ))
        })
    }

    /// A constant input, when it is one.
    pub fn constant(&self, name: &str) -> Option<Arc<Tensor>> {
        match self.env.get(name) {
            Some(Val::Const(t)) => Some(t.clone()),
            _ => None,
        }
    }

    /// The step writing `a`, when `a` has no reader but the node being lowered (so the node
    /// may be folded into that step).
    pub fn sole_producer(&self, a: ActId) -> Option<usize> {
        let readers: usize = self.names[a]
            .iter()
            .map(|n| self.readers.get(n).copied().unwrap_or(0))
            .sum();
        (readers == 1).then_some(()).and(self.producer[a])
    }

    /// Records that the node reading `name` was folded into the step producing it: the value
    /// under that name is no longer read, so the next node of a chain may fold in too.
    pub fn absorbed(&mut self, name: &str) {
        if let Some(r) = self.readers.get_mut(name) {
            *r = r.saturating_sub(1);
        }
        if let Some(Val::Act(a) | Val::Dequantized(a)) = self.env.get(name) {
            if let Some(s) = self.producer[*a] {
                self.labels[s] = format!("{} + {}", self.labels[s], self.current.0);
            }
        }
    }

    /// Input `name` as an f32 run-time value (a dequantized one is materialized once); a
    /// constant, which folding would have evaluated, is refused.
    pub fn f32_act(&mut self, n: &Node<'g>, name: &str) -> Result<ActId> {
        match self.value(n, name)? {
            Val::Const(_) => Err(n.bad("constant input")),
            Val::Act(a) => match self.acts[a].elem {
                Elem::F32 => Ok(a),
                Elem::I32 | Elem::I64 => Ok(a),
                _ => Ok(self.dequantize(a)),
            },
            Val::Dequantized(q) => Ok(self.dequantize(q)),
        }
    }

    /// An f32 copy of int8 value `q`, made once.
    pub fn dequantize(&mut self, q: ActId) -> ActId {
        if let Some(&y) = self.materialized.get(&q) {
            return y;
        }
        let a = self.acts[q].clone();
        let y = self.act(a.shape, Elem::F32, a.nhwc);
        self.step(Step::Dequantize { x: q, y });
        self.materialized.insert(q, y);
        y
    }

    /// `a` stored channels-last (NHWC) when `nhwc`, else in ONNX's NCHW order: `a` itself or a
    /// relaid copy. Values that are not 4-D are the same either way.
    pub fn layout(&mut self, a: ActId, nhwc: bool) -> ActId {
        let act = self.acts[a].clone();
        if act.shape.len() != 4 || act.nhwc == nhwc {
            return a;
        }
        let [_, _, h, w] = act.nchw();
        if h * w == 1 || act.shape[1] == 1 {
            // One pixel or one channel: both orders are the same bytes.
            let y = self.act(act.shape, act.elem, nhwc);
            self.step(Step::Copy { x: a, y });
            return y;
        }
        let y = self.act(act.shape, act.elem, nhwc);
        self.step(Step::Relayout {
            x: a,
            y,
            to_nhwc: nhwc,
        });
        y
    }

    /// Whether `a` is computed before step `s` runs (or is the graph's input).
    pub fn producer_before(&self, a: ActId, s: usize) -> bool {
        self.producer[a].is_none_or(|p| p < s)
    }

    /// The parameters of an int8 value with static parameters.
    pub fn qparams(&self, a: ActId) -> Option<QParams> {
        match self.acts[a].elem {
            Elem::Q8(q) => Some(q),
            _ => None,
        }
    }
}

/// How one operator is lowered.
type LowerFn = for<'g> fn(&mut Builder<'g>, &Node<'g>) -> Result<()>;

/// Every operator the engine lowers, by `op_type` (default domain), and the function that
/// lowers it.
const LOWERINGS: &[(&str, LowerFn)] = &[
    ("Conv", conv::conv),
    ("ConvInteger", conv::conv_integer),
    ("QLinearConv", conv::qlinear_conv),
    ("MatMul", dense::matmul),
    ("Gemm", dense::gemm),
    ("MatMulInteger", dense::matmul_integer),
    ("QLinearMatMul", dense::qlinear_matmul),
    ("QuantizeLinear", quantize::quantize_linear),
    ("DequantizeLinear", quantize::dequantize_linear),
    ("DynamicQuantizeLinear", quantize::dynamic_quantize_linear),
    ("Add", elementwise::arithmetic),
    ("Sub", elementwise::arithmetic),
    ("Mul", elementwise::arithmetic),
    ("Div", elementwise::arithmetic),
    ("Max", elementwise::arithmetic),
    ("Min", elementwise::arithmetic),
    ("Relu", elementwise::relu),
    ("Clip", elementwise::clip),
    ("Sigmoid", elementwise::unary),
    ("Tanh", elementwise::unary),
    ("Exp", elementwise::unary),
    ("Neg", elementwise::unary),
    ("Abs", elementwise::unary),
    ("Sqrt", elementwise::unary),
    ("Softmax", elementwise::softmax),
    ("LogSoftmax", elementwise::softmax),
    ("Cast", elementwise::cast),
    ("MaxPool", pool::pool),
    ("AveragePool", pool::pool),
    ("GlobalAveragePool", pool::global_average_pool),
    ("ReduceMean", pool::reduce_mean),
    ("Flatten", shape::reshape),
    ("Reshape", shape::reshape),
    ("Squeeze", shape::reshape),
    ("Unsqueeze", shape::reshape),
    ("Identity", shape::identity),
    ("Dropout", shape::identity),
    ("Transpose", shape::transpose),
    ("Concat", shape::concat),
    ("ArgMax", shape::argmax),
];

/// Lowers `graph` for an input of `shape` (the first graph input; the others must be
/// initializers).
pub(crate) fn build<'g>(
    graph: &'g GraphProto,
    consts: &HashMap<String, Arc<Tensor>>,
    input: &'g str,
    shape: &[usize],
    opset: i64,
    cache: &'g WeightCache,
) -> Result<Program> {
    let mut b = Builder {
        env: HashMap::new(),
        acts: Vec::new(),
        steps: Vec::new(),
        labels: Vec::new(),
        current: Default::default(),
        producer: Vec::new(),
        readers: HashMap::new(),
        names: Vec::new(),
        materialized: HashMap::new(),
        quant_consts: HashMap::new(),
        opset,
        cache,
    };
    for (name, t) in consts {
        b.env.insert(name.as_str(), Val::Const(t.clone()));
    }
    let x = b.act(shape.to_vec(), Elem::F32, false);
    b.bind(input, Val::Act(x));
    // Only what the outputs depend on is lowered: exporters leave dead branches behind.
    let mut needed: std::collections::HashSet<&str> =
        graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut live = vec![false; graph.node.len()];
    for (i, node) in graph.node.iter().enumerate().rev() {
        if node.output.iter().any(|o| needed.contains(o.as_str())) {
            live[i] = true;
            needed.extend(node.input.iter().map(String::as_str));
        }
    }
    for (node, _) in graph.node.iter().zip(&live).filter(|(_, &l)| l) {
        for i in node.input.iter().filter(|i| !i.is_empty()) {
            *b.readers.entry(i).or_default() += 1;
        }
    }
    for o in &graph.output {
        *b.readers.entry(&o.name).or_default() += 1;
    }
    for (node, _) in graph.node.iter().zip(&live).filter(|(_, &l)| l) {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(unsupported(node, ""));
        }
        let n = Node {
            node,
            attrs: Attrs(&node.attribute),
        };
        b.current = (node.op_type.clone(), node.name.clone());
        if fold::try_fold(&mut b, &n)? {
            continue;
        }
        let lowering = LOWERINGS
            .iter()
            .find(|(op, _)| *op == node.op_type)
            .ok_or_else(|| unsupported(node, ""))?;
        (lowering.1)(&mut b, &n)?;
    }
    let mut outputs = Vec::new();
    b.current = ("output".into(), String::new());
    for o in &graph.output {
        let v = b
            .env
            .get(o.name.as_str())
            .cloned()
            .ok_or_else(|| corrupt(format!("nothing produces the output `{}`", o.name)))?;
        let r = match v {
            Val::Const(t) => Err(t),
            Val::Act(a) => {
                let a = b.layout(a, false);
                if b.acts[a].elem != Elem::F32 {
                    // Integer outputs (quantized ones included) are given as their integers.
                    let y = b.act(b.acts[a].shape.clone(), Elem::F32, false);
                    b.step(Step::Convert { x: a, y });
                    Ok(y)
                } else {
                    Ok(a)
                }
            }
            Val::Dequantized(q) => {
                let a = b.dequantize(q);
                Ok(b.layout(a, false))
            }
        };
        outputs.push((o.name.clone(), r));
    }
    Ok(Program {
        acts: b.acts,
        steps: b.steps,
        labels: b.labels,
        input: x,
        outputs,
    })
}
