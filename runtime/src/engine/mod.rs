//! edgekd's own inference engine (in progress: replaces `native`).

pub(crate) mod kernels;
