//! edgekd's own inference engine: int8 and f32 convolutions and dense layers on packed
//! weights and register-tiled micro-kernels, activations channels-last, every buffer placed
//! in one arena when a model is first run at a shape, work split across a model's threads.
//!
//! A model is lowered per input shape ([`build`]): constants are folded, every layer is fused
//! with the quantization, bias, scale, activation and residual addition around it, weights are
//! packed (once per model, whatever the shape). [`plan`] places the values; [`exec`] runs the
//! steps. Operators outside the engine are refused with [`crate::Error::UnsupportedOp`], and
//! the default backend hands such models to tract when it is built in.

// Kernels and packing walk several arrays by one channel or column index; iterator chains over
// zipped slices would hide which index runs where.
#![allow(clippy::needless_range_loop)]

pub(crate) mod build;
mod exec;
pub(crate) mod ir;
pub(crate) mod kernels;
mod plan;
mod pool;
pub(crate) mod tensor;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use build::{Program, WeightCache, BACKEND};
pub use kernels::sgemm::FloatMode;
use kernels::Isa;
use plan::Placement;
use pool::Pool;
use tensor::Tensor;

use crate::error::{Error, Result};
use crate::info::{Dim, ElementType, ModelInfo, Output};
use crate::proto::{GraphProto, ModelProto};

/// A program for one input shape, its arena layout, and arenas ready for reuse.
struct Compiled {
    program: Program,
    placement: Placement,
    arenas: Mutex<Vec<exec::Arena>>,
}

/// How many input shapes keep their programs.
const SHAPES_KEPT: usize = 8;

/// A model on the engine.
pub struct NativeModel {
    /// The graph without its initializers (those are decoded into `consts`).
    graph: GraphProto,
    consts: HashMap<String, Arc<Tensor>>,
    input: String,
    opset: i64,
    /// The graph takes float16: inputs are rounded to it, as a cast to the file's type would.
    half_input: bool,
    isa: Isa,
    mode: FloatMode,
    cache: WeightCache,
    programs: Mutex<HashMap<Vec<usize>, Arc<Compiled>>>,
    pool: Pool,
}

impl std::fmt::Debug for NativeModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeModel")
            .field("input", &self.input)
            .field("isa", &self.isa.name())
            .field("mode", &self.mode)
            .field("pool", &self.pool)
            .finish()
    }
}

fn backend_error(message: String) -> Error {
    Error::Backend {
        backend: BACKEND,
        message,
    }
}

impl NativeModel {
    /// Decodes the weights and lowers the model at its declared input shape (free dimensions
    /// taken as 1); fails with `UnsupportedOp` on anything outside the engine.
    pub fn load(
        proto: &ModelProto,
        info: &ModelInfo,
        threads: usize,
        mode: FloatMode,
    ) -> Result<NativeModel> {
        let graph = proto.graph.as_ref().ok_or_else(|| Error::Corrupt {
            reason: "the file holds no graph".into(),
        })?;
        check_initializers(graph)?;
        let input = &info.inputs[0];
        let half_input = match &input.element {
            ElementType::F32 => false,
            ElementType::F16 => true,
            other => {
                return Err(Error::Interface {
                    reason: format!(
                        "input `{}` is {other}; the native engine takes f32 or f16 inputs",
                        input.name
                    ),
                })
            }
        };
        let mut consts = HashMap::new();
        for t in &graph.initializer {
            let tensor = Tensor::from_proto(t).map_err(build::corrupt)?;
            consts.insert(t.name.clone(), Arc::new(tensor));
        }
        let mut bare = graph.clone();
        bare.initializer.clear();
        let model = NativeModel {
            graph: bare,
            consts,
            input: input.name.clone(),
            opset: info.opset,
            half_input,
            isa: Isa::detect(),
            mode,
            cache: Mutex::new(HashMap::new()),
            programs: Mutex::new(HashMap::new()),
            pool: Pool::new(threads),
        };
        let shape: Vec<usize> = input
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Free(_) => 1,
            })
            .collect();
        model.compile(&shape)?;
        Ok(model)
    }

    /// The program for inputs of `shape`, built on first use.
    fn compile(&self, shape: &[usize]) -> Result<Arc<Compiled>> {
        if let Some(c) = self
            .programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(shape)
        {
            return Ok(c.clone());
        }
        let program = build::build(
            &self.graph,
            &self.consts,
            &self.input,
            shape,
            self.opset,
            &self.cache,
        )?;
        let placement = plan::place(&program);
        let compiled = Arc::new(Compiled {
            program,
            placement,
            arenas: Mutex::new(Vec::new()),
        });
        let mut programs = self.programs.lock().unwrap_or_else(|e| e.into_inner());
        if programs.len() >= SHAPES_KEPT {
            programs.clear();
        }
        programs.insert(shape.to_vec(), compiled.clone());
        Ok(compiled)
    }

    /// Runs one batch of f32 values of the given concrete shape.
    pub fn run(&self, input: &[f32], shape: &[usize]) -> Result<Vec<Output>> {
        self.run_timed(input, shape, None)
    }

    /// Mean time per step over `runs` runs of one input: what each (fused) operator costs.
    pub fn profile(
        &self,
        input: &[f32],
        shape: &[usize],
        runs: usize,
    ) -> Result<Vec<(String, Duration)>> {
        let compiled = self.compile(shape)?;
        let mut total = vec![Duration::ZERO; compiled.program.steps.len()];
        for _ in 0..runs.max(1) {
            self.run_timed(input, shape, Some(&mut total))?;
        }
        Ok(compiled
            .program
            .labels
            .iter()
            .zip(total)
            .map(|(l, t)| (l.clone(), t / runs.max(1) as u32))
            .collect())
    }

    fn run_timed(
        &self,
        input: &[f32],
        shape: &[usize],
        times: Option<&mut Vec<Duration>>,
    ) -> Result<Vec<Output>> {
        let expected: usize = shape.iter().product();
        if input.len() != expected {
            return Err(backend_error(format!(
                "{} input values for shape {shape:?}",
                input.len()
            )));
        }
        let compiled = self.compile(shape)?;
        let mut arena = compiled
            .arenas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| exec::Arena::new(compiled.placement.size));
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.execute(&compiled, &mut arena, input, times)
        }));
        match result {
            Ok(outputs) => {
                compiled
                    .arenas
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(arena);
                Ok(outputs)
            }
            Err(_) => Err(backend_error(
                "the engine panicked (a bug: please report it with the model)".into(),
            )),
        }
    }

    fn execute(
        &self,
        compiled: &Compiled,
        arena: &mut exec::Arena,
        input: &[f32],
        mut times: Option<&mut Vec<Duration>>,
    ) -> Vec<Output> {
        let (program, placement) = (&compiled.program, &compiled.placement);
        let cx = exec::Ctx {
            base: arena.base(),
            offsets: &placement.offsets,
            acts: &program.acts,
            isa: self.isa,
            mode: self.mode,
            pool: &self.pool,
        };
        // SAFETY: the arena was sized by `placement`; the input value holds `input.len()` f32s.
        unsafe {
            let x = cx.slice_mut::<f32>(program.input);
            if self.half_input {
                x.iter_mut()
                    .zip(input)
                    .for_each(|(d, &v)| *d = half::f16::from_f32(v).to_f32());
            } else {
                x.copy_from_slice(input);
            }
        }
        for i in 0..program.steps.len() {
            let start = times.is_some().then(Instant::now);
            // SAFETY: steps run in order, so each one's inputs are computed.
            unsafe { exec::run_step(&cx, program, placement, i) };
            if let (Some(times), Some(start)) = (times.as_deref_mut(), start) {
                times[i] += start.elapsed();
            }
        }
        program
            .outputs
            .iter()
            .map(|(name, o)| match o {
                Ok(a) => Output {
                    name: name.clone(),
                    shape: program.acts[*a].shape.clone(),
                    // SAFETY: outputs are f32 (the builder converts the others).
                    data: unsafe { cx.slice::<f32>(*a) }.to_vec(),
                },
                Err(t) => Output {
                    name: name.clone(),
                    shape: t.shape.clone(),
                    data: t.to_f32(),
                },
            })
            .collect()
    }
}

/// Checks every initializer: a type the engine does not hold is `UnsupportedOp`, a declared
/// shape its stored values do not fill is `Corrupt`. Nothing is decoded, so this is cheap
/// enough to run on graphs the engine will not take.
pub fn check_initializers(graph: &GraphProto) -> Result<()> {
    for t in &graph.initializer {
        Tensor::layout(t).map_err(|e| {
            if e.contains("element type") {
                Error::UnsupportedOp {
                    op: format!("initializers of ONNX element type {}", t.data_type),
                    domain: String::new(),
                    node: t.name.clone(),
                    backend: BACKEND,
                }
            } else {
                build::corrupt(e)
            }
        })?;
    }
    Ok(())
}
