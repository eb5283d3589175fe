//! `edgekd`: distil a large teacher into a small student, and (in later stages) quantize it,
//! export it to ONNX and measure it on the device. This crate is only the command line; the
//! work happens in the library crates.

#[cfg(feature = "train")]
mod args;
mod bench_report;
mod commands;
#[cfg(feature = "train")]
mod console;
mod input;
#[cfg(feature = "train")]
mod onnxruntime;
#[cfg(feature = "plot")]
mod plot;

use clap::{Parser, Subcommand};

/// Distil a large teacher network into a small student and tell what it cost.
///
/// A typical session: `edgekd train` a teacher, `edgekd distill` a student from it with
/// `--baseline` to see whether distillation helped, `edgekd eval` either on new data.
/// `edgekd demo` does all of it on the MNIST subset shipped in the repository.
#[derive(Parser)]
#[command(name = "edgekd", version, about, long_about, propagate_version = true)]
#[cfg_attr(
    not(feature = "train"),
    command(
        about = "Run and benchmark ONNX models on the device (device build: no training code)",
        long_about = None
    )
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Fetch, verify, inspect or cut datasets (MNIST IDX files).
    #[cfg(feature = "train")]
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Train a model on labels alone (a teacher, or a baseline student).
    #[cfg(feature = "train")]
    Train(commands::train::TrainArgs),
    /// Distil a student from one or more teachers (optionally through an assistant).
    #[cfg(feature = "train")]
    Distill(commands::distill::DistillArgs),
    /// Compute teachers' logits over a dataset once and cache them on disk for `distill`.
    #[cfg(feature = "train")]
    TeacherLogits(commands::teacher_logits::TeacherLogitsArgs),
    /// Measure a checkpoint's accuracy, and its agreement with a teacher.
    #[cfg(feature = "train")]
    Eval(commands::eval::EvalArgs),
    /// Remove whole neurons and channels from a checkpoint (or zero its smallest weights).
    #[cfg(feature = "train")]
    Prune(commands::prune::PruneArgs),
    /// Quantize a student to f32 / f16 / int8 ONNX, verifying every file before writing it.
    #[cfg(feature = "train")]
    Export(commands::export::ExportArgs),
    /// Train a teacher, distil a student and compare them, on the shipped MNIST subset.
    #[cfg(feature = "train")]
    Demo(commands::demo::DemoArgs),
    /// Classify an image (PNG/JPEG), an IDX file or raw f32 values with an ONNX model.
    Run(commands::run::RunArgs),
    /// Measure teacher against students: latency, throughput, memory, accuracy, speed-up.
    Bench(commands::bench::BenchArgs),
    /// Run one model a million times and check that resident memory does not grow.
    Soak(commands::soak::SoakArgs),
    /// Put `bench --json` reports from several machines (host, board, emulator) side by side.
    Compare(commands::compare::CompareArgs),
    /// (internal) Peak memory of one model, measured by `bench` in a child process.
    #[command(hide = true, name = "__peak-rss")]
    PeakRss(commands::bench::PeakRssArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        #[cfg(feature = "train")]
        Command::Data(c) => commands::data::run(c),
        #[cfg(feature = "train")]
        Command::Train(a) => commands::train::run(a),
        #[cfg(feature = "train")]
        Command::Distill(a) => commands::distill::run(a),
        #[cfg(feature = "train")]
        Command::TeacherLogits(a) => commands::teacher_logits::run(a),
        #[cfg(feature = "train")]
        Command::Eval(a) => commands::eval::run(a),
        #[cfg(feature = "train")]
        Command::Export(a) => commands::export::run(a),
        #[cfg(feature = "train")]
        Command::Prune(a) => commands::prune::run(a),
        #[cfg(feature = "train")]
        Command::Demo(a) => commands::demo::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Compare(a) => commands::compare::run(a),
        Command::Soak(a) => commands::soak::run(a),
        Command::PeakRss(a) => commands::bench::peak_rss(a),
    };
    if let Err(e) = result {
        // One line, whatever a library's message holds: scripts grep it, people read it.
        let message = format!("{e:#}");
        let one_line: Vec<&str> = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        eprintln!("error: {}", one_line.join(" "));
        std::process::exit(1);
    }
}
