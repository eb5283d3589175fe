//! edgekd's training stage: MNIST-style datasets, MLP and CNN models in candle, and
//! knowledge distillation from one or more teachers into a smaller student.
//!
//! The pieces read like the method:
//! [`dataset`] and [`batch`] make the data, [`spec`] and [`model`] the networks,
//! [`loss`] holds the distillation losses, [`optim`] the optimizers, and [`trainer`]
//! the single loop that trains a model alone or from teachers.
#![warn(missing_docs)]

pub mod atomic;
pub mod batch;
pub mod checkpoint;
pub mod conv;
pub mod dataset;
pub mod dense;
pub mod error;
pub mod fetch;
mod gemm;
pub mod idx;
pub mod image_folder;
pub mod logit_cache;
pub mod loss;
pub mod memory;
pub mod model;
pub mod optim;
pub mod profile;
pub mod report;
pub mod spec;
pub mod teacher;
pub mod trainer;

pub use dataset::{Dataset, ImageOptions, Normalization, Splits};
pub use error::{Error, Result};
pub use loss::{KdConfig, SoftLoss};
pub use model::Model;
pub use optim::{OptimizerConfig, OptimizerKind, Schedule};
pub use report::{KdGain, Report, Summary};
pub use spec::{InputShape, ModelSpec};
pub use trainer::{DistillConfig, Objective, Observer, Run, TrainConfig};
