//! How much each channel matters: the norm of the filters computing it, its batch
//! normalization scale, or a first-order Taylor estimate of the loss change its removal causes.

use candle_core::{Tensor, D};

use super::groups::{ChannelGroup, Role};
use crate::batch::make_batch;
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::loss::cross_entropy;
use crate::model::Model;

/// What ranks channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    /// Sum of |w| over the filters (neuron rows) computing the channel (Li et al. 2017).
    L1,
    /// Euclidean norm of those filters.
    L2,
    /// |γ| of the batch normalizations after them (network slimming, Liu et al. 2017).
    BnScale,
    /// |Σ activation · gradient| of the cross-entropy over data batches (Molchanov et al. 2017).
    Taylor,
}

impl std::fmt::Display for Criterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Criterion::L1 => "l1",
            Criterion::L2 => "l2",
            Criterion::BnScale => "bn-scale",
            Criterion::Taylor => "taylor",
        })
    }
}

/// Per-channel sums of `t` over every axis but `axis`.
fn per_channel(t: &Tensor, axis: usize) -> Result<Vec<f32>> {
    let moved = t.transpose(0, axis)?.contiguous()?;
    let rows = moved.dim(0)?;
    Ok(moved.reshape((rows, ()))?.sum(D::Minus1)?.to_vec1()?)
}

fn add(into: &mut [f32], v: &[f32]) {
    for (a, b) in into.iter_mut().zip(v) {
        *a += b;
    }
}

/// Scores of each group's channels under `criterion`, larger meaning more important. `taylor`
/// needs `data` and runs `batches` batches of it (in evaluation mode: batch normalization's
/// running statistics are left alone).
pub fn scores(
    model: &Model,
    groups: &[ChannelGroup],
    criterion: Criterion,
    data: Option<(&Dataset, usize)>,
) -> Result<Vec<Vec<f32>>> {
    let params = model.params();
    match criterion {
        Criterion::L1 | Criterion::L2 => groups
            .iter()
            .map(|g| {
                let mut s = vec![0f32; g.width];
                for m in g.members.iter().filter(|m| m.role == Role::Filter) {
                    let w = params.get(&m.param);
                    let w = if criterion == Criterion::L1 { w.abs()? } else { w.sqr()? };
                    add(&mut s, &per_channel(&w, m.axis)?);
                }
                if criterion == Criterion::L2 {
                    s.iter_mut().for_each(|v| *v = v.sqrt());
                }
                Ok(s)
            })
            .collect(),
        Criterion::BnScale => groups
            .iter()
            .map(|g| {
                let mut s = vec![0f32; g.width];
                let mut any = false;
                for p in g.producers.iter().filter(|p| p.batch_norm) {
                    let gamma = params.get(&format!("{}.bn.weight", p.layer));
                    add(&mut s, &gamma.abs()?.to_vec1()?);
                    any = true;
                }
                if !any {
                    return Err(Error::Config(format!(
                        "--criterion bn-scale ranks channels by their batch normalization's scale, and {} ({}) has none: use l1, l2 or taylor",
                        g.name(),
                        model.spec().name
                    )));
                }
                Ok(s)
            })
            .collect(),
        Criterion::Taylor => {
            let Some((data, batches)) = data else {
                return Err(Error::Config(
                    "--criterion taylor needs data to run the model on".into(),
                ));
            };
            taylor(model, groups, data, batches)
        }
    }
}

/// For a layer's output y = f(θ) with parameters θ entering linearly per channel (a dense or
/// convolution row with its bias; or batch normalization's γ, β), Σ_n dL/dy · y equals
/// Σ θ · dL/dθ over that channel's parameters; so one backward pass to the parameters gives
/// every channel's activation-times-gradient without hooking activations. (Through ReLU,
/// y · dL/dy is also relu(y) · dL/drelu(y), Molchanov et al.'s post-activation product.)
fn taylor(
    model: &Model,
    groups: &[ChannelGroup],
    data: &Dataset,
    batches: usize,
) -> Result<Vec<Vec<f32>>> {
    if data.is_empty() || batches == 0 {
        return Err(Error::Config(
            "--criterion taylor needs at least one batch of data".into(),
        ));
    }
    crate::evaluation::check_input(model.spec(), data)?;
    let norm = model.spec().normalization;
    let params = model.params();
    let mut totals: Vec<Vec<f32>> = groups.iter().map(|g| vec![0f32; g.width]).collect();
    let batch = 64.min(data.len());
    // Spread the batches over the whole set (its order is the file's, classes mixed).
    let stride = (data.len() / batch / batches).max(1) * batch;
    let mut done = 0;
    for start in (0..data.len()).step_by(stride).take(batches) {
        let idx: Vec<usize> = (start..(start + batch).min(data.len())).collect();
        let b = make_batch(data, &idx, norm, None, &model.device())?;
        let logits = model.forward(&b.images, false)?.logits;
        let grads = cross_entropy(&logits, &b.labels)?.backward()?;
        for (g, total) in groups.iter().zip(&mut totals) {
            let mut signed = vec![0f32; g.width];
            for p in g.producers.iter().filter(|p| !p.chained) {
                let names: [String; 2] = if p.batch_norm {
                    [
                        format!("{}.bn.weight", p.layer),
                        format!("{}.bn.bias", p.layer),
                    ]
                } else {
                    [format!("{}.weight", p.layer), format!("{}.bias", p.layer)]
                };
                for name in names {
                    let theta = params.get(&name);
                    let Some(grad) = grads.get(&theta) else {
                        continue;
                    };
                    add(&mut signed, &per_channel(&(&theta * grad)?, 0)?);
                }
            }
            for (t, s) in total.iter_mut().zip(&signed) {
                *t += s.abs();
            }
        }
        done += 1;
    }
    for t in &mut totals {
        t.iter_mut().for_each(|v| *v /= done as f32);
    }
    Ok(totals)
}
