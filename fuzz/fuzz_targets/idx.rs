//! The IDX reader on arbitrary bytes, gzipped or raw: an error or an array whose header,
//! dimensions and data agree, never a panic or an allocation the bytes do not justify.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

/// The reader's element budget: enough for real MNIST files, small enough that a header
/// claiming more is refused before allocating.
const MAX_ELEMENTS: u64 = 1 << 24;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = edgekd_runtime::idx::parse_maybe_gzipped(Path::new("fuzz.idx"), data, MAX_ELEMENTS)
    {
        let n: usize = a.dims.iter().product();
        assert_eq!(n, a.data.len());
    }
});
