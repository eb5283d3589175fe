//! What `edgekd bench --json` writes and `compare` and the charts read back: one typed report,
//! serde both ways, as hyperfine's `BenchmarkResult`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgekd_runtime::LatencySummary;
use serde::{Deserialize, Serialize};

/// Which side of the comparison a model is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The model every speed-up is relative to.
    Teacher,
    /// A model compared with it.
    Student,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Teacher => "teacher",
            Role::Student => "student",
        })
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
    /// `linux`, `android`, ...
    pub os: String,
    /// The instruction set the native engine's kernels picked (`avx2`, `neon`, ...).
    pub isa: String,
}

/// One measured configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// File stem, e.g. `mlp64.int8-qop-percentile`.
    pub model: String,
    /// The file.
    pub path: PathBuf,
    /// Teacher or student.
    pub role: Role,
    /// `edgekd.format` from the file's metadata (f32, f16, int8-...), or `?`.
    pub format: String,
    /// The backend asked for.
    pub backend: String,
    /// The engine that ran it (auto resolves to native or tract).
    pub engine: String,
    /// Samples per run.
    pub batch: usize,
    /// Threads per run.
    pub threads: usize,
    /// Seconds per run.
    pub latency: LatencySummary,
    /// Samples per second (batch / mean).
    pub throughput: f64,
    /// Seconds to load (parse, optimise) the file.
    pub load_seconds: f64,
    /// File size.
    pub file_bytes: u64,
    /// Peak resident memory of a process that loads and runs only this model.
    pub peak_rss_bytes: Option<u64>,
    /// Top-1 accuracy on `--data`.
    pub accuracy: Option<f64>,
    /// Teacher's mean latency (same backend, batch, threads) over this one's.
    pub speedup: Option<f64>,
    /// hyperfine-style warnings.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A whole `bench` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The edgekd that measured it.
    pub edgekd_version: String,
    /// The CPU or board, e.g. `AMD EPYC 7B13 (linux x86_64)`.
    pub host: String,
    /// Architecture, OS and kernel ISA (absent in reports written before edgekd recorded it).
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Every configuration, in the order measured.
    pub measurements: Vec<Measurement>,
}

impl BenchReport {
    /// Reads a report written by `bench --json`.
    pub fn read(path: &Path) -> Result<BenchReport> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not an `edgekd bench --json` report", path.display()))
    }

    /// Writes it as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_from_earlier_versions_still_read() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let old = BenchReport::read(&dir.join("bench/bench.json")).unwrap();
        assert!(old.platform.is_none() && !old.measurements.is_empty());
        let host = BenchReport::read(&dir.join("cross/host.json")).unwrap();
        assert_eq!(host.platform.as_ref().unwrap().arch, "x86_64");
        let again: BenchReport =
            serde_json::from_str(&serde_json::to_string(&host).unwrap()).unwrap();
        assert_eq!(again, host);
    }
}
