//! edgekd's training stage: image datasets (IDX files and image folders), MLP and CNN models
//! in candle, and knowledge distillation from one or more teachers into a smaller student.
//!
//! The pieces read like the method:
//! [`dataset`] and [`batch`] make the data, [`spec`] and [`model`] the networks,
//! [`teacher`] the teachers (checkpoints or ONNX files), [`loss`] the distillation losses,
//! [`optim`] the optimizers, [`trainer`] the single loop that trains a model alone or from
//! teachers, and [`experiment`] what a `train` or `distill` command asks for: teachers,
//! assistants, seeds and same-seed baselines.
#![warn(missing_docs)]

pub mod architecture;
pub mod atomic;
pub mod batch;
pub mod batchnorm;
pub mod checkpoint;
pub mod config;
pub mod conv;
pub mod conv2d;
pub mod dataset;
pub mod dense;
pub mod digest;
pub mod error;
pub mod evaluation;
pub mod experiment;
pub mod fetch;
mod gemm;
pub mod identity;
pub mod idx;
pub mod image_folder;
pub mod input;
pub mod logit_cache;
pub mod loss;
pub mod memory;
pub mod model;
pub mod onnx_teacher;
pub mod optim;
pub mod params;
pub mod plan;
pub mod profile;
pub mod prune;
pub mod qat;
pub mod random;
pub mod report;
pub mod spec;
pub mod splits;
pub mod teacher;
pub mod teacher_logits;
mod train_state;
pub mod trainer;
pub mod zoo;

pub use config::{DistillConfig, TrainConfig};
pub use dataset::{Dataset, ImageOptions, Splits};
pub use error::{Error, Result};
pub use evaluation::Evaluation;
pub use identity::RunIdentity;
pub use input::{InputShape, Normalization};
pub use loss::{KdConfig, SoftLoss};
pub use model::Model;
pub use optim::{OptimizerConfig, OptimizerKind, Schedule};
pub use report::{KdGain, Report, Summary};
pub use spec::ModelSpec;
pub use trainer::{Objective, Observer, Run};
