//! Differential: a convolution shaped and weighted by the bytes (dense, grouped or depthwise,
//! 1x1 to 5x5, strides 1-3, each side's padding its own, batch 1-3, int8 or f32) run on the
//! native engine at one and at three threads against the reference loop of
//! `runtime/tests/support`: int8 sums must match exactly, f32 within float rounding of the
//! sum of |terms|.
#![no_main]

#[path = "../../runtime/tests/support/mod.rs"]
mod support;

use edgekd_runtime::{Backend, Model, Options};
use libfuzzer_sys::fuzz_target;
use support::{spread, ConvCase};

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let d = |i: usize| data[i] as usize;
    let (depthwise, float) = (d(0) & 1 == 1, d(0) & 2 == 2);
    let k = [[1, 1], [2, 2], [3, 3], [5, 5], [1, 3], [3, 1]][d(1) % 6];
    let stride = 1 + d(2) % 3;
    // Each side's padding from two bits of d(3): asymmetric pads as TensorFlow's SAME makes.
    let pad = [0, 1, 2, 3].map(|i| ((d(3) >> (2 * i)) & 3) % (k[0].min(k[1]) / 2 + 1));
    let (c, o, group) = if depthwise {
        let c = 1 + d(4) % 24;
        (c, c, c)
    } else {
        let g = 1 + d(5) % 3;
        (g * (1 + d(4) % 10), g * (1 + d(6) % 20), g)
    };
    // Dilation 1 or 2 from d(1)'s bits above the kernel choice.
    let dilation = 1 + (d(1) / 6) % 2;
    let span = k.map(|k| (k - 1) * dilation + 1);
    let case = ConvCase {
        c,
        h: span[0] + d(7) % 10,
        w: span[1] + d(8) % 10,
        o,
        k,
        group,
        stride,
        pad,
        dilation,
    };
    let batch = 1 + d(9) % 3;
    let bytes = &data[12..];
    let byte = |i: usize| if bytes.is_empty() { 1 } else { bytes[i % bytes.len()] as i8 };
    let x: Vec<f32> = spread(batch * c * case.h * case.w, d(10) as u64, 1000)
        .into_iter()
        .map(|v| v as f32 * 0.003 + (d(11) as f32 - 128.0) * 0.01)
        .collect();
    let engines = |model: &[u8]| {
        [1, 3].map(|threads| {
            let options = Options {
                backend: Backend::Native,
                threads,
                ..Default::default()
            };
            Model::from_bytes_with(model, options).unwrap_or_else(|e| panic!("{case:?}: {e}"))
        })
    };
    if float {
        let weights: Vec<f32> = (0..case.weight_len()).map(|i| byte(i) as f32 / 64.0).collect();
        let bias: Vec<f32> = (0..o).map(|i| byte(i + 7) as f32 / 32.0).collect();
        let want = case.f32_reference(batch, &x, &weights, &bias);
        for m in engines(&case.f32_model(&weights, &bias)) {
            let got = m.logits(&x, batch).unwrap();
            for (i, (&g, &(w, mag))) in got.data.iter().zip(&want).enumerate() {
                let tol = 1e-5 * (mag + 1.0);
                assert!((g - w).abs() <= tol, "{case:?} batch {batch} output {i}: {g} vs {w}");
            }
        }
    } else {
        let weights: Vec<i8> = (0..case.weight_len()).map(|i| byte(i)).collect();
        let want = case.int8_reference(batch, &x, &weights);
        for m in engines(&case.int8_model(&weights)) {
            assert_eq!(m.logits(&x, batch).unwrap().data, want, "{case:?} batch {batch}");
        }
    }
});
