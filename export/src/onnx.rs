//! Building ONNX models from the runtime's protobuf types ([`edgekd_runtime::proto`]: the
//! schema the runtime reads is the one the exporter writes), so the encoding is prost's, never
//! ours.
//!
//! Every model edgekd writes imports exactly one opset, the default `ai.onnx` domain at
//! [`OPSET`], and declares IR version [`IR_VERSION`]: strict loaders refuse stray imports
//! such as the `ai.onnx.training` that ONNX Runtime's own quantizer leaves behind.

use edgekd_runtime::proto as pb;
use prost::Message;

/// The default-domain opset every exported model imports. 13 is the first with per-axis
/// `QuantizeLinear`/`DequantizeLinear`, which per-channel int8 weights need.
pub const OPSET: i64 = 13;
/// The IR version that goes with opset 13.
pub const IR_VERSION: i64 = 7;
/// The symbol naming the free batch dimension of inputs and outputs.
pub const BATCH: &str = "N";

/// ONNX element types edgekd writes (`TensorProto.DataType` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Elem {
    /// float32.
    F32 = 1,
    /// uint8.
    U8 = 2,
    /// int8.
    I8 = 3,
    /// int32.
    I32 = 6,
    /// int64.
    I64 = 7,
    /// float16.
    F16 = 10,
}

/// A graph under construction: nodes in topological order and constant initializers.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
}

/// A node attribute.
pub enum Attr {
    /// One integer.
    Int(&'static str, i64),
    /// A list of integers.
    Ints(&'static str, Vec<i64>),
}

impl Attr {
    fn proto(self) -> pb::AttributeProto {
        use pb::attribute_type;
        match self {
            Attr::Int(name, i) => pb::AttributeProto {
                name: name.into(),
                r#type: attribute_type::INT,
                i,
                ..Default::default()
            },
            Attr::Ints(name, ints) => pb::AttributeProto {
                name: name.into(),
                r#type: attribute_type::INTS,
                ints,
                ..Default::default()
            },
        }
    }
}

impl Graph {
    /// Adds a constant tensor from little-endian bytes and returns its name.
    fn constant(&mut self, name: &str, elem: Elem, dims: &[usize], raw: Vec<u8>) -> String {
        self.initializers.push(pb::TensorProto {
            name: name.into(),
            data_type: elem as i32,
            dims: dims.iter().map(|&d| d as i64).collect(),
            raw_data: raw,
            ..Default::default()
        });
        name.into()
    }

    /// A float32 constant.
    pub fn f32s(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(name, Elem::F32, dims, raw)
    }

    /// A float16 constant, rounded to nearest from float32.
    pub fn f16s(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let raw = values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        self.constant(name, Elem::F16, dims, raw)
    }

    /// An int8 constant.
    pub fn i8s(&mut self, name: &str, dims: &[usize], values: &[i8]) -> String {
        let raw = values.iter().map(|&v| v as u8).collect();
        self.constant(name, Elem::I8, dims, raw)
    }

    /// A uint8 constant.
    pub fn u8s(&mut self, name: &str, dims: &[usize], values: &[u8]) -> String {
        self.constant(name, Elem::U8, dims, values.to_vec())
    }

    /// An int32 constant.
    pub fn i32s(&mut self, name: &str, dims: &[usize], values: &[i32]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(name, Elem::I32, dims, raw)
    }

    /// An int64 constant.
    pub fn i64s(&mut self, name: &str, dims: &[usize], values: &[i64]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(name, Elem::I64, dims, raw)
    }

    /// Appends a node whose single output is named `output`, and returns that name.
    pub fn node(&mut self, op: &str, output: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        self.node_with_outputs(op, &[output], inputs, attrs);
        output.into()
    }

    /// Appends a node with several outputs.
    pub fn node_with_outputs(
        &mut self,
        op: &str,
        outputs: &[&str],
        inputs: &[&str],
        attrs: Vec<Attr>,
    ) {
        // Nodes stay unnamed: their outputs name them well enough, and on small students the
        // repeated names are a measurable share of an int8 file.
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs.into_iter().map(Attr::proto).collect(),
            ..Default::default()
        });
    }

    /// Operator types used, in first-use order (for reports and tests).
    pub fn op_types(&self) -> Vec<String> {
        let mut ops: Vec<String> = Vec::new();
        for n in &self.nodes {
            if !ops.contains(&n.op_type) {
                ops.push(n.op_type.clone());
            }
        }
        ops
    }
}

/// Declares a tensor with a free batch dimension first: `[N, dims...]`.
pub fn batched(name: &str, elem: Elem, dims: &[usize]) -> pb::ValueInfoProto {
    use pb::{dimension::Value, Dimension};
    let mut shape = vec![Dimension {
        value: Some(Value::DimParam(BATCH.into())),
    }];
    shape.extend(dims.iter().map(|&d| Dimension {
        value: Some(Value::DimValue(d as i64)),
    }));
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            tensor_type: Some(pb::TensorTypeProto {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto { dim: shape }),
            }),
        }),
    }
}

/// Wraps a finished graph into a model with its interface and metadata.
pub fn model(
    graph: Graph,
    name: &str,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    metadata: &[(String, String)],
) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "edgekd".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(pb::GraphProto {
            name: name.into(),
            node: graph.nodes,
            initializer: graph.initializers,
            input: inputs,
            output: outputs,
            value_info: vec![],
        }),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| pb::StringStringEntryProto {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
    }
}

/// The model's protobuf bytes.
pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}
