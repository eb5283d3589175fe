use candle_core::{DType, Device, Tensor};

use super::groups::Role;
use super::*;
use crate::architecture::Architecture;
use crate::model::{Model, Params};
use crate::spec::ModelSpec;
use crate::InputShape;

/// A model of `spec` with every tensor random (batch normalization's statistics included, the
/// variances positive), so no channel is special.
fn random_model(spec: &str, input: InputShape, seed: u64) -> Model {
    let mut s = ModelSpec::parse(spec).unwrap();
    s.input = input;
    let base = Model::new(&s, seed, &Device::Cpu).unwrap();
    let mut t = base.params().tensors();
    for (name, v) in t.iter_mut() {
        let r = Tensor::rand(0.5f32, 1.5, v.shape(), &Device::Cpu).unwrap();
        if name.ends_with("running_var") || name.ends_with("bn.weight") {
            *v = r;
        } else if name.contains(".bn.") {
            *v = (r - 1.0).unwrap();
        }
    }
    Model::from_params(&s, Params::from_tensors(&s, t, "t".as_ref()).unwrap()).unwrap()
}

/// The original with the removed channels silenced: zero rows and biases where no batch
/// normalization follows, zero scale and shift where one does. Each removed channel is then
/// zero wherever it flows, so the pruned model must compute the same logits.
fn silenced(model: &Model, groups: &[ChannelGroup], plan: &PrunePlan) -> Model {
    let mut t = model.params().tensors();
    for (g, change) in groups.iter().zip(&plan.groups) {
        let removed: Vec<usize> = (0..g.width).filter(|c| !change.kept.contains(c)).collect();
        for p in &g.producers {
            let names = if p.batch_norm {
                vec![
                    format!("{}.bn.weight", p.layer),
                    format!("{}.bn.bias", p.layer),
                ]
            } else {
                vec![format!("{}.weight", p.layer), format!("{}.bias", p.layer)]
            };
            for name in names {
                let v = &t[&name];
                let mut mask = vec![1f32; v.dim(0).unwrap()];
                for &c in &removed {
                    mask[c] = 0.0;
                }
                let mut shape = vec![1; v.rank()];
                shape[0] = mask.len();
                let mask = Tensor::from_vec(mask, shape, &Device::Cpu).unwrap();
                let cut = v.broadcast_mul(&mask).unwrap();
                t.insert(name, cut);
            }
        }
    }
    let s = model.spec();
    Model::from_params(s, Params::from_tensors(s, t, "t".as_ref()).unwrap()).unwrap()
}

fn logits(m: &Model, x: &Tensor) -> Vec<f32> {
    m.forward(x, false)
        .unwrap()
        .logits
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn a_pruned_model_computes_what_the_original_does_with_those_channels_silenced() {
    let small = InputShape {
        channels: 3,
        rows: 12,
        cols: 12,
    };
    for (spec, input) in [
        ("mlp:24-16", InputShape::MNIST),
        ("cnn:lenet5-half", InputShape::MNIST),
        ("resnet:8", small),
        ("resnet:14-w8", small),
        ("mobilenetv2:0.25", small),
        ("mobilenetv2:0.5", small),
    ] {
        let model = random_model(spec, input, 7);
        let groups = channel_groups(model.spec());
        for (criterion, scope) in [
            (Criterion::L1, Scope::Layer),
            (Criterion::L2, Scope::Global),
        ] {
            let s = scores(&model, &groups, criterion, None).unwrap();
            let plan = plan(
                model.spec(),
                &groups,
                &s,
                criterion,
                scope,
                Amount::Ratio(0.4),
                if scope == Scope::Global { 8 } else { 1 },
            )
            .unwrap();
            let pruned = apply(&model, &groups, &plan).unwrap();
            assert!(
                pruned.spec().param_count() < model.spec().param_count(),
                "{spec}"
            );
            let x = Tensor::rand(-1f32, 1.0, (2, input.len()), &Device::Cpu).unwrap();
            let want = logits(&silenced(&model, &groups, &plan), &x);
            let got = logits(&pruned, &x);
            for (a, b) in want.iter().zip(&got) {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + a.abs()),
                    "{spec} {scope:?}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn layer_scope_removes_the_ratio_from_every_group_and_keeps_the_strongest() {
    let model = random_model("mlp:10-4", InputShape::MNIST, 1);
    let groups = channel_groups(model.spec());
    // Neuron k of fc1 gets scores k: the top half by score is 5..10.
    let s = vec![
        (0..10).map(|k| k as f32).collect(),
        vec![3.0, 1.0, 2.0, 0.0],
    ];
    let p = plan(
        model.spec(),
        &groups,
        &s,
        Criterion::L1,
        Scope::Layer,
        Amount::Ratio(0.5),
        1,
    )
    .unwrap();
    assert_eq!(p.groups[0].kept, vec![5, 6, 7, 8, 9]);
    assert_eq!(p.groups[1].kept, vec![0, 2]);
    assert_eq!(p.after.name, "mlp:5-2");
    assert!((p.removed_fraction() - 0.5).abs() < 1e-9);
}

#[test]
fn l1_scores_are_the_filters_absolute_sums() {
    let spec = ModelSpec::parse("mlp:2").unwrap();
    let model = Model::new(&spec, 1, &Device::Cpu).unwrap();
    let mut t = model.params().tensors();
    let mut w = vec![0f32; 2 * 784];
    w[0] = -3.0;
    w[1] = 1.0;
    w[784] = 0.5;
    t.insert(
        "fc1.weight".into(),
        Tensor::from_vec(w, (2, 784), &Device::Cpu).unwrap(),
    );
    let m =
        Model::from_params(&spec, Params::from_tensors(&spec, t, "t".as_ref()).unwrap()).unwrap();
    let groups = channel_groups(&spec);
    assert_eq!(
        scores(&m, &groups, Criterion::L1, None).unwrap(),
        vec![vec![4.0, 0.5]]
    );
    let l2 = &scores(&m, &groups, Criterion::L2, None).unwrap()[0];
    assert!((l2[0] - 10f32.sqrt()).abs() < 1e-6 && (l2[1] - 0.5).abs() < 1e-6);
    let err = scores(&m, &groups, Criterion::BnScale, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bn-scale") && err.contains("has none"),
        "{err}"
    );
}

#[test]
fn taylor_scores_a_dead_neuron_zero() {
    let spec = ModelSpec::parse("mlp:6").unwrap();
    let model = Model::new(&spec, 3, &Device::Cpu).unwrap();
    let mut t = model.params().tensors();
    let mask = Tensor::new(&[1f32, 1., 0., 1., 1., 1.], &Device::Cpu).unwrap();
    t.insert("fc1.bias".into(), t["fc1.bias"].mul(&mask).unwrap());
    let rows = mask.reshape((6, 1)).unwrap();
    t.insert(
        "fc1.weight".into(),
        t["fc1.weight"].broadcast_mul(&rows).unwrap(),
    );
    let m =
        Model::from_params(&spec, Params::from_tensors(&spec, t, "t".as_ref()).unwrap()).unwrap();
    let data = crate::dataset::tests::toy(200, 5);
    let s = &scores(
        &m,
        &channel_groups(&spec),
        Criterion::Taylor,
        Some((&data, 3)),
    )
    .unwrap()[0];
    // The silenced neuron outputs 0 for every sample; live ones mostly do not (a neuron that
    // ReLU shuts for all of these samples scores 0 too, rightly).
    assert_eq!(s[2], 0.0);
    assert!(s.iter().filter(|&&v| v > 0.0).count() >= 3, "{s:?}");
}

#[test]
fn a_mac_target_is_met_by_the_least_pruning_that_meets_it() {
    let model = random_model("mlp:100-100", InputShape::MNIST, 2);
    let spec = model.spec();
    let groups = channel_groups(spec);
    let s = scores(&model, &groups, Criterion::L1, None).unwrap();
    let target = spec.macs() / 2;
    let p = plan(
        spec,
        &groups,
        &s,
        Criterion::L1,
        Scope::Layer,
        Amount::TargetMacs(target),
        1,
    )
    .unwrap();
    assert!(p.after.macs() <= target);
    // One more neuron per layer would be over the target.
    let Architecture::Mlp { hidden } = &p.after.architecture else {
        unreachable!()
    };
    let wider = ModelSpec::parse(&format!("mlp:{}-{}", hidden[0] + 1, hidden[1] + 1)).unwrap();
    assert!(wider.macs() > target, "{hidden:?}");
}

#[test]
fn impossible_requests_are_refused_with_the_reason() {
    let model = random_model("mlp:8", InputShape::MNIST, 2);
    let groups = channel_groups(model.spec());
    let s = scores(&model, &groups, Criterion::L1, None).unwrap();
    let go = |spec: &ModelSpec, groups: &[ChannelGroup], s: &[Vec<f32>], a| {
        plan(spec, groups, s, Criterion::L1, Scope::Layer, a, 1)
            .unwrap_err()
            .to_string()
    };
    for r in [0.0, 1.0, 1.5, -0.2] {
        assert!(go(model.spec(), &groups, &s, Amount::Ratio(r)).contains("(0, 1)"));
    }
    assert!(go(model.spec(), &groups, &s, Amount::Ratio(0.01)).contains("removes nothing"));
    assert!(go(model.spec(), &groups, &s, Amount::TargetMacs(10)).contains("cannot reach"));
    let minimal = random_model("mlp:1-1", InputShape::MNIST, 2);
    let g = channel_groups(minimal.spec());
    let s = scores(&minimal, &g, Criterion::L1, None).unwrap();
    assert!(go(minimal.spec(), &g, &s, Amount::Ratio(0.5)).contains("minimum"));
    let linear = ModelSpec::parse("mlp:").unwrap();
    assert!(go(&linear, &[], &[], Amount::Ratio(0.5)).contains("no hidden"));
}

#[test]
fn magnitude_pruning_zeros_the_smallest_weights_and_keeps_every_shape() {
    let model = random_model("cnn:lenet5-half", InputShape::MNIST, 4);
    for scope in [Scope::Layer, Scope::Global] {
        let (sparse, report) = sparsify(&model, 0.9, scope).unwrap();
        assert_eq!(sparse.spec(), model.spec());
        assert!(
            (report.achieved() - 0.9).abs() < 0.01,
            "{}",
            report.achieved()
        );
        let w = sparse.params().tensors()["fc1.weight"].clone();
        let zeros = w
            .eq(0f32)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .mean_all()
            .unwrap();
        let z: f32 = zeros.to_scalar().unwrap();
        if scope == Scope::Layer {
            assert!((z - 0.9).abs() < 0.01, "{z}");
        }
        // Biases are left alone.
        assert_eq!(
            sparse.params().tensors()["fc1.bias"]
                .to_vec1::<f32>()
                .unwrap(),
            model.params().tensors()["fc1.bias"]
                .to_vec1::<f32>()
                .unwrap()
        );
    }
    assert!(sparsify(&model, 1.0, Scope::Layer).is_err());
}

#[test]
fn every_filter_axis_belongs_to_exactly_one_group() {
    let mut s = ModelSpec::parse("mobilenetv2:0.35").unwrap();
    s.input = InputShape {
        channels: 3,
        rows: 16,
        cols: 16,
    };
    let mut seen = std::collections::HashSet::new();
    for g in channel_groups(&s) {
        for m in g.members.iter().filter(|m| m.role == Role::Filter) {
            assert!(seen.insert(m.param.clone()), "{} twice", m.param);
        }
    }
    // Every convolution but none of the classifier's outputs.
    let convs = s.parameters().iter().filter(|p| p.shape.len() == 4).count();
    assert_eq!(seen.len(), convs);
}

#[test]
fn hard_pruning_keeps_every_blocks_shortcut_as_it_was() {
    let input = InputShape {
        channels: 1,
        rows: 16,
        cols: 16,
    };
    for spec in ["mobilenetv2:0.5", "mobilenetv2:0.25", "resnet:14-w8"] {
        let model = random_model(spec, input, 3);
        let s = model.spec();
        let groups = channel_groups(s);
        let sc = scores(&model, &groups, Criterion::L1, None).unwrap();
        let shortcuts = |m: &ModelSpec| {
            super::plan::identity_blocks(m)
                .iter()
                .map(|b| b.0)
                .collect::<Vec<_>>()
        };
        for amount in [
            Amount::Ratio(0.95),
            Amount::Ratio(0.6),
            Amount::TargetMacs(s.macs() / 4),
        ] {
            let p = plan(s, &groups, &sc, Criterion::L1, Scope::Layer, amount, 8)
                .unwrap_or_else(|e| panic!("{spec} {amount:?}: {e}"));
            assert_eq!(shortcuts(&p.after), shortcuts(s), "{spec} {amount:?}");
            if let Amount::TargetMacs(t) = amount {
                assert!(p.after.macs() <= t, "{spec}");
            }
            assert!(p.after.name.ends_with("-pruned"), "{}", p.after.name);
            apply(&model, &groups, &p).unwrap();
        }
    }
}

#[test]
fn widths_round_to_the_nearest_multiple_or_the_full_width() {
    use super::plan::round_to;
    assert_eq!(round_to(11, 16, 8), 8);
    assert_eq!(round_to(12, 16, 8), 16);
    assert_eq!(round_to(23, 32, 8), 24);
    assert_eq!(round_to(45, 64, 8), 48);
    assert_eq!(round_to(19, 20, 8), 20);
    assert_eq!(round_to(3, 16, 8), 8);
    assert_eq!(round_to(5, 6, 8), 5);
    assert_eq!(round_to(300, 1200, 1), 300);
    assert_eq!(round_to(300, 1200, 8), 304);
}
