//! Where the time of a training step goes, phase by phase (`--profile`). Candle runs CPU
//! tensors eagerly, so a clock read around each phase measures that phase's work.

use std::time::Instant;

/// The phases of one training step, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Gathering, augmenting and normalizing the batch.
    Data,
    /// Teacher logits: a forward pass per teacher, or a lookup in the cache.
    Teacher,
    /// The student's forward pass.
    StudentForward,
    /// Label and distillation losses (and the check that they are finite).
    Loss,
    /// Back-propagation.
    Backward,
    /// The optimizer's update (and gradient clipping).
    Optimizer,
    /// Accuracy and progress bookkeeping.
    Metrics,
}

impl Phase {
    /// Every phase, in step order.
    pub const ALL: [Phase; 7] = [
        Phase::Data,
        Phase::Teacher,
        Phase::StudentForward,
        Phase::Loss,
        Phase::Backward,
        Phase::Optimizer,
        Phase::Metrics,
    ];

    /// How the table names it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Data => "data",
            Phase::Teacher => "teacher forward",
            Phase::StudentForward => "student forward",
            Phase::Loss => "loss",
            Phase::Backward => "backward",
            Phase::Optimizer => "optimizer",
            Phase::Metrics => "metrics",
        }
    }
}

/// Time spent per phase over the steps of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepProfile {
    /// Steps measured.
    pub steps: usize,
    /// Seconds per phase, in [`Phase::ALL`] order.
    pub seconds: [f64; Phase::ALL.len()],
    /// Seconds spent once, before the first step, computing the teachers' logits for the
    /// whole training set (0 when they are computed per batch).
    pub teacher_cache_seconds: f64,
}

impl StepProfile {
    /// Adds the time since `since` to `phase` and returns now, for the next phase.
    pub fn lap(&mut self, phase: Phase, since: Instant) -> Instant {
        let now = Instant::now();
        self.seconds[phase as usize] += (now - since).as_secs_f64();
        now
    }

    /// Total seconds of the measured steps.
    pub fn total(&self) -> f64 {
        self.seconds.iter().sum()
    }

    /// The profile as a table: phase, ms per step, share of the step.
    pub fn table(&self) -> String {
        let steps = self.steps.max(1) as f64;
        let total = self.total();
        let mut out = format!(
            "profile over {} steps ({:.1} ms per step):\n",
            self.steps,
            1e3 * total / steps
        );
        for p in Phase::ALL {
            let s = self.seconds[p as usize];
            let share = if total > 0.0 { 100.0 * s / total } else { 0.0 };
            out += &format!(
                "  {:<16} {:>9.3} ms/step {:>5.1}%\n",
                p.name(),
                1e3 * s / steps,
                share
            );
        }
        if self.teacher_cache_seconds > 0.0 {
            out += &format!(
                "  teacher logits for the whole training set, once: {:.2} s\n",
                self.teacher_cache_seconds
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn laps_land_in_their_phase_and_the_table_sums_to_the_step() {
        let mut p = StepProfile::default();
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let t = p.lap(Phase::Backward, t);
        std::thread::sleep(Duration::from_millis(10));
        p.lap(Phase::Data, t);
        p.steps = 2;
        assert!(p.seconds[Phase::Backward as usize] >= 0.02);
        assert!(p.seconds[Phase::Data as usize] >= 0.01);
        assert_eq!(p.seconds[Phase::Loss as usize], 0.0);
        let table = p.table();
        let shares: f64 = table
            .lines()
            .filter_map(|l| l.trim_end().strip_suffix('%'))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert!((shares - 100.0).abs() < 0.5, "{table}");
        assert!(
            table.contains("backward") && table.contains("2 steps"),
            "{table}"
        );
    }
}
