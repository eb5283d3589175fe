//! edgekd's own engine: runs int8 students (`MatMulInteger`/`ConvInteger` graphs, dynamic
//! quantization, and QDQ `MatMul`/`Gemm`/`Conv`) on int8 SIMD kernels, and the f32 and f16
//! layers of students on float kernels, so that a device build needs no other engine.
//!
//! It exists because tract 0.23 runs these graphs about 100x slower than their f32 twins on
//! CPUs without AVX-512 VNNI (measured on an AVX2 host: 784x64 int8 layer 740-790 µs at
//! batch 1 against 5.8 µs in f32), so int8 never paid off. The engine covers the operators
//! students are made of; anything else is refused with [`crate::Error::UnsupportedOp`] and
pub(crate) mod kernels;
/// the default backend hands such models, and float ones, to tract when it is built in.
pub(crate) mod lower;
pub(crate) mod ops;
pub(crate) mod tensor;

use std::panic::{catch_unwind, AssertUnwindSafe};

use kernels::Isa;
use lower::{Plan, Ref, BACKEND};
use tensor::Tensor;

use crate::error::{Error, Result};
use crate::info::{ElementType, ModelInfo, Output};
use crate::proto::ModelProto;

/// A model lowered onto the native engine.
#[derive(Debug)]
pub struct NativeModel {
    plan: Plan,
    /// The graph takes float16: inputs are rounded to it, as a cast to the file's type would.
    half_input: bool,
    threads: usize,
}

impl NativeModel {
    /// Lowers a decoded model; fails with `UnsupportedOp` on anything outside the engine.
    pub fn load(proto: &ModelProto, info: &ModelInfo, threads: usize) -> Result<NativeModel> {
        let graph = proto.graph.as_ref().ok_or_else(|| Error::Corrupt {
            reason: "the file holds no graph".into(),
        })?;
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
        let plan = lower::lower(graph, &input.name, Isa::detect())?;
        Ok(NativeModel {
            plan,
            half_input,
            threads: threads.max(1),
        })
    }

    /// Whether the graph does any integer arithmetic (what the engine is for).
    pub fn is_integer(&self) -> bool {
        self.plan.integer_steps > 0
    }

    /// Runs one batch of f32 values of the given concrete shape.
    pub fn run(&self, input: &[f32], shape: &[usize]) -> Result<Vec<Output>> {
        let x = self.input(input, shape)?;
        match catch_unwind(AssertUnwindSafe(|| self.execute(x))) {
            Ok(r) => r,
            Err(_) => Err(Error::Backend {
                backend: BACKEND,
                message: "the engine panicked (a bug: please report it with the model)".into(),
            }),
        }
    }

    /// Mean time per step over `runs` runs of one input: what each (fused) operator costs.
    pub fn profile(
        &self,
        input: &[f32],
        shape: &[usize],
        runs: usize,
    ) -> Result<Vec<(String, std::time::Duration)>> {
        let x = self.input(input, shape)?;
        let mut total = vec![std::time::Duration::ZERO; self.plan.steps.len()];
        for _ in 0..runs.max(1) {
            self.execute_timed(x.clone(), Some(&mut total))?;
        }
        Ok(self
            .plan
            .steps
            .iter()
            .zip(total)
            .map(|(s, t)| (s.label.clone(), t / runs.max(1) as u32))
            .collect())
    }

    fn input(&self, input: &[f32], shape: &[usize]) -> Result<Tensor> {
        let values = if self.half_input {
            input
                .iter()
                .copied()
                .map(ops::elementwise::round_f16)
                .collect()
        } else {
            input.to_vec()
        };
        Tensor::f32(shape.to_vec(), values).map_err(|message| Error::Backend {
            backend: BACKEND,
            message,
        })
    }

    fn execute(&self, input: Tensor) -> Result<Vec<Output>> {
        self.execute_timed(input, None)
    }

    fn execute_timed(
        &self,
        input: Tensor,
        mut times: Option<&mut Vec<std::time::Duration>>,
    ) -> Result<Vec<Output>> {
        let plan = &self.plan;
        let mut slots: Vec<Option<Tensor>> = vec![None; plan.slots];
        slots[0] = Some(input);
        for (i, step) in plan.steps.iter().enumerate() {
            let start = times.is_some().then(std::time::Instant::now);
            let outs = {
                let args: Vec<Option<&Tensor>> = step
                    .inputs
                    .iter()
                    .map(|r| r.and_then(|r| resolve(plan, &slots, r)))
                    .collect();
                step.op
                    .run(&args, self.threads)
                    .map_err(|e| Error::Backend {
                        backend: BACKEND,
                        message: format!("{}: {e}", step.label),
                    })?
            };
            for (slot, t) in step.outputs.iter().zip(outs) {
                slots[*slot] = Some(t);
            }
            if let (Some(times), Some(start)) = (times.as_deref_mut(), start) {
                times[i] += start.elapsed();
            }
        }
        plan.outputs
            .iter()
            .map(|(name, r)| {
                let t = resolve(plan, &slots, *r).ok_or_else(|| Error::Backend {
                    backend: BACKEND,
                    message: format!("output `{name}` was not computed"),
                })?;
                Ok(Output {
                    name: name.clone(),
                    shape: t.shape.clone(),
                    data: t.to_f32(),
                })
            })
            .collect()
    }
}

fn resolve<'a>(plan: &'a Plan, slots: &'a [Option<Tensor>], r: Ref) -> Option<&'a Tensor> {
    match r {
        Ref::Const(i) => plan.consts.get(i),
        Ref::Dyn(s) => slots.get(s).and_then(Option::as_ref),
    }
}
