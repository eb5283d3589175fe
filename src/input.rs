//! Model inputs from files: images (PNG, JPEG), IDX image files (MNIST's format, gzipped or
//! not) and raw little-endian f32 values, normalized as the model's metadata says.

use std::path::Path;

use anyhow::{bail, Context, Result};
use edgekd_runtime::idx;
use edgekd_runtime::Preprocess;

/// Rows of model input, `count` samples of `per_sample` values.
pub struct Inputs {
    pub values: Vec<f32>,
    pub count: usize,
}

/// Reads up to `limit` samples from `path`, for a model taking `per_sample` values per sample;
/// an IDX header declaring more than `max_elements` is refused before anything is allocated.
pub fn read(
    path: &Path,
    pre: Option<&Preprocess>,
    per_sample: usize,
    limit: usize,
    invert: bool,
    max_elements: u64,
) -> Result<Inputs> {
    if path.is_dir() {
        bail!(
            "{} is a directory; give an image, IDX or .f32 file",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_image = bytes.starts_with(b"\x89PNG") || bytes.starts_with(&[0xff, 0xd8, 0xff]);
    let is_idx = bytes.starts_with(&[0x1f, 0x8b]) || (bytes.len() > 4 && bytes[..3] == [0, 0, 8]);
    let need_pre = || {
        pre.with_context(|| {
            format!(
                "{}: the model declares no image layout (no edgekd metadata, and an input shape \
                 that is not [N, C, H, W] or [N, H·W]); give raw f32 values instead",
                path.display()
            )
        })
    };
    let fix = |p: u8| if invert { 255 - p } else { p };
    if is_image {
        let pre = need_pre()?;
        let planar: Vec<u8> = edgekd_runtime::image::decode(
            &bytes,
            pre.channels,
            pre.rows,
            pre.cols,
            Default::default(),
        )
        .with_context(|| format!("decoding {}", path.display()))?
        .into_iter()
        .map(fix)
        .collect();
        return Ok(Inputs {
            values: pre.apply(&planar),
            count: 1,
        });
    }
    if is_idx && ext != "f32" {
        let pre = need_pre()?;
        let array = idx::parse_maybe_gzipped(path, &bytes[..], max_elements)
            .with_context(|| format!("reading {}", path.display()))?;
        let per_image: usize = array.dims.iter().skip(1).product();
        if array.dims.len() < 2 || per_image != pre.len() {
            bail!(
                "{}: IDX images of shape {:?}; the model takes {}x{}x{}",
                path.display(),
                &array.dims,
                pre.channels,
                pre.rows,
                pre.cols
            );
        }
        let count = array.dims[0].min(limit);
        let pixels: Vec<u8> = array.data[..count * per_image]
            .iter()
            .map(|&p| fix(p))
            .collect();
        return Ok(Inputs {
            values: pre.apply(&pixels),
            count,
        });
    }
    if ext == "f32" || ext == "raw" || ext == "bin" {
        if bytes.is_empty()
            || bytes.len() % 4 != 0
            || per_sample == 0
            || (bytes.len() / 4) % per_sample != 0
        {
            bail!(
                "{}: {} bytes is not a whole number of samples of {per_sample} f32 values",
                path.display(),
                bytes.len()
            );
        }
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let count = (values.len() / per_sample).min(limit);
        // A NaN would come out as a confident-looking class; name it instead.
        if let Some(i) = values[..count * per_sample]
            .iter()
            .position(|v| !v.is_finite())
        {
            bail!(
                "{}: value {} of sample {} is {} (inputs must be finite)",
                path.display(),
                i % per_sample,
                i / per_sample,
                values[i]
            );
        }
        return Ok(Inputs {
            values: values[..count * per_sample].to_vec(),
            count,
        });
    }
    bail!(
        "{}: not a PNG, JPEG or IDX file, and not named .f32/.raw/.bin for raw little-endian f32 values",
        path.display()
    )
}
