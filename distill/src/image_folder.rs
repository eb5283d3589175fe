//! Image-folder datasets laid out as torchvision's `ImageFolder`: `root/<class>/<image>`, the
//! classes sorted by name and numbered from 0, PNG and JPEG files sorted by name within each.
//! A dataset directory holds either `train/` and `test/` in that layout (as `mnist_png` and
//! most exported datasets ship) or one such folder, split per class by a fixed seed.
//!
//! Images are decoded by the runtime's decoder (the one `edgekd run` uses), resized to one size
//! and kept in RGB or converted to grayscale with Pillow's weights. The size and colour are
//! given ([`ImageOptions`]) or taken from the first image, so a folder of 32x32 colour images
//! loads as 32x32 RGB without being told.

use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, ImageOptions, Splits, MAX_CLASSES};
use crate::error::{Error, Result};
use crate::input::InputShape;

/// File extensions read as images (compared without case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The share of each class held out as the test set when the folder has no `test/`.
pub const HELD_OUT: f64 = 1.0 / 6.0;

/// The class folders and image files under one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    /// The folder scanned.
    pub root: PathBuf,
    /// Class names (folder names), sorted; a class's label is its index here.
    pub classes: Vec<String>,
    /// Every image with its label, by class then file name.
    pub files: Vec<(PathBuf, u8)>,
}

fn is_image(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(Error::io("listing", dir))? {
        out.push(e.map_err(Error::io("listing", dir))?.path());
    }
    out.sort();
    Ok(out)
}

/// Whether `dir` looks like an image folder: a subdirectory (itself, or under `train/`)
/// holding at least one image.
pub fn is_image_folder(dir: &Path) -> bool {
    let holds_images = |d: &Path| {
        std::fs::read_dir(d)
            .map(|rd| rd.flatten().any(|e| is_image(&e.path())))
            .unwrap_or(false)
    };
    let has_class = |d: &Path| {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.path().is_dir() && holds_images(&e.path()))
            })
            .unwrap_or(false)
    };
    has_class(dir) || has_class(&dir.join("train"))
}

impl ImageFolder {
    /// Lists the classes and images under `root`. Other files are ignored, as torchvision
    /// does; a class folder with no image, or more classes than the models have outputs,
    /// is an error.
    pub fn scan(root: &Path) -> Result<ImageFolder> {
        let bad = |reason: String| Error::Dataset {
            dir: root.into(),
            reason,
        };
        let mut classes = Vec::new();
        let mut files = Vec::new();
        for class_dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
            let name = class_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let images: Vec<PathBuf> = sorted_entries(&class_dir)?
                .into_iter()
                .filter(|p| is_image(p))
                .collect();
            if images.is_empty() {
                return Err(bad(format!(
                    "class folder `{name}` holds no {} file",
                    IMAGE_EXTENSIONS.join("/")
                )));
            }
            let label = classes.len() as u8;
            files.extend(images.into_iter().map(|p| (p, label)));
            classes.push(name);
            if classes.len() > MAX_CLASSES {
                return Err(bad(format!(
                    "more than {MAX_CLASSES} class folders (labels are bytes)"
                )));
            }
        }
        if classes.len() < 2 {
            return Err(bad(format!(
                "found {} class folder(s) holding images; an image folder has one folder per \
                 class (at least 2), e.g. {}/cat/1.png, {}/dog/1.png",
                classes.len(),
                root.display(),
                root.display()
            )));
        }
        Ok(ImageFolder {
            root: root.into(),
            classes,
            files,
        })
    }

    /// The shape `options` asks for, what they leave open taken from the first image's header:
    /// its size, and RGB when it is stored in colour, grayscale otherwise.
    pub fn shape(&self, options: ImageOptions) -> Result<InputShape> {
        options.resolve(|| {
            let (path, _) = self.files.first().ok_or_else(|| Error::Dataset {
                dir: self.root.clone(),
                reason: "holds no image to take a size from".into(),
            })?;
            let h = read_image(path, edgekd_runtime::image::header)?;
            Ok(InputShape {
                channels: h.channels(),
                rows: h.height as usize,
                cols: h.width as usize,
            })
        })
    }

    /// Decodes every image to `shape` (channel-major bytes), naming the file that fails.
    pub fn load(&self, shape: InputShape) -> Result<Dataset> {
        let mut pixels = Vec::with_capacity(self.files.len() * shape.len());
        let mut labels = Vec::with_capacity(self.files.len());
        for (path, label) in &self.files {
            let image = read_image(path, |bytes| {
                let (c, h, w) = (shape.channels, shape.rows, shape.cols);
                edgekd_runtime::image::decode(bytes, c, h, w, Default::default())
            })?;
            pixels.extend(image);
            labels.push(*label);
        }
        Ok(Dataset {
            pixels,
            labels,
            channels: shape.channels,
            rows: shape.rows,
            cols: shape.cols,
        })
    }
}

/// `read` (the runtime's decoder or header reader) applied to the file at `path`, its errors
/// naming the file.
fn read_image<T>(
    path: &Path,
    read: impl FnOnce(&[u8]) -> std::result::Result<T, edgekd_runtime::image::ImageError>,
) -> Result<T> {
    let bytes = std::fs::read(path).map_err(Error::io("reading", path))?;
    read(&bytes).map_err(|source| Error::Image {
        path: path.into(),
        source,
    })
}

/// Every image under `dir` (subfolders included, in path order), decoded to `shape`, for
/// training on teachers' answers alone: the labels are placeholders (0) until a teacher labels
/// them.
pub fn load_unlabeled(dir: &Path, shape: InputShape) -> Result<Dataset> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for p in sorted_entries(dir)? {
            if p.is_dir() {
                walk(&p, out)?;
            } else if is_image(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    crate::dataset::require_dir_of(dir, "not a directory")?;
    let mut paths = Vec::new();
    walk(dir, &mut paths)?;
    if paths.is_empty() {
        return Err(Error::Dataset {
            dir: dir.into(),
            reason: format!("holds no {} file", IMAGE_EXTENSIONS.join("/")),
        });
    }
    ImageFolder {
        root: dir.into(),
        classes: vec![],
        files: paths.into_iter().map(|p| (p, 0)).collect(),
    }
    .load(shape)
}

/// The folder the training images (and the class list) come from: `dir/train` when `dir/test`
/// exists, else `dir` itself.
pub fn train_root(dir: &Path) -> PathBuf {
    if dir.join("test").is_dir() {
        dir.join("train")
    } else {
        dir.into()
    }
}

/// Loads an image-folder dataset directory as train/test splits, decoded as `image` says
/// (the rest from the first training image): `dir/train` and `dir/test` when `dir/test` exists
/// (their class lists must agree), else `dir` itself with [`HELD_OUT`] of each class, chosen by
/// `split_seed`, as the test set.
pub fn load_splits(dir: &Path, image: ImageOptions, split_seed: u64) -> Result<Splits> {
    let test_dir = dir.join("test");
    if test_dir.is_dir() {
        let (train, test) = (
            ImageFolder::scan(&train_root(dir))?,
            ImageFolder::scan(&test_dir)?,
        );
        if train.classes != test.classes {
            return Err(Error::Dataset {
                dir: dir.into(),
                reason: format!(
                    "train/ has classes {:?} but test/ has {:?}",
                    train.classes, test.classes
                ),
            });
        }
        let shape = train.shape(image)?;
        return Ok(Splits {
            train: train.load(shape)?,
            test: test.load(shape)?,
            class_names: train.classes,
        });
    }
    let folder = ImageFolder::scan(dir)?;
    let all = folder.load(folder.shape(image)?)?;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in 0..=all.labels.iter().copied().max().unwrap_or(0) {
        let members: Vec<usize> = (0..all.len()).filter(|&i| all.labels[i] == class).collect();
        if members.is_empty() {
            continue;
        }
        let order = crate::random::permutation(members.len(), split_seed, class as usize);
        let held = ((members.len() as f64 * HELD_OUT).round() as usize).clamp(1, members.len());
        for (k, &o) in order.iter().enumerate() {
            if k < held { &mut test } else { &mut train }.push(members[o]);
        }
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok(Splits {
        train: all.select(&train),
        test: all.select(&test),
        class_names: folder.classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::NUM_CLASSES;

    /// Writes `per_class` images of each digit of the shipped subset as PNG files under
    /// `root/<digit>/NNN.png`, returning the dataset they came from (in file order).
    fn write_folder(root: &Path, source: &Dataset, per_class: usize) -> Dataset {
        let mut picked = Vec::new();
        for class in 0..NUM_CLASSES as u8 {
            let dir = root.join(format!("digit-{class}"));
            std::fs::create_dir_all(&dir).unwrap();
            let members = (0..source.len()).filter(|&i| source.labels[i] == class);
            for (k, i) in members.take(per_class).enumerate() {
                image::GrayImage::from_raw(28, 28, source.image(i).to_vec())
                    .unwrap()
                    .save(dir.join(format!("{k:03}.png")))
                    .unwrap();
                picked.push(i);
            }
        }
        source.select(&picked)
    }

    fn subset() -> Splits {
        Splits::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-subset")).unwrap()
    }

    #[test]
    fn train_and_test_folders_load_pixel_for_pixel() {
        let s = subset();
        let dir = tempfile::tempdir().unwrap();
        let train = write_folder(&dir.path().join("train"), &s.train, 12);
        let test = write_folder(&dir.path().join("test"), &s.test, 3);
        std::fs::write(dir.path().join("train/digit-0/notes.txt"), "ignored").unwrap();
        assert!(is_image_folder(dir.path()));
        let loaded = load_splits(dir.path(), ImageOptions::default(), 0).unwrap();
        assert_eq!(loaded.train.pixels, train.pixels);
        assert_eq!(loaded.train.labels, train.labels);
        assert_eq!(loaded.test.pixels, test.pixels);
        assert_eq!(loaded.test.labels, test.labels);
        let folder = ImageFolder::scan(&dir.path().join("train")).unwrap();
        assert_eq!(folder.classes[3], "digit-3");
        assert_eq!(folder.files.len(), 120);
    }

    #[test]
    fn one_folder_is_split_per_class_by_seed() {
        let s = subset();
        let dir = tempfile::tempdir().unwrap();
        let all = write_folder(dir.path(), &s.train, 12);
        let a = load_splits(dir.path(), ImageOptions::default(), 0).unwrap();
        let b = load_splits(dir.path(), ImageOptions::default(), 0).unwrap();
        // Another split seed holds out other images, as many per class.
        let c = load_splits(dir.path(), ImageOptions::default(), 7).unwrap();
        assert_eq!((c.train.len(), c.test.len()), (a.train.len(), a.test.len()));
        assert_ne!(c.test.pixels, a.test.pixels);
        assert_eq!(a.train.pixels, b.train.pixels, "the split is fixed");
        // 12 per class: 2 held out (12/6), 10 kept, in every class.
        assert_eq!(a.test.class_counts(), [2; NUM_CLASSES]);
        assert_eq!(a.train.class_counts(), [10; NUM_CLASSES]);
        // Together they are the folder, each image once.
        let mut seen: Vec<&[u8]> = (0..a.train.len())
            .map(|i| a.train.image(i))
            .chain((0..a.test.len()).map(|i| a.test.image(i)))
            .collect();
        let mut want: Vec<&[u8]> = (0..all.len()).map(|i| all.image(i)).collect();
        seen.sort();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn images_are_resized_and_bad_files_named() {
        let dir = tempfile::tempdir().unwrap();
        for class in ["a", "b"] {
            std::fs::create_dir_all(dir.path().join(class)).unwrap();
            image::GrayImage::from_pixel(40, 30, image::Luma([90]))
                .save(dir.path().join(class).join("x.png"))
                .unwrap();
        }
        let folder = ImageFolder::scan(dir.path()).unwrap();
        let d = folder.load(InputShape::MNIST).unwrap();
        assert_eq!((d.len(), d.shape()), (2, InputShape::MNIST));
        assert!(d.pixels.iter().all(|&p| p == 90));
        std::fs::write(dir.path().join("b/broken.jpg"), b"not a jpeg").unwrap();
        let err = ImageFolder::scan(dir.path())
            .unwrap()
            .load(InputShape::MNIST)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("broken.jpg") && err.contains("not a readable"),
            "{err}"
        );
    }

    #[test]
    fn colour_and_size_come_from_the_first_image_unless_given() {
        let dir = tempfile::tempdir().unwrap();
        // Two classes told apart by hue alone: the same luma in grayscale.
        // Pillow's luma: (130 * 38470 + 2^15) >> 16 = 76 = (255 * 19595 + 2^15) >> 16.
        let colours = [("green", [0, 130, 0]), ("red", [255, 0, 0])];
        for (class, rgb) in colours {
            for split in ["train", "test"] {
                let d = dir.path().join(split).join(class);
                std::fs::create_dir_all(&d).unwrap();
                image::RgbImage::from_pixel(40, 30, image::Rgb(rgb))
                    .save(d.join("x.png"))
                    .unwrap();
            }
        }
        let s = load_splits(dir.path(), ImageOptions::default(), 0).unwrap();
        let rgb = InputShape {
            channels: 3,
            rows: 30,
            cols: 40,
        };
        assert_eq!((s.train.shape(), s.test.shape()), (rgb, rgb));
        // Channel-major: the green image's red plane, then green, then blue.
        let plane = 30 * 40;
        let green = s.train.image(0);
        assert!(green[..plane].iter().all(|&p| p == 0));
        assert!(green[plane..2 * plane].iter().all(|&p| p == 130));
        assert!(green[2 * plane..].iter().all(|&p| p == 0));
        assert_eq!((s.train.image(1)[0], s.train.image(1)[plane]), (255, 0));
        // Asked for grayscale at 8x8, hue is gone: both classes are one gray level.
        let gray = ImageOptions {
            size: Some((8, 8)),
            channels: Some(1),
        };
        let g = load_splits(dir.path(), gray, 0).unwrap();
        assert_eq!(
            g.train.shape(),
            InputShape {
                channels: 1,
                rows: 8,
                cols: 8
            }
        );
        assert_eq!(g.train.image(0), g.train.image(1));
        assert!(g.train.image(0).iter().all(|&p| p == 76));
        // Only the size given: colour still from the image.
        let sized = ImageOptions {
            size: Some((16, 12)),
            channels: None,
        };
        let shape = load_splits(dir.path(), sized, 0).unwrap().train.shape();
        assert_eq!((shape.channels, shape.rows, shape.cols), (3, 16, 12));
    }

    #[test]
    fn unlabeled_folders_load_every_image_below_them_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let source = subset().test;
        // Labelled layout, read as unlabelled: classes are just subfolders here.
        let written = write_folder(dir.path(), &source, 3);
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        let data = load_unlabeled(dir.path(), InputShape::MNIST).unwrap();
        assert_eq!(data.len(), written.len());
        assert_eq!(
            data.pixels, written.pixels,
            "same images, same (path) order"
        );
        assert!(data.labels.iter().all(|&l| l == 0));
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = load_unlabeled(&empty, InputShape::MNIST)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no png/jpg/jpeg file"), "{err}");
        let err = load_unlabeled(&dir.path().join("nope"), InputShape::MNIST)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such directory"), "{err}");
    }

    #[test]
    fn layouts_that_are_not_image_folders_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("only")).unwrap();
        image::GrayImage::new(2, 2)
            .save(dir.path().join("only/x.png"))
            .unwrap();
        let err = ImageFolder::scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("found 1 class folder"), "{err}");
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        let err = ImageFolder::scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("`empty` holds no png/jpg/jpeg file"), "{err}");
        for c in 0..11 {
            let d = dir.path().join(format!("c{c:02}"));
            std::fs::create_dir_all(&d).unwrap();
            image::GrayImage::new(2, 2).save(d.join("x.png")).unwrap();
        }
        std::fs::remove_dir(dir.path().join("empty")).unwrap();
        // Not only digits: 12 classes are 12 outputs.
        assert_eq!(ImageFolder::scan(dir.path()).unwrap().classes.len(), 12);
    }
}
