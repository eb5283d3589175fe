//! `edgekd train`: a model on labels alone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use edgekd_distill::experiment::{Setup, Trained, Training};

use crate::args::{read_config, TrainFile, TrainOpts};
use crate::console::{describe, Console};

/// Train a model on the labels alone: a teacher, or a student baseline.
///
/// Writes model.toml + model.safetensors (the checkpoint every later stage reads), report.json
/// (accuracy, errors, time per epoch, the full configuration) and train-state/ (for --resume)
/// into --out, checkpointing atomically after every epoch.
#[derive(Debug, Args)]
#[command(
    allow_negative_numbers = true,
    after_help = "Example: edgekd train --model mlp:1200-1200 --dropout 0.5 --input-dropout 0.2 --jitter 2 --data ../shared/data/mnist --epochs 30 --out runs/teacher"
)]
pub struct TrainArgs {
    /// Model spec: mlp:H1-H2-... (e.g. mlp:1200-1200, mlp:64), cnn:lenet5, cnn:lenet5-half, cnn:c32-c64-f1024
    #[arg(long, short)]
    model: Option<String>,
    /// Checkpoint directory to write
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Experiment file (TOML) holding any of these options; flags override it
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    opts: TrainOpts,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let file: TrainFile = match &args.config {
        Some(p) => read_config(p)?,
        None => TrainFile::default(),
    };
    let opts = args.opts.merge(&file.opts);
    let model = args.model.or(file.model).ok_or_else(|| {
        anyhow::anyhow!(
            "no model given: pass --model (e.g. --model mlp:800-800) or set `model` in --config"
        )
    })?;
    let out = args
        .out
        .or(file.out)
        .ok_or_else(|| anyhow::anyhow!("no output directory given: pass --out DIR"))?;
    if let Some(t) = train_model(&model, &out, &opts)? {
        println!("{}", describe(&t));
    }
    Ok(())
}

/// Trains `model` on labels into `out` (None when paused by --stop-after); also the teacher
/// stage of `distill --config` files with a `[teacher]` table.
pub fn train_model(model: &str, out: &Path, opts: &TrainOpts) -> Result<Option<Trained>> {
    opts.apply_threads()?;
    let config = opts.train_config()?;
    let data = opts.load_data()?;
    let spec = opts.spec_for(model, &data)?;
    eprintln!(
        "training {} ({} parameters) on {} images, testing on {}",
        spec.name,
        spec.param_count(),
        data.train.len(),
        data.test.len()
    );
    let setup = Setup {
        data: &data,
        data_name: opts.data_dir().display().to_string(),
        resume: opts.resume,
        stop_after: opts.stop_after,
        logit_cache: None,
    };
    let mut console = Console {
        quiet: opts.quiet,
        profile: opts.profile,
    };
    Training { spec, config }
        .run(&setup, out, &mut console)
        .with_context(|| format!("training {model} into {}", out.display()))
}
