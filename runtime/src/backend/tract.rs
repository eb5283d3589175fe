//! The tract-onnx backend: parses once, then builds and caches one optimized plan per input
//! shape, because tract optimizes best on concrete shapes (a free batch dimension blocks
//! kernel selection and constant folding).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::model::typed::{TypedRunnableModel, TypedSimpleState};

use crate::error::{Error, Result};
use crate::info::{ElementType, ModelInfo, Output};

const BACKEND: &str = "tract";

fn backend_error(e: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("{e:#}"),
    }
}

/// Runs `f`, turning a panic inside tract into an error: a hostile model must not take the
/// host process down.
fn guarded<T>(what: &str, f: impl FnOnce() -> TractResult<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Backend {
            backend: BACKEND,
            message: format!("{what}: {e:#}"),
        }),
        Err(_) => Err(Error::Backend {
            backend: BACKEND,
            message: format!(
                "{what}: tract panicked (the model is malformed or uses an unsupported construct)"
            ),
        }),
    }
}

/// An optimized plan for one input shape, with spare states so concurrent callers do not
/// wait on each other and a sequential caller does not re-allocate per run.
struct Plan {
    runnable: Arc<TypedRunnableModel>,
    states: Mutex<Vec<TypedSimpleState>>,
}

/// A model parsed by tract.
pub struct TractModel {
    model: InferenceModel,
    input_type: DatumType,
    plans: Mutex<HashMap<Vec<usize>, Arc<Plan>>>,
}

impl TractModel {
    /// Decodes, checks and parses an ONNX model.
    pub fn load(bytes: &[u8], info: &ModelInfo) -> Result<TractModel> {
        let mut proto =
            <pb::ModelProto as prost::Message>::decode(bytes).map_err(|e| Error::Corrupt {
                reason: format!("protobuf decoding failed: {e}"),
            })?;
        // Shapes recorded for intermediate values are hints, and today's exporters name the
        // batch in them (`batch`, `N`), which tract cannot unify with the concrete batch a
        // plan is built for: it derives every shape from the input's instead.
        if let Some(graph) = &mut proto.graph {
            graph.value_info.clear();
        }
        // Output shapes are ignored: they often name the batch symbolically, which conflicts
        // with the concrete batch each plan is built for.
        let onnx = tract_onnx::onnx().with_ignore_output_shapes(true);
        if let Some(graph) = &proto.graph {
            for node in &graph.node {
                if !onnx.op_register.0.contains_key(&node.op_type) {
                    return Err(Error::unsupported_op(
                        node.op_type.clone(),
                        &node.domain,
                        &node.name,
                        BACKEND,
                    ));
                }
            }
        }
        let input_type = match info.inputs[0].element {
            ElementType::F32 => f32::datum_type(),
            ElementType::F16 => f16::datum_type(),
            ref other => {
                return Err(Error::Interface {
                    reason: format!(
                        "input `{}` is {other}; the runtime feeds f32 or f16 inputs",
                        info.inputs[0].name
                    ),
                })
            }
        };
        let model = guarded("parsing the graph", || onnx.model_for_proto_model(&proto))?;
        Ok(TractModel {
            model,
            input_type,
            plans: Mutex::new(HashMap::new()),
        })
    }

    fn plan(&self, shape: &[usize]) -> Result<Arc<Plan>> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = plans.get(shape) {
            return Ok(p.clone());
        }
        let fact = InferenceFact::dt_shape(self.input_type, shape);
        let model = self.model.clone();
        let runnable = guarded("optimizing the graph", || {
            model
                .with_input_fact(0, fact)?
                .into_optimized()?
                .into_runnable()
        })?;
        let plan = Arc::new(Plan {
            runnable,
            states: Mutex::new(Vec::new()),
        });
        plans.insert(shape.to_vec(), plan.clone());
        Ok(plan)
    }

    /// Runs one batch of f32 values of the given concrete shape.
    pub fn run(&self, input: &[f32], shape: &[usize]) -> Result<Vec<Output>> {
        let plan = self.plan(shape)?;
        let tensor = Tensor::from_shape(shape, input).map_err(backend_error)?;
        let tensor = if self.input_type == f32::datum_type() {
            tensor
        } else {
            tensor
                .cast_to_dt(self.input_type)
                .map_err(backend_error)?
                .into_owned()
        };
        let state = plan.states.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut state = match state {
            Some(s) => s,
            None => guarded("preparing a run", || plan.runnable.spawn())?,
        };
        let outputs = guarded("running the model", || {
            state.run(tvec!(tensor.into_tvalue()))
        })?;
        plan.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(state);
        let names = plan
            .runnable
            .model()
            .output_outlets()
            .map_err(backend_error)?;
        outputs
            .into_iter()
            .zip(names)
            .map(|(t, outlet)| {
                let name = plan
                    .runnable
                    .model()
                    .outlet_label(*outlet)
                    .map(str::to_owned)
                    .unwrap_or_else(|| plan.runnable.model().node(outlet.node).name.clone());
                let f = t.cast_to::<f32>().map_err(backend_error)?;
                let data = f
                    .try_as_plain_ram()
                    .and_then(|v| v.as_slice::<f32>().map(|s| s.to_vec()))
                    .map_err(backend_error)?;
                Ok(Output {
                    name,
                    shape: t.shape().to_vec(),
                    data,
                })
            })
            .collect()
    }
}
