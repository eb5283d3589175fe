//! Constant tensors: initializers, `Constant` nodes and everything folded from them; and
//! node attributes.

use crate::proto::{data_type, AttributeProto, TensorProto};

/// Typed storage.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// float32
    F32(Vec<f32>),
    /// int8
    I8(Vec<i8>),
    /// uint8
    U8(Vec<u8>),
    /// int32
    I32(Vec<i32>),
    /// int64 (shapes)
    I64(Vec<i64>),
}

/// A dense row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values; `shape`'s product of them.
    pub data: Data,
}

/// Element count of a shape, refusing overflow.
pub fn volume(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has more elements than memory can hold"))
}

impl Tensor {
    /// A tensor from a shape and matching values.
    pub fn new(shape: Vec<usize>, data: Data) -> Result<Tensor, String> {
        let n = volume(&shape)?;
        if n != data.len() {
            return Err(format!(
                "{} values for shape {shape:?} ({n} expected)",
                data.len()
            ));
        }
        Ok(Tensor { shape, data })
    }

    /// A float tensor.
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Result<Tensor, String> {
        Tensor::new(shape, Data::F32(values))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// The element type's name, for messages.
    pub fn type_name(&self) -> &'static str {
        self.data.type_name()
    }

    /// The values as f32, or an error naming what they are.
    pub fn as_f32(&self) -> Result<&[f32], String> {
        match &self.data {
            Data::F32(v) => Ok(v),
            other => Err(format!("expected f32 values, found {}", other.type_name())),
        }
    }

    /// Every value converted to f32 (for outputs and scales).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I8(v) => v.iter().map(|&x| x as f32).collect(),
            Data::U8(v) => v.iter().map(|&x| x as f32).collect(),
            Data::I32(v) => v.iter().map(|&x| x as f32).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Every value as i64 (for shapes, zero points and integer weights).
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        Ok(match &self.data {
            Data::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U8(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I64(v) => v.clone(),
            Data::F32(_) => return Err("expected integer values, found f32".into()),
        })
    }

    /// Checks that an ONNX initializer's declared shape and stored values agree (and that its
    /// type is one the engine holds), without decoding or allocating anything for the values;
    /// returns the shape and whether the values are in `raw_data`.
    pub fn layout(t: &TensorProto) -> Result<(Vec<usize>, bool), String> {
        if !t.external_data.is_empty() {
            return Err(format!(
                "tensor `{}` keeps its values in an external file, which this runtime does not read",
                t.name
            ));
        }
        let shape = t
            .dims
            .iter()
            .map(|&d| {
                usize::try_from(d).map_err(|_| format!("tensor `{}` has dimension {d}", t.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n = volume(&shape)?;
        let raw = &t.raw_data;
        let from_raw = !raw.is_empty() || n == 0;
        let size = match t.data_type {
            data_type::FLOAT | data_type::INT32 => 4,
            data_type::INT8 | data_type::UINT8 => 1,
            data_type::FLOAT16 => 2,
            data_type::INT64 => 8,
            other => {
                return Err(format!(
                "tensor `{}` has ONNX element type {other}, which the native engine does not hold",
                t.name
            ))
            }
        };
        let typed_len = match t.data_type {
            data_type::FLOAT => t.float_data.len(),
            data_type::INT64 => t.int64_data.len(),
            _ => t.int32_data.len(),
        };
        let stored = if from_raw {
            raw.len() / size
        } else {
            typed_len
        };
        if (from_raw && !raw.len().is_multiple_of(size)) || stored != n {
            return Err(format!(
                "tensor `{}` declares shape {shape:?} ({n} values) but stores {stored}",
                t.name
            ));
        }
        Ok((shape, from_raw))
    }

    /// Decodes an ONNX initializer, checked by [`Tensor::layout`] first.
    pub fn from_proto(t: &TensorProto) -> Result<Tensor, String> {
        let (shape, from_raw) = Tensor::layout(t)?;
        let raw = &t.raw_data;
        let data = if from_raw {
            match t.data_type {
                data_type::FLOAT => Data::F32(
                    raw.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                data_type::INT32 => Data::I32(
                    raw.chunks_exact(4)
                        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                data_type::INT64 => Data::I64(
                    raw.chunks_exact(8)
                        .map(|b| {
                            i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                        })
                        .collect(),
                ),
                data_type::INT8 => Data::I8(raw.iter().map(|&b| b as i8).collect()),
                data_type::FLOAT16 => Data::F32(
                    raw.chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect(),
                ),
                _ => Data::U8(raw.clone()),
            }
        } else {
            match t.data_type {
                data_type::FLOAT => Data::F32(t.float_data.clone()),
                data_type::INT32 => Data::I32(t.int32_data.clone()),
                data_type::INT64 => Data::I64(t.int64_data.clone()),
                data_type::INT8 => Data::I8(t.int32_data.iter().map(|&v| v as i8).collect()),
                // ONNX keeps float16 values' bits in int32_data.
                data_type::FLOAT16 => Data::F32(
                    t.int32_data
                        .iter()
                        .map(|&v| half::f16::from_bits(v as u16).to_f32())
                        .collect(),
                ),
                _ => Data::U8(t.int32_data.iter().map(|&v| v as u8).collect()),
            }
        };
        Tensor::new(shape, data)
    }
}

impl Data {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::U8(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    /// The element type's name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Data::F32(_) => "f32",
            Data::I8(_) => "i8",
            Data::U8(_) => "u8",
            Data::I32(_) => "i32",
            Data::I64(_) => "i64",
        }
    }
}

/// A node's attributes, by name.
#[derive(Clone, Copy)]
pub struct Attrs<'a>(pub &'a [AttributeProto]);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.iter().find(|a| a.name == name)
    }

    /// An INT attribute, or `default`.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }

    /// A FLOAT attribute, or `default`.
    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }

    /// An INTS attribute, or `None` when absent.
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        self.get(name).map(|a| a.ints.as_slice())
    }

    /// A STRING attribute, or `default`.
    pub fn string(&self, name: &str, default: &str) -> String {
        self.get(name).map_or(default.to_owned(), |a| {
            String::from_utf8_lossy(&a.s).into_owned()
        })
    }

    /// A TENSOR attribute.
    pub fn tensor(&self, name: &str) -> Option<&crate::proto::TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }

    /// INTS of non-negative values that fit `usize`, or `default`.
    pub fn sizes(&self, name: &str, default: Vec<usize>) -> Result<Vec<usize>, String> {
        match self.ints(name) {
            None => Ok(default),
            Some(v) => v
                .iter()
                .map(|&x| usize::try_from(x).map_err(|_| format!("attribute {name} holds {x}")))
                .collect(),
        }
    }
}
