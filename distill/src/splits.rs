//! Reading a dataset directory: MNIST's IDX layout (`train-*` and `t10k-*` files, gzipped or
//! raw) or an image folder ([`crate::image_folder`]), into [`Splits`].

use std::path::{Path, PathBuf};

use crate::dataset::{require_dir, Dataset, ImageOptions, Splits, MNIST_FILES};
use crate::error::{Error, Result};

/// Finds `stem`, `stem.gz`, or the `stem.idx3-ubyte` spelling some mirrors use, in `dir`.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    for name in [
        format!("{stem}.gz"),
        stem.to_string(),
        format!("{dotted}.gz"),
        dotted.clone(),
    ] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::Dataset { dir: dir.into(), reason: format!("no {stem}[.gz] here (expected the MNIST IDX layout, which `edgekd data fetch mnist --dir {}` downloads, or an image folder: one subfolder of PNG/JPEG files per class)", dir.display()) })
}

impl Splits {
    /// Loads `train-*` and `t10k-*` IDX files (gzipped or raw) from `dir`, or, when `dir`
    /// holds no IDX file and is laid out as an image folder (`class/image.png`, optionally
    /// under `train/` and `test/`), its images at the size and colour of its first image
    /// ([`crate::image_folder`]).
    pub fn load(dir: &Path) -> Result<Splits> {
        Splits::load_with(dir, 0, ImageOptions::default())
    }

    /// [`Splits::load`], with the seed that picks the held-out sixth of each class when an
    /// image folder has no `test/` (IDX files and `train/` + `test/` folders ignore it), and
    /// the size and colour an image folder is decoded to. IDX files are read as they are; a
    /// size or colour they do not have is refused.
    pub fn load_with(dir: &Path, split_seed: u64, image: ImageOptions) -> Result<Splits> {
        require_dir(dir)?;
        if Splits::is_image_folder(dir) {
            return crate::image_folder::load_splits(dir, image, split_seed);
        }
        let p: Vec<PathBuf> = MNIST_FILES
            .iter()
            .map(|s| find(dir, s))
            .collect::<Result<_>>()?;
        let train = Dataset::from_idx(&p[0], &p[1])?;
        let test = Dataset::from_idx(&p[2], &p[3])?;
        if train.shape() != test.shape() {
            return Err(Error::Dataset {
                dir: dir.into(),
                reason: format!(
                    "train images are {} but test images are {}",
                    train.shape(),
                    test.shape()
                ),
            });
        }
        if train.is_empty() || test.is_empty() {
            return Err(Error::Dataset {
                dir: dir.into(),
                reason: "train or test set is empty".into(),
            });
        }
        let (shape, wanted) = (train.shape(), image.resolve(|| Ok(train.shape()))?);
        if wanted != shape {
            return Err(Error::Dataset {
                dir: dir.into(),
                reason: format!(
                    "its IDX files hold {shape} images, not {wanted}; only image folders are \
                     resized or converted when loaded"
                ),
            });
        }
        Ok(Splits {
            train,
            test,
            class_names: vec![],
        })
    }

    /// Whether [`Splits::load`] reads `dir` as an image folder: it holds no IDX files and is
    /// laid out as one.
    pub fn is_image_folder(dir: &Path) -> bool {
        find(dir, MNIST_FILES[0]).is_err() && crate::image_folder::is_image_folder(dir)
    }
}
