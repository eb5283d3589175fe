//! ONNX classifiers as teachers, run through the runtime crate.
//!
//! An ONNX teacher sees the student's batches re-expressed in its own input convention
//! (pixel scale, mean, std and layout, from flags or from the model's metadata), and what it
//! returns becomes logits: a classifier that ends in a softmax hands back probabilities, whose
//! logarithms are logits of the same distribution (softmaxing them again would flatten it).

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use edgekd_runtime::{Backend, Dim, Preprocess};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::digest::hex;
use crate::error::{Error, Result};
use crate::input::{InputShape, Normalization};

/// What an ONNX teacher's output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TeacherOutputs {
    /// Decide from the graph: probabilities when the output comes straight from a Softmax
    /// node or its name says so (`probabilities`, `probs`, as scikit-learn's exporter names
    /// it), logits otherwise.
    #[default]
    Auto,
    /// Unnormalised scores (or log-probabilities).
    Logits,
    /// A probability distribution per row.
    Probs,
}

/// Probabilities below this are floored before the logarithm, so an exact zero becomes a
/// very unlikely class (ln 1e-12 ≈ -27.6) rather than minus infinity.
const PROBABILITY_FLOOR: f32 = 1e-12;

/// How an ONNX teacher is loaded; the defaults read everything from the model.
#[derive(Debug, Clone, Default)]
pub struct OnnxOptions {
    /// Engine to run it on.
    pub backend: Backend,
    /// Logits or probabilities (auto: detected).
    pub outputs: TeacherOutputs,
    /// Which output to use, by name (default: the one shaped `[N, classes]`).
    pub output: Option<String>,
    /// Pixel scale, mean and std the teacher was trained with (`x = (pixel · scale - mean) /
    /// std`); None takes the model's `edgekd.input.normalization` metadata, else 1/255, 0, 1.
    pub scale: Option<f32>,
    /// See `scale`: one value for every channel, or one per channel (torchvision's
    /// `Normalize(mean=[0.485, 0.456, 0.406], ...)`).
    pub mean: Option<Vec<f32>>,
    /// See `mean`.
    pub std: Option<Vec<f32>>,
}

/// An ONNX classifier used as a teacher.
pub struct OnnxTeacher {
    path: PathBuf,
    /// SHA-256 of the file's bytes.
    file_sha256: String,
    model: edgekd_runtime::Model,
    output: usize,
    output_name: String,
    probabilities: bool,
    preprocess: Preprocess,
    /// Mean and std per input channel (`preprocess` holds one value for all).
    mean: Vec<f32>,
    std: Vec<f32>,
    /// Whether it takes RGB images as `[N, H, W, 3]` (the student's batches are `[N, 3, H, W]`).
    channels_last: bool,
    classes: usize,
}

impl std::fmt::Debug for OnnxTeacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxTeacher")
            .field("path", &self.path)
            .field("output", &self.output_name)
            .field("probabilities", &self.probabilities)
            .finish()
    }
}

impl OnnxTeacher {
    /// Loads `path` and works out its input convention, output and class count.
    pub fn load(path: &Path, options: &OnnxOptions) -> Result<OnnxTeacher> {
        let bad = |reason: String| Error::Teacher {
            path: path.into(),
            reason,
        };
        let runtime = edgekd_runtime::Options {
            backend: options.backend,
            ..Default::default()
        };
        // As the runtime's own loader does: the size limit is checked before the file is read.
        let runtime_error = |source| Error::TeacherRuntime {
            path: path.into(),
            action: "loading it",
            source: Box::new(source),
        };
        let len = std::fs::metadata(path)
            .map_err(Error::io("reading teacher", path))?
            .len();
        runtime.limits.check_file_size(len).map_err(runtime_error)?;
        // Read here rather than by Model::load_with: the bytes are also hashed (for the logit
        // cache).
        let bytes = std::fs::read(path).map_err(Error::io("reading teacher", path))?;
        let model =
            edgekd_runtime::Model::from_bytes_with(&bytes, runtime).map_err(runtime_error)?;
        let info = model.info();
        let mut preprocess = Preprocess::for_model(info).ok_or_else(|| {
            bad(format!(
                "its input {} is not an image batch ([N, C, H, W], [N, H, W, 1] or [N, H·W])",
                info.inputs.first().map_or("(none)".into(), |i| format!(
                    "`{}` {}",
                    i.name,
                    i.shape_text()
                ))
            ))
        })?;
        // A TensorFlow-style [N, H, W, C] input (C 1 or 3, H not) reads as channels = H; take
        // it as channels-last. Grayscale NHWC is the same memory as NCHW; RGB is transposed.
        let mut channels_last = false;
        if let Some(input) = info.inputs.first() {
            if let [_, Dim::Fixed(h), Dim::Fixed(w), Dim::Fixed(c @ (1 | 3))] = input.shape[..] {
                if h != 1 && h != 3 && !info.metadata.contains_key("edgekd.input.image") {
                    (preprocess.channels, preprocess.rows, preprocess.cols) = (c, h, w);
                    channels_last = c == 3;
                }
            }
        }
        preprocess.scale = options.scale.unwrap_or(preprocess.scale);
        let channels = preprocess.channels;
        let per_channel = |given: &Option<Vec<f32>>, model: [f32; 3], what: &str| match given {
            None => Ok((0..channels).map(|c| model[c.min(2)]).collect()),
            Some(v) if v.len() == 1 => Ok(vec![v[0]; channels]),
            Some(v) if v.len() == channels => Ok(v.clone()),
            Some(v) => Err(bad(format!(
                "{} {what} values given for its {channels} input channel(s); give one, or one \
                 per channel",
                v.len()
            ))),
        };
        let mean = per_channel(&options.mean, preprocess.mean, "mean")?;
        let std = per_channel(&options.std, preprocess.std, "std")?;
        let finite = mean.iter().chain(&std).all(|v| v.is_finite());
        if !(finite && std.iter().all(|&s| s != 0.0) && preprocess.scale.is_finite()) {
            return Err(bad(format!(
                "input scale {}, mean {mean:?} and std {std:?} must be finite, std non-zero",
                preprocess.scale
            )));
        }
        let listing = || {
            info.outputs
                .iter()
                .map(|o| format!("`{}` {}", o.name, o.shape_text()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (output, classes) = match &options.output {
            Some(name) => {
                let i = info
                    .outputs
                    .iter()
                    .position(|o| &o.name == name)
                    .ok_or_else(|| {
                        bad(format!("no output named `{name}`; it has {}", listing()))
                    })?;
                let c = info.outputs[i].classes().ok_or_else(|| {
                    bad(format!(
                        "output `{name}` is {}, not [N, classes]",
                        info.outputs[i].shape_text()
                    ))
                })?;
                (i, c)
            }
            None => {
                let i = info.class_output();
                let c = info.outputs[i].classes().ok_or_else(|| {
                    bad(format!(
                        "no output is shaped [N, classes]; it has {} (name one with --teacher-output; scikit-learn classifiers need skl2onnx's option zipmap=False)",
                        listing()
                    ))
                })?;
                (i, c)
            }
        };
        let output_name = info.outputs[output].name.clone();
        let probabilities = match options.outputs {
            TeacherOutputs::Logits => false,
            TeacherOutputs::Probs => true,
            TeacherOutputs::Auto => info.gives_probabilities(output),
        };
        Ok(OnnxTeacher {
            path: path.into(),
            file_sha256: hex(&Sha256::digest(&bytes)),
            model,
            output,
            output_name,
            probabilities,
            preprocess,
            mean,
            std,
            channels_last,
            classes,
        })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of classes it scores.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The images it takes.
    pub fn input(&self) -> InputShape {
        InputShape {
            channels: self.preprocess.channels,
            rows: self.preprocess.rows,
            cols: self.preprocess.cols,
        }
    }

    /// SHA-256 of the file's bytes, the output used, how it is read and the input convention:
    /// everything its logits depend on besides the input.
    pub fn sha256(&self) -> String {
        let p = self.preprocess;
        let mut h = Sha256::new();
        h.update(b"onnx");
        h.update(&self.file_sha256);
        h.update(format!(
            "{}|{}|{}x{}x{}|{}|{:?}|{:?}",
            self.output_name,
            self.probabilities,
            p.channels,
            p.rows,
            p.cols,
            p.scale,
            self.mean,
            self.std
        ));
        hex(&h.finalize())
    }

    /// Whether its output is taken as probabilities.
    pub fn gives_probabilities(&self) -> bool {
        self.probabilities
    }

    /// Logits for `images` (`[n, features]`, normalised with `norm` as the student sees them).
    pub(crate) fn logits(&self, images: &Tensor, norm: Normalization) -> Result<Tensor> {
        let n = images.dim(0)?;
        let x = images.flatten_all()?.to_vec1::<f32>()?;
        let p = self.preprocess;
        // Back to [0, 1] pixels, then into the teacher's own convention, channel by channel.
        let plane = p.rows * p.cols;
        let mut input = Vec::with_capacity(x.len());
        for (k, values) in x.chunks_exact(plane).enumerate() {
            let c = k % p.channels;
            let (student_mean, student_std) = norm.channel(c);
            let a = student_std * 255.0 * p.scale / self.std[c];
            let b = (student_mean * 255.0 * p.scale - self.mean[c]) / self.std[c];
            input.extend(values.iter().map(|&v| v * a + b));
        }
        if self.channels_last {
            input = to_channels_last(&input, p.channels, plane);
        }
        let out = self
            .model
            .run(&input, n)
            .map_err(|source| Error::TeacherRuntime {
                path: self.path.clone(),
                action: "running it",
                source: Box::new(source),
            })?
            .swap_remove(self.output);
        if out.data.len() != n * self.classes {
            return Err(self.error(format!(
                "output `{}` gave shape {:?} for a batch of {n}, expected [{n}, {}]",
                self.output_name, out.shape, self.classes
            )));
        }
        let logits = if self.probabilities {
            for r in 0..n {
                let row = &out.data[r * self.classes..(r + 1) * self.classes];
                let sum: f32 = row.iter().sum();
                if (sum - 1.0).abs() > 1e-3 || row.iter().any(|&v| !(0.0..=1.0 + 1e-6).contains(&v))
                {
                    return Err(self.error(format!(
                        "output `{}` was taken as probabilities, but a row sums to {sum} (values {row:?}); pass --teacher-outputs logits",
                        self.output_name
                    )));
                }
            }
            out.data
                .iter()
                .map(|&q| q.max(PROBABILITY_FLOOR).ln())
                .collect()
        } else {
            out.data
        };
        Ok(Tensor::from_vec(
            logits,
            (n, self.classes),
            images.device(),
        )?)
    }

    fn error(&self, reason: String) -> Error {
        Error::Teacher {
            path: self.path.clone(),
            reason,
        }
    }
}

/// `[n, channels, pixels]` values reordered as `[n, pixels, channels]`.
fn to_channels_last(x: &[f32], channels: usize, pixels: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for image in x.chunks_exact(channels * pixels) {
        for p in 0..pixels {
            out.extend((0..channels).map(|c| image[c * pixels + p]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ModelSpec;
    use crate::teacher::Teacher;
    use candle_core::Device;
    use edgekd_runtime::proto::{
        AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
    };
    use prost::Message;

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: output.into(),
            ..Default::default()
        }
    }

    fn floats(name: &str, dims: &[i64], values: Vec<f32>) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: edgekd_runtime::proto::data_type::FLOAT,
            float_data: values,
            ..Default::default()
        }
    }

    /// A linear classifier `Flatten(x) · W + b`, optionally ending in a Softmax, written as a
    /// foreign exporter would: no edgekd metadata.
    fn classifier(
        dir: &Path,
        input: &[Option<i64>],
        w: Vec<f32>,
        b: Vec<f32>,
        softmax: bool,
    ) -> PathBuf {
        let classes = b.len() as i64;
        let features = w.len() as i64 / classes;
        let mut flatten = node("Flatten", &["x"], "flat");
        flatten.attribute.push(AttributeProto {
            name: "axis".into(),
            r#type: 2, // INT
            i: 1,
            ..Default::default()
        });
        let mut nodes = vec![
            flatten,
            node("MatMul", &["flat", "w"], "mm"),
            node("Add", &["mm", "b"], "scores"),
        ];
        let out = if softmax {
            nodes.push(node("Softmax", &["scores"], "y"));
            "y"
        } else {
            "scores"
        };
        let graph = GraphProto {
            name: "foreign".into(),
            node: nodes,
            initializer: vec![
                floats("w", &[features, classes], w),
                floats("b", &[classes], b),
            ],
            input: vec![ValueInfoProto::float_tensor("x", input)],
            output: vec![ValueInfoProto::float_tensor(out, &[None, Some(classes)])],
            ..Default::default()
        };
        let path = dir.join(format!("m{}.onnx", std::fs::read_dir(dir).unwrap().count()));
        std::fs::write(&path, ModelProto::opset13(graph).encode_to_vec()).unwrap();
        path
    }

    fn one_image(first_pixel: u8, norm: Normalization) -> Tensor {
        let mut x = vec![norm.apply(0, 0); 784];
        x[0] = norm.apply(0, first_pixel);
        Tensor::from_vec(x, (1, 784), &Device::Cpu).unwrap()
    }

    #[test]
    fn probabilities_become_log_probabilities_not_a_second_softmax() {
        let dir = tempfile::tempdir().unwrap();
        // Zero weights: the scores are the bias, whose softmax is [0.7, 0.2, 0.1].
        let b: Vec<f32> = [0.7f32, 0.2, 0.1].iter().map(|p| p.ln()).collect();
        let path = classifier(dir.path(), &[None, Some(784)], vec![0.0; 784 * 3], b, true);
        let norm = Normalization::MNIST;
        let auto = OnnxTeacher::load(&path, &OnnxOptions::default()).unwrap();
        assert!(auto.gives_probabilities(), "a Softmax output is detected");
        let logits = auto.logits(&one_image(0, norm), norm).unwrap();
        let got = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // ln 0.7, ln 0.2, ln 0.1 (the last is -ln 10).
        for (g, want) in got
            .iter()
            .zip([-0.356_675, -1.609_438, -std::f32::consts::LN_10])
        {
            assert!((g - want).abs() < 1e-5, "{got:?}");
        }
        // Declared logits, the same output would be softmaxed again: [0.7, 0.2, 0.1] as scores.
        let declared = OnnxOptions {
            outputs: TeacherOutputs::Logits,
            ..Default::default()
        };
        let twice = OnnxTeacher::load(&path, &declared).unwrap();
        assert!(!twice.gives_probabilities());
        let got = twice.logits(&one_image(0, norm), norm).unwrap();
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            (got[0] - 0.7).abs() < 1e-5 && (got[2] - 0.1).abs() < 1e-5,
            "{got:?}"
        );
    }

    #[test]
    fn scores_declared_as_probabilities_are_refused_with_the_row_sum() {
        let dir = tempfile::tempdir().unwrap();
        let path = classifier(
            dir.path(),
            &[None, Some(784)],
            vec![0.0; 784 * 3],
            vec![1.0, 2.0, 3.0],
            false,
        );
        let auto = OnnxTeacher::load(&path, &OnnxOptions::default()).unwrap();
        assert!(!auto.gives_probabilities());
        let probs = OnnxOptions {
            outputs: TeacherOutputs::Probs,
            ..Default::default()
        };
        let norm = Normalization::MNIST;
        let err = OnnxTeacher::load(&path, &probs)
            .unwrap()
            .logits(&one_image(0, norm), norm)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a row sums to 6") && err.contains("--teacher-outputs logits"),
            "{err}"
        );
    }

    /// The teacher sees pixels in its own convention whatever the student's normalisation:
    /// W picks input 0 into class 0, so class 0's score is what the teacher got for pixel 0.
    #[test]
    fn inputs_reach_the_teacher_in_its_own_convention_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = vec![0.0; 784 * 10];
        w[0] = 1.0;
        let student = Normalization::MNIST;
        for shape in [
            vec![None, Some(784)],
            vec![None, Some(1), Some(28), Some(28)],
            vec![None, Some(28), Some(28), Some(1)],
        ] {
            let path = classifier(dir.path(), &shape, w.clone(), vec![0.0; 10], false);
            let teacher = Teacher::Onnx(OnnxTeacher::load(&path, &OnnxOptions::default()).unwrap());
            teacher
                .check_fits(&ModelSpec::parse("mlp:8").unwrap())
                .unwrap_or_else(|e| panic!("{shape:?}: {e}"));
            let out = teacher.forward(&one_image(255, student), student).unwrap();
            let v = out.logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
            assert!(
                (v - 1.0).abs() < 1e-5,
                "{shape:?}: default scale 1/255 gives {v}"
            );
            // Declared mean/std: (1.0 - 0.5) / 0.25 = 2.
            let declared = OnnxOptions {
                mean: Some(vec![0.5]),
                std: Some(vec![0.25]),
                ..Default::default()
            };
            let t = OnnxTeacher::load(&path, &declared).unwrap();
            let v = t.logits(&one_image(255, student), student).unwrap();
            let v = v.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
            assert!((v - 2.0).abs() < 1e-4, "{shape:?}: {v}");
        }
    }

    /// Colour teachers get the student's channel-major batches in their own layout: W picks
    /// the blue value of pixel 5 (flattened index 2·64 + 5 in NCHW, 5·3 + 2 in NHWC).
    #[test]
    fn rgb_reaches_channels_first_and_channels_last_teachers_alike() {
        let dir = tempfile::tempdir().unwrap();
        let norm = Normalization::uniform(0.0, 1.0);
        let mut x = vec![0.0f32; 3 * 64];
        x[2 * 64 + 5] = 1.0;
        let image = Tensor::from_vec(x, (1, 3 * 64), &Device::Cpu).unwrap();
        let mut student = ModelSpec::parse("mlp:8").unwrap();
        student.input = InputShape {
            channels: 3,
            rows: 8,
            cols: 8,
        };
        for (shape, picked) in [
            (vec![None, Some(3), Some(8), Some(8)], 2 * 64 + 5),
            (vec![None, Some(8), Some(8), Some(3)], 5 * 3 + 2),
        ] {
            let mut w = vec![0.0; 3 * 64 * 2];
            w[picked * 2] = 1.0;
            let path = classifier(dir.path(), &shape, w, vec![0.0; 2], false);
            let teacher = Teacher::Onnx(OnnxTeacher::load(&path, &OnnxOptions::default()).unwrap());
            assert_eq!(teacher.input(), student.input, "{shape:?}");
            let mut spec = student.clone();
            spec.classes = 2;
            teacher.check_fits(&spec).unwrap();
            let out = teacher.forward(&image, norm).unwrap().logits;
            let v = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!((v[0] - 1.0).abs() < 1e-6 && v[1] == 0.0, "{shape:?}: {v:?}");
            // Per-channel normalisation reaches the right plane: blue (1 - 0.5) / 0.25 = 2.
            let per_channel = OnnxOptions {
                mean: Some(vec![0.1, 0.2, 0.5]),
                std: Some(vec![0.3, 0.6, 0.25]),
                ..Default::default()
            };
            let t = OnnxTeacher::load(&path, &per_channel).unwrap();
            let v = t.logits(&image, norm).unwrap();
            let v = v.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
            assert!((v - 2.0).abs() < 1e-5, "{shape:?}: {v}");
            let two = OnnxOptions {
                mean: Some(vec![0.1, 0.2]),
                ..Default::default()
            };
            let err = OnnxTeacher::load(&path, &two).unwrap_err().to_string();
            assert!(
                err.contains("2 mean values given for its 3 input channel(s)"),
                "{err}"
            );
        }
    }

    #[test]
    fn teachers_that_do_not_fit_the_data_say_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let student = ModelSpec::parse("mlp:8").unwrap();
        let small = classifier(
            dir.path(),
            &[None, Some(100)],
            vec![0.0; 1000],
            vec![0.0; 10],
            false,
        );
        let err = Teacher::Onnx(OnnxTeacher::load(&small, &OnnxOptions::default()).unwrap())
            .check_fits(&student)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("takes 10x10 grayscale images")
                && err.contains("the data is 28x28 grayscale"),
            "{err}"
        );
        let five = classifier(
            dir.path(),
            &[None, Some(784)],
            vec![0.0; 784 * 5],
            vec![0.0; 5],
            false,
        );
        let err = Teacher::Onnx(OnnxTeacher::load(&five, &OnnxOptions::default()).unwrap())
            .check_fits(&student)
            .unwrap_err()
            .to_string();
        assert!(err.contains("scores 5 classes, the data has 10"), "{err}");
        let named = OnnxOptions {
            output: Some("nope".into()),
            ..Default::default()
        };
        let err = OnnxTeacher::load(&five, &named).unwrap_err().to_string();
        assert!(
            err.contains("no output named `nope`; it has `scores` [N, 5]"),
            "{err}"
        );
    }
}
