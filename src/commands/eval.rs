//! `edgekd eval`: accuracy of a checkpoint, and agreement with a teacher.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use edgekd_distill::checkpoint;
use edgekd_distill::evaluation::evaluate;
use edgekd_distill::{ImageOptions, Splits};

use crate::args::shipped_subset;

/// Measure a checkpoint's test accuracy (and its top-1 agreement with a teacher).
#[derive(Debug, Args)]
#[command(
    allow_negative_numbers = true,
    after_help = "Example: edgekd eval runs/student --data ../shared/data/mnist --teacher runs/teacher"
)]
pub struct EvalArgs {
    /// Checkpoint directory (holding model.toml and model.safetensors)
    model: PathBuf,
    /// Dataset (IDX files or an image folder, decoded at the model's input size and colour); its test split is used [default: the shipped subset]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Seed of an image folder's train/test split when it has no test/ (as the training run used) [default: 0]
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    split_seed: u64,
    /// A teacher checkpoint to measure top-1 agreement with
    #[arg(long, value_name = "DIR")]
    teacher: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let model = checkpoint::load(&args.model)
        .with_context(|| format!("loading checkpoint {}", args.model.display()))?;
    let dir = args.data.unwrap_or_else(shipped_subset);
    // An image folder is decoded at the model's input size and colour.
    let image = ImageOptions::exactly(model.spec().input);
    let data = Splits::load_with(&dir, args.split_seed, image)
        .with_context(|| format!("loading dataset from {}", dir.display()))?;
    let eval = evaluate(&model, &data.test)?;
    let agreement = match &args.teacher {
        Some(t) => {
            let teacher =
                checkpoint::load(t).with_context(|| format!("loading teacher {}", t.display()))?;
            Some(eval.agreement(&evaluate(&teacher, &data.test)?))
        }
        None => None,
    };
    let spec = model.spec();
    if args.json {
        let v = serde_json::json!({
            "model": spec.name, "parameters": spec.param_count(), "macs": spec.macs(),
            "test_correct": eval.correct, "test_total": eval.total, "test_errors": eval.errors(),
            "test_accuracy": eval.accuracy(), "teacher_agreement": agreement,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let agree = agreement
            .map(|a| format!(", {:.2}% top-1 agreement with the teacher", 100.0 * a))
            .unwrap_or_default();
        println!(
            "{}: {:.2}% ({} errors of {}){agree}; {} parameters, {} MAC/sample",
            spec.name,
            100.0 * eval.accuracy(),
            eval.errors(),
            eval.total,
            spec.param_count(),
            spec.macs()
        );
    }
    Ok(())
}
