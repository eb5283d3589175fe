//! `edgekd compare`: `bench` JSON from several machines (the host, a board, qemu) in one table,
//! configuration by configuration, with each machine's latency relative to the first file's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::bench::time_text;
use crate::bench_report::{BenchReport, Measurement as Row};
use anyhow::{bail, Context, Result};
use clap::Args;

/// Put `bench --json` reports from several machines side by side.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct CompareArgs {
    /// `edgekd bench --json` files; the first is the reference (usually the host)
    #[arg(required = true, num_args = 2..)]
    pub reports: Vec<PathBuf>,
    /// Names for the columns, comma-separated (default: each report's platform)
    #[arg(long, value_delimiter = ',')]
    pub label: Vec<String>,
    /// Also write the comparison as CSV
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
}

/// What identifies one configuration across machines.
type Key = (String, String, String, usize, usize);

fn key(r: &Row) -> Key {
    (
        r.model.clone(),
        r.format.clone(),
        r.backend.clone(),
        r.batch,
        r.threads,
    )
}

pub fn run(a: CompareArgs) -> Result<()> {
    let mut reports = Vec::new();
    for p in &a.reports {
        reports.push(BenchReport::read(p)?);
    }
    if !a.label.is_empty() && a.label.len() != reports.len() {
        bail!(
            "--label gives {} names for {} reports",
            a.label.len(),
            reports.len()
        );
    }
    let labels: Vec<String> = if a.label.is_empty() {
        reports
            .iter()
            .map(|r| match &r.platform {
                Some(p) => format!("{} ({})", p.arch, p.isa),
                None => r.host.clone(),
            })
            .collect()
    } else {
        a.label.clone()
    };
    for (l, r) in labels.iter().zip(&reports) {
        println!("{l}: {}", r.host);
    }
    // Configurations in the reference's order; those it lacks after.
    let mut order: Vec<Key> = Vec::new();
    let mut by_report: Vec<BTreeMap<Key, &Row>> = Vec::new();
    for r in &reports {
        let mut m = BTreeMap::new();
        for row in &r.measurements {
            if !order.contains(&key(row)) {
                order.push(key(row));
            }
            m.insert(key(row), row);
        }
        by_report.push(m);
    }
    let mut header = format!(
        "{:<34} {:<8} {:>5} {:>3}",
        "model", "engine", "batch", "thr"
    );
    let mut csv = String::from("model,format,backend,batch,threads");
    for (i, l) in labels.iter().enumerate() {
        let short: String = l.chars().take(22).collect();
        header += &format!(" | {short:>22} {:>7} {:>8}", "acc %", "speedup");
        if i > 0 {
            header += &format!(" {:>7}", "vs ref");
        }
        csv += &format!(
            ",{0} engine,{0} mean_s,{0} std_s,{0} accuracy,{0} speedup,{0} peak_rss_bytes",
            l.replace(',', " ")
        );
        if i > 0 {
            csv += &format!(",{} time vs reference", l.replace(',', " "));
        }
    }
    csv.push('\n');
    println!("{header}");
    let mut accuracy_differs = Vec::new();
    for k in &order {
        let rows: Vec<Option<&&Row>> = by_report.iter().map(|m| m.get(k)).collect();
        let first = rows
            .iter()
            .flatten()
            .next()
            .expect("key came from a report");
        let engines: Vec<&str> = rows.iter().flatten().map(|r| r.engine.as_str()).collect();
        let engine = if engines.iter().all(|e| *e == engines[0]) {
            engines[0].to_string()
        } else {
            first.backend.clone()
        };
        let mut line = format!("{:<34} {:<8} {:>5} {:>3}", k.0, engine, k.3, k.4);
        csv += &format!("{},{},{},{},{}", k.0, k.1, k.2, k.3, k.4);
        let reference = rows[0].map(|r| r.latency.mean);
        for (i, row) in rows.iter().enumerate() {
            match row {
                Some(r) => {
                    let acc = r
                        .accuracy
                        .map_or("-".into(), |x| format!("{:.2}", 100.0 * x));
                    let speedup = r.speedup.map_or("-".into(), |s| format!("{s:.2}x"));
                    line += &format!(
                        " | {:>22} {acc:>7} {speedup:>8}",
                        format!(
                            "{} ± {}",
                            time_text(r.latency.mean),
                            time_text(r.latency.std_dev)
                        )
                    );
                    csv += &format!(
                        ",{},{},{},{},{},{}",
                        r.engine,
                        r.latency.mean,
                        r.latency.std_dev,
                        r.accuracy.map_or(String::new(), |x| x.to_string()),
                        r.speedup.map_or(String::new(), |x| x.to_string()),
                        r.peak_rss_bytes.map_or(String::new(), |x| x.to_string()),
                    );
                    if i > 0 {
                        let ratio = reference.map(|m| r.latency.mean / m);
                        line +=
                            &format!(" {:>7}", ratio.map_or("-".into(), |x| format!("{x:.2}x")));
                        csv += &format!(",{}", ratio.map_or(String::new(), |x| x.to_string()));
                        if let (Some(a), Some(b)) = (rows[0].and_then(|r| r.accuracy), r.accuracy) {
                            if a != b {
                                accuracy_differs.push(format!(
                                    "{} ({}, batch {}): {:.2}% on {} against {:.2}% on {}",
                                    k.0,
                                    engine,
                                    k.3,
                                    100.0 * b,
                                    labels[i],
                                    100.0 * a,
                                    labels[0]
                                ));
                            }
                        }
                    }
                }
                None => {
                    line += &format!(" | {:>22} {:>7} {:>8}", "-", "-", "-");
                    csv += ",,,,,,";
                    if i > 0 {
                        line += &format!(" {:>7}", "-");
                        csv += ",";
                    }
                }
            }
        }
        csv.push('\n');
        println!("{line}");
    }
    println!("(vs ref: mean latency over the first report's; speedup: the teacher's latency over the model's on the same machine)");
    for d in &accuracy_differs {
        eprintln!("  Warning: accuracy differs: {d}");
    }
    if let Some(p) = &a.csv {
        std::fs::write(p, csv).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
