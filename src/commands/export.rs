//! `edgekd export`: a student checkpoint to verified ONNX files.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use edgekd_distill::checkpoint::load_spec;
use edgekd_distill::{ImageOptions, Splits};
use edgekd_export::{Activations, Encoding, ExportOptions, Method, Variant};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::shipped_subset;
use crate::onnxruntime::OrtCheck;

/// Number formats to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// f32 weights and arithmetic.
    F32,
    /// Half precision (see --f16).
    F16,
    /// int8 weights and int32 biases (see --int8-format and --calibration).
    Int8,
}

/// Forms of f16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum F16Arg {
    /// f16 weights, arithmetic, input and output (faster than f32 in tract; half the size).
    Full,
    /// f16 weights cast to f32 inside the graph (half the size, f32 arithmetic; slow in tract
    /// for layers over 4 MiB, which it re-converts on every run).
    Storage,
}

/// int8 encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Int8FormatArg {
    /// s8 QuantizeLinear + MatMulInteger/ConvInteger: runs on tract's integer kernels.
    Qoperator,
    /// QuantizeLinear/DequantizeLinear around MatMul/Conv (u8 activations): ONNX Runtime's fast form.
    Qdq,
}

/// How int8 activation ranges are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CalibrationArg {
    /// Observed minimum and maximum on the calibration samples.
    Minmax,
    /// The 0.01th and 99.99th percentiles.
    Percentile,
    /// The KL-divergence-optimal clipping threshold (TensorRT's entropy method).
    Entropy,
    /// No calibration: activations quantized per batch at run time (DynamicQuantizeLinear).
    Dynamic,
    /// No calibration: the ranges quantization-aware training (--qat) learned.
    Qat,
}

/// Quantize a student to f32 / f16 / int8 ONNX and verify every file before writing it.
///
/// Each file is reloaded in the runtime (tract), run on the whole test set, and compared with
/// the checkpoint: accuracy, top-1 agreement, largest logit difference, size, and batch-1
/// latency. A file that loses more than --max-accuracy-drop is not written and the command
/// fails. With --onnxruntime, each file is also checked with onnx.checker (full check) and
/// run in ONNX Runtime, side by side with tract.
#[derive(Debug, Args)]
#[command(
    allow_negative_numbers = true,
    after_help = "Examples:
  edgekd export runs/student --out runs/student/onnx
  edgekd export runs/student --format int8 --int8-format qoperator,qdq \\
      --calibration minmax,percentile,entropy,dynamic --calib 1000 --data ../shared/data/mnist
  edgekd export runs/student --onnxruntime .venv/bin/python   # also check in ONNX Runtime

Files are named <stem>.<variant>.onnx: f32, f16, f16-storage, int8-qop-minmax,
int8-qdq-entropy, int8-dynamic, ...; <stem>.export.json holds the full report."
)]
pub struct ExportArgs {
    /// Student checkpoint directory (model.toml + model.safetensors)
    checkpoint: PathBuf,
    /// Formats to write
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "f32,f16,int8"
    )]
    format: Vec<FormatArg>,
    /// f16 forms to write when --format has f16
    #[arg(
        long = "f16",
        value_enum,
        value_delimiter = ',',
        default_value = "full"
    )]
    f16: Vec<F16Arg>,
    /// int8 encodings to write when --format has int8
    #[arg(long, value_enum, value_delimiter = ',', default_value = "qoperator")]
    int8_format: Vec<Int8FormatArg>,
    /// int8 activation calibration methods (one file per method and encoding); qat: the ranges quantization-aware training learned (`--qat`) [default: qat for a checkpoint trained with --qat, else percentile]
    #[arg(long, value_enum, value_delimiter = ',')]
    calibration: Vec<CalibrationArg>,
    /// Training images to calibrate int8 activations on
    #[arg(long = "calib", value_name = "N", default_value_t = 1000)]
    calib: usize,
    /// Dataset: calibration uses its training split, verification its test split [default: the shipped subset]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Seed of an image folder's train/test split when it has no test/ (as the training run used) [default: 0]
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    split_seed: u64,
    /// Output directory [default: CHECKPOINT/onnx]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// File name stem [default: the checkpoint directory's name]
    #[arg(long)]
    stem: Option<String>,
    /// Largest accepted loss of test accuracy against the checkpoint, in percentage points
    #[arg(long, value_name = "PP", default_value_t = 0.5)]
    max_accuracy_drop: f64,
    /// Seconds to time each file at batch 1 (0 to skip timing)
    #[arg(long, value_name = "SECONDS", default_value_t = 0.5)]
    latency: f64,
    /// Python interpreter with the `onnx` and `onnxruntime` packages: check every file with
    /// onnx.checker and run it in ONNX Runtime too [default: $EDGEKD_PYTHON, if set]
    #[arg(long, value_name = "PYTHON")]
    onnxruntime: Option<PathBuf>,
    /// Print the report as JSON instead of a table
    #[arg(long)]
    json: bool,
}

fn variants(a: &ExportArgs) -> Vec<Variant> {
    let mut v = Vec::new();
    for f in &a.format {
        match f {
            FormatArg::F32 => v.push(Variant::F32),
            FormatArg::F16 => v.extend(a.f16.iter().map(|f| match f {
                F16Arg::Full => Variant::F16,
                F16Arg::Storage => Variant::F16Storage,
            })),
            FormatArg::Int8 => {
                for c in &a.calibration {
                    let method = match c {
                        CalibrationArg::Minmax => Method::MinMax,
                        CalibrationArg::Percentile => Method::Percentile,
                        CalibrationArg::Entropy => Method::Entropy,
                        CalibrationArg::Qat => Method::Qat,
                        CalibrationArg::Dynamic => {
                            v.push(Variant::Int8 {
                                encoding: Encoding::QOperator,
                                activations: Activations::Dynamic,
                            });
                            continue;
                        }
                    };
                    for e in &a.int8_format {
                        v.push(Variant::Int8 {
                            encoding: match e {
                                Int8FormatArg::Qoperator => Encoding::QOperator,
                                Int8FormatArg::Qdq => Encoding::Qdq,
                            },
                            activations: Activations::Static(method),
                        });
                    }
                }
            }
        }
    }
    v
}

fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.2} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

fn micros(s: f64) -> String {
    format!("{:.1}", s * 1e6)
}

pub fn run(mut args: ExportArgs) -> Result<()> {
    if !args.max_accuracy_drop.is_finite() || args.max_accuracy_drop < 0.0 {
        bail!("--max-accuracy-drop must be a non-negative number of percentage points");
    }
    if !args.latency.is_finite() || args.latency < 0.0 {
        bail!("--latency must be a non-negative number of seconds");
    }
    if !args.checkpoint.is_dir() {
        bail!(
            "{} is not a checkpoint directory (one holding model.toml and model.safetensors)",
            args.checkpoint.display()
        );
    }
    let python = args
        .onnxruntime
        .clone()
        .or_else(|| std::env::var_os("EDGEKD_PYTHON").map(PathBuf::from));
    let ort = match &python {
        Some(p) => {
            let check = OrtCheck::new(p).context("preparing the ONNX Runtime check")?;
            eprintln!(
                "checking with onnx {} and onnxruntime {} from {}",
                check.versions.0,
                check.versions.1,
                p.display()
            );
            Some(check)
        }
        None => None,
    };
    let dir = args.data.clone().unwrap_or_else(shipped_subset);
    // An image folder is decoded at the model's input size and colour.
    let spec = load_spec(&args.checkpoint)
        .with_context(|| format!("reading {}", args.checkpoint.display()))?;
    let data = Splits::load_with(&dir, args.split_seed, ImageOptions::exactly(spec.input))
        .with_context(|| format!("loading dataset from {}", dir.display()))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.checkpoint.join("onnx"));
    let stem = match &args.stem {
        Some(s) => s.clone(),
        None => args
            .checkpoint
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into()),
    };
    let options = ExportOptions {
        variants: {
            if args.calibration.is_empty() {
                // A QAT checkpoint's weights were trained for its own ranges.
                let qat = args
                    .checkpoint
                    .join(edgekd_distill::qat::RANGES_FILE)
                    .is_file();
                args.calibration = vec![if qat {
                    CalibrationArg::Qat
                } else {
                    CalibrationArg::Percentile
                }];
            }
            variants(&args)
        },
        calibration_samples: args.calib,
        max_accuracy_drop: args.max_accuracy_drop,
        latency_budget: args.latency,
        stem,
    };
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let report = edgekd_export::export(&args.checkpoint, &data, &out, &options, &mut |m: &str| {
        bar.set_message(m.to_string())
    })
    .with_context(|| format!("exporting {}", args.checkpoint.display()))?;
    bar.finish_and_clear();

    let mut ort_results = Vec::new();
    if let Some(ort) = &ort {
        for f in report.files.iter().filter(|f| f.written) {
            eprintln!("checking {} in ONNX Runtime", f.path.display());
            let r = ort
                .check(&f.path, &data, &report, args.latency)
                .with_context(|| format!("checking {} in ONNX Runtime", f.path.display()))?;
            ort_results.push((f.variant.clone(), r));
        }
    }

    if args.json {
        let v = serde_json::json!({ "export": report, "onnxruntime": ort_results.iter().map(|(v, r)| serde_json::json!({"variant": v, "result": r})).collect::<Vec<_>>() });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} ({} parameters): {:.2}% on {} test images in candle; opset {}, IR {}; {}",
            report.model,
            report.parameters,
            report.reference_accuracy,
            report.test_samples,
            report.opset,
            report.ir_version,
            if report.calibration_samples > 0 {
                format!("calibrated on {} images", report.calibration_samples)
            } else if report.files.iter().any(|f| f.variant.ends_with("-qat")) {
                "activation ranges learned in quantization-aware training".into()
            } else {
                "no calibration".into()
            }
        );
        let f32_bytes = report
            .files
            .iter()
            .find(|f| f.variant == "f32")
            .map(|f| f.bytes);
        let mut header = format!(
            "{:<22} {:>10} {:>7} {:>9} {:>7} {:>9} {:>11} {:>18}",
            "variant",
            "size",
            "vs f32",
            "accuracy",
            "Δ pp",
            "agreement",
            "max|Δlogit|",
            "tract b1 (µs)"
        );
        if ort.is_some() {
            header.push_str(&format!(
                " {:>18} {:>9} {:>12} {:>9}",
                "ORT b1 (µs)", "ORT acc", "ORT-tract Δ", "checker"
            ));
        }
        println!("{header}");
        for f in &report.files {
            let v = &f.verification;
            let ratio = f32_bytes
                .map(|b| format!("{:.2}x", f.bytes as f64 / b as f64))
                .unwrap_or_else(|| "-".into());
            let lat = v
                .latency
                .as_ref()
                .map(|l| format!("{} ± {}", micros(l.mean), micros(l.std_dev)))
                .unwrap_or_else(|| "-".into());
            let mut line = format!(
                "{:<22} {:>10} {:>7} {:>8.2}% {:>+7.2} {:>8.2}% {:>11.4} {:>18}",
                f.variant,
                size(f.bytes),
                ratio,
                v.accuracy,
                v.accuracy - report.reference_accuracy,
                v.agreement,
                v.max_abs_logit_diff,
                lat
            );
            if let Some((_, r)) = ort_results.iter().find(|(n, _)| *n == f.variant) {
                line.push_str(&format!(
                    " {:>18} {:>8.2}% {:>12.4} {:>9}",
                    r.latency
                        .as_ref()
                        .map(|l| format!("{} ± {}", micros(l.mean), micros(l.std_dev)))
                        .unwrap_or_else(|| "-".into()),
                    r.accuracy,
                    r.max_abs_diff_vs_tract,
                    if r.checker_ok { "ok" } else { "FAILED" }
                ));
            }
            if !f.written {
                line.push_str("  REJECTED (not written)");
            }
            println!("{line}");
        }
        println!(
            "report: {}",
            out.join(format!("{}.export.json", options.stem)).display()
        );
    }
    let rejected = report.rejected();
    if !rejected.is_empty() {
        let names: Vec<String> = rejected
            .iter()
            .map(|f| {
                format!(
                    "{} ({:.2}%, {:.2} pp below the checkpoint)",
                    f.variant,
                    f.verification.accuracy,
                    report.reference_accuracy - f.verification.accuracy
                )
            })
            .collect();
        bail!(
            "not written: {} lost more than {} pp of accuracy; try another --calibration, more --calib samples, or raise --max-accuracy-drop to keep them",
            names.join(", "),
            args.max_accuracy_drop
        );
    }
    if let Some((v, r)) = ort_results.iter().find(|(_, r)| !r.checker_ok) {
        bail!("{v}: onnx.checker rejected the file: {}", r.checker);
    }
    if let Some((v, r)) = ort_results.iter().find(|(_, r)| !r.matches_tract) {
        bail!(
            "{v}: ONNX Runtime disagrees with tract: max |Δlogit| {:.4} (tolerance {}), top-1 agreement {:.2}% (needs {}%)",
            r.max_abs_diff_vs_tract,
            r.tolerance,
            r.agreement_with_tract,
            crate::onnxruntime::MIN_AGREEMENT
        );
    }
    Ok(())
}
