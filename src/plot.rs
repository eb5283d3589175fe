//! Charts: `bench --plot` (accuracy against latency, one point per model, format and engine)
//! and `distill --plot` (test errors per epoch, one line per run).

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

use crate::bench_report::{Measurement, Role};

/// DejaVu Sans (see assets/fonts/DejaVuSans.LICENSE): embedded so the chart renders the same
/// on a machine with no fonts installed.
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

fn register_font() -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the embedded font could not be read"))
}

const COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One line of [`errors_per_epoch`]: a label and (epoch, test errors) points.
pub type ErrorCurve = (String, Vec<(usize, usize)>);

/// Test errors per epoch, one line per run. The y axis stops at three times the worst final
/// count: the first epochs' errors are far above the end, and the end is what is compared.
pub fn errors_per_epoch(path: &Path, title: &str, curves: &[ErrorCurve]) -> Result<()> {
    let points = curves.iter().flat_map(|(_, c)| c.iter());
    let (max_epoch, hi) = points.fold((0, 0), |(e, hi), &(x, y)| (e.max(x), hi.max(y)));
    if max_epoch == 0 {
        bail!("no epochs to plot");
    }
    let worst_final = curves
        .iter()
        .filter_map(|(_, c)| c.last().map(|&(_, e)| e))
        .max()
        .unwrap_or(hi);
    let top = (hi.min(3 * worst_final).max(1) as f64) * 1.05;
    register_font()?;
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 30))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5..max_epoch as f64 + 0.5, 0.0..top)
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(max_epoch.min(12) + 1)
        .y_desc("test errors")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 18))
        .draw()
        .map_err(|e| draw(&e))?;
    for ((label, curve), color) in curves.iter().zip(COLORS.iter().cycle()) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                curve
                    .iter()
                    .map(|&(e, errors)| (e as f64, (errors as f64).min(top))),
                color.stroke_width(2),
            ))
            .map_err(|e| draw(&e))?
            .label(format!(
                "{label}: {} at the end",
                curve.last().map_or(0, |&(_, e)| e)
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .label_font(("sans-serif", 18))
        .draw()
        .map_err(|e| draw(&e))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

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
    register_font()?;
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
    for (engine, color) in engines.iter().zip(COLORS) {
        let mine: Vec<&&Measurement> = points.iter().filter(|m| m.engine == *engine).collect();
        if mine.is_empty() {
            continue;
        }
        chart
            .draw_series(mine.iter().map(|m| {
                let size = if m.role == Role::Teacher { 9 } else { 6 };
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
