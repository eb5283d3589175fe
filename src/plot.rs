//! `bench --plot`: accuracy against latency, one point per model, format and engine.

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

use crate::commands::bench::Measurement;

/// DejaVu Sans (see assets/fonts/DejaVuSans.LICENSE): embedded so the chart renders the same
/// on a machine with no fonts installed.
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Writes the chart for one batch size and thread count.
pub fn accuracy_vs_latency(
    path: &Path,
    results: &[Measurement],
    batch: usize,
    threads: usize,
) -> Result<()> {
    let points: Vec<&Measurement> = results
        .iter()
        .filter(|m| m.batch == batch && m.threads == threads && m.accuracy.is_some())
        .collect();
    if points.is_empty() {
        bail!("--plot needs accuracies: give --data");
    }
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the embedded font could not be read"))?;
    let us = |m: &Measurement| m.latency.mean * 1e6;
    let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), m| {
        (lo.min(us(m)), hi.max(us(m)))
    });
    let acc = |m: &Measurement| 100.0 * m.accuracy.unwrap_or(0.0);
    let (alo, ahi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), m| {
        (lo.min(acc(m)), hi.max(acc(m)))
    });
    let pad = ((ahi - alo) * 0.15).max(0.1);
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Accuracy against latency (batch {batch}, {threads} thread(s))"),
            ("sans-serif", 30),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((lo * 0.7..hi * 1.5).log_scale(), (alo - pad)..(ahi + pad))
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("mean latency per batch (µs, log scale)")
        .y_desc("test accuracy (%)")
        .label_style(("sans-serif", 18))
        .draw()
        .map_err(|e| draw(&e))?;
    let engines = ["native", "tract", "ort"];
    let colors = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
    ];
    for (engine, color) in engines.iter().zip(colors) {
        let mine: Vec<&&Measurement> = points.iter().filter(|m| m.engine == *engine).collect();
        if mine.is_empty() {
            continue;
        }
        chart
            .draw_series(mine.iter().map(|m| {
                let size = if m.role == "teacher" { 9 } else { 6 };
                Circle::new((us(m), acc(m)), size, color.filled())
            }))
            .map_err(|e| draw(&e))?
            .label(*engine)
            .legend(move |(x, y)| Circle::new((x, y), 6, color.filled()));
        chart
            .draw_series(mine.iter().map(|m| {
                Text::new(
                    format!(" {}", m.model),
                    (us(m), acc(m)),
                    ("sans-serif", 14).into_font(),
                )
            }))
            .map_err(|e| draw(&e))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .label_font(("sans-serif", 18))
        .draw()
        .map_err(|e| draw(&e))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
