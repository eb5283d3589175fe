//! Lowering a [`Network`] to an ONNX graph. The walk (ReLU, pooling, flattening, naming) is
//! shared; how a weighted layer is written is up to each format's [`WeightedOps`].

use crate::network::{Conv, Dense, Layer, Network};
use crate::onnx::{self, Attr, Elem, Graph};

/// Name of every exported model's input.
pub const INPUT: &str = "input";
/// Name of every exported model's output.
pub const OUTPUT: &str = "logits";

/// How one format writes the layers that carry weights.
pub trait WeightedOps {
    /// Element type of the model's input and output, and of activations between layers.
    fn activations(&self) -> Elem;
    /// Writes `x W^T + b` (no ReLU) into a tensor named `out`. `index` counts weighted layers.
    fn dense(&mut self, g: &mut Graph, x: &str, d: &Dense, index: usize, out: &str) -> String;
    /// Writes the convolution plus bias (no ReLU) into a tensor named `out`.
    fn conv(&mut self, g: &mut Graph, x: &str, c: &Conv, index: usize, out: &str) -> String;
}

/// The input of one weighted layer, as the calibration run sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    /// Tensor name in the graph.
    pub name: String,
    /// Dimensions after the batch.
    pub dims: Vec<usize>,
}

/// A lowered graph and the inputs of its weighted layers, in order.
pub struct Lowered {
    /// The graph.
    pub graph: Graph,
    /// Per weighted layer, the tensor it reads.
    pub taps: Vec<Tap>,
}

/// Walks the network, writing ReLU, max pooling and flattening itself and weighted layers
/// through `ops`. The last layer writes [`OUTPUT`].
pub fn lower(net: &Network, ops: &mut dyn WeightedOps) -> Lowered {
    let mut g = Graph::default();
    let mut taps = Vec::new();
    let mut x = INPUT.to_string();
    let mut dims = net.input_dims();
    let last = net.layers.len() - 1;
    for (i, layer) in net.layers.iter().enumerate() {
        let out = |name: &str| {
            if i == last {
                OUTPUT.to_string()
            } else {
                name.to_string()
            }
        };
        x = match layer {
            Layer::Conv(c) => {
                taps.push(Tap {
                    name: x.clone(),
                    dims: dims.clone(),
                });
                let y = ops.conv(&mut g, &x, c, taps.len() - 1, &c.name.to_string());
                let r = g.node("Relu", &format!("{}.relu", c.name), &[&y], vec![]);
                let (h, w) = (
                    dims[1] + 2 * c.padding + 1 - c.kernel,
                    dims[2] + 2 * c.padding + 1 - c.kernel,
                );
                dims = vec![c.out_channels, h / 2, w / 2];
                g.node(
                    "MaxPool",
                    &out(&format!("{}.pool", c.name)),
                    &[&r],
                    vec![
                        Attr::Ints("kernel_shape", vec![2, 2]),
                        Attr::Ints("strides", vec![2, 2]),
                    ],
                )
            }
            Layer::Flatten => {
                dims = vec![dims.iter().product()];
                g.node(
                    "Flatten",
                    &out("flatten"),
                    &[&x],
                    vec![Attr::Int("axis", 1)],
                )
            }
            Layer::Dense(d) => {
                taps.push(Tap {
                    name: x.clone(),
                    dims: dims.clone(),
                });
                dims = vec![d.outputs];
                if d.relu {
                    let y = ops.dense(&mut g, &x, d, taps.len() - 1, &d.name);
                    g.node("Relu", &out(&format!("{}.relu", d.name)), &[&y], vec![])
                } else {
                    ops.dense(&mut g, &x, d, taps.len() - 1, &out(&d.name))
                }
            }
        };
    }
    Lowered { graph: g, taps }
}

/// Float weights and arithmetic (f32, or f16 throughout).
pub struct Float {
    /// F32 or F16.
    pub elem: Elem,
}

impl Float {
    fn weights(&self, g: &mut Graph, name: &str, dims: &[usize], v: &[f32]) -> String {
        match self.elem {
            Elem::F16 => g.f16s(name, dims, v),
            _ => g.f32s(name, dims, v),
        }
    }
}

impl WeightedOps for Float {
    fn activations(&self) -> Elem {
        self.elem
    }

    fn dense(&mut self, g: &mut Graph, x: &str, d: &Dense, _: usize, out: &str) -> String {
        // MatMul + Add rather than Gemm: tract's Gemm expansion computes in f32 whatever the
        // operands, which breaks a graph that is f16 throughout.
        let wt = crate::quantize::transpose(&d.weight, d.outputs, d.inputs);
        let w = self.weights(
            g,
            &format!("{}.weight", d.name),
            &[d.inputs, d.outputs],
            &wt,
        );
        let b = self.weights(g, &format!("{}.bias", d.name), &[d.outputs], &d.bias);
        let y = g.node("MatMul", &format!("{}.matmul", d.name), &[x, &w], vec![]);
        g.node("Add", out, &[&y, &b], vec![])
    }

    fn conv(&mut self, g: &mut Graph, x: &str, c: &Conv, _: usize, out: &str) -> String {
        let w = self.weights(
            g,
            &format!("{}.weight", c.name),
            &[c.out_channels, c.in_channels, c.kernel, c.kernel],
            &c.weight,
        );
        let b = self.weights(g, &format!("{}.bias", c.name), &[c.out_channels], &c.bias);
        g.node("Conv", out, &[x, &w, &b], conv_attrs(c))
    }
}

/// f16 weights, cast to f32 at load, f32 arithmetic: half the file, f32 speed only where
/// the runtime folds the casts (tract stops folding above its 4 MiB constant budget and
/// then converts the weights on every run, 5x slower than f32 on a 784-1200-1200-10 MLP).
pub struct F16Storage;

impl F16Storage {
    fn weights(g: &mut Graph, name: &str, dims: &[usize], v: &[f32]) -> String {
        let h = g.f16s(&format!("{name}.f16"), dims, v);
        g.node("Cast", name, &[&h], vec![Attr::Int("to", Elem::F32 as i64)])
    }
}

impl WeightedOps for F16Storage {
    fn activations(&self) -> Elem {
        Elem::F32
    }

    fn dense(&mut self, g: &mut Graph, x: &str, d: &Dense, _: usize, out: &str) -> String {
        let wt = crate::quantize::transpose(&d.weight, d.outputs, d.inputs);
        let w = Self::weights(
            g,
            &format!("{}.weight", d.name),
            &[d.inputs, d.outputs],
            &wt,
        );
        let b = Self::weights(g, &format!("{}.bias", d.name), &[d.outputs], &d.bias);
        let y = g.node("MatMul", &format!("{}.matmul", d.name), &[x, &w], vec![]);
        g.node("Add", out, &[&y, &b], vec![])
    }

    fn conv(&mut self, g: &mut Graph, x: &str, c: &Conv, _: usize, out: &str) -> String {
        let w = Self::weights(
            g,
            &format!("{}.weight", c.name),
            &[c.out_channels, c.in_channels, c.kernel, c.kernel],
            &c.weight,
        );
        let b = Self::weights(g, &format!("{}.bias", c.name), &[c.out_channels], &c.bias);
        g.node("Conv", out, &[x, &w, &b], conv_attrs(c))
    }
}

/// Attributes of a stride-1 square convolution.
pub fn conv_attrs(c: &Conv) -> Vec<Attr> {
    let p = c.padding as i64;
    vec![
        Attr::Ints("kernel_shape", vec![c.kernel as i64, c.kernel as i64]),
        Attr::Ints("pads", vec![p, p, p, p]),
    ]
}

/// Wraps a lowered graph into a model whose input and output have `elem` type; `taps` adds
/// the inputs of the weighted layers (past the first) as extra f32 outputs, for calibration.
pub fn finish(
    net: &Network,
    lowered: Lowered,
    elem: Elem,
    with_taps: bool,
    metadata: &[(String, String)],
) -> edgekd_runtime::proto::ModelProto {
    let mut outputs = vec![onnx::batched(OUTPUT, elem, &[net.spec.classes])];
    if with_taps {
        outputs.extend(
            lowered
                .taps
                .iter()
                .filter(|t| t.name != INPUT)
                .map(|t| onnx::batched(&t.name, elem, &t.dims)),
        );
    }
    onnx::model(
        lowered.graph,
        &net.spec.name,
        vec![onnx::batched(INPUT, elem, &net.input_dims())],
        outputs,
        metadata,
    )
}
