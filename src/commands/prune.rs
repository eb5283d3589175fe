//! `edgekd prune`: a checkpoint made smaller by removing whole neurons and channels (or, with
//! --unstructured, by zeroing its smallest weights), written as an ordinary checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::args::{CriterionArg, ScopeArg};
use edgekd_distill::checkpoint::{self, WEIGHTS_FILE};
use edgekd_distill::evaluation::evaluate;
use edgekd_distill::prune::{self, Amount, Criterion, PrunePlan, Scope};
use edgekd_distill::{ImageOptions, Model, Splits};

/// Prune a checkpoint: remove whole neurons (MLP hidden layers) and convolution channels.
///
/// Channels tied together go together: the channels a residual addition adds, a depthwise
/// convolution's channels with their producer's, batch normalization with its convolution.
/// The result is an ordinary, smaller, dense checkpoint (its model.toml records every layer's
/// width) that trains, distils, exports and runs like any other, and runs faster on every
/// engine. Accuracy drops at once; recover it by distilling from the original:
///
///   edgekd distill --teacher ORIGINAL --student PRUNED --baseline ...
///
/// (--baseline then fine-tunes the same pruned weights on labels alone, for comparison.)
///
/// --unstructured --sparsity S instead sets the S smallest-magnitude weights to zero and keeps
/// every shape: the file compresses smaller, but dense kernels multiply the zeros all the same,
/// so it runs no faster. This command says so and shows the compressed sizes.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  edgekd prune runs/teacher --ratio 0.75 --dry-run\n  edgekd prune runs/teacher --ratio 0.75 --out runs/pruned\n  edgekd prune runs/resnet --target-macs 20000000 --criterion taylor --data ../shared/data/fashion-mnist --out runs/resnet-half\n  edgekd prune runs/teacher --unstructured --sparsity 0.9 --out runs/sparse"
)]
pub struct PruneArgs {
    /// Checkpoint directory (holding model.toml and model.safetensors)
    checkpoint: PathBuf,
    /// Fraction of the prunable neurons and channels to remove, in (0, 1)
    #[arg(long, conflicts_with_all = ["target_macs", "sparsity"], required_unless_present_any = ["target_macs", "sparsity"])]
    ratio: Option<f64>,
    /// Remove as little as brings the model to at most this many multiply-accumulates per sample
    #[arg(long, value_name = "MACS", conflicts_with = "sparsity")]
    target_macs: Option<usize>,
    /// What ranks channels: filter norms (l1, l2), batch normalization's |scale| (bn-scale), or |activation x gradient| of the loss over --data batches (taylor)
    #[arg(long, value_enum, default_value_t = CriterionArg::L1)]
    criterion: CriterionArg,
    /// layer: every layer loses the same fraction; global: channels compete across layers (scores relative to their layer's mean), each layer keeping at least one
    #[arg(long, value_enum, default_value_t = ScopeArg::Layer)]
    scope: ScopeArg,
    /// Round every layer's kept width to the nearest multiple of this (or its full width), so the engine's 8-channel panels stay full: a ResNet-20 cut to 11/23/45 channels (0.49x MACs) ran 1.1x faster in int8, one cut to 8/16/32 (0.25x) 2.0x; 1 keeps exact counts
    #[arg(long, value_name = "N", default_value_t = prune::CHANNEL_MULTIPLE)]
    channel_multiple: usize,
    /// Zero the smallest weights instead of removing channels (shapes kept; see above)
    #[arg(long, requires = "sparsity")]
    unstructured: bool,
    /// With --unstructured: the fraction of conv and dense weights set to zero, in (0, 1)
    #[arg(long, requires = "unstructured")]
    sparsity: Option<f64>,
    /// Dataset for --criterion taylor, and to measure test accuracy before and after (IDX files or an image folder)
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Batches of 64 training images that --criterion taylor runs
    #[arg(long, default_value_t = 32)]
    batches: usize,
    /// Print the per-layer plan (widths, parameters, MACs before and after) and write nothing
    #[arg(long)]
    dry_run: bool,
    /// Directory to write the pruned checkpoint to
    #[arg(long, short, required_unless_present = "dry_run")]
    out: Option<PathBuf>,
}

pub fn run(args: PruneArgs) -> Result<()> {
    let model = checkpoint::load(&args.checkpoint)
        .with_context(|| format!("loading checkpoint {}", args.checkpoint.display()))?;
    if let Some(out) = &args.out {
        if super::same_path(out, &args.checkpoint) {
            bail!(
                "--out {} is the checkpoint being pruned; write the pruned model elsewhere",
                out.display()
            );
        }
    }
    let scope = args.scope.scope();
    let data = match &args.data {
        Some(dir) => Some(
            Splits::load_with(dir, 0, ImageOptions::exactly(model.spec().input))
                .with_context(|| format!("loading dataset from {}", dir.display()))?,
        ),
        None => None,
    };
    if args.unstructured {
        let sparsity = args.sparsity.expect("clap requires it");
        return unstructured(&args, &model, sparsity, scope, data.as_ref());
    }
    let criterion = args.criterion.criterion();
    if criterion == Criterion::Taylor && data.is_none() {
        bail!("--criterion taylor runs the model on training images: pass --data DIR (the data it was trained on)");
    }
    let amount = match (args.ratio, args.target_macs) {
        (Some(r), None) => Amount::Ratio(r),
        (None, Some(m)) => Amount::TargetMacs(m),
        _ => unreachable!("clap makes them exclusive and one required"),
    };
    let groups = prune::channel_groups(model.spec());
    let scores = prune::scores(
        &model,
        &groups,
        criterion,
        data.as_ref().map(|d| (&d.train, args.batches)),
    )?;
    let plan = prune::plan(
        model.spec(),
        &groups,
        &scores,
        criterion,
        scope,
        amount,
        args.channel_multiple,
    )?;
    print_plan(&plan);
    let Some(out) = destination(&args) else {
        return Ok(());
    };
    let pruned = prune::apply(&model, &groups, &plan)?;
    if let Some(d) = &data {
        let (before, after) = (evaluate(&model, &d.test)?, evaluate(&pruned, &d.test)?);
        println!(
            "test accuracy {:.2}% -> {:.2}% before recovery ({} -> {} errors of {})",
            100.0 * before.accuracy(),
            100.0 * after.accuracy(),
            before.errors(),
            after.errors(),
            after.total
        );
    }
    checkpoint::save_model(out, &pruned)?;
    checkpoint::save_json(&out.join("prune.json"), &plan)?;
    println!(
        "pruned checkpoint written to {}; recover it with: edgekd distill --teacher {} --student {} --baseline ...",
        out.display(),
        args.checkpoint.display(),
        out.display()
    );
    Ok(())
}

/// Where to write the result; None (said on stderr) on a dry run.
fn destination(args: &PruneArgs) -> Option<&Path> {
    if args.dry_run {
        eprintln!("dry run: nothing written");
        return None;
    }
    Some(
        args.out
            .as_deref()
            .expect("clap requires --out without --dry-run"),
    )
}

fn ratio(after: usize, before: usize) -> String {
    format!("{:.2}x", after as f64 / before.max(1) as f64)
}

fn print_plan(plan: &PrunePlan) {
    let (b, a) = (&plan.before, &plan.after);
    println!(
        "{} pruned by {} scores, {} scope: {:.1}% of its prunable neurons/channels removed",
        b.name,
        plan.criterion,
        match plan.scope {
            Scope::Layer => "per-layer",
            Scope::Global => "global",
        },
        100.0 * plan.removed_fraction()
    );
    let width = plan
        .groups
        .iter()
        .map(|g| g.group.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!("  {:<width$}  {:>6}  {:>6}", "layer", "before", "after");
    for g in &plan.groups {
        println!(
            "  {:<width$}  {:>6}  {:>6}",
            g.group,
            g.before,
            g.kept.len()
        );
    }
    println!(
        "  parameters {} -> {} ({}), MACs/sample {} -> {} ({})",
        b.param_count(),
        a.param_count(),
        ratio(a.param_count(), b.param_count()),
        b.macs(),
        a.macs(),
        ratio(a.macs(), b.macs())
    );
}

/// Bytes of `bytes` after gzip at the default level.
fn gzipped(bytes: &[u8]) -> Result<usize> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(bytes)?;
    Ok(z.finish()?.len())
}

fn unstructured(
    args: &PruneArgs,
    model: &Model,
    sparsity: f64,
    scope: Scope,
    data: Option<&Splits>,
) -> Result<()> {
    let (sparse, report) = prune::sparsify(model, sparsity, scope)?;
    println!(
        "{}: {:.1}% of {} conv/dense weights set to zero ({} scope); every shape kept, so dense kernels run it no faster",
        model.spec().name,
        100.0 * report.achieved(),
        report.tensors.iter().map(|t| t.1).sum::<usize>(),
        match scope {
            Scope::Layer => "per-layer",
            Scope::Global => "global",
        },
    );
    for (name, n, zeros) in &report.tensors {
        println!(
            "  {name:<24} {:>5.1}% of {n}",
            100.0 * *zeros as f64 / *n as f64
        );
    }
    if let Some(d) = data {
        let (before, after) = (evaluate(model, &d.test)?, evaluate(&sparse, &d.test)?);
        println!(
            "test accuracy {:.2}% -> {:.2}% ({} -> {} errors of {})",
            100.0 * before.accuracy(),
            100.0 * after.accuracy(),
            before.errors(),
            after.errors(),
            after.total
        );
    }
    let Some(out) = destination(args) else {
        return Ok(());
    };
    checkpoint::save_model(out, &sparse)?;
    checkpoint::save_json(&out.join("sparsity.json"), &report)?;
    let original = std::fs::read(args.checkpoint.join(WEIGHTS_FILE))?;
    let written = std::fs::read(out.join(WEIGHTS_FILE))?;
    println!(
        "{}: {} bytes, {} gzipped (the original: {} bytes, {} gzipped)",
        out.join(WEIGHTS_FILE).display(),
        written.len(),
        gzipped(&written)?,
        original.len(),
        gzipped(&original)?
    );
    Ok(())
}
