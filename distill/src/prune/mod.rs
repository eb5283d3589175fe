//! Structured pruning: whole neurons and convolution channels removed, leaving an ordinary,
//! smaller, dense model that every engine runs faster (masks on dense kernels save nothing).
//!
//! [`groups`] finds the channels that go together (a residual stage, a depthwise convolution
//! and its expansion, batch normalization and its convolution), [`criterion`] ranks them,
//! [`plan()`] chooses how many each group keeps and [`apply`] cuts the tensors; [`gradual`]
//! alternates pruning with distillation. [`sparsify`] is the unstructured kind: zeros in
//! place, the same shapes.

pub mod criterion;
pub mod gradual;
pub mod groups;
pub mod plan;
mod unstructured;

pub use criterion::{scores, Criterion};
pub use gradual::{Gradual, GradualOutcome};
pub use groups::{channel_groups, ChannelGroup};
pub use plan::{apply, plan, plan_widths, Amount, GroupChange, PrunePlan, Scope, CHANNEL_MULTIPLE};
pub use unstructured::{sparsify, Sparsity};

#[cfg(test)]
mod tests;
