//! Lowering a [`Network`] to an ONNX graph. The walk (ReLU, pooling, flattening, naming) is
//! shared; how a weighted layer is written is up to each format's [`WeightedOps`].

use crate::network::{Activation, Conv, Dense, Layer, Network};
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
    /// Writes a residual block's `a + b` into `out`; `index` is the tap of `a` (that of `b`
    /// follows it). Float formats add the floats; quantized ones may quantize both first.
    fn add(&mut self, g: &mut Graph, a: &str, b: &str, index: usize, out: &str) -> String {
        let _ = index;
        g.node("Add", out, &[a, b], vec![])
    }
}

/// A tensor whose range calibration measures: the input of a weighted layer, or an input of
/// a residual addition.
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
    /// The tensors calibration measures: each weighted layer's input, and both inputs of each
    /// residual addition, in graph order.
    pub taps: Vec<Tap>,
}

/// Walks the network, writing activations, pooling, flattening and additions' wiring itself
/// and weighted layers through `ops`. The last layer writes [`OUTPUT`].
pub fn lower(net: &Network, ops: &mut dyn WeightedOps) -> Lowered {
    let mut w = Walk {
        g: Graph::default(),
        taps: Vec::new(),
        ops,
    };
    w.layers(&net.layers, INPUT.to_string(), net.input_dims(), true);
    Lowered {
        graph: w.g,
        taps: w.taps,
    }
}

struct Walk<'a> {
    g: Graph,
    taps: Vec<Tap>,
    ops: &'a mut dyn WeightedOps,
}

impl Walk<'_> {
    fn tap(&mut self, name: &str, dims: &[usize]) -> usize {
        self.taps.push(Tap {
            name: name.into(),
            dims: dims.to_vec(),
        });
        self.taps.len() - 1
    }

    /// `act` of `x` into `out` (Relu, or ReLU6 as Clip with min and max inputs); `x` itself
    /// when the activation is the identity and `out` is not the graph's output.
    fn activation(&mut self, x: &str, act: Activation, out: &str) -> String {
        match act {
            Activation::Relu => self.g.node("Relu", out, &[x], vec![]),
            Activation::Relu6 => {
                // Clip's bounds share the data's type: f16 in an f16 graph.
                let (lo, hi) = (format!("{out}.min"), format!("{out}.max"));
                let (lo, hi) = if self.ops.activations() == Elem::F16 {
                    (self.g.f16s(&lo, &[], &[0.0]), self.g.f16s(&hi, &[], &[6.0]))
                } else {
                    (self.g.f32s(&lo, &[], &[0.0]), self.g.f32s(&hi, &[], &[6.0]))
                };
                self.g.node("Clip", out, &[x, &lo, &hi], vec![])
            }
            Activation::Identity if out == OUTPUT => self.g.node("Identity", out, &[x], vec![]),
            Activation::Identity => x.to_string(),
        }
    }

    /// Lowers `layers` from `x` of shape `dims`; with `last`, the final layer writes
    /// [`OUTPUT`]. Returns the result and its shape.
    fn layers(
        &mut self,
        layers: &[Layer],
        mut x: String,
        mut dims: Vec<usize>,
        last: bool,
    ) -> (String, Vec<usize>) {
        for (i, layer) in layers.iter().enumerate() {
            let final_layer = last && i + 1 == layers.len();
            let out = |name: &str| {
                if final_layer {
                    OUTPUT.to_string()
                } else {
                    name.to_string()
                }
            };
            (x, dims) = match layer {
                Layer::Conv(c) => {
                    let index = self.tap(&x, &dims);
                    let y = self.ops.conv(&mut self.g, &x, c, index, &c.name);
                    let r = self
                        .g
                        .node("Relu", &format!("{}.relu", c.name), &[&y], vec![]);
                    let (h, w) = (
                        dims[1] + 2 * c.padding + 1 - c.kernel,
                        dims[2] + 2 * c.padding + 1 - c.kernel,
                    );
                    let pooled = self.g.node(
                        "MaxPool",
                        &out(&format!("{}.pool", c.name)),
                        &[&r],
                        vec![
                            Attr::Ints("kernel_shape", vec![2, 2]),
                            Attr::Ints("strides", vec![2, 2]),
                        ],
                    );
                    (pooled, vec![c.out_channels, h / 2, w / 2])
                }
                Layer::ConvAct(c, act) => {
                    let index = self.tap(&x, &dims);
                    let (h, w) = c.output(dims[1], dims[2]);
                    let name = match act {
                        Activation::Identity => out(&c.name),
                        _ => format!("{}.conv", c.name),
                    };
                    let y = self.ops.conv(&mut self.g, &x, c, index, &name);
                    let y = self.activation(&y, *act, &out(&format!("{}.act", c.name)));
                    (y, vec![c.out_channels, h, w])
                }
                Layer::Residual {
                    main,
                    shortcut,
                    act,
                } => {
                    let (m, out_dims) = self.layers(main, x.clone(), dims.clone(), false);
                    let s = match shortcut {
                        Some(s) => {
                            self.layers(std::slice::from_ref(s), x.clone(), dims.clone(), false)
                                .0
                        }
                        None => x.clone(),
                    };
                    let index = self.tap(&m, &out_dims);
                    self.tap(&s, &out_dims);
                    let name = match act {
                        Activation::Identity => out(&format!("{m}.add")),
                        _ => format!("{m}.add"),
                    };
                    let sum = self.ops.add(&mut self.g, &m, &s, index, &name);
                    let y = self.activation(&sum, *act, &out(&format!("{m}.add.act")));
                    (y, out_dims)
                }
                Layer::GlobalAvgPool => {
                    let p = self
                        .g
                        .node("GlobalAveragePool", &format!("pool{i}"), &[&x], vec![]);
                    let f = self.g.node(
                        "Flatten",
                        &out(&format!("pool{i}.flat")),
                        &[&p],
                        vec![Attr::Int("axis", 1)],
                    );
                    (f, vec![dims[0]])
                }
                Layer::Flatten => {
                    let f = self.g.node(
                        "Flatten",
                        &out("flatten"),
                        &[&x],
                        vec![Attr::Int("axis", 1)],
                    );
                    (f, vec![dims.iter().product()])
                }
                Layer::Dense(d) => {
                    let index = self.tap(&x, &dims);
                    let y = if d.relu {
                        let y = self.ops.dense(&mut self.g, &x, d, index, &d.name);
                        self.g
                            .node("Relu", &out(&format!("{}.relu", d.name)), &[&y], vec![])
                    } else {
                        self.ops.dense(&mut self.g, &x, d, index, &out(&d.name))
                    };
                    (y, vec![d.outputs])
                }
            };
        }
        (x, dims)
    }
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
            &c.weight_dims(),
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
            &c.weight_dims(),
            &c.weight,
        );
        let b = Self::weights(g, &format!("{}.bias", c.name), &[c.out_channels], &c.bias);
        g.node("Conv", out, &[x, &w, &b], conv_attrs(c))
    }
}

/// Attributes of a square convolution: kernel and padding, and stride and groups where they
/// are not 1.
pub fn conv_attrs(c: &Conv) -> Vec<Attr> {
    let (p, s) = (c.padding as i64, c.stride as i64);
    let mut attrs = vec![
        Attr::Ints("kernel_shape", vec![c.kernel as i64, c.kernel as i64]),
        Attr::Ints("pads", vec![p, p, p, p]),
    ];
    if s != 1 {
        attrs.push(Attr::Ints("strides", vec![s, s]));
    }
    if c.groups != 1 {
        attrs.push(Attr::Int("group", c.groups as i64));
    }
    attrs
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
        // A value read by two taps (a block's input, also its identity shortcut) is one
        // output.
        let mut seen = std::collections::HashSet::new();
        outputs.extend(
            lowered
                .taps
                .iter()
                .filter(|t| t.name != INPUT && seen.insert(t.name.clone()))
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
