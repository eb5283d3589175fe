//! One knowledge-distillation training step (teacher forward, student forward, loss, backward,
//! AdamW update) at batch 128, for an MLP pair and a CNN pair, plus the soft loss alone.
//!
//! `cargo bench -p edgekd-benches --bench distill`

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use edgekd_distill::loss::{distillation_loss, label_loss, soft_kl, KdConfig, SoftTargets};
use edgekd_distill::optim::Optimizer;
use edgekd_distill::{Model, ModelSpec, OptimizerConfig};

const BATCH: usize = 128;

fn kd_step(c: &mut Criterion, teacher: &str, student: &str) {
    // As the trainer does: without it every step page-faults its gradient buffers back in.
    edgekd_distill::memory::keep_freed_buffers();
    let dev = Device::Cpu;
    let t = Model::new(&ModelSpec::parse(teacher).unwrap(), 1, &dev).unwrap();
    let s = Model::new(&ModelSpec::parse(student).unwrap(), 2, &dev).unwrap();
    let x = Tensor::randn(0f32, 1.0, (BATCH, 784), &dev).unwrap();
    let labels = Tensor::from_vec(
        (0..BATCH as u32).map(|i| i % 10).collect::<Vec<_>>(),
        BATCH,
        &dev,
    )
    .unwrap();
    let mut opt =
        Optimizer::with_decay(OptimizerConfig::default(), s.params().trainable()).unwrap();
    let kd = KdConfig::default();
    c.bench_function(
        &format!("kd step {teacher} -> {student}, batch {BATCH}"),
        |b| {
            b.iter(|| {
                let tl = t.forward(&x, false).unwrap().logits.detach();
                let targets = SoftTargets::combine(&[tl], &[1.0], kd.temperature).unwrap();
                let out = s.forward(&x, true).unwrap();
                let hard = label_loss(&out.logits, &labels, None, 0.0).unwrap();
                let loss = distillation_loss(&kd, &out.logits, &targets, hard, None)
                    .unwrap()
                    .total;
                opt.step(&loss.backward().unwrap(), 1e-3).unwrap();
            })
        },
    );
}

fn steps(c: &mut Criterion) {
    kd_step(c, "mlp:1200-1200", "mlp:800-800");
    kd_step(c, "cnn:lenet5", "cnn:lenet5-half");
}

fn soft_loss(c: &mut Criterion) {
    let dev = Device::Cpu;
    let s = Tensor::randn(0f32, 3.0, (BATCH, 10), &dev).unwrap();
    let t = Tensor::randn(0f32, 3.0, (BATCH, 10), &dev)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let targets = SoftTargets::combine(&[t], &[1.0], 4.0).unwrap();
    c.bench_function("soft KL loss, batch 128 x 10 classes", |b| {
        b.iter(|| soft_kl(&s, &targets, 4.0).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = steps, soft_loss
}
criterion_main!(benches);
