use edgekd_runtime::{Backend, Model, Options};
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::Path::new(&args[1]);
    let batch: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(1);
    if std::env::var("ONLY_NATIVE").is_ok() {
        let m = Model::load_with(
            path,
            Options {
                backend: Backend::Native,
                threads: 1,
            },
        )
        .unwrap();
        let per: usize = m.info().inputs[0].sample_len().unwrap();
        let input: Vec<f32> = (0..per * batch)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.3)
            .collect();
        let nm = edgekd_runtime::native::NativeModel::load(
            &edgekd_runtime::proto::decode(&std::fs::read(path).unwrap()).unwrap(),
            m.info(),
            1,
        )
        .unwrap();
        let mut shape = vec![batch];
        shape.extend(m.info().inputs[0].shape.iter().skip(1).map(|d| match d {
            edgekd_runtime::Dim::Fixed(n) => *n,
            _ => 0,
        }));
        for (l, t) in nm.profile(&input, &shape, 2000).unwrap() {
            println!("{:>8.2} us  {l}", t.as_secs_f64() * 1e6);
        }
        return;
    }
    let mut models = vec![];
    for b in [Backend::Tract, Backend::Native] {
        match Model::load_with(
            path,
            Options {
                backend: b,
                threads: 1,
            },
        ) {
            Ok(m) => models.push(m),
            Err(e) => println!("{b}: {e}"),
        }
    }
    let per: usize = models[0].info().inputs[0].sample_len().unwrap();
    let input: Vec<f32> = (0..per * batch)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.3)
        .collect();
    let outs: Vec<_> = models
        .iter()
        .map(|m| m.logits(&input, batch).unwrap())
        .collect();
    for (m, o) in models.iter().zip(&outs) {
        let d = o
            .data
            .iter()
            .zip(&outs[0].data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let t = Instant::now();
        let n = 2000 / batch.max(1) + 10;
        for _ in 0..n {
            m.logits(&input, batch).unwrap();
        }
        println!(
            "{:7} maxdiff {:.5} {:.1} us/run  first {:?}",
            m.backend(),
            d,
            t.elapsed().as_secs_f64() * 1e6 / n as f64,
            &o.data[..3]
        );
    }
}
#[allow(dead_code)]
fn unused() {}
