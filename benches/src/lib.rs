//! Criterion benchmarks of edgekd live in `benches/`; this crate only hosts them.
