//! Reading a model's interface (inputs, outputs, opset, metadata) from its ONNX protobuf,
//! independently of any backend.

use std::collections::BTreeMap;

use crate::proto as pb;

use crate::error::{Error, Result};
use crate::info::{Dim, ElementType, ModelInfo, TensorInfo};

/// ONNX `TensorProto.DataType` codes this runtime names.
fn element_type(code: i32) -> ElementType {
    match code {
        1 => ElementType::F32,
        2 => ElementType::U8,
        3 => ElementType::I8,
        6 => ElementType::I32,
        7 => ElementType::I64,
        10 => ElementType::F16,
        other => ElementType::Other(format!("onnx type {other}")),
    }
}

fn tensor_info(v: &pb::ValueInfoProto) -> Result<TensorInfo> {
    let tensor = match v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()) {
        Some(t) => t,
        None => {
            return Err(Error::Interface {
                reason: format!("`{}` is not a tensor", v.name),
            })
        }
    };
    let shape = tensor
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| {
                    use pb::dimension::Value as D;
                    match &d.value {
                        Some(D::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
                        Some(D::DimParam(p)) => Dim::Free(p.clone()),
                        _ => Dim::Free(String::new()),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(TensorInfo {
        name: v.name.clone(),
        element: element_type(tensor.elem_type),
        shape,
        from_softmax: false,
    })
}

/// Whether the graph's value `name` is written by a Softmax node, through any Identity nodes
/// (scikit-learn's exporter places one after it).
fn written_by_softmax(graph: &pb::GraphProto, name: &str) -> bool {
    let mut value = name;
    // Bounded by the node count, so a malformed cycle of Identity nodes cannot spin forever.
    for _ in 0..=graph.node.len() {
        let Some(node) = graph
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == value))
        else {
            return false;
        };
        match (node.op_type.as_str(), node.input.first()) {
            ("Softmax", _) => return true,
            ("Identity", Some(input)) => value = input,
            _ => return false,
        }
    }
    false
}

/// The interface a decoded model declares.
pub fn model_info(proto: &pb::ModelProto, bytes: usize) -> Result<ModelInfo> {
    let graph = proto.graph.as_ref().ok_or_else(|| Error::Corrupt {
        reason: "the file holds no graph".into(),
    })?;
    let initialized: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|i| !initialized.contains(i.name.as_str()))
        .map(tensor_info)
        .collect::<Result<Vec<_>>>()?;
    let outputs = graph
        .output
        .iter()
        .map(|o| {
            let mut info = tensor_info(o)?;
            info.from_softmax = written_by_softmax(graph, &o.name);
            Ok(info)
        })
        .collect::<Result<Vec<_>>>()?;
    if inputs.is_empty() || outputs.is_empty() {
        return Err(Error::Interface {
            reason: format!(
                "the graph has {} input(s) and {} output(s); it needs at least one of each",
                inputs.len(),
                outputs.len()
            ),
        });
    }
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0);
    let metadata: BTreeMap<String, String> = proto
        .metadata_props
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    Ok(ModelInfo {
        inputs,
        outputs,
        opset,
        ir_version: proto.ir_version,
        metadata,
        bytes,
    })
}
