//! What `--resume` needs, written after every epoch into a checkpoint's `train-state/`: the
//! weights, the optimizer's moments (and a hint projection's weights) of the epoch just
//! finished, and `progress.json`, which names that epoch and the run's identity.

use std::path::{Path, PathBuf};

use candle_core::{Device, Var};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::identity::RunIdentity;
use crate::model::Model;
use crate::optim::Optimizer;
use crate::report::EpochStats;

/// `progress.json`: the epoch the state files are for, and what made them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub epochs_done: usize,
    pub identity: RunIdentity,
    pub history: Vec<EpochStats>,
    /// Quantization-aware training's activation ranges so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat: Option<crate::qat::LearnedRanges>,
}

/// A run's `train-state/` directory.
pub(crate) struct TrainState {
    dir: PathBuf,
}

/// What a resumed run continues from.
pub(crate) struct Resumed {
    /// Epochs already trained.
    pub epochs_done: usize,
    /// Their figures.
    pub history: Vec<EpochStats>,
}

impl TrainState {
    /// The state directory of the checkpoint in `out_dir`.
    pub fn of(out_dir: &Path) -> TrainState {
        TrainState {
            dir: checkpoint::state_dir(out_dir),
        }
    }

    /// Saves the end of epoch `progress.epochs_done`.
    pub fn save(
        &self,
        student: &Model,
        opt: &Optimizer,
        hint: Option<&(Var, Var)>,
        progress: &Progress,
        device: &Device,
    ) -> Result<()> {
        crate::atomic::create_dir(&self.dir)?;
        let mut state = opt.state(device)?;
        if let Some((w, b)) = hint {
            state.insert("hint.weight".into(), w.as_tensor().clone());
            state.insert("hint.bias".into(), b.as_tensor().clone());
        }
        // Each epoch's tensors go to files named after it, and progress.json, written last and
        // atomically, names the epoch to resume from: a run killed anywhere in here resumes from
        // a consistent (weights, moments, epoch) triple. Overwriting fixed names instead left
        // epoch N+1's weights beside epoch N's progress when killed between the writes.
        let epoch = progress.epochs_done;
        checkpoint::save_tensors(&self.dir.join(state_file("optimizer", epoch)), &state)?;
        checkpoint::save_tensors(
            &self.dir.join(state_file("weights", epoch)),
            &student.params().tensors(),
        )?;
        checkpoint::save_json(&self.dir.join("progress.json"), progress)?;
        remove_stale_state(&self.dir, epoch);
        Ok(())
    }

    /// Loads the last saved epoch into `student`, `opt` and `hint`, after checking that the
    /// state was made by a run of the same `identity`.
    pub fn load(
        &self,
        identity: &RunIdentity,
        student: &Model,
        opt: &mut Optimizer,
        hint: Option<&(Var, Var)>,
        device: &Device,
    ) -> Result<Resumed> {
        let bad = |reason: String| Error::Checkpoint {
            path: self.dir.clone(),
            reason,
        };
        let progress: Progress = checkpoint::load_json(&self.dir.join("progress.json"))
            .map_err(|e| bad(format!("nothing to resume: {e}")))?;
        let differences = progress.identity.differences(identity);
        if !differences.is_empty() {
            return Err(bad(format!(
                "it was made with different settings ({}); resume with the same command line, \
                 config, teachers and data, or start afresh without --resume",
                differences.join("; ")
            )));
        }
        let epoch = progress.epochs_done;
        if let (Some(q), Some(r)) = (student.qat(), &progress.qat) {
            q.restore(r);
        }
        let weights =
            checkpoint::load_tensors(&self.dir.join(state_file("weights", epoch)), device)?;
        for (p, var) in &student.params().vars {
            let t = weights
                .get(&p.name)
                .ok_or_else(|| bad(format!("weights lack {}", p.name)))?;
            var.set(t)?;
        }
        let state =
            checkpoint::load_tensors(&self.dir.join(state_file("optimizer", epoch)), device)?;
        opt.load_state(&state)?;
        if let Some((w, b)) = hint {
            let get = |n: &str| {
                state
                    .get(n)
                    .cloned()
                    .ok_or_else(|| bad(format!("state lacks {n}")))
            };
            w.set(&get("hint.weight")?)?;
            b.set(&get("hint.bias")?)?;
        }
        Ok(Resumed {
            epochs_done: epoch,
            history: progress.history,
        })
    }
}

/// `weights-3.safetensors`: what a state directory holds for the end of epoch 3.
pub(crate) fn state_file(kind: &str, epoch: usize) -> String {
    format!("{kind}-{epoch}.safetensors")
}

/// Deletes state files of epochs other than `keep` (best effort: a leftover costs disk, not
/// correctness, since progress.json names the files to load).
fn remove_stale_state(sdir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(sdir) else {
        return;
    };
    let current = [state_file("weights", keep), state_file("optimizer", keep)];
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") && !current.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
