//! Downloading MNIST from its public mirrors, verified against published SHA-256 sums.
//!
//! A mirror is an `http(s)://` base URL or a local directory, so the same code path serves
//! air-gapped machines (copy from a share) and is testable without a network.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::dataset::MNIST_FILES;
use crate::error::{Error, Result};

/// SHA-256 of the four gzipped MNIST files, in [`MNIST_FILES`] order, as distributed by
/// Y. LeCun and C. Cortes and mirrored unchanged by torchvision and TensorFlow.
pub const MNIST_SHA256: [&str; 4] = [
    "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
];

/// Mirrors tried in order when the user names none.
pub const MNIST_MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];

/// Largest file accepted from a mirror; MNIST's biggest is 9.9 MB.
#[cfg(feature = "fetch")]
const MAX_DOWNLOAD_BYTES: u64 = 64 << 20;

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Already present with the right sum.
    AlreadyValid,
    /// Fetched from this mirror and verified.
    Fetched {
        /// The mirror that served it.
        mirror: String,
        /// Its size in bytes.
        bytes: u64,
    },
}

/// SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(Error::io("opening", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(Error::io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a file against its expected sum.
pub fn verify_file(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual == expected {
        Ok(())
    } else {
        Err(Error::Checksum {
            path: path.into(),
            expected: expected.into(),
            actual,
        })
    }
}

/// Verifies the four gzipped MNIST files in `dir`.
pub fn verify_mnist(dir: &Path) -> Result<()> {
    crate::dataset::require_dir(dir)?;
    for (stem, sum) in MNIST_FILES.iter().zip(MNIST_SHA256) {
        let path = dir.join(format!("{stem}.gz"));
        if !path.is_file() {
            return Err(Error::Dataset {
                dir: dir.into(),
                reason: format!("{stem}.gz is missing"),
            });
        }
        verify_file(&path, sum)?;
    }
    Ok(())
}

/// Makes sure `dir` holds the four verified MNIST files, fetching what is missing or corrupt
/// from the first mirror that serves a file with the right sum. `on_file` hears about each file.
pub fn fetch_mnist(
    dir: &Path,
    mirrors: &[String],
    mut on_file: impl FnMut(&str, &FileStatus),
) -> Result<()> {
    crate::atomic::create_dir(dir)?;
    for (stem, sum) in MNIST_FILES.iter().zip(MNIST_SHA256) {
        let name = format!("{stem}.gz");
        let dest = dir.join(&name);
        if dest.is_file() && verify_file(&dest, sum).is_ok() {
            on_file(&name, &FileStatus::AlreadyValid);
            continue;
        }
        let mut failures = Vec::new();
        let mut done = None;
        for mirror in mirrors {
            match fetch_one(mirror, &name, &dest, sum) {
                Ok(bytes) => {
                    done = Some(FileStatus::Fetched {
                        mirror: mirror.clone(),
                        bytes,
                    });
                    break;
                }
                Err(e) => failures.push(format!("{mirror}: {}", error_chain(&e))),
            }
        }
        match done {
            Some(status) => on_file(&name, &status),
            None => {
                return Err(Error::Download {
                    file: name,
                    reason: failures.join("; "),
                })
            }
        }
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Copies or downloads one file to a temporary name, verifies it, then renames it into place.
fn fetch_one(mirror: &str, name: &str, dest: &Path, sum: &str) -> Result<u64> {
    let tmp = dest.with_file_name(format!(".{name}.download"));
    let result = (|| {
        let bytes = if mirror.starts_with("http://") || mirror.starts_with("https://") {
            download(&format!("{}/{name}", mirror.trim_end_matches('/')), &tmp)?
        } else {
            let src = PathBuf::from(mirror).join(name);
            std::fs::copy(&src, &tmp).map_err(Error::io("copying", &src))?
        };
        verify_file(&tmp, sum)?;
        std::fs::rename(&tmp, dest).map_err(Error::io("renaming into place", dest))?;
        Ok(bytes)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(feature = "fetch")]
fn download(url: &str, to: &Path) -> Result<u64> {
    let fail = |reason: String| Error::Download {
        file: url.into(),
        reason,
    };
    let response = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut body = response
        .into_body()
        .into_reader()
        .take(MAX_DOWNLOAD_BYTES + 1);
    let mut file = std::fs::File::create(to).map_err(Error::io("creating", to))?;
    let n = std::io::copy(&mut body, &mut file).map_err(Error::io("downloading to", to))?;
    if n > MAX_DOWNLOAD_BYTES {
        return Err(fail(format!("larger than {MAX_DOWNLOAD_BYTES} bytes")));
    }
    Ok(n)
}

#[cfg(not(feature = "fetch"))]
fn download(url: &str, _to: &Path) -> Result<u64> {
    Err(Error::Download {
        file: url.into(),
        reason: "built without the `fetch` feature; pass a local directory as mirror".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_a_known_vector() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let err = verify_file(&p, "00").unwrap_err().to_string();
        assert!(
            err.contains("SHA-256 mismatch") && err.contains("abc"),
            "{err}"
        );
    }

    #[test]
    fn a_mirror_serving_wrong_bytes_leaves_nothing_behind() {
        let mirror = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        for stem in MNIST_FILES {
            std::fs::write(mirror.path().join(format!("{stem}.gz")), b"not mnist").unwrap();
        }
        let mirrors = vec![mirror.path().display().to_string()];
        let err = fetch_mnist(dest.path(), &mirrors, |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("SHA-256 mismatch"), "{err}");
        assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0);
    }

    #[test]
    fn unreachable_mirrors_are_all_reported() {
        let dest = tempfile::tempdir().unwrap();
        let mirrors = vec!["/nonexistent/a".to_string(), "/nonexistent/b".to_string()];
        let err = fetch_mnist(dest.path(), &mirrors, |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/a") && err.contains("/nonexistent/b"),
            "{err}"
        );
    }
}
