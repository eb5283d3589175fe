//! edgekd's device-side crate: what ships to the board or phone.
//!
//! It must stay small and cross-compile cleanly, so it never depends on the training stack
//! (candle, `edgekd-distill`). Today it holds the pieces every inference front-end needs:
//! turning logits into ranked class probabilities ([`classify`]) and summarising latency
//! samples the way hyperfine does ([`stats`]). Model loading and backends arrive with the
//! runtime issue.
#![warn(missing_docs)]

pub mod classify;
pub mod stats;

pub use classify::{softmax, top_k, Ranked};
pub use stats::{LatencySummary, OutlierWarning};
