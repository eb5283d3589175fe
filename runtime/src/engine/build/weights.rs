//! Weights packed once per model (and shared between programs of different input shapes):
//! int8 in the signed domain, panels for the GEMM kernels, depthwise filters, and the
//! per-channel sums the input zero point's correction needs.

use std::sync::Arc;

use super::Builder;
use crate::engine::ir::{Weights, GATHER_MAX};
use crate::engine::kernels::depthwise::{FDepthwise, QDepthwise};
use crate::engine::kernels::qgemm::{self, QPacked};
use crate::engine::kernels::sgemm::{self, FPacked};
use crate::engine::tensor::Tensor;

/// Weights `[o][tap][ci]` (row-major `[o, cin, kh, kw]` for a convolution) as int8 in the
/// signed domain, from int8 or uint8 values and per-channel zero points; None when a value
/// minus its zero point leaves int8.
pub(super) fn signed_weights(
    values: &Tensor,
    zp: impl Fn(usize) -> i64,
    per_channel: usize,
) -> Option<Vec<i8>> {
    let v = values.to_i64().ok()?;
    v.iter()
        .enumerate()
        .map(|(i, &x)| i8::try_from(x - zp(i / per_channel)).ok())
        .collect()
}

/// Whether a convolution with `cg` input channels per group and `taps` taps is packed as one
/// tap of `taps · cg` values (the engine gathers each row's window first): a network's first
/// layer, with one to three input channels, would otherwise run one short inner loop per tap
/// (an int8 quad of which three quarters are padding when there is one channel).
pub(super) fn gathered(cg: usize, taps: usize, groups: usize) -> bool {
    groups == 1 && cg < 4 && taps > 1 && taps * cg <= GATHER_MAX
}

/// Packs `[o, cin/g, kh, kw]` weights for `groups` groups: depthwise when every group has one
/// input and one output channel, else one GEMM whose columns are the groups' output channels,
/// each group starting a new panel (so a panel never spans two groups).
pub(super) fn pack_q(o: usize, cg: usize, taps: usize, groups: usize, w: &[i8]) -> Weights {
    let at = |oc: usize, ci: usize, t: usize| w[(oc * cg + ci) * taps + t];
    if groups > 1 && cg == 1 && o == groups {
        return Weights::QDepthwise(QDepthwise::pack(o, taps, |ch, t| at(ch, 0, t)));
    }
    if gathered(cg, taps, groups) {
        return Weights::Q(QPacked::pack(o, 1, taps * cg, |oc, _, k| {
            at(oc, k % cg, k / cg)
        }));
    }
    let og = o / groups;
    let padded = og.div_ceil(qgemm::NR) * qgemm::NR;
    Weights::Q(QPacked::pack(groups * padded, taps, cg, |col, t, ci| {
        let (g, l) = (col / padded, col % padded);
        if l < og {
            at(g * og + l, ci, t)
        } else {
            0
        }
    }))
}

pub(super) fn pack_f(o: usize, cg: usize, taps: usize, groups: usize, w: &[f32]) -> Weights {
    let at = |oc: usize, ci: usize, t: usize| w[(oc * cg + ci) * taps + t];
    if groups > 1 && cg == 1 && o == groups {
        return Weights::FDepthwise(FDepthwise::pack(o, taps, |ch, t| at(ch, 0, t)));
    }
    if gathered(cg, taps, groups) {
        return Weights::F(FPacked::pack(o, 1, taps * cg, |oc, _, k| {
            at(oc, k % cg, k / cg)
        }));
    }
    let og = o / groups;
    let padded = og.div_ceil(sgemm::NR) * sgemm::NR;
    Weights::F(FPacked::pack(groups * padded, taps, cg, |col, t, ci| {
        let (g, l) = (col / padded, col % padded);
        if l < og {
            at(g * og + l, ci, t)
        } else {
            0.0
        }
    }))
}

/// Per-output-channel sums of int8 weights (for the input zero point's correction), for `o`
/// outputs in `groups` groups.
pub(super) fn weight_sums(w: &Weights, o: usize, groups: usize) -> Vec<i32> {
    match w {
        Weights::Q(p) => {
            let og = o / groups;
            let padded = og.div_ceil(qgemm::NR) * qgemm::NR;
            (0..o)
                .map(|oc| p.col_sums[(oc / og) * padded + oc % og])
                .collect()
        }
        Weights::QDepthwise(d) => d.sums.clone(),
        _ => vec![],
    }
}

/// Packs (or finds packed) weights under `key`.
pub(super) fn cached(b: &Builder, key: String, pack: impl FnOnce() -> Weights) -> Arc<Weights> {
    let mut cache = b.cache.lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(key).or_insert_with(|| Arc::new(pack())).clone()
}
