//! What makes two training runs the same run: their settings, the student, every teacher's
//! weights (or ONNX file) and the data. `--resume` continues a checkpoint only when its
//! identity is this run's, and a finished run is reused under `--resume` on the same test.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{DistillConfig, TrainConfig};
use crate::dataset::Dataset;
use crate::digest::{hex, labelled_sha256};
use crate::error::Result;
use crate::spec::ModelSpec;
use crate::teacher::Teacher;

/// SHA-256 digests of everything a run's result depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunIdentity {
    /// The training and distillation settings (seed, schedule, temperature, ...).
    pub settings: String,
    /// The student's spec (architecture, input, classes, normalization, dropout).
    pub student: String,
    /// Each teacher, in order: a checkpoint's spec and weights, or an ONNX file and how it is
    /// read ([`Teacher::sha256`]).
    pub teachers: Vec<String>,
    /// The training and test images and labels.
    pub data: String,
    /// The weights the student started from, when not a seeded initialisation (a pruned
    /// checkpoint): their SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
}

fn sha256_of(value: &impl Serialize) -> String {
    let json = serde_json::to_string(value).expect("settings and specs serialise");
    hex(&Sha256::digest(json.as_bytes()))
}

impl RunIdentity {
    /// The identity of training `student` with `config` (and `distill` from `teachers`) on
    /// `train`, tested on `test`.
    pub fn new(
        config: &TrainConfig,
        distill: Option<&DistillConfig>,
        student: &ModelSpec,
        teachers: &[Teacher],
        train: &Dataset,
        test: &Dataset,
        start: Option<&str>,
    ) -> Result<RunIdentity> {
        let mut data = Sha256::new();
        data.update(labelled_sha256(train));
        data.update(labelled_sha256(test));
        Ok(RunIdentity {
            settings: sha256_of(&(config, distill)),
            student: sha256_of(student),
            teachers: teachers
                .iter()
                .map(Teacher::sha256)
                .collect::<Result<_>>()?,
            data: hex(&data.finalize()),
            start: start.map(str::to_owned),
        })
    }

    /// What differs between `self` (a checkpoint's) and `other` (this run's), in words, e.g.
    /// `teacher 1 differs: ...`; empty when they are the same run.
    pub fn differences(&self, other: &RunIdentity) -> Vec<String> {
        let mut out = Vec::new();
        if self.settings != other.settings {
            out.push("the training or distillation options differ".into());
        }
        if self.student != other.student {
            out.push("the student's spec differs".into());
        }
        if self.teachers.len() != other.teachers.len() {
            out.push(format!(
                "{} teacher(s), not {}",
                self.teachers.len(),
                other.teachers.len()
            ));
        } else {
            for (i, (a, b)) in self.teachers.iter().zip(&other.teachers).enumerate() {
                if a != b {
                    out.push(format!(
                        "teacher {} differs: other weights or another file",
                        i + 1
                    ));
                }
            }
        }
        if self.data != other.data {
            out.push("the data differs".into());
        }
        if self.start != other.start {
            out.push("the student starts from other weights".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::tests::toy;
    use crate::model::Model;
    use candle_core::Device;

    #[test]
    fn teachers_of_the_same_spec_with_other_weights_are_different_runs() {
        let spec = ModelSpec::parse("mlp:8").unwrap();
        let teacher = |seed| Teacher::Checkpoint(Model::new(&spec, seed, &Device::Cpu).unwrap());
        let (train, test) = (toy(20, 0), toy(10, 1));
        let config = TrainConfig::default();
        let distill = DistillConfig::default();
        let id = |t: &Teacher, data: &Dataset| {
            RunIdentity::new(
                &config,
                Some(&distill),
                &spec,
                std::slice::from_ref(t),
                data,
                &test,
                None,
            )
            .unwrap()
        };
        let (a, b) = (teacher(1), teacher(2));
        assert_eq!(id(&a, &train), id(&teacher(1), &train));
        assert_eq!(
            id(&a, &train).differences(&id(&b, &train)),
            vec!["teacher 1 differs: other weights or another file".to_string()]
        );
        assert_eq!(
            id(&a, &train).differences(&id(&a, &toy(20, 3))),
            vec!["the data differs".to_string()]
        );
    }
}
