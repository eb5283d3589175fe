//! From an ONNX graph to a list of native steps: constants decoded and folded, the QDQ
//! `MatMul`/`Gemm`/`Conv` patterns fused into integer operators, element-wise tails folded into
//! epilogues, dead steps dropped. Each operator is lowered by the function [`LOWERINGS`] names
//! for it: integer and float layers in [`layers`], everything else in [`elementwise`]; the
//! pattern matching that fuses neighbours is in [`fusion`].

mod elementwise;
mod fusion;
mod layers;

use std::collections::{HashMap, HashSet};

use super::kernels::Isa;
use super::ops::{Attrs, Op};
use super::tensor::Tensor;
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

pub(super) fn unsupported(node: &NodeProto, what: &str) -> Error {
    let op = if what.is_empty() {
        node.op_type.clone()
    } else {
        format!("{} ({what})", node.op_type)
    };
    Error::unsupported_op(op, &node.domain, &node.name, BACKEND)
}

pub(super) fn corrupt(reason: String) -> Error {
    Error::Corrupt { reason }
}

/// Lowering state.
pub(super) struct Lowering<'g> {
    pub(super) consts: Vec<Tensor>,
    pub(super) values: HashMap<&'g str, Ref>,
    pub(super) producers: HashMap<&'g str, &'g NodeProto>,
    pub(super) steps: Vec<Step>,
    pub(super) slots: usize,
    pub(super) integer_steps: usize,
    pub(super) isa: Isa,
    /// How many nodes (and graph outputs) read each value.
    pub(super) consumers: HashMap<&'g str, usize>,
    /// A reader of each value (the only one, where `consumers` says 1).
    pub(super) consumer_of: HashMap<&'g str, &'g NodeProto>,
    /// Nodes folded into an earlier step, by first output.
    pub(super) absorbed: HashSet<&'g str>,
}

impl<'g> Lowering<'g> {
    pub(super) fn constant(&self, name: &str) -> Option<&Tensor> {
        match self.values.get(name) {
            Some(Ref::Const(i)) => Some(&self.consts[*i]),
            _ => None,
        }
    }

    pub(super) fn add_const(&mut self, name: &'g str, t: Tensor) {
        self.consts.push(t);
        self.values.insert(name, Ref::Const(self.consts.len() - 1));
    }

    pub(super) fn input_ref(&self, node: &NodeProto, name: &str) -> Result<Option<Ref>> {
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
    pub(super) fn push(
        &mut self,
        node: &'g NodeProto,
        op: Box<dyn Op>,
        inputs: &[&'g str],
    ) -> Result<()> {
        let outputs: Vec<&'g str> = node.output.iter().map(String::as_str).collect();
        self.push_to(node, op, inputs, &outputs)
    }

    /// [`Self::push`] with the outputs named by the caller (a fused chain's last node's).
    pub(super) fn push_to(
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
    pub(super) fn integer(
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
    pub(super) fn sole_consumer(&self, value: &str, op_type: &str) -> Option<&'g NodeProto> {
        if self.consumers.get(value) != Some(&1) {
            return None;
        }
        self.consumer_of
            .get(value)
            .copied()
            .filter(|n| n.op_type == op_type && n.domain.is_empty())
    }
}

/// One node being lowered, with what every lowering reads of it.
pub(super) struct Node<'g> {
    pub node: &'g NodeProto,
    pub attrs: Attrs<'g>,
}

impl<'g> Node<'g> {
    /// Input `i`'s name, or "" when it is omitted.
    pub fn input(&self, i: usize) -> &'g str {
        self.node.input.get(i).map(String::as_str).unwrap_or("")
    }

    /// The first input alone (or none).
    pub fn first(&self) -> Vec<&'g str> {
        self.node.input.iter().take(1).map(String::as_str).collect()
    }

    /// The first output's name.
    pub fn output(&self) -> &'g str {
        self.node.output.first().map(String::as_str).unwrap_or("")
    }

    /// The node's operator is unsupported for the reason given.
    pub fn bad(&self, reason: String) -> Error {
        unsupported(self.node, &reason)
    }
}

/// How one operator is lowered.
type LowerFn = for<'g> fn(&mut Lowering<'g>, &Node<'g>) -> Result<()>;

/// Every operator the native engine lowers, by `op_type` (default domain), and the function
/// that lowers it.
const LOWERINGS: &[(&str, LowerFn)] = &[
    ("Constant", elementwise::constant),
    ("MatMulInteger", layers::matmul_integer),
    ("ConvInteger", layers::conv_integer),
    ("MatMul", layers::matmul),
    ("Gemm", layers::gemm),
    ("Conv", layers::conv),
    ("QuantizeLinear", elementwise::quantize_linear),
    ("DequantizeLinear", elementwise::dequantize_linear),
    (
        "DynamicQuantizeLinear",
        elementwise::dynamic_quantize_linear,
    ),
    ("Add", elementwise::arithmetic),
    ("Sub", elementwise::arithmetic),
    ("Mul", elementwise::arithmetic),
    ("Div", elementwise::arithmetic),
    ("Relu", elementwise::relu),
    ("Sigmoid", elementwise::sigmoid),
    ("Clip", elementwise::clip),
    ("Cast", elementwise::cast),
    ("Softmax", elementwise::softmax),
    ("Flatten", elementwise::flatten),
    ("Reshape", elementwise::reshape),
    ("Identity", elementwise::identity),
    ("Dropout", elementwise::identity),
    ("MaxPool", elementwise::pool),
    ("AveragePool", elementwise::pool),
    ("GlobalAveragePool", elementwise::global_average_pool),
];

impl<'g> Lowering<'g> {
    fn lower(&mut self, node: &'g NodeProto) -> Result<()> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(unsupported(node, ""));
        }
        let lowering = LOWERINGS
            .iter()
            .find(|(op, _)| *op == node.op_type)
            .ok_or_else(|| unsupported(node, ""))?;
        (lowering.1)(
            self,
            &Node {
                node,
                attrs: Attrs(&node.attribute),
            },
        )
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
