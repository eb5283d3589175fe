//! Cross-checking exported files in ONNX Runtime and onnx.checker, through a Python
//! interpreter that has the `onnx` and `onnxruntime` packages (PyPI). Only the command line
//! does this: the runtime crate never needs Python.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use edgekd_distill::Splits;
use edgekd_export::verify::argmax_rows;
use edgekd_export::ExportReport;
use edgekd_runtime::{LatencySummary, Model};

const SCRIPT: &str = include_str!("../scripts/onnxruntime_check.py");
/// Oldest ONNX Runtime whose results we vouch for.
const MIN_ORT: (u32, u32) = (1, 31);

/// Percent of test images on which ONNX Runtime and tract must pick the same class.
pub const MIN_AGREEMENT: f64 = 99.0;

/// How far ONNX Runtime's logits may stray from tract's for a variant: float reassociation
/// only for f32; f16 arithmetic in tract against ONNX Runtime's f32 fallbacks for f16 ops;
/// for int8, exact integer arithmetic in both but float rescaling, where a last-bit
/// difference can flip one requantization step of a later layer (measured: 0.19 on a
/// LeNet-5-half student whose logits span about ±20).
pub fn tolerance(variant: &str) -> f32 {
    if variant == "f32" {
        1e-3
    } else if variant.starts_with("f16") {
        0.05
    } else {
        0.3
    }
}

/// A Python interpreter known to have onnx and onnxruntime, and the check script beside it.
pub struct OrtCheck {
    python: PathBuf,
    script: tempfile::TempPath,
    /// `onnx` and `onnxruntime` versions.
    pub versions: (String, String),
}

/// How one file fared in ONNX Runtime.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OrtResult {
    /// Whether onnx.checker (full check) accepted the file.
    pub checker_ok: bool,
    /// What the checker said.
    pub checker: String,
    /// The opset imports, as (domain, version).
    pub opset_imports: Vec<(String, i64)>,
    /// ONNX Runtime's test accuracy, in percent.
    pub accuracy: f64,
    /// Percent of test images where ONNX Runtime's top-1 equals tract's.
    pub agreement_with_tract: f64,
    /// Largest |ORT logit - tract logit|.
    pub max_abs_diff_vs_tract: f32,
    /// The largest |ORT - tract| logit difference accepted for this format.
    pub tolerance: f32,
    /// Whether the difference is within it and top-1 agrees on at least [`MIN_AGREEMENT`] percent.
    pub matches_tract: bool,
    /// Batch-1 latency in ONNX Runtime (one thread).
    pub latency: Option<LatencySummary>,
    /// The onnxruntime version.
    pub onnxruntime: String,
}

#[derive(serde::Deserialize)]
struct ScriptReport {
    onnxruntime: String,
    checker: String,
    opset_imports: Vec<(String, i64)>,
    latency_seconds: Vec<f64>,
}

impl OrtCheck {
    /// Checks that `python` imports onnx and onnxruntime >= 1.31.
    pub fn new(python: &Path) -> Result<OrtCheck> {
        let out = Command::new(python)
            .args([
                "-c",
                "import onnx, onnxruntime; print(onnx.__version__, onnxruntime.__version__)",
            ])
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        if !out.status.success() {
            bail!(
                "{} cannot import onnx and onnxruntime (pip install onnx onnxruntime): {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace();
        let (onnx, ort) = (
            parts.next().unwrap_or("?").to_string(),
            parts.next().unwrap_or("?").to_string(),
        );
        let mut v = ort.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        if (major, minor) < MIN_ORT {
            bail!(
                "onnxruntime {ort} is too old: edgekd checks against {}.{} or newer",
                MIN_ORT.0,
                MIN_ORT.1
            );
        }
        let mut script = tempfile::Builder::new()
            .prefix("edgekd-onnxruntime-check")
            .suffix(".py")
            .tempfile()?;
        std::io::Write::write_all(&mut script, SCRIPT.as_bytes())?;
        Ok(OrtCheck {
            python: python.into(),
            script: script.into_temp_path(),
            versions: (onnx, ort),
        })
    }

    /// Runs `file` on the test split in ONNX Runtime and compares with tract.
    pub fn check(
        &self,
        file: &Path,
        data: &Splits,
        report: &ExportReport,
        latency: f64,
    ) -> Result<OrtResult> {
        let model = Model::load(file)?;
        let info = model.info().inputs[0].clone();
        let sample_len = info
            .sample_len()
            .context("the model's input has free dimensions past the batch")?;
        let norm = edgekd_distill::checkpoint::load_spec(&report.checkpoint)?.normalization;
        let n = data.test.len();
        let inputs = data.test.normalized(&(0..n).collect::<Vec<_>>(), norm);
        let dir = tempfile::tempdir()?;
        let (in_path, out_path) = (dir.path().join("inputs.f32"), dir.path().join("logits.f32"));
        std::fs::write(
            &in_path,
            inputs
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )?;
        let mut shape = vec![n.to_string()];
        shape.extend(info.shape.iter().skip(1).map(|d| d.to_string()));
        let out = Command::new(&self.python)
            .arg(&*self.script)
            .arg(file)
            .arg(&in_path)
            .arg(shape.join(","))
            .arg(&out_path)
            .arg(latency.to_string())
            .output()
            .with_context(|| format!("running {}", self.python.display()))?;
        if !out.status.success() {
            bail!(
                "ONNX Runtime failed on {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let script: ScriptReport =
            serde_json::from_slice(&out.stdout).context("reading the check script's report")?;
        let ort_logits: Vec<f32> = std::fs::read(&out_path)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut tract_logits = Vec::with_capacity(ort_logits.len());
        for chunk in inputs.chunks(edgekd_export::verify::BATCH * sample_len) {
            tract_logits.extend(model.logits(chunk, chunk.len() / sample_len)?.data);
        }
        if ort_logits.len() != tract_logits.len() {
            bail!(
                "ONNX Runtime returned {} values, tract {}",
                ort_logits.len(),
                tract_logits.len()
            );
        }
        let classes = ort_logits.len() / n.max(1);
        let (po, pt) = (
            argmax_rows(&ort_logits, classes),
            argmax_rows(&tract_logits, classes),
        );
        let correct = po
            .iter()
            .zip(&data.test.labels)
            .filter(|(p, y)| **p == **y as usize)
            .count();
        let same = po.iter().zip(&pt).filter(|(a, b)| a == b).count();
        let max_abs_diff_vs_tract = ort_logits
            .iter()
            .zip(&tract_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) });
        let variant = file
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.rsplit('.').next())
            .unwrap_or("");
        let tolerance = tolerance(variant);
        let agreement_with_tract = 100.0 * same as f64 / n.max(1) as f64;
        Ok(OrtResult {
            tolerance,
            matches_tract: max_abs_diff_vs_tract <= tolerance
                && agreement_with_tract >= MIN_AGREEMENT,
            checker_ok: script.checker == "ok",
            checker: script.checker,
            opset_imports: script.opset_imports,
            accuracy: 100.0 * correct as f64 / n.max(1) as f64,
            agreement_with_tract,
            max_abs_diff_vs_tract,
            latency: LatencySummary::of(&script.latency_seconds),
            onnxruntime: script.onnxruntime,
        })
    }
}
