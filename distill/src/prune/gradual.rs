//! Gradual pruning: prune a little, recover by distillation, repeat, so each cut is taken
//! from a network that has adapted to the previous one (Zhu and Gupta 2017 schedule the
//! sparsity the same way; Minitron prunes once, then distils).

use std::path::Path;

use super::criterion::{scores, Criterion};
use super::groups::channel_groups;
use super::plan::{apply, plan, plan_widths, Amount, PrunePlan, Scope};
use crate::checkpoint::{self, load_start};
use crate::error::{Error, Result};
use crate::experiment::{Distillation, Distilled, Reporter, Setup};
use crate::model::Model;

/// Prune → distil, `steps` times, until `ratio` of the channels are gone.
#[derive(Debug, Clone, Copy)]
pub struct Gradual {
    /// The fraction of every prunable layer removed in all.
    pub ratio: f64,
    /// Prune-and-distil rounds.
    pub steps: usize,
    /// How channels are ranked at each step.
    pub criterion: Criterion,
    /// Where they compete.
    pub scope: Scope,
    /// Batches of training data the taylor criterion runs.
    pub batches: usize,
    /// Widths are rounded to multiples of this (see [`super::plan()`]).
    pub multiple: usize,
}

/// What each step did, and the last step's distillation.
#[derive(Debug)]
pub struct GradualOutcome {
    /// Each step's pruning plan.
    pub plans: Vec<PrunePlan>,
    /// The students of the last step (its `--baseline` and seeds as asked).
    pub last: Distilled,
}

impl Gradual {
    /// The fraction each step removes so that `steps` of them remove `ratio`.
    pub fn per_step(&self) -> f64 {
        1.0 - (1.0 - self.ratio).powf(1.0 / self.steps as f64)
    }

    /// Prunes `model` and recovers it by `base` (its teachers, settings and losses; its
    /// student is replaced by each step's pruned model) `steps` times. Step k < steps writes to
    /// `out/step{k}` and trains one seed without a baseline; the last writes to `out` with the
    /// seeds and baseline asked for, so `--baseline` compares distilling the last cut against
    /// fine-tuning it. Each step's pruned weights are kept in its directory's `pruned/`.
    pub fn run(
        &self,
        model: Model,
        base: &Distillation,
        setup: &Setup,
        out: &Path,
        reporter: &mut dyn Reporter,
    ) -> Result<Option<GradualOutcome>> {
        if !(self.ratio > 0.0 && self.ratio < 1.0) || self.steps == 0 {
            return Err(Error::Config(format!(
                "gradual pruning needs a ratio in (0, 1) and at least one step; got {} and {}",
                self.ratio, self.steps
            )));
        }
        // Per-layer rounds aim at fixed fractions of the original widths, so rounding does not
        // compound; global rounds each remove the same fraction of what is left.
        let original: Vec<usize> = channel_groups(model.spec())
            .iter()
            .map(|g| g.width)
            .collect();
        let mut current = model;
        let mut plans = Vec::new();
        for k in 1..=self.steps {
            let last = k == self.steps;
            let dir = if last {
                out.to_path_buf()
            } else {
                out.join(format!("step{k}"))
            };
            let groups = channel_groups(current.spec());
            let s = scores(
                &current,
                &groups,
                self.criterion,
                Some((&setup.data.train, self.batches)),
            )?;
            let mut p = match self.scope {
                Scope::Layer => {
                    let fraction = (1.0 - self.ratio).powf(k as f64 / self.steps as f64);
                    let keep: Vec<usize> = original
                        .iter()
                        .map(|&w| (w as f64 * fraction).round() as usize)
                        .collect();
                    plan_widths(
                        current.spec(),
                        &groups,
                        &s,
                        self.criterion,
                        &keep,
                        self.multiple,
                    )?
                }
                Scope::Global => plan(
                    current.spec(),
                    &groups,
                    &s,
                    self.criterion,
                    self.scope,
                    Amount::Ratio(self.per_step()),
                    self.multiple,
                )?,
            };
            p.after.dropout = base.student.dropout;
            p.after.input_dropout = base.student.input_dropout;
            let pruned = apply(&current, &groups, &p)?;
            let pruned_dir = dir.join("pruned");
            checkpoint::save_model(&pruned_dir, &pruned)?;
            checkpoint::save_json(&pruned_dir.join("prune.json"), &p)?;
            let (spec, start) = load_start(&pruned_dir)?;
            let step = Distillation {
                teachers: base.teachers,
                teacher_names: base.teacher_names.clone(),
                student: spec,
                student_start: Some(start),
                config: base.config.clone(),
                distill: base.distill.clone(),
                // An assistant would be retrained every round; it teaches the last one only.
                assistant: if last { base.assistant.clone() } else { None },
                baseline: base.baseline && last,
                seeds: if last { base.seeds } else { 1 },
                unlabeled: base.unlabeled.clone(),
            };
            plans.push(p);
            let mut done = step.run(setup, &dir, reporter)?;
            if last {
                return Ok(Some(GradualOutcome { plans, last: done }));
            }
            if done.students.is_empty() {
                return Ok(None);
            }
            current = done.students.swap_remove(0).model;
        }
        unreachable!("the last step returns")
    }
}
