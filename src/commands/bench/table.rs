//! The `bench` table on the terminal and as CSV.

use crate::bench_report::Measurement;

pub(crate) fn time_text(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn bytes_text(b: u64) -> String {
    if b < 1 << 20 {
        format!("{:.1} kB", b as f64 / 1e3)
    } else {
        format!("{:.1} MB", b as f64 / 1e6)
    }
}

pub(super) fn print(results: &[Measurement]) {
    println!(
        "{:<34} {:<8} {:>5} {:>3} {:>22} {:>21} {:>28} {:>11} {:>8} {:>9} {:>8} {:>7} {:>8}",
        "model",
        "engine",
        "batch",
        "thr",
        "mean ± σ",
        "min … max",
        "p50 / p90 / p99",
        "samples/s",
        "load",
        "size",
        "peak RSS",
        "acc %",
        "speedup"
    );
    for m in results {
        let l = &m.latency;
        let engine = if m.backend == m.engine {
            m.engine.clone()
        } else {
            format!("{}:{}", m.backend, m.engine)
        };
        println!(
            "{:<34} {:<8} {:>5} {:>3} {:>22} {:>21} {:>28} {:>11.0} {:>8} {:>9} {:>8} {:>7} {:>8}",
            m.model,
            engine,
            m.batch,
            m.threads,
            format!("{} ± {}", time_text(l.mean), time_text(l.std_dev)),
            format!("{} … {}", time_text(l.min), time_text(l.max)),
            format!(
                "{} / {} / {}",
                time_text(l.p50),
                time_text(l.p90),
                time_text(l.p99)
            ),
            m.throughput,
            time_text(m.load_seconds),
            bytes_text(m.file_bytes),
            m.peak_rss_bytes
                .map(bytes_text)
                .unwrap_or_else(|| "-".into()),
            m.accuracy
                .map(|a| format!("{:.2}", 100.0 * a))
                .unwrap_or_else(|| "-".into()),
            m.speedup
                .map(|s| format!("{s:.2}x"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    for m in results {
        for w in &m.warnings {
            eprintln!(
                "  Warning ({} on {}, batch {}): {w}",
                m.model, m.engine, m.batch
            );
        }
    }
}

pub(super) fn csv(results: &[Measurement]) -> String {
    let mut out = String::from(
        "model,role,format,backend,engine,batch,threads,runs,mean_s,std_s,min_s,max_s,p50_s,p90_s,p99_s,throughput_per_s,load_s,file_bytes,peak_rss_bytes,accuracy,speedup\n",
    );
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for m in results {
        let l = &m.latency;
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            m.model,
            m.role,
            m.format,
            m.backend,
            m.engine,
            m.batch,
            m.threads,
            l.runs,
            l.mean,
            l.std_dev,
            l.min,
            l.max,
            l.p50,
            l.p90,
            l.p99,
            m.throughput,
            m.load_seconds,
            m.file_bytes,
            m.peak_rss_bytes.map(|b| b.to_string()).unwrap_or_default(),
            opt(m.accuracy),
            opt(m.speedup),
        ));
    }
    out
}
