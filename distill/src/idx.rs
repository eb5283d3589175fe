//! The IDX reader lives in the runtime crate (the device needs it to read test data without
//! the training stack); this module re-exports it with errors in the distill crate's type.

use std::path::Path;

use crate::error::Result;
pub use edgekd_runtime::idx::{encode, IdxArray, IdxError, DEFAULT_MAX_ELEMENTS};

/// Reads an IDX file of `u8` elements, gzipped or not, with the default element limit.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    Ok(edgekd_runtime::idx::read_idx(path)?)
}

/// Reads an IDX file of `u8` elements, refusing headers that claim more than `max_elements`.
pub fn read_idx_with_limit(path: &Path, max_elements: u64) -> Result<IdxArray> {
    Ok(edgekd_runtime::idx::read_idx_with_limit(
        path,
        max_elements,
    )?)
}
