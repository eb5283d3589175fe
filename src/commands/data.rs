//! `edgekd data`: fetch, verify, inspect and cut MNIST-layout datasets.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use edgekd_distill::fetch::{self, FileStatus, MNIST_MIRRORS};
use edgekd_distill::random::permutation;
use edgekd_distill::Splits;

/// Datasets edgekd knows how to fetch.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Known {
    /// MNIST handwritten digits (Y. LeCun and C. Cortes; CC BY-SA 3.0): 60,000 train + 10,000 test
    Mnist,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download a dataset from its public mirrors and verify its SHA-256 sums.
    ///
    /// Files already present with the right sum are kept; a file with a wrong sum is
    /// fetched again. A mirror may also be a local directory holding the files.
    #[command(
        after_help = "Example: edgekd data fetch mnist --dir data/mnist\n         edgekd data fetch mnist --dir data/mnist --mirror /mnt/share/mnist"
    )]
    Fetch(FetchArgs),
    /// Check a directory of MNIST files against the published SHA-256 sums, and that they parse.
    Verify(DirArgs),
    /// Print the size, image shape and class balance of each split in a directory.
    Info(DirArgs),
    /// Cut a seeded random subset of a dataset into a new directory (how data/mnist-subset was made).
    #[command(
        after_help = "Example: edgekd data subset --from ../shared/data/mnist --out data/mnist-subset --train 10000 --test 2000"
    )]
    Subset(SubsetArgs),
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct FetchArgs {
    /// Which dataset
    #[arg(value_enum)]
    dataset: Known,
    /// Directory to download into (created if needed)
    #[arg(long)]
    dir: PathBuf,
    /// A base URL or local directory to fetch from, tried in order; repeatable [default: the public mirrors]
    #[arg(long = "mirror", value_name = "URL|DIR")]
    mirrors: Vec<String>,
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct DirArgs {
    /// Dataset directory: MNIST-layout IDX files (gzipped or raw), or for `info` also an image folder
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct SubsetArgs {
    /// Source directory of MNIST-layout IDX files
    #[arg(long)]
    from: PathBuf,
    /// Directory to write the gzipped subset to
    #[arg(long)]
    out: PathBuf,
    /// Training images to keep
    #[arg(long, default_value_t = 10_000)]
    train: usize,
    /// Test images to keep
    #[arg(long, default_value_t = 2_000)]
    test: usize,
    /// Seed of the random selection
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Fetch(a) => {
            let Known::Mnist = a.dataset;
            let mirrors = if a.mirrors.is_empty() {
                MNIST_MIRRORS.iter().map(|s| s.to_string()).collect()
            } else {
                a.mirrors
            };
            fetch::fetch_mnist(&a.dir, &mirrors, |name, status| match status {
                FileStatus::AlreadyValid => eprintln!("{name}: present, SHA-256 verified"),
                FileStatus::Fetched { mirror, bytes } => {
                    eprintln!("{name}: {bytes} bytes from {mirror}, SHA-256 verified")
                }
            })
            .with_context(|| format!("fetching MNIST into {}", a.dir.display()))?;
            let s = Splits::load(&a.dir)?;
            println!(
                "MNIST ready in {}: {} train, {} test images",
                a.dir.display(),
                s.train.len(),
                s.test.len()
            );
        }
        DataCommand::Verify(a) => {
            fetch::verify_mnist(&a.dir)
                .with_context(|| format!("verifying {}", a.dir.display()))?;
            let s = Splits::load(&a.dir)?;
            println!("{}: the four MNIST files match their published SHA-256 sums and parse ({} train, {} test images)", a.dir.display(), s.train.len(), s.test.len());
        }
        DataCommand::Info(a) => {
            let s = Splits::load(&a.dir).with_context(|| format!("loading {}", a.dir.display()))?;
            if Splits::is_image_folder(&a.dir) {
                use edgekd_distill::image_folder::{train_root, ImageFolder};
                let folder = ImageFolder::scan(&train_root(&a.dir))?;
                println!(
                    "image folder, classes (label order): {}",
                    folder.classes.join(", ")
                );
            }
            for (name, d) in [("train", &s.train), ("test", &s.test)] {
                println!(
                    "{name}: {} images of {}, per class {:?}",
                    d.len(),
                    d.shape(),
                    d.class_counts()
                );
            }
        }
        DataCommand::Subset(a) => {
            let s =
                Splits::load(&a.from).with_context(|| format!("loading {}", a.from.display()))?;
            if a.train == 0 || a.test == 0 || a.train > s.train.len() || a.test > s.test.len() {
                bail!(
                    "asked for {} train and {} test images; the source has {} and {}",
                    a.train,
                    a.test,
                    s.train.len(),
                    s.test.len()
                );
            }
            let pick = |n: usize, len: usize, stream: usize| {
                let mut idx = permutation(len, a.seed, stream);
                idx.truncate(n);
                idx.sort_unstable();
                idx
            };
            let sub = Splits {
                train: s.train.select(&pick(a.train, s.train.len(), 0)),
                test: s.test.select(&pick(a.test, s.test.len(), 1)),
                class_names: vec![],
            };
            sub.write(&a.out)?;
            println!(
                "wrote {} train and {} test images to {}",
                sub.train.len(),
                sub.test.len(),
                a.out.display()
            );
        }
    }
    Ok(())
}
