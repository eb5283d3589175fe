//! Labelled image datasets held in memory as bytes, and the MNIST directory layout.

use std::path::Path;

use crate::error::{Error, Result};
use crate::idx;
use crate::input::{InputShape, Normalization};

/// Images of one size with one class label each, pixels as `u8`.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `len * channels * rows * cols` pixels, one image after another, each channel-major
    /// (all red values, then green, then blue), each plane row-major: NCHW, as models take it.
    pub pixels: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u8>,
    /// Colour channels: 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image (channels x rows x cols).
    pub fn image_len(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// The images' geometry, as a model's input.
    pub fn shape(&self) -> InputShape {
        InputShape {
            channels: self.channels,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The images at `indices` as model input: pixels scaled to [0, 1] and normalized channel
    /// by channel, image after image (NCHW).
    pub fn normalized(&self, indices: &[usize], norm: Normalization) -> Vec<f32> {
        let plane = self.rows * self.cols;
        let luts: Vec<Vec<f32>> = (0..self.channels)
            .map(|c| (0..=255u8).map(|p| norm.apply(c, p)).collect())
            .collect();
        let mut out = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            for (pixels, lut) in self.image(i).chunks(plane.max(1)).zip(&luts) {
                out.extend(pixels.iter().map(|&p| lut[p as usize]));
            }
        }
        out
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Dataset {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            channels: self.channels,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// The first `n` images (all of them if `n` is larger).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        self.select(&(0..n).collect::<Vec<_>>())
    }

    /// Reads a pair of IDX files: images `[N, rows, cols]` (grayscale, as MNIST) or
    /// `[N, channels, rows, cols]` (channels 1 or 3, as [`Dataset::write_idx_gz`] writes colour
    /// images), and labels `[N]`.
    pub fn from_idx(images: &Path, labels: &Path) -> Result<Dataset> {
        let img = idx::read_idx(images)?;
        let lab = idx::read_idx(labels)?;
        let (channels, rows, cols) = match img.dims[..] {
            [_, rows, cols] => (1, rows, cols),
            [_, channels @ (1 | 3), rows, cols] => (channels, rows, cols),
            _ => {
                return Err(Error::Idx {
                    path: images.into(),
                    reason: format!(
                        "images must be [N, rows, cols] or [N, channels (1 or 3), rows, cols], found {:?}",
                        img.dims
                    ),
                })
            }
        };
        if lab.dims.len() != 1 {
            return Err(Error::Idx {
                path: labels.into(),
                reason: format!("labels must have rank 1 [N], found {:?}", lab.dims),
            });
        }
        if img.dims[0] != lab.dims[0] {
            return Err(Error::Dataset {
                dir: images.parent().unwrap_or(images).into(),
                reason: format!(
                    "{} holds {} images but {} holds {} labels",
                    images.display(),
                    img.dims[0],
                    labels.display(),
                    lab.dims[0]
                ),
            });
        }
        if rows == 0 || cols == 0 {
            return Err(Error::Idx {
                path: images.into(),
                reason: format!("empty image size {:?}", &img.dims[1..]),
            });
        }
        if let Some(&bad) = lab.data.iter().find(|&&l| l as usize >= NUM_CLASSES) {
            return Err(Error::Idx {
                path: labels.into(),
                reason: format!("label {bad} is outside 0..{NUM_CLASSES}"),
            });
        }
        Ok(Dataset {
            pixels: img.data,
            labels: lab.data,
            channels,
            rows,
            cols,
        })
    }

    /// Writes the dataset as a gzipped IDX pair: grayscale images as MNIST's `[N, rows, cols]`,
    /// colour ones as `[N, 3, rows, cols]`.
    pub fn write_idx_gz(&self, images: &Path, labels: &Path) -> Result<()> {
        let dims = if self.channels == 1 {
            vec![self.len(), self.rows, self.cols]
        } else {
            vec![self.len(), self.channels, self.rows, self.cols]
        };
        write_gz(images, &idx::encode(&dims, &self.pixels))?;
        write_gz(labels, &idx::encode(&[self.len()], &self.labels))
    }

    /// Images per class (classes 0 to the highest label), for reports.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.labels.iter().max().map_or(0, |&m| m as usize + 1)];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// The size and colour an image folder is decoded to; what is left `None` is taken from its
/// first image (in label, then file-name order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageOptions {
    /// Height and width images are resized to.
    pub size: Option<(usize, usize)>,
    /// 1 (grayscale, Pillow's luma weights) or 3 (RGB).
    pub channels: Option<usize>,
}

impl ImageOptions {
    /// Exactly `shape`, e.g. the input of the model that will see the images.
    pub fn exactly(shape: InputShape) -> ImageOptions {
        ImageOptions {
            size: Some((shape.rows, shape.cols)),
            channels: Some(shape.channels),
        }
    }

    /// The parts given here, the rest from `fallback` (called only when something is missing).
    pub fn resolve(&self, fallback: impl FnOnce() -> Result<InputShape>) -> Result<InputShape> {
        let (size, channels) = match (self.size, self.channels) {
            (Some(size), Some(channels)) => (size, channels),
            (size, channels) => {
                let f = fallback()?;
                (
                    size.unwrap_or((f.rows, f.cols)),
                    channels.unwrap_or(f.channels),
                )
            }
        };
        Ok(InputShape {
            channels,
            rows: size.0,
            cols: size.1,
        })
    }
}

/// Classes in MNIST-like data (digits 0-9): what IDX labels may be.
pub const NUM_CLASSES: usize = 10;

/// Most classes a dataset may have (labels are bytes).
pub const MAX_CLASSES: usize = 256;

fn write_gz(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)
        .map_err(Error::io("compressing", path))?;
    let gz = enc.finish().map_err(Error::io("compressing", path))?;
    crate::atomic::write(path, &gz)
}

/// A train/test pair read from a directory of IDX files laid out as MNIST ships.
#[derive(Debug, Clone)]
pub struct Splits {
    /// The training set.
    pub train: Dataset,
    /// The test set.
    pub test: Dataset,
    /// Class names in label order, when the data names them (an image folder's class
    /// folders); empty for IDX files.
    pub class_names: Vec<String>,
}

/// The four MNIST file stems, in (train images, train labels, test images, test labels) order.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Refuses a dataset path that is missing or not a directory, saying which.
pub(crate) fn require_dir(dir: &Path) -> Result<()> {
    require_dir_of(
        dir,
        "not a directory (a dataset is a directory of MNIST-layout IDX files or an image folder)",
    )
}

/// [`require_dir`], saying `not_a_directory` when the path is something else.
pub(crate) fn require_dir_of(dir: &Path, not_a_directory: &str) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    Err(Error::Dataset {
        dir: dir.into(),
        reason: if dir.exists() {
            not_a_directory
        } else {
            "no such directory"
        }
        .into(),
    })
}

impl Splits {
    /// Classes the data holds: one past the highest label in either split (at least 2), so
    /// 10 for MNIST and the class-folder count for an image folder.
    pub fn classes(&self) -> usize {
        let top = |d: &Dataset| d.labels.iter().max().map_or(0, |&m| m as usize + 1);
        top(&self.train).max(top(&self.test)).max(2)
    }

    /// Writes both splits as gzipped IDX files into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::atomic::create_dir(dir)?;
        let f = |i: usize| dir.join(format!("{}.gz", MNIST_FILES[i]));
        self.train.write_idx_gz(&f(0), &f(1))?;
        self.test.write_idx_gz(&f(2), &f(3))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic toy dataset: class `c` lights a 3x3 block at a class-specific place.
    pub fn toy(n: usize, seed: u8) -> Dataset {
        let (rows, cols) = (28, 28);
        let mut pixels = vec![0u8; n * rows * cols];
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let c = (i * 7 + seed as usize) % NUM_CLASSES;
            labels.push(c as u8);
            let (r0, c0) = (4 + (c / 5) * 10, 2 + (c % 5) * 5);
            for r in r0..r0 + 3 {
                for cc in c0..c0 + 3 {
                    pixels[i * rows * cols + r * cols + cc] = 200 + ((i + r) % 50) as u8;
                }
            }
        }
        Dataset {
            pixels,
            labels,
            channels: 1,
            rows,
            cols,
        }
    }

    #[test]
    fn splits_round_trip_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = Splits {
            train: toy(30, 0),
            test: toy(10, 3),
            class_names: vec![],
        };
        s.write(dir.path()).unwrap();
        let back = Splits::load(dir.path()).unwrap();
        assert_eq!(back.train.pixels, s.train.pixels);
        assert_eq!(back.test.labels, s.test.labels);
    }

    #[test]
    fn colour_images_round_trip_as_four_dimensional_idx() {
        let dir = tempfile::tempdir().unwrap();
        let colour = |n: usize| Dataset {
            pixels: (0..n * 3 * 4 * 5).map(|i| (i * 7 % 256) as u8).collect(),
            labels: (0..n as u8).map(|i| i % 3).collect(),
            channels: 3,
            rows: 4,
            cols: 5,
        };
        let s = Splits {
            train: colour(6),
            test: colour(2),
            class_names: vec![],
        };
        s.write(dir.path()).unwrap();
        let back = Splits::load(dir.path()).unwrap();
        assert_eq!(back.train.shape(), s.train.shape());
        assert_eq!(back.train.pixels, s.train.pixels);
        assert_eq!(back.test.labels, s.test.labels);
        // IDX files are taken as they are: asking for another shape is refused, not resized.
        let gray = ImageOptions {
            size: None,
            channels: Some(1),
        };
        let err = Splits::load_with(dir.path(), 0, gray)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hold 4x5 RGB images, not 4x5 grayscale"),
            "{err}"
        );
        let two = dir.path().join("two");
        let label = dir.path().join("label");
        std::fs::write(&two, idx::encode(&[1, 2, 2, 2], &[0; 8])).unwrap();
        std::fs::write(&label, idx::encode(&[1], &[0])).unwrap();
        let err = Dataset::from_idx(&two, &label).unwrap_err();
        assert!(err.to_string().contains("channels (1 or 3)"), "{err}");
    }

    #[test]
    fn mismatched_counts_and_missing_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let err = Splits::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte"), "{err}");
        let s = Splits {
            train: toy(30, 0),
            test: toy(10, 3),
            class_names: vec![],
        };
        s.write(dir.path()).unwrap();
        let short = toy(29, 0);
        write_gz(
            &dir.path().join("train-labels-idx1-ubyte.gz"),
            &idx::encode(&[29], &short.labels),
        )
        .unwrap();
        let err = Splits::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("30 images") && err.contains("29 labels"),
            "{err}"
        );
    }

    #[test]
    fn labels_out_of_range_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("i");
        let lab = dir.path().join("l");
        std::fs::write(&img, idx::encode(&[1, 2, 2], &[0; 4])).unwrap();
        std::fs::write(&lab, idx::encode(&[1], &[12])).unwrap();
        assert!(Dataset::from_idx(&img, &lab)
            .unwrap_err()
            .to_string()
            .contains("label 12"));
    }
}
