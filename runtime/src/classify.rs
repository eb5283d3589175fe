//! From logits to ranked class probabilities.

/// One class with its probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Class index.
    pub class: usize,
    /// Its probability.
    pub probability: f32,
}

/// Softmax of one row of logits, stable for large magnitudes (the maximum is subtracted first).
/// Non-finite logits give NaN probabilities rather than a panic, so callers can report them.
///
/// ```
/// let p = edgekd_runtime::softmax(&[0.0, (3.0f32).ln()]);
/// assert!((p[1] - 0.75).abs() < 1e-6);
/// ```
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes of one row of logits, most probable first; ties keep the lower
/// class first. `k` larger than the number of classes returns them all.
///
/// ```
/// let top = edgekd_runtime::top_k(&[1.0, 3.0, 2.0], 2);
/// assert_eq!(top.iter().map(|r| r.class).collect::<Vec<_>>(), vec![1, 2]);
/// ```
pub fn top_k(logits: &[f32], k: usize) -> Vec<Ranked> {
    top_k_probabilities(softmax(logits), k)
}

/// [`top_k`] for a row that already holds probabilities (a model ending in a softmax): ranked
/// as they are, not softmaxed a second time.
///
/// ```
/// let top = edgekd_runtime::classify::top_k_probabilities(vec![0.2, 0.7, 0.1], 1);
/// assert_eq!((top[0].class, top[0].probability), (1, 0.7));
/// ```
pub fn top_k_probabilities(probs: Vec<f32>, k: usize) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = probs
        .into_iter()
        .enumerate()
        .map(|(class, probability)| Ranked { class, probability })
        .collect();
    ranked.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then(a.class.cmp(&b.class))
    });
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_hand_values_and_survives_large_logits() {
        // e^0 : e^1 : e^2 = 1 : 2.7182818 : 7.3890561, sum 11.1073379.
        let p = softmax(&[1000.0, 1001.0, 1002.0]);
        for (got, want) in p.iter().zip([0.090_030_57, 0.244_728_47, 0.665_240_96]) {
            assert!((got - want).abs() < 1e-6, "{p:?}");
        }
        assert!(softmax(&[f32::NAN, 1.0])[0].is_nan());
    }

    #[test]
    fn top_k_orders_and_truncates() {
        let r = top_k(&[0.5, 2.0, 2.0, -1.0], 3);
        assert_eq!(r.iter().map(|x| x.class).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(top_k(&[1.0, 2.0], 10).len(), 2);
        assert!(top_k(&[], 3).is_empty());
    }
}
