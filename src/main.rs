//! `edgekd`: distil a large teacher into a small student, and (in later stages) quantize it,
//! export it to ONNX and measure it on the device. This crate is only the command line; the
//! work happens in the library crates.

mod args;
mod commands;
mod onnxruntime;
mod progress;

use clap::{Parser, Subcommand};

/// Distil a large teacher network into a small student and tell what it cost.
///
/// A typical session: `edgekd train` a teacher, `edgekd distill` a student from it with
/// `--baseline` to see whether distillation helped, `edgekd eval` either on new data.
/// `edgekd demo` does all of it on the MNIST subset shipped in the repository.
#[derive(Parser)]
#[command(name = "edgekd", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, verify, inspect or cut datasets (MNIST IDX files).
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Train a model on labels alone (a teacher, or a baseline student).
    Train(commands::train::TrainArgs),
    /// Distil a student from one or more teachers (optionally through an assistant).
    Distill(commands::distill::DistillArgs),
    /// Measure a checkpoint's accuracy, and its agreement with a teacher.
    Eval(commands::eval::EvalArgs),
    /// Quantize a student to f32 / f16 / int8 ONNX, verifying every file before writing it.
    Export(commands::export::ExportArgs),
    /// Train a teacher, distil a student and compare them, on the shipped MNIST subset.
    Demo(commands::demo::DemoArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(c) => commands::data::run(c),
        Command::Train(a) => commands::train::run(a),
        Command::Distill(a) => commands::distill::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::Demo(a) => commands::demo::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
