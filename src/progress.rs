//! Progress display for training runs: a bar per epoch on a terminal, a summary line per epoch always.

use std::time::Instant;

use edgekd_distill::trainer::{BatchStats, EpochStats, Observer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows an indicatif bar per epoch (on a terminal) and prints one line per finished epoch to stderr.
pub struct Bars {
    label: String,
    bar: Option<ProgressBar>,
    started: Instant,
    samples: usize,
    loss_sum: f64,
    correct: f64,
    quiet: bool,
}

impl Bars {
    /// Bars for a run called `label`; `quiet` keeps only the final epoch's line.
    pub fn new(label: impl Into<String>, quiet: bool) -> Bars {
        Bars {
            label: label.into(),
            bar: None,
            started: Instant::now(),
            samples: 0,
            loss_sum: 0.0,
            correct: 0.0,
            quiet,
        }
    }
}

impl Observer for Bars {
    fn phase(&mut self, what: &str) {
        if !self.quiet {
            eprintln!("[{}] {what}", self.label);
        }
    }

    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        let bar = ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("[{}] epoch {epoch}/{epochs}", self.label));
        self.bar = Some(bar);
        self.started = Instant::now();
        (self.samples, self.loss_sum, self.correct) = (0, 0.0, 0.0);
    }

    fn batch_end(&mut self, s: &BatchStats) {
        self.samples += s.samples;
        self.loss_sum += s.loss as f64 * s.samples as f64;
        self.correct += s.accuracy as f64 * s.samples as f64;
        if let Some(bar) = &self.bar {
            bar.set_position(s.batch as u64 + 1);
            let n = self.samples as f64;
            bar.set_message(format!(
                "loss {:.4} acc {:.2}% {:.0} samples/s lr {:.2e}",
                self.loss_sum / n,
                100.0 * self.correct / n,
                n / self.started.elapsed().as_secs_f64(),
                s.lr
            ));
        }
    }

    fn epoch_end(&mut self, s: &EpochStats) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            eprintln!(
                "[{}] epoch {:>3}{}  loss {:.4}  train {:.2}%  test {:.2}% ({} errors)  {:.1} s  {:.0} samples/s",
                self.label,
                s.epoch,
                if s.finetune { " (fine-tune)" } else { "" },
                s.train_loss,
                100.0 * s.train_accuracy,
                100.0 * s.test_accuracy,
                s.test_errors,
                s.seconds,
                s.samples_per_second
            );
        }
    }
}
