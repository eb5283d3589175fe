//! What the training commands show: a progress bar per epoch on a terminal, a line per
//! epoch, a line for each thing an experiment does, and one-line summaries of finished runs.

use std::time::Instant;

use edgekd_distill::experiment::{Event, Reporter, Trained};
use edgekd_distill::report::EpochStats;
use edgekd_distill::trainer::{BatchStats, Observer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Reports an experiment on the terminal: progress on stderr, `--profile` tables on stdout.
pub struct Console {
    /// Print only each run's final line.
    pub quiet: bool,
    /// Print where each run's steps' time went.
    pub profile: bool,
}

impl Reporter for Console {
    fn run_started(&mut self, label: &str) -> Box<dyn Observer + '_> {
        Box::new(Bars::new(label, self.quiet))
    }

    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::TeacherTested {
                name,
                errors,
                total,
            } => eprintln!(
                "teacher {name}: {:.2}% test accuracy ({errors} errors of {total})",
                100.0 * (total - errors) as f64 / total.max(1) as f64,
            ),
            Event::Relabelled { dir, images } => eprintln!(
                "{images} unlabelled images from {}, labelled by the teachers' top-1 (training accuracy is agreement with them)",
                dir.display()
            ),
            Event::Reused { label, dir } if !self.quiet => {
                eprintln!("[{label}] already finished in {}; reusing it", dir.display())
            }
            Event::Paused { label, epochs } => eprintln!(
                "[{label}] stopped after epoch {epochs} as asked; continue with --resume"
            ),
            Event::Assistant { run } => eprintln!("{}", describe(run)),
            Event::Finished { label, profile, .. } if self.profile && profile.steps > 0 => {
                print!("[{label}] {}", profile.table())
            }
            _ => {}
        }
    }
}

/// One summary line for a finished run.
pub fn describe(t: &Trained) -> String {
    let r = &t.report;
    let agree = r
        .teacher_agreement
        .map(|a| format!(", {:.2}% agreement with the teacher", 100.0 * a))
        .unwrap_or_default();
    format!(
        "{}: {:.2}% test accuracy ({} errors of {}){agree}; {} parameters, {:.1} kMAC/sample, {:.2} s/epoch -> {}",
        r.model,
        100.0 * r.test_accuracy,
        r.test_errors,
        r.test_total,
        r.parameters,
        r.macs as f64 / 1e3,
        r.seconds_per_epoch,
        t.dir.display()
    )
}

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
