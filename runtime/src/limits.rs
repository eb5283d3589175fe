//! What a model file may ask of the process. Checked on the decoded protobuf, before any
//! engine allocates what the file declares: a few hundred bytes can declare a tensor of 10^12
//! elements, or dimensions whose product overflows.

use crate::error::{Error, Result};
use crate::proto::{dimension, GraphProto, ModelProto, TensorProto, ValueInfoProto};

/// Size limits for loading a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest model file, in bytes. Default 2 GiB: protobuf's own ceiling for one message,
    /// so no valid single-file ONNX model is larger.
    pub max_model_bytes: u64,
    /// Largest tensor the model may declare (an initializer, a constant, an input, output or
    /// intermediate value with a fixed shape), in elements. Default 2^28 (1 GiB of f32):
    /// 300 times the largest layer of a 1200-1200 MLP teacher.
    pub max_tensor_elements: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_model_bytes: 2 << 30,
            max_tensor_elements: 1 << 28,
        }
    }
}

impl Limits {
    /// Refuses a model file of `len` bytes past `max_model_bytes`.
    pub fn check_file_size(&self, len: u64) -> Result<()> {
        if len > self.max_model_bytes {
            return Err(Error::TooLarge {
                what: format!("the model file is {len} bytes"),
                limit: self.max_model_bytes,
                setting: "max-model-bytes",
            });
        }
        Ok(())
    }

    /// Walks every tensor `model` declares, in the main graph and in subgraphs, and refuses
    /// the first whose shape is negative, overflows, or holds more than
    /// `max_tensor_elements` elements.
    pub fn check_model(&self, model: &ModelProto) -> Result<()> {
        match &model.graph {
            Some(g) => self.check_graph(g),
            None => Ok(()),
        }
    }

    fn check_graph(&self, g: &GraphProto) -> Result<()> {
        for t in &g.initializer {
            self.check_tensor(t)?;
        }
        for v in g.input.iter().chain(&g.output).chain(&g.value_info) {
            self.check_value(v)?;
        }
        for n in &g.node {
            for a in &n.attribute {
                for t in a.t.iter().chain(&a.tensors) {
                    self.check_tensor(t)?;
                }
                for sub in a.g.iter().map(|b| &**b).chain(&a.graphs) {
                    self.check_graph(sub)?;
                }
            }
        }
        Ok(())
    }

    fn check_tensor(&self, t: &TensorProto) -> Result<()> {
        let dims: Vec<Option<i64>> = t.dims.iter().map(|&d| Some(d)).collect();
        self.check_shape(&format!("tensor `{}`", t.name), &dims)
    }

    fn check_value(&self, v: &ValueInfoProto) -> Result<()> {
        let Some(shape) = v
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
        else {
            return Ok(());
        };
        // Symbolic dimensions (a free batch size) are sized by the caller's input, not the file.
        let dims: Vec<Option<i64>> = shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(dimension::Value::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect();
        self.check_shape(&format!("value `{}`", v.name), &dims)
    }

    fn check_shape(&self, what: &str, dims: &[Option<i64>]) -> Result<()> {
        let shown = || {
            let d: Vec<String> = dims
                .iter()
                .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                .collect();
            format!("[{}]", d.join(", "))
        };
        let mut elements: u64 = 1;
        for &d in dims.iter().flatten() {
            let Ok(d) = u64::try_from(d) else {
                return Err(Error::Corrupt {
                    reason: format!("{what} has a negative dimension in shape {}", shown()),
                });
            };
            elements = match elements.checked_mul(d) {
                Some(e) => e,
                None => {
                    return Err(Error::TooLarge {
                        what: format!(
                            "{what} declares shape {} (more elements than 64 bits can count)",
                            shown()
                        ),
                        limit: self.max_tensor_elements,
                        setting: "max-tensor-elements",
                    })
                }
            };
        }
        if elements > self.max_tensor_elements {
            return Err(Error::TooLarge {
                what: format!("{what} declares shape {} ({elements} elements)", shown()),
                limit: self.max_tensor_elements,
                setting: "max-tensor-elements",
            });
        }
        Ok(())
    }
}
