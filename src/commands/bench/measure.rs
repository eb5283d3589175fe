//! Loading, timing and checking every configuration of a `bench` run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use edgekd_runtime::idx;
use edgekd_runtime::{Backend, LatencySummary, Model, Preprocess};
use indicatif::{ProgressBar, ProgressStyle};

use crate::bench_report::{BenchReport, Measurement, Platform, Role};
use crate::commands::LimitArgs;

/// What to measure.
#[derive(Debug)]
pub struct Plan {
    /// The model every speed-up is relative to.
    pub teacher: PathBuf,
    /// The models compared with it.
    pub students: Vec<PathBuf>,
    /// Engines.
    pub backends: Vec<Backend>,
    /// Batch sizes.
    pub batches: Vec<usize>,
    /// Threads per inference.
    pub threads: Vec<usize>,
    /// Timed runs per configuration (None: as many as `time` allows, at least 10).
    pub runs: Option<usize>,
    /// Seconds of timed runs per configuration.
    pub time: f64,
    /// Untimed runs per configuration first.
    pub warmup: usize,
    /// Test images for accuracy.
    pub test: Option<TestSet>,
    /// Measure each model's peak memory in a child process.
    pub memory: bool,
    /// Size limits for the model files.
    pub limits: LimitArgs,
}

struct Loaded {
    path: PathBuf,
    role: Role,
    backend: Backend,
    model: Model,
    load_seconds: f64,
    input: Vec<f32>,
    times: Vec<f64>,
}

/// Test images and labels, read once.
#[derive(Debug)]
pub struct TestSet {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    per_image: usize,
}

impl TestSet {
    /// The `t10k-*` images and labels of an MNIST-layout directory, the first `limit` of them.
    pub fn read(dir: &Path, limit: Option<usize>, max_elements: u64) -> Result<TestSet> {
        let find = |stem: &str| {
            ["", ".gz"]
                .iter()
                .map(|ext| dir.join(format!("{stem}{ext}")))
                .find(|p| p.is_file())
                .with_context(|| {
                    format!("{}: no {stem}[.gz] (MNIST layout expected)", dir.display())
                })
        };
        let (images_path, labels_path) = (
            find("t10k-images-idx3-ubyte")?,
            find("t10k-labels-idx1-ubyte")?,
        );
        let images = idx::read_idx_with_limit(&images_path, max_elements)?;
        let labels = idx::read_idx_with_limit(&labels_path, max_elements)?;
        if images.dims.len() < 2 {
            bail!(
                "{}: expected images of shape [N, rows, cols], found {:?}",
                images_path.display(),
                images.dims
            );
        }
        if labels.dims.len() != 1 {
            bail!(
                "{}: expected labels of shape [N], found {:?}",
                labels_path.display(),
                labels.dims
            );
        }
        let n = images.dims[0]
            .min(labels.dims[0])
            .min(limit.unwrap_or(usize::MAX));
        let per_image = images.dims[1..].iter().product();
        Ok(TestSet {
            pixels: images.data[..n * per_image].to_vec(),
            labels: labels.data[..n].to_vec(),
            per_image,
        })
    }
}

fn accuracy(model: &Model, test: &TestSet) -> Result<f64> {
    let pre = Preprocess::for_model(model.info())
        .context("the model declares no image layout to feed test images to")?;
    if pre.len() != test.per_image {
        bail!(
            "the model takes {} values per image; the test images have {}",
            pre.len(),
            test.per_image
        );
    }
    let mut correct = 0usize;
    let chunk = 100;
    for (images, labels) in test
        .pixels
        .chunks(chunk * test.per_image)
        .zip(test.labels.chunks(chunk))
    {
        let logits = model.logits(&pre.apply(images), labels.len())?;
        for (i, &y) in labels.iter().enumerate() {
            let row = logits.row(i);
            let best = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            correct += (best == y as usize) as usize;
        }
    }
    Ok(correct as f64 / test.labels.len().max(1) as f64)
}

fn stem(p: &Path) -> String {
    let name = p.file_name().and_then(|s| s.to_str()).unwrap_or("?");
    name.strip_suffix(".onnx").unwrap_or(name).to_owned()
}

/// A deterministic input batch (test images where there are some, else a fixed pattern):
/// int8 engines quantize per batch, so every model sees the same values.
pub(crate) fn input_batch(model: &Model, batch: usize, test: Option<&TestSet>) -> Result<Vec<f32>> {
    let per = model.info().inputs[0]
        .sample_len()
        .context("the model's input has free dimensions besides the batch")?;
    if let (Some(t), Some(pre)) = (test, Preprocess::for_model(model.info())) {
        if pre.len() == per && t.labels.len() >= batch {
            return Ok(pre.apply(&t.pixels[..batch * per]));
        }
    }
    Ok((0..batch * per)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0)
        .collect())
}

/// Peak resident memory of this process (Linux `VmHWM`).
fn vm_hwm() -> Option<u64> {
    proc_status_bytes("VmHWM")
}

/// A memory figure (`VmRSS`, `VmHWM`, ...) of this process from /proc/self/status (Linux).
pub(crate) fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Arguments of the hidden child that measures one model's peak memory.
#[derive(Debug, Args)]
pub struct PeakRssArgs {
    pub model: PathBuf,
    #[arg(long)]
    pub backend: Backend,
    #[arg(long)]
    pub batch: usize,
    #[arg(long)]
    pub threads: usize,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Loads one model, runs it 20 times and prints the process's peak RSS in bytes.
pub fn peak_rss(a: PeakRssArgs) -> Result<()> {
    let model = crate::commands::load_model(
        &a.model,
        a.backend,
        a.threads,
        Default::default(),
        &a.limits,
    )?;
    let input = input_batch(&model, a.batch, None)?;
    for _ in 0..20 {
        model.logits(&input, a.batch)?;
    }
    println!("{}", vm_hwm().context("peak RSS is only read on Linux")?);
    Ok(())
}

fn child_peak_rss(
    path: &Path,
    backend: Backend,
    batch: usize,
    threads: usize,
    limits: LimitArgs,
) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .arg("__peak-rss")
        .arg(path)
        .args(["--backend", backend.name()])
        .args([
            "--batch",
            &batch.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .args(limits.to_args())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Loads every configuration of `plan`, times them all in interleaved rounds, and reports.
pub fn measure(plan: &Plan) -> Result<BenchReport> {
    let mut files: Vec<(PathBuf, Role)> = vec![(plan.teacher.clone(), Role::Teacher)];
    files.extend(plan.students.iter().map(|s| (s.clone(), Role::Student)));
    for (f, _) in &files {
        if f.is_dir() {
            bail!("{} is a directory; give an .onnx file", f.display());
        }
        if !f.is_file() {
            bail!("{}: no such file", f.display());
        }
    }
    let test = plan.test.as_ref();
    let mut results: Vec<Measurement> = Vec::new();
    let mut accuracies: HashMap<(PathBuf, String), Option<f64>> = HashMap::new();
    let mut rss: HashMap<(PathBuf, String, usize, usize), Option<u64>> = HashMap::new();
    for &batch in &plan.batches {
        for &threads in &plan.threads {
            let mut loaded: Vec<Loaded> = Vec::new();
            for (path, role) in &files {
                for &backend in &plan.backends {
                    let started = Instant::now();
                    let model = match crate::commands::load_model(
                        path,
                        backend,
                        threads,
                        Default::default(),
                        &plan.limits,
                    ) {
                        Ok(m) => m,
                        // An engine that cannot run this file's operators is skipped (the
                        // others still measure it); a file no engine can read is an error.
                        Err(e)
                            if matches!(
                                e.downcast_ref::<edgekd_runtime::Error>(),
                                Some(edgekd_runtime::Error::UnsupportedOp { .. })
                            ) =>
                        {
                            eprintln!("skipping {} on {backend}: {e:#}", path.display());
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    let load_seconds = started.elapsed().as_secs_f64();
                    let input = input_batch(&model, batch, test)?;
                    // The first run builds per-shape plans; it belongs to loading, not timing.
                    model
                        .logits(&input, batch)
                        .with_context(|| format!("running {} on {backend}", path.display()))?;
                    loaded.push(Loaded {
                        path: path.clone(),
                        role: *role,
                        backend,
                        model,
                        load_seconds,
                        input,
                        times: Vec::new(),
                    });
                }
            }
            for l in &loaded {
                for _ in 0..plan.warmup {
                    l.model.logits(&l.input, batch)?;
                }
            }
            time_rounds(&mut loaded, batch, plan)?;
            let teacher_means: HashMap<Backend, f64> = loaded
                .iter()
                .filter(|l| l.role == Role::Teacher)
                .filter_map(|l| LatencySummary::of(&l.times).map(|s| (l.backend, s.mean)))
                .collect();
            for l in &loaded {
                let Some(latency) = LatencySummary::of(&l.times) else {
                    continue;
                };
                let engine = l.model.backend().to_string();
                let key = (l.path.clone(), engine.clone());
                let acc = match test {
                    Some(t) => *accuracies.entry(key).or_insert_with(|| {
                        accuracy(&l.model, t)
                            .map_err(|e| eprintln!("no accuracy for {}: {e:#}", l.path.display()))
                            .ok()
                    }),
                    None => None,
                };
                let peak = if plan.memory {
                    *rss.entry((l.path.clone(), l.backend.name().into(), batch, threads))
                        .or_insert_with(|| {
                            child_peak_rss(&l.path, l.backend, batch, threads, plan.limits)
                        })
                } else {
                    None
                };
                let warnings = latency
                    .warnings(&l.times)
                    .iter()
                    .map(|w| w.to_string())
                    .collect();
                let info = l.model.info();
                results.push(Measurement {
                    model: stem(&l.path),
                    path: l.path.clone(),
                    role: l.role,
                    format: info
                        .metadata
                        .get("edgekd.format")
                        .cloned()
                        .unwrap_or_else(|| "?".into()),
                    backend: l.backend.name().into(),
                    engine,
                    batch,
                    threads,
                    throughput: batch as f64 / latency.mean,
                    speedup: teacher_means.get(&l.backend).map(|t| t / latency.mean),
                    latency,
                    load_seconds: l.load_seconds,
                    file_bytes: info.bytes as u64,
                    peak_rss_bytes: peak,
                    accuracy: acc,
                    warnings,
                });
            }
        }
    }
    if results.is_empty() {
        bail!("no configuration could be measured");
    }
    Ok(BenchReport {
        edgekd_version: env!("CARGO_PKG_VERSION").into(),
        host: host(),
        platform: Some(Platform {
            arch: std::env::consts::ARCH.into(),
            os: std::env::consts::OS.into(),
            isa: edgekd_runtime::kernel_isa().into(),
        }),
        measurements: results,
    })
}

/// Interleaved rounds: each round gives every configuration one burst, so drift on a shared
/// machine hits all of them alike. A burst is one untimed run (to bring the model's weights
/// back into cache after the others evicted them) and then about 20 ms of timed runs: timing
/// single runs back to back across models measured cache-cold latency instead (measured here:
/// a 9.6 MB teacher at 410 µs interleaved run by run against 195 µs alone).
fn time_rounds(loaded: &mut [Loaded], batch: usize, a: &Plan) -> Result<()> {
    if loaded.is_empty() {
        return Ok(());
    }
    let budget = Duration::from_secs_f64(a.time * loaded.len() as f64);
    let min_runs = a.runs.unwrap_or(10);
    // Burst lengths from one timed run each (warm-up has just run).
    let mut bursts = Vec::with_capacity(loaded.len());
    for l in loaded.iter() {
        let t = Instant::now();
        std::hint::black_box(l.model.logits(&l.input, batch)?);
        let once = t.elapsed().as_secs_f64().max(1e-7);
        bursts.push(((0.02 / once) as usize).clamp(1, 200));
    }
    let bar = ProgressBar::new(budget.as_millis() as u64).with_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {msg}")
            .expect("valid template"),
    );
    bar.set_prefix(format!("batch {batch}"));
    let started = Instant::now();
    let mut rounds = 0usize;
    loop {
        for (l, &burst) in loaded.iter_mut().zip(&bursts) {
            let wanted = match a.runs {
                Some(n) => n.saturating_sub(l.times.len()).min(burst),
                None => burst,
            };
            if wanted == 0 {
                continue;
            }
            std::hint::black_box(l.model.logits(&l.input, batch)?);
            for _ in 0..wanted {
                let t = Instant::now();
                std::hint::black_box(l.model.logits(&l.input, batch)?);
                l.times.push(t.elapsed().as_secs_f64());
            }
        }
        rounds += 1;
        let elapsed = started.elapsed();
        bar.set_position(elapsed.as_millis().min(budget.as_millis()) as u64);
        bar.set_message(format!("{rounds} rounds"));
        let fewest = loaded.iter().map(|l| l.times.len()).min().unwrap_or(0);
        let done = match a.runs {
            Some(n) => fewest >= n,
            None => fewest >= min_runs && elapsed >= budget,
        };
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// The CPU (or board) this runs on: x86's `model name`, a Raspberry Pi's `Model` line or
/// device-tree model, else the architecture.
fn host() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let board = std::fs::read_to_string("/proc/device-tree/model")
        .ok()
        .map(|s| s.trim_end_matches('\0').trim().to_owned())
        .filter(|s| !s.is_empty());
    let cpu = field("model name")
        .or_else(|| field("Model"))
        .or(board)
        .or_else(|| field("Hardware"))
        .unwrap_or_else(|| std::env::consts::ARCH.into());
    format!(
        "{cpu} ({} {})",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
