//! Experiment files (`--config exp.toml`): any option under its flag's name (`_` for `-`),
//! parsed with errors that name the line and the key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::kd::{KdOpts, TeacherOpts};
use super::train::TrainOpts;

/// What `train --config FILE` reads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainFile {
    pub model: Option<String>,
    pub out: Option<PathBuf>,
    #[serde(flatten)]
    pub opts: TrainOpts,
}

/// What `distill --config FILE` reads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillFile {
    pub out: Option<PathBuf>,
    /// Chart of test errors per epoch (PNG).
    pub plot: Option<PathBuf>,
    /// A teacher to train first (a `train --config` file as a table); options it leaves out
    /// come from the top level, and command-line flags override both.
    pub teacher: Option<TrainFile>,
    #[serde(flatten)]
    pub kd: KdOpts,
    #[serde(flatten)]
    pub run: TeacherOpts,
    #[serde(flatten)]
    pub opts: TrainOpts,
}

/// Reads an experiment file into `T`, refusing unknown keys so typos are caught.
pub fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    parse_config(&text).with_context(|| format!("parsing config {}", path.display()))
}

/// Parses experiment-file text into `T` (what [`read_config`] does after reading the file),
/// with errors on one line that name the line and the key.
pub fn parse_config<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let err = match toml::from_str(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    // Values under `#[serde(flatten)]` lose their position: find the bad key by trying each
    // top-level key alone (every option is optional, so only the culprit fails).
    if let Ok(table) = toml::from_str::<toml::Table>(text) {
        for (key, value) in table {
            let one = toml::Table::from_iter([(key.clone(), value)]);
            if let Err(e) = toml::Value::Table(one).try_into::<T>() {
                let line = text
                    .lines()
                    .position(|l| {
                        l.trim_start()
                            .strip_prefix(key.as_str())
                            .is_some_and(|r| r.trim_start().starts_with('='))
                    })
                    .map(|i| format!("line {}, ", i + 1))
                    .unwrap_or_default();
                bail!("{line}`{key}`: {}", one_line(e.message()));
            }
        }
    }
    // A syntax error: toml's Display draws the offending line under the message.
    let at = err
        .span()
        .and_then(|s| text.get(..s.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        })
        .unwrap_or_default();
    bail!("{at}{}", one_line(err.message()))
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::ImageSize;

    #[test]
    fn experiment_files_take_per_channel_means_image_sizes_and_colours() {
        let f: DistillFile = parse_config(
            "teacher_mean = [0.485, 0.456, 0.406]\nteacher_std = 0.25\n\
             image_size = \"32x24\"\ncolor = \"rgb\"\n",
        )
        .unwrap();
        assert_eq!(f.run.teacher_mean, Some(vec![0.485, 0.456, 0.406]));
        assert_eq!(f.run.teacher_std, Some(vec![0.25]));
        let image = f.opts.image_options();
        assert_eq!((image.size, image.channels), (Some((32, 24)), Some(3)));
        let err = parse_config::<DistillFile>("image_size = \"32y\"").unwrap_err();
        assert!(
            err.to_string().contains("`32y` is not an image size"),
            "{err}"
        );
    }

    #[test]
    fn image_sizes_are_hxw_or_one_side() {
        let size = |s: &str| s.parse::<ImageSize>().map(|s| (s.rows, s.cols));
        assert_eq!(size("32"), Ok((32, 32)));
        assert_eq!(size("20x24"), Ok((20, 24)));
        assert_eq!(size("224X224"), Ok((224, 224)));
        for bad in ["0", "3x0", "x", "8193x2", "-1x4", "2x3x4"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }
}
