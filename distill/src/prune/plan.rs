//! Choosing how many channels each group keeps, and which ([`plan`]); cutting the tensors
//! to them ([`apply`]).

use std::collections::HashMap;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::criterion::Criterion;
use super::groups::ChannelGroup;
use crate::architecture::Architecture;
use crate::error::{Error, Result};
use crate::model::{Model, Params};
use crate::spec::ModelSpec;

/// Where channels compete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Every group loses the same fraction of its channels.
    Layer,
    /// All channels are ranked together (each group's scores divided by their mean, so
    /// layers of different scales compete fairly); a group keeps at least one.
    Global,
}

/// How much to remove.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Amount {
    /// This fraction of the prunable neurons and channels, in (0, 1).
    Ratio(f64),
    /// As few channels as brings the model to at most this many multiply-accumulates per sample.
    TargetMacs(usize),
}

/// One group's change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupChange {
    /// The group, named by its first producing layer.
    pub group: String,
    /// Its producing layers.
    pub layers: Vec<String>,
    /// Channels before.
    pub before: usize,
    /// The channels kept, in their original order.
    pub kept: Vec<usize>,
}

/// What pruning does to a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunePlan {
    /// How channels were ranked.
    pub criterion: Criterion,
    /// Where they competed.
    pub scope: Scope,
    /// The fraction of prunable channels removed.
    pub ratio: f64,
    /// Per group.
    pub groups: Vec<GroupChange>,
    /// The model before.
    pub before: ModelSpec,
    /// The model after.
    pub after: ModelSpec,
}

impl PrunePlan {
    /// The fraction of channels removed over all groups.
    pub fn removed_fraction(&self) -> f64 {
        let before: usize = self.groups.iter().map(|g| g.before).sum();
        let after: usize = self.groups.iter().map(|g| g.kept.len()).sum();
        1.0 - after as f64 / before.max(1) as f64
    }
}

/// The channel multiple pruned widths round to by default: the output-channel panel of
/// edgekd's int8 engine (`runtime`'s qgemm `NR`).
pub const CHANNEL_MULTIPLE: usize = 8;

/// How many channels each group keeps at `ratio` (never fewer than one).
/// `k` moved to the nearest multiple of `multiple` (or to the full `width`), so the kernels'
/// channel panels (8 wide in edgekd's int8 engine) stay full: 11 of 16 channels cost what 16
/// do, 8 cost half. Ties go to the wider; widths at or below `multiple` are left as they are.
pub(super) fn round_to(k: usize, width: usize, multiple: usize) -> usize {
    if multiple <= 1 || width <= multiple {
        return k;
    }
    (1..=width / multiple)
        .map(|i| i * multiple)
        .chain(std::iter::once(width))
        .min_by_key(|&c| (c.abs_diff(k), std::cmp::Reverse(c)))
        .unwrap_or(k)
}

fn counts(
    groups: &[ChannelGroup],
    normalized: &[Vec<f32>],
    scope: Scope,
    ratio: f64,
    multiple: usize,
) -> Vec<usize> {
    let keep = counts_exact(groups, normalized, scope, ratio);
    keep.iter()
        .zip(groups)
        .map(|(&k, g)| round_to(k, g.width, multiple))
        .collect()
}

fn counts_exact(
    groups: &[ChannelGroup],
    normalized: &[Vec<f32>],
    scope: Scope,
    ratio: f64,
) -> Vec<usize> {
    match scope {
        Scope::Layer => groups
            .iter()
            .map(|g| ((g.width as f64 * (1.0 - ratio)).round() as usize).clamp(1, g.width))
            .collect(),
        Scope::Global => {
            let total: usize = groups.iter().map(|g| g.width).sum();
            let mut remove = (total as f64 * ratio).round() as usize;
            let mut all: Vec<(f32, usize)> = normalized
                .iter()
                .enumerate()
                .flat_map(|(k, s)| s.iter().map(move |&v| (v, k)))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut keep: Vec<usize> = groups.iter().map(|g| g.width).collect();
            for (_, k) in all {
                if remove == 0 {
                    break;
                }
                if keep[k] > 1 {
                    keep[k] -= 1;
                    remove -= 1;
                }
            }
            keep
        }
    }
}

/// The indices of the `n` highest scores, in ascending index order (ties keep the earlier).
fn top(scores: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(n);
    idx.sort_unstable();
    idx
}

/// The spec with each producing layer's output width from `width` (by layer name).
fn with_widths(spec: &ModelSpec, width: &HashMap<String, usize>) -> ModelSpec {
    let w = |name: String, old: usize| width.get(&name).copied().unwrap_or(old);
    let mut out = spec.clone();
    match &mut out.architecture {
        Architecture::Mlp { hidden } => {
            for (i, h) in hidden.iter_mut().enumerate() {
                *h = w(format!("fc{}", i + 1), *h);
            }
        }
        Architecture::Cnn { convs, fc } => {
            for (i, c) in convs.iter_mut().enumerate() {
                c.out_channels = w(format!("conv{}", i + 1), c.out_channels);
            }
            for (i, h) in fc.iter_mut().enumerate() {
                *h = w(format!("fc{}", i + 1), *h);
            }
        }
        Architecture::Resnet { stem, blocks } => {
            *stem = w("stem".into(), *stem);
            for (i, b) in blocks.iter_mut().enumerate() {
                b.mid = w(format!("b{i}.conv1"), b.mid);
                b.out = w(format!("b{i}.conv2"), b.out);
            }
        }
        Architecture::Mobilenetv2 {
            stem, blocks, head, ..
        } => {
            *stem = w("stem".into(), *stem);
            for (i, b) in blocks.iter_mut().enumerate() {
                // Without an expansion the depthwise channels are the input's.
                b.hidden = w(format!("b{i}.depthwise"), b.hidden);
                b.out = w(format!("b{i}.project"), b.out);
            }
            *head = w("head".into(), *head);
        }
    }
    if let Architecture::Mlp { hidden } = &out.architecture {
        let widths: Vec<String> = hidden.iter().map(|h| h.to_string()).collect();
        out.name = format!("mlp:{}", widths.join("-"));
    }
    out
}

/// Per block of a ResNet or MobileNetV2: whether its shortcut is the identity (the block adds
/// its input unchanged), the layer producing its input and the one producing its output.
/// Pruning must keep every flag: two widths that become equal by chance would otherwise add a
/// residual (or drop a projection).
pub(super) fn identity_blocks(spec: &ModelSpec) -> Vec<(bool, String, String)> {
    let walk = |stem: usize, blocks: Vec<(usize, usize)>, out_layer: &str| {
        let (mut width, mut prev) = (stem, "stem".to_string());
        blocks
            .into_iter()
            .enumerate()
            .map(|(i, (out, stride))| {
                let layer = format!("b{i}.{out_layer}");
                let block = (stride == 1 && width == out, prev.clone(), layer.clone());
                (width, prev) = (out, layer);
                block
            })
            .collect()
    };
    match &spec.architecture {
        Architecture::Resnet { stem, blocks } => walk(
            *stem,
            blocks.iter().map(|b| (b.out, b.stride)).collect(),
            "conv2",
        ),
        Architecture::Mobilenetv2 { stem, blocks, .. } => walk(
            *stem,
            blocks.iter().map(|b| (b.out, b.stride)).collect(),
            "project",
        ),
        Architecture::Mlp { .. } | Architecture::Cnn { .. } => Vec::new(),
    }
}

/// `spec` with each group at its `keep` width, widening groups where a block's shortcut would
/// otherwise change (see [`identity_blocks`]); the widths actually kept come back too.
fn rebuild(
    spec: &ModelSpec,
    groups: &[ChannelGroup],
    keep: &[usize],
) -> Result<(ModelSpec, Vec<usize>)> {
    let mut keep = keep.to_vec();
    let want = identity_blocks(spec);
    let group_of = |layer: &str| {
        groups
            .iter()
            .position(|g| g.producers.iter().any(|p| p.layer == layer))
    };
    // Each retry adds a channel; never more than every group back at full width.
    let budget: usize = groups.iter().map(|g| g.width).sum();
    for _ in 0..=budget {
        let widths: HashMap<String, usize> = groups
            .iter()
            .zip(&keep)
            .flat_map(|(g, &k)| g.producers.iter().map(move |p| (p.layer.clone(), k)))
            .collect();
        let mut after = with_widths(spec, &widths);
        after.validate()?;
        let now = identity_blocks(&after);
        let Some(i) = want.iter().zip(&now).position(|(a, b)| a.0 != b.0) else {
            if !matches!(after.architecture, Architecture::Mlp { .. }) {
                let base = spec.name.split("-pruned").next().unwrap_or(&spec.name);
                after.name = format!("{base}-pruned");
            }
            return Ok((after, keep));
        };
        // Widen the flipped block's output or input channels: the one that was wider.
        let mut candidates: Vec<usize> = [&want[i].2, &want[i].1]
            .into_iter()
            .filter_map(|l| group_of(l))
            .filter(|&g| keep[g] < groups[g].width)
            .collect();
        candidates.sort_by_key(|&g| std::cmp::Reverse(groups[g].width));
        let Some(&g) = candidates.first() else {
            break;
        };
        keep[g] += 1;
    }
    refuse(format!(
        "{} cannot be pruned to these widths without changing where its residual additions are",
        spec.name
    ))
}

fn refuse<T>(reason: String) -> Result<T> {
    Err(Error::Config(reason))
}

/// Chooses the channels to keep. `scores` are [`criterion::scores`]' for `groups`; each
/// group's count moves to the nearest multiple of `multiple` (1: exact).
pub fn plan(
    spec: &ModelSpec,
    groups: &[ChannelGroup],
    scores: &[Vec<f32>],
    criterion: Criterion,
    scope: Scope,
    amount: Amount,
    multiple: usize,
) -> Result<PrunePlan> {
    if groups.is_empty() {
        return refuse(format!(
            "{} has no hidden neurons or channels to prune",
            spec.name
        ));
    }
    if groups.iter().all(|g| g.width <= 1) {
        return refuse(format!(
            "every prunable layer of {} is already at its minimum of one neuron or channel",
            spec.name
        ));
    }
    let normalized: Vec<Vec<f32>> = scores
        .iter()
        .map(|s| {
            let mean = s.iter().sum::<f32>() / s.len().max(1) as f32;
            if mean > 0.0 {
                s.iter().map(|v| v / mean).collect()
            } else {
                s.clone()
            }
        })
        .collect();
    let build = |keep: &[usize]| rebuild(spec, groups, keep);
    let (ratio, keep) = match amount {
        Amount::Ratio(r) => {
            if !(r > 0.0 && r < 1.0) {
                return refuse(format!(
                    "--ratio is the fraction of neurons and channels removed, in (0, 1); got {r}"
                ));
            }
            (r, counts(groups, &normalized, scope, r, multiple))
        }
        Amount::TargetMacs(target) => {
            let before = spec.macs();
            if target >= before {
                return refuse(format!(
                    "{} already needs {} MACs per sample, no more than the target {target}",
                    spec.name, before
                ));
            }
            // MACs at ratio r, None where no spec of that ratio keeps the block structure.
            let macs = |r: f64| {
                build(&counts(groups, &normalized, scope, r, multiple))
                    .ok()
                    .map(|(s, _)| s.macs())
            };
            let most = 1.0 - 1e-9;
            if let Some(least) = macs(most).filter(|&m| m > target) {
                return refuse(format!(
                    "{} cannot reach {target} MACs per sample by pruning: with every prunable layer at one channel it still needs {least}",
                    spec.name
                ));
            }
            let (mut lo, mut hi, mut found) = (0.0, most, macs(most).is_some());
            for _ in 0..50 {
                let mid = 0.5 * (lo + hi);
                match macs(mid) {
                    Some(m) if m <= target => (hi, found) = (mid, true),
                    _ => lo = mid,
                }
            }
            if !found {
                return refuse(format!(
                    "{} cannot reach {target} MACs per sample by pruning without changing where its residual additions are",
                    spec.name
                ));
            }
            (hi, counts(groups, &normalized, scope, hi, multiple))
        }
    };
    finish(spec, groups, scores, criterion, scope, ratio, &keep)
}

/// A plan keeping `keep[g]` channels of group `g` (at least one; gradual pruning aims each
/// round at fixed fractions of the original widths this way, so rounding does not compound).
pub fn plan_widths(
    spec: &ModelSpec,
    groups: &[ChannelGroup],
    scores: &[Vec<f32>],
    criterion: Criterion,
    keep: &[usize],
    multiple: usize,
) -> Result<PrunePlan> {
    let keep: Vec<usize> = keep
        .iter()
        .zip(groups)
        .map(|(&k, g)| round_to(k.clamp(1, g.width), g.width, multiple))
        .collect();
    let before: usize = groups.iter().map(|g| g.width).sum();
    let ratio = 1.0 - keep.iter().sum::<usize>() as f64 / before.max(1) as f64;
    finish(spec, groups, scores, criterion, Scope::Layer, ratio, &keep)
}

fn finish(
    spec: &ModelSpec,
    groups: &[ChannelGroup],
    scores: &[Vec<f32>],
    criterion: Criterion,
    scope: Scope,
    ratio: f64,
    keep: &[usize],
) -> Result<PrunePlan> {
    let (after, keep) = rebuild(spec, groups, keep)?;
    if keep.iter().zip(groups).all(|(&k, g)| k == g.width) {
        return refuse(format!(
            "pruning {} by {ratio:.3} removes nothing: its layers are too narrow for that ratio to take a whole neuron or channel",
            spec.name
        ));
    }
    let changes = groups
        .iter()
        .zip(scores)
        .zip(&keep)
        .map(|((g, s), &k)| GroupChange {
            group: g.name(),
            layers: g.producers.iter().map(|p| p.layer.clone()).collect(),
            before: g.width,
            kept: top(s, k),
        })
        .collect();
    Ok(PrunePlan {
        criterion,
        scope,
        ratio,
        groups: changes,
        before: spec.clone(),
        after,
    })
}

/// The pruned model: every tensor cut to the kept channels along each axis a group indexes.
pub fn apply(model: &Model, groups: &[ChannelGroup], plan: &PrunePlan) -> Result<Model> {
    let mut tensors = model.params().tensors();
    for (g, change) in groups.iter().zip(&plan.groups) {
        if change.kept.len() == g.width {
            continue;
        }
        for m in &g.members {
            let idx: Vec<u32> = change
                .kept
                .iter()
                .flat_map(|&c| (c * m.block..(c + 1) * m.block).map(|i| i as u32))
                .collect();
            let t = &tensors[&m.param];
            let idx = Tensor::new(idx.as_slice(), t.device())?;
            let cut = t.index_select(&idx, m.axis)?.contiguous()?;
            tensors.insert(m.param.clone(), cut);
        }
    }
    let params = Params::from_tensors(&plan.after, tensors, std::path::Path::new("pruned model"))?;
    Model::from_params(&plan.after, params)
}
