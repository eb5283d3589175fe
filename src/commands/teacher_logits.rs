//! `edgekd teacher-logits`: the on-disk teacher-logit cache, written on its own.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use edgekd_distill::digest::images_sha256;
use edgekd_distill::logit_cache::{self, CacheKey, MappedLogits};
use edgekd_distill::teacher_logits::checked_teacher_logits;

use super::distill::load_teachers;
use crate::args::{ColorArg, ImageSize, TeacherOpts, TrainOpts};

/// Compute teachers' logits over a dataset's training images and store them where `distill`
/// looks for them.
///
/// One safetensors file per teacher and dataset, named by a SHA-256 key of the teacher (its
/// weights, or its ONNX file and input convention) and the training images: tensor `logits`
/// (F32, [samples, classes], dataset order) and metadata naming the format
/// (edgekd-teacher-logits/2), both hashes and the normalization. `distill` with the same
/// teacher, data and --train-limit memory-maps the file instead of running the teacher (when
/// no augmentation is on: jittered images need fresh answers). Produce them on a big machine
/// and copy the directory; files that exist are kept.
#[derive(Debug, Args)]
#[command(
    allow_negative_numbers = true,
    after_help = "Example: edgekd teacher-logits --teacher resnet.onnx --data ../shared/data/mnist --logit-cache logits/ && edgekd distill --teacher resnet.onnx --logit-cache logits/ --student mlp:64 ..."
)]
pub struct TeacherLogitsArgs {
    /// Teacher: a checkpoint directory or an ONNX file; repeat for several
    #[arg(long = "teacher", value_name = "DIR|FILE.onnx", required = true)]
    teachers: Vec<PathBuf>,
    #[command(flatten)]
    run: TeacherOpts,
    /// Dataset directory (MNIST IDX files or an image folder) [default: the shipped MNIST subset]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Use only the first N training images (as the distill run will)
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// Seed of an image folder's train/test split (as the distill run will) [default: 0]
    #[arg(long, value_name = "SEED")]
    split_seed: Option<u64>,
    /// The student's input normalization (as the distill run will): MEAN,STD [default: MNIST's]
    #[arg(long, value_name = "MEAN,STD", value_delimiter = ',')]
    normalize: Option<Vec<f32>>,
    /// Size an image folder is resized to (as the distill run will): HxW or N [default: the first teacher's input size]
    #[arg(long, value_name = "HxW")]
    image_size: Option<ImageSize>,
    /// Colour an image folder is decoded to (as the distill run will) [default: the first teacher's]
    #[arg(long, value_enum)]
    color: Option<ColorArg>,
}

pub fn run(args: TeacherLogitsArgs) -> Result<()> {
    let Some(dir) = args.run.logit_cache_dir() else {
        bail!("--no-logit-cache leaves nowhere to write; give --logit-cache DIR");
    };
    let opts = TrainOpts {
        data: args.data.clone(),
        train_limit: args.train_limit,
        split_seed: args.split_seed,
        normalize: args.normalize.clone(),
        image_size: args.image_size,
        color: args.color,
        ..Default::default()
    };
    let teachers = load_teachers(&args.teachers, &args.run.onnx_options()?)?;
    let data = opts.load_data_for(Some(teachers[0].input()))?;
    // The batches distill feeds teachers are normalised the student's way; the key records it.
    let norm = opts.normalization()?;
    let hashed = Instant::now();
    let data_sha256 = images_sha256(&data.train);
    eprintln!(
        "{} training images hashed in {:.2} s",
        data.train.len(),
        hashed.elapsed().as_secs_f64()
    );
    for (t, path) in teachers.iter().zip(&args.teachers) {
        let key = CacheKey::for_teacher(t, &data_sha256, norm)?;
        if let Some(m) = MappedLogits::open(&dir, &key, data.train.len())? {
            println!(
                "{}: already cached in {}",
                path.display(),
                m.path().display()
            );
            continue;
        }
        let started = Instant::now();
        let logits = checked_teacher_logits(t, &data.train, norm)
            .with_context(|| format!("running teacher {}", path.display()))?;
        let computed = started.elapsed().as_secs_f64();
        let file = logit_cache::write(&dir, &key, &logits)?;
        println!(
            "{}: {} x {} logits in {computed:.2} s -> {}",
            path.display(),
            logits.dim(0)?,
            logits.dim(1)?,
            file.display()
        );
    }
    Ok(())
}
