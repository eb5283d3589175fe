//! Reader for the IDX format that MNIST ships in (raw or gzipped).
//!
//! A header is only a claim: the reader checks magic, element type, rank and every dimension
//! against limits before trusting it, and reads at most the claimed number of bytes (plus one,
//! to detect trailing data) without ever allocating the claimed size up front.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// What can go wrong reading an IDX file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdxError {
    /// Reading the file failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done ("opening", "reading", "decoding").
        action: &'static str,
        /// The file at fault.
        path: std::path::PathBuf,
        /// The operating system's (or decompressor's) error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid IDX file.
    #[error("{}: invalid IDX file: {reason}", path.display())]
    Format {
        /// The file at fault.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl IdxError {
    fn io<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> IdxError + 'a {
        move |source| IdxError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

type Error = IdxError;
type Result<T> = std::result::Result<T, IdxError>;

/// Upper bound on the elements one IDX file may hold (2^31, about 2.1 GB of u8).
pub const DEFAULT_MAX_ELEMENTS: u64 = 1 << 31;

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The elements in row-major order.
    pub data: Vec<u8>,
}

/// Reads an IDX file of `u8` elements, gzipped or not, with the default element limit.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    read_idx_with_limit(path, DEFAULT_MAX_ELEMENTS)
}

/// Reads an IDX file of `u8` elements, refusing headers that claim more than `max_elements`.
pub fn read_idx_with_limit(path: &Path, max_elements: u64) -> Result<IdxArray> {
    let file = File::open(path).map_err(IdxError::io("opening", path))?;
    parse_maybe_gzipped(path, BufReader::new(file), max_elements)
}

/// Parses IDX bytes that may be gzipped (told by their first two bytes); `path` only names
/// the source in errors.
pub fn parse_maybe_gzipped(
    path: &Path,
    mut reader: impl Read,
    max_elements: u64,
) -> Result<IdxArray> {
    let mut magic = [0u8; 2];
    let peeked = read_up_to(&mut reader, &mut magic).map_err(IdxError::io("reading", path))?;
    let head = std::io::Cursor::new(magic[..peeked].to_vec()).chain(reader);
    if peeked == 2 && magic == [0x1f, 0x8b] {
        parse(path, flate2::read::GzDecoder::new(head), max_elements)
    } else {
        parse(path, head, max_elements)
    }
}

/// Parses IDX bytes from any reader; `path` only names the source in errors.
pub fn parse(path: &Path, mut reader: impl Read, max_elements: u64) -> Result<IdxArray> {
    let bad = |reason: String| Error::Format {
        path: path.to_path_buf(),
        reason,
    };
    let mut header = [0u8; 4];
    let got = read_up_to(&mut reader, &mut header).map_err(IdxError::io("decoding", path))?;
    if got < 4 {
        return Err(bad(format!(
            "file is {got} bytes long, shorter than the 4-byte magic number"
        )));
    }
    if header[0] != 0 || header[1] != 0 {
        return Err(bad(format!(
            "magic number {:02x}{:02x}{:02x}{:02x} does not start with two zero bytes",
            header[0], header[1], header[2], header[3]
        )));
    }
    if header[2] != 0x08 {
        return Err(bad(format!(
            "element type 0x{:02x} is not supported (only 0x08, unsigned byte, as MNIST uses)",
            header[2]
        )));
    }
    let rank = header[3] as usize;
    if rank == 0 || rank > 4 {
        return Err(bad(format!("rank {rank} is outside 1..=4")));
    }
    let mut dims = Vec::with_capacity(rank);
    let mut elements: u64 = 1;
    for axis in 0..rank {
        let mut word = [0u8; 4];
        let got = read_up_to(&mut reader, &mut word).map_err(IdxError::io("decoding", path))?;
        if got < 4 {
            return Err(bad(format!(
                "header truncated in dimension {axis} of {rank}"
            )));
        }
        let dim = u32::from_be_bytes(word) as u64;
        elements = elements
            .checked_mul(dim)
            .filter(|&n| n <= max_elements)
            .ok_or_else(|| {
                bad(format!(
                    "header claims more than {max_elements} elements (dimension {axis} is {dim})"
                ))
            })?;
        dims.push(dim as usize);
    }
    // Read through `take` so a lying header cannot make us buffer more than the file holds,
    // and the +1 tells "exactly right" from "trailing garbage".
    let mut data = Vec::new();
    reader
        .take(elements + 1)
        .read_to_end(&mut data)
        .map_err(IdxError::io("decoding", path))?;
    let found = data.len() as u64;
    if found < elements {
        return Err(bad(format!(
            "truncated: header {dims:?} needs {elements} bytes of data, file holds {found}"
        )));
    }
    if found > elements {
        return Err(bad(format!(
            "trailing data after the {elements} bytes that header {dims:?} describes"
        )));
    }
    Ok(IdxArray { dims, data })
}

/// Fills `buf` as far as the reader allows; returns how many bytes were read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Encodes a `u8` array as IDX bytes (used to cut subsets and in tests).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn parse_bytes(bytes: &[u8]) -> Result<IdxArray> {
        parse(Path::new("t.idx"), bytes, DEFAULT_MAX_ELEMENTS)
    }

    #[test]
    fn round_trips_a_small_array() {
        let bytes = encode(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let a = parse_bytes(&bytes).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn reads_gzipped_and_raw_files_alike() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode(&[3], &[7, 8, 9]);
        let raw = dir.path().join("a-idx1-ubyte");
        std::fs::write(&raw, &bytes).unwrap();
        let gz = dir.path().join("a-idx1-ubyte.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&bytes).unwrap();
        enc.finish().unwrap();
        assert_eq!(read_idx(&raw).unwrap(), read_idx(&gz).unwrap());
    }

    #[test]
    fn truncated_data_is_an_error_naming_the_file() {
        let mut bytes = encode(&[4], &[1, 2, 3, 4]);
        bytes.pop();
        let err = parse_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("t.idx") && err.contains("truncated"), "{err}");
    }

    #[test]
    fn trailing_data_is_an_error() {
        let mut bytes = encode(&[2], &[1, 2]);
        bytes.push(0);
        assert!(parse_bytes(&bytes)
            .unwrap_err()
            .to_string()
            .contains("trailing"));
    }

    #[test]
    fn a_header_claiming_huge_dims_is_refused_before_allocation() {
        // 3 x 2^32-1 x 2^32-1 would overflow u64 and claim exabytes; only 16 bytes exist.
        let bytes = [
            0, 0, 8, 3, 0, 0, 0, 3, 255, 255, 255, 255, 255, 255, 255, 255,
        ];
        let err = parse_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
        let err = parse(Path::new("t"), &encode(&[10, 10], &[0; 100])[..], 99).unwrap_err();
        assert!(err.to_string().contains("more than 99"));
    }

    #[test]
    fn wrong_magic_type_and_rank_are_named() {
        assert!(parse_bytes(&[1, 0, 8, 1, 0, 0, 0, 0])
            .unwrap_err()
            .to_string()
            .contains("magic"));
        assert!(parse_bytes(&[0, 0, 0x0d, 1, 0, 0, 0, 0])
            .unwrap_err()
            .to_string()
            .contains("element type 0x0d"));
        assert!(parse_bytes(&[0, 0, 8, 0])
            .unwrap_err()
            .to_string()
            .contains("rank 0"));
        assert!(parse_bytes(&[0, 0, 8])
            .unwrap_err()
            .to_string()
            .contains("shorter"));
        assert!(parse_bytes(&[0, 0, 8, 2, 0, 0])
            .unwrap_err()
            .to_string()
            .contains("header truncated"));
    }

    #[test]
    fn a_corrupt_gzip_stream_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gz");
        std::fs::write(&path, [0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
        let err = read_idx(&path).unwrap_err();
        assert!(
            matches!(err, Error::Io { .. } | Error::Format { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("bad.gz"));
    }
}
