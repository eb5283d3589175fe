//! `export`: a checkpoint in, verified ONNX files out.

use std::path::{Path, PathBuf};

use candle_core::Device;
use edgekd_distill::digest::hex;
use edgekd_distill::random::permutation;
use edgekd_distill::{checkpoint, Model, ModelSpec, Splits};
use edgekd_runtime::Model as Runtime;
use sha2::{Digest, Sha256};

use crate::calibrate::{self, Method};
use crate::error::{Error, Result};
use crate::int8::{self, Encoding};
use crate::lower::{self, F16Storage, Float, WeightedOps};
use crate::network::Network;
use crate::onnx::{self, Elem};
use crate::quantize::Range;
use crate::verify::{self, Reference, Verification};

/// How the activations of an int8 model are quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activations {
    /// Ranges fixed ahead of time from calibration samples.
    Static(Method),
    /// Ranges measured on each batch at run time.
    Dynamic,
}

/// One exported file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// f32 weights and arithmetic.
    F32,
    /// f16 weights, arithmetic, input and output (the runtime casts the caller's f32).
    F16,
    /// f16 weights cast to f32 in the graph; f32 arithmetic.
    F16Storage,
    /// int8 weights, int32 biases.
    Int8 {
        /// Operators carrying the arithmetic.
        encoding: Encoding,
        /// How activations are quantized.
        activations: Activations,
    },
}

impl Variant {
    /// The variant's name, used in the file name: `f32`, `f16`, `f16-storage`,
    /// `int8-qop-minmax`, `int8-qdq-entropy`, `int8-dynamic`.
    pub fn name(&self) -> String {
        match self {
            Variant::F32 => "f32".into(),
            Variant::F16 => "f16".into(),
            Variant::F16Storage => "f16-storage".into(),
            Variant::Int8 {
                activations: Activations::Dynamic,
                ..
            } => "int8-dynamic".into(),
            Variant::Int8 {
                encoding,
                activations: Activations::Static(m),
            } => format!("int8-{}-{}", encoding.name(), m.name()),
        }
    }
}

/// What to export and how strictly to check it.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Files to write, one per variant (duplicates are written once).
    pub variants: Vec<Variant>,
    /// Training images used to calibrate static int8 activations.
    pub calibration_samples: usize,
    /// Largest accepted test-accuracy loss against the checkpoint, in percentage points.
    pub max_accuracy_drop: f64,
    /// Seconds spent timing each file at batch 1 in the runtime (0: no timing).
    pub latency_budget: f64,
    /// File names are `<stem>.<variant>.onnx`.
    pub stem: String,
}

/// One written (or rejected) file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    /// Variant name.
    pub variant: String,
    /// Where it was written (or would have been).
    pub path: PathBuf,
    /// File size in bytes.
    pub bytes: usize,
    /// Operator types the graph uses.
    pub ops: Vec<String>,
    /// Test-set results in the runtime.
    pub verification: Verification,
    /// False when the accuracy check failed and the file was not written.
    pub written: bool,
}

/// Everything an export did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    /// The checkpoint directory.
    pub checkpoint: PathBuf,
    /// Its model spec.
    pub model: String,
    /// SHA-256 of its weights file.
    pub weights_sha256: String,
    /// Parameters.
    pub parameters: usize,
    /// The candle model's test accuracy, in percent.
    pub reference_accuracy: f64,
    /// Test images verified on.
    pub test_samples: usize,
    /// Training images calibrated on.
    pub calibration_samples: usize,
    /// The ONNX opset and IR version written.
    pub opset: i64,
    /// ONNX IR version.
    pub ir_version: i64,
    /// One entry per variant, in the order asked.
    pub files: Vec<Exported>,
}

impl ExportReport {
    /// The files that failed the accuracy check.
    pub fn rejected(&self) -> Vec<&Exported> {
        self.files.iter().filter(|f| !f.written).collect()
    }
}

/// Progress, for front-ends that show it.
pub trait Progress {
    /// A new step starts.
    fn step(&mut self, message: &str);
}

impl<F: FnMut(&str)> Progress for F {
    fn step(&mut self, message: &str) {
        self(message)
    }
}

/// The labels of a checkpoint's classes.
fn class_labels(spec: &ModelSpec) -> Vec<String> {
    if spec.class_names.len() == spec.classes {
        return spec.class_names.clone();
    }
    (0..spec.classes).map(|c| c.to_string()).collect()
}

/// `metadata_props` for one exported file.
fn metadata(
    net: &Network,
    variant: &Variant,
    weights_sha256: &str,
    calibration: Option<(Method, usize)>,
) -> Vec<(String, String)> {
    let s = &net.spec;
    let n = s.normalization;
    let mut m = vec![
        ("edgekd.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("edgekd.model".into(), s.name.clone()),
        ("edgekd.format".into(), variant.name()),
        ("edgekd.output".into(), "logits".into()),
        (
            "edgekd.classes".into(),
            serde_json::to_string(&class_labels(s)).unwrap_or_default(),
        ),
        (
            "edgekd.input.layout".into(),
            if net.takes_images() { "NCHW" } else { "NC" }.into(),
        ),
        (
            "edgekd.input.image".into(),
            format!("{}x{}x{}", s.input.channels, s.input.rows, s.input.cols),
        ),
        ("edgekd.input.normalization".into(), {
            // Numbers when every channel shares them, per-channel lists otherwise.
            let mut v = serde_json::to_value(n).unwrap_or_default();
            v["scale"] = serde_json::json!(1.0 / 255.0);
            v["formula"] = "x = (pixel / 255 - mean[c]) / std[c]".into();
            v.to_string()
        }),
        ("edgekd.source.weights_sha256".into(), weights_sha256.into()),
    ];
    let quantization = match variant {
        Variant::F32 => serde_json::json!({ "weights": "f32" }),
        Variant::F16 => serde_json::json!({ "weights": "f16", "arithmetic": "f16" }),
        Variant::F16Storage => serde_json::json!({ "weights": "f16", "arithmetic": "f32" }),
        Variant::Int8 {
            encoding,
            activations,
        } => {
            let acts = match (encoding, activations) {
                (_, Activations::Dynamic) => "u8 asymmetric, per batch (DynamicQuantizeLinear)",
                (Encoding::QOperator, _) => "s8 symmetric, per tensor",
                (Encoding::Qdq, _) => "u8 asymmetric, per tensor",
            };
            let mut q = serde_json::json!({
                "weights": format!("int8 symmetric per output channel, ±{}", match activations { Activations::Dynamic => int8::Dynamic::WEIGHT_LEVELS, _ => encoding.weight_levels() }),
                "bias": "int32 at input_scale * weight_scale",
                "activations": acts,
                "encoding": match activations { Activations::Dynamic => "qoperator", _ => match encoding { Encoding::QOperator => "qoperator", Encoding::Qdq => "qdq" } },
            });
            if let Some((method, samples)) = calibration {
                q["calibration"] = serde_json::json!(method.name());
                if method == Method::Qat {
                    q["ranges"] = "learned by quantization-aware training (moving averages, frozen), not calibrated".into();
                } else {
                    q["calibration_samples"] = serde_json::json!(samples);
                }
                if method == Method::Percentile {
                    q["percentile"] = serde_json::json!(calibrate::PERCENTILE);
                }
            }
            q
        }
    };
    m.push(("edgekd.quantization".into(), quantization.to_string()));
    m
}

/// The normalized inputs of `data`'s images `indices`, laid out for the network.
fn inputs(
    data: &edgekd_distill::Dataset,
    indices: &[usize],
    norm: edgekd_distill::Normalization,
) -> Vec<f32> {
    data.normalized(indices, norm)
}

/// Runs the f32 graph with every weighted layer's input exposed, on the calibration samples,
/// and returns those inputs' values, one vector per weighted layer.
fn calibration_values(net: &Network, samples: &[f32], sample_len: usize) -> Result<Vec<Vec<f32>>> {
    let mut ops = Float { elem: Elem::F32 };
    let lowered = lower::lower(net, &mut ops);
    let taps = lowered.taps.clone();
    let proto = lower::finish(net, lowered, Elem::F32, true, &[]);
    let model = Runtime::from_bytes(&onnx::encode(&proto)).map_err(|source| Error::Runtime {
        variant: "calibration graph".into(),
        source,
    })?;
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); taps.len()];
    for chunk in samples.chunks(verify::BATCH * sample_len) {
        let n = chunk.len() / sample_len;
        let outs = model.run(chunk, n).map_err(|source| Error::Runtime {
            variant: "calibration graph".into(),
            source,
        })?;
        for (tap, v) in taps.iter().zip(values.iter_mut()) {
            // The input's range comes from the normalization (see `build`), not from samples.
            if tap.name != lower::INPUT {
                let o = outs
                    .iter()
                    .find(|o| o.name == tap.name)
                    .ok_or_else(|| Error::Model {
                        reason: format!("the calibration graph did not return `{}`", tap.name),
                    })?;
                v.extend_from_slice(&o.data);
            }
        }
    }
    for (tap, v) in taps.iter().zip(&values) {
        if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::Model {
                reason: format!(
                    "calibration sample {} gives a non-finite value in `{}`",
                    bad / tap.dims.iter().product::<usize>().max(1),
                    tap.name
                ),
            });
        }
    }
    Ok(values)
}

/// The activation ranges quantization-aware training left beside the checkpoint, one per
/// calibration tap of `net`.
fn learned_ranges(checkpoint_dir: &Path, net: &Network) -> Result<Vec<Range>> {
    let refuse = |reason: String| Error::Options { reason };
    let Some(learned) = checkpoint::load_learned_ranges(checkpoint_dir)? else {
        return Err(refuse(format!(
            "--calibration qat uses the ranges quantization-aware training learned, and {} has no {} (train it with --qat, or choose minmax, percentile, entropy or dynamic)",
            checkpoint_dir.display(),
            edgekd_distill::qat::RANGES_FILE
        )));
    };
    let taps = lower::lower(net, &mut Float { elem: Elem::F32 }).taps.len();
    if learned.taps.len() != taps {
        return Err(refuse(format!(
            "{} holds {} ranges, the model has {taps} quantized tensors: it belongs to another model",
            checkpoint_dir.join(edgekd_distill::qat::RANGES_FILE).display(),
            learned.taps.len()
        )));
    }
    learned
        .taps
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.map(|r| Range { lo: r.lo, hi: r.hi }).ok_or_else(|| {
                refuse(format!(
                    "quantization-aware training never reached tensor {i}: its range is unknown"
                ))
            })
        })
        .collect()
}

/// The serialized model of one variant, and its operator list.
fn build(
    net: &Network,
    variant: &Variant,
    calib: &[Vec<f32>],
    learned: &[Range],
    meta: &[(String, String)],
) -> (Vec<u8>, Vec<String>) {
    let mut ops: Box<dyn WeightedOps> = match *variant {
        Variant::F32 => Box::new(Float { elem: Elem::F32 }),
        Variant::F16 => Box::new(Float { elem: Elem::F16 }),
        Variant::F16Storage => Box::new(F16Storage),
        Variant::Int8 {
            activations: Activations::Dynamic,
            ..
        } => Box::new(int8::Dynamic),
        Variant::Int8 {
            encoding,
            activations: Activations::Static(method),
        } => {
            // The first layer reads the model input, whose range the normalization fixes
            // exactly: no calibration method should clip it (entropy would clip MNIST's
            // saturated ink, a tenth of the pixels, into the background's neighbourhood).
            let (lo, hi) = net.spec.normalization.range(net.spec.input.channels);
            let input = Range { lo, hi };
            let acts = if method == Method::Qat {
                learned.iter().map(|&r| encoding.activation(r)).collect()
            } else {
                calib
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        encoding.activation(if i == 0 {
                            input
                        } else {
                            calibrate::range(method, v)
                        })
                    })
                    .collect()
            };
            Box::new(int8::Static { encoding, acts })
        }
    };
    let elem = ops.activations();
    let lowered = lower::lower(net, ops.as_mut());
    let op_types = lowered.graph.op_types();
    let proto = lower::finish(net, lowered, elem, false, meta);
    (onnx::encode(&proto), op_types)
}

/// Exports the checkpoint in `checkpoint_dir` to `out_dir`, verifying every file on the test
/// split of `data` before writing it. Files that lose more than the allowed accuracy are not
/// written; the report lists them (see [`ExportReport::rejected`]).
pub fn export(
    checkpoint_dir: &Path,
    data: &Splits,
    out_dir: &Path,
    options: &ExportOptions,
    progress: &mut dyn Progress,
) -> Result<ExportReport> {
    if options.variants.is_empty() {
        return Err(Error::Options {
            reason: "no format to export".into(),
        });
    }
    let device = Device::Cpu;
    progress.step(&format!("loading {}", checkpoint_dir.display()));
    let model = checkpoint::load_model(checkpoint_dir, &device)?;
    let weights_path = checkpoint_dir.join(checkpoint::WEIGHTS_FILE);
    let weights = std::fs::read(&weights_path).map_err(|source| Error::Io {
        action: "reading",
        path: weights_path.clone(),
        source,
    })?;
    let weights_sha256 = hex(&Sha256::digest(&weights));
    let net = Network::from_model(&model)?;
    let reference = reference(&model, &net, data)?;
    let uses = |want: fn(Method) -> bool| {
        options.variants.iter().any(
            |v| matches!(v, Variant::Int8 { activations: Activations::Static(m), .. } if want(*m)),
        )
    };
    let uses_static = uses(|m| m != Method::Qat);
    let learned = if uses(|m| m == Method::Qat) {
        learned_ranges(checkpoint_dir, &net)?
    } else {
        Vec::new()
    };
    let calib = if uses_static {
        if options.calibration_samples == 0 {
            return Err(Error::Options {
                reason: "static int8 needs at least one calibration sample (--calib N)".into(),
            });
        }
        let n = options.calibration_samples.min(data.train.len());
        progress.step(&format!("calibrating on {n} training images"));
        let order = permutation(data.train.len(), 0, 0);
        let samples = inputs(&data.train, &order[..n], net.spec.normalization);
        calibration_values(&net, &samples, reference.sample_len)?
    } else {
        Vec::new()
    };
    edgekd_distill::atomic::create_dir(out_dir)?;
    let mut files = Vec::new();
    let mut seen = Vec::new();
    for variant in &options.variants {
        if seen.contains(variant) {
            continue;
        }
        seen.push(*variant);
        let name = variant.name();
        progress.step(&format!("{name}: building and verifying"));
        let calibration = match variant {
            Variant::Int8 {
                activations: Activations::Static(m),
                ..
            } => Some((*m, options.calibration_samples.min(data.train.len()))),
            _ => None,
        };
        let meta = metadata(&net, variant, &weights_sha256, calibration);
        let (bytes, ops) = build(&net, variant, &calib, &learned, &meta);
        let runtime = Runtime::from_bytes(&bytes).map_err(|source| Error::Runtime {
            variant: name.clone(),
            source,
        })?;
        let verification = verify::verify(&runtime, &reference, &name, options.latency_budget)?;
        let drop = reference.accuracy() - verification.accuracy;
        let written = drop <= options.max_accuracy_drop;
        let path = out_dir.join(format!("{}.{name}.onnx", options.stem));
        if written {
            edgekd_distill::atomic::write(&path, &bytes)?;
        }
        files.push(Exported {
            variant: name,
            path,
            bytes: bytes.len(),
            ops,
            verification,
            written,
        });
    }
    let report = ExportReport {
        checkpoint: checkpoint_dir.into(),
        model: net.spec.name.clone(),
        weights_sha256,
        parameters: net.param_count(),
        reference_accuracy: reference.accuracy(),
        test_samples: reference.len(),
        calibration_samples: if uses_static {
            options.calibration_samples.min(data.train.len())
        } else {
            0
        },
        opset: onnx::OPSET,
        ir_version: onnx::IR_VERSION,
        files,
    };
    checkpoint::save_json(
        &out_dir.join(format!("{}.export.json", options.stem)),
        &report,
    )?;
    Ok(report)
}

/// The test split as network inputs, with the candle model's logits on it.
fn reference(model: &Model, net: &Network, data: &Splits) -> Result<Reference> {
    let norm = net.spec.normalization;
    let logits = edgekd_distill::evaluation::logits_of(model, &data.test, norm)?;
    let all: Vec<usize> = (0..data.test.len()).collect();
    Ok(Reference {
        inputs: inputs(&data.test, &all, norm),
        sample_len: net.spec.input.len(),
        labels: data.test.labels.clone(),
        logits: logits.flatten_all()?.to_vec1::<f32>()?,
        classes: net.spec.classes,
    })
}
