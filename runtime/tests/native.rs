//! The native int8 engine against plain-Rust reference arithmetic on hand-built graphs, and
//! every engine against hostile bytes.

mod support;

use edgekd_runtime::proto::AttributeProto;
use edgekd_runtime::{Backend, Model, Options};
use support::*;

/// The model on the native engine, one thread.
fn native(bytes: &[u8]) -> edgekd_runtime::Result<Model> {
    Model::from_bytes_with(
        bytes,
        Options {
            backend: Backend::Native,
            threads: 1,
            ..Default::default()
        },
    )
}

fn quantize(x: f32, scale: f32) -> i64 {
    ((x / scale).round_ties_even() as i64).clamp(-128, 127)
}

fn engines(bytes: &[u8]) -> Vec<Model> {
    // Tract is the second opinion where it is built in (not in device builds); the native
    // engine also runs on two threads, which split each layer's pixels and channels.
    [
        (Backend::Native, 1),
        (Backend::Native, 2),
        (Backend::Tract, 1),
    ]
    .into_iter()
    .filter(|(b, _)| b.available())
    .map(|(backend, threads)| {
        Model::from_bytes_with(
            bytes,
            Options {
                backend,
                threads,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{backend}: {e}"))
    })
    .collect()
}

/// QuantizeLinear → MatMulInteger → Add(int32 bias) → Cast → Mul(per-channel scale) → Relu:
/// the QOperator dense layer edgekd exports, with K = 70 (not a multiple of the kernels'
/// 32-byte rows) and N = 9 (not a multiple of their 4 columns).
#[test]
fn qoperator_dense_layer_matches_reference_arithmetic() {
    let (k, n, batch) = (70usize, 9usize, 3usize);
    let w: Vec<i8> = spread(k * n, 1, 127).into_iter().map(|v| v as i8).collect();
    let bias: Vec<i32> = spread(n, 2, 5000).into_iter().map(|v| v as i32).collect();
    let scales: Vec<f32> = (0..n).map(|j| 0.001 * (j + 1) as f32).collect();
    let x_scale = 0.05f32;
    let bytes = model(
        vec![
            node("QuantizeLinear", &["x", "xs", "xz"], "xq", vec![]),
            node("MatMulInteger", &["xq", "w"], "acc", vec![]),
            node("Add", &["acc", "b"], "accb", vec![]),
            node("Cast", &["accb"], "accf", vec![int("to", 1)]),
            node("Mul", &["accf", "s"], "y", vec![]),
            node("Relu", &["y"], "out", vec![]),
        ],
        vec![
            f32s("xs", &[], &[x_scale]),
            i8s("xz", &[], &[0]),
            i8s("w", &[k as i64, n as i64], &w),
            i32s("b", &[n as i64], &bias),
            f32s("s", &[n as i64], &scales),
        ],
        value("x", &[-1, k as i64]),
        "out",
    );
    let x: Vec<f32> = spread(batch * k, 3, 1000)
        .into_iter()
        .map(|v| v as f32 * 0.0071)
        .collect();
    let mut want = vec![0f32; batch * n];
    for r in 0..batch {
        for j in 0..n {
            let acc: i64 = (0..k)
                .map(|p| quantize(x[r * k + p], x_scale) * w[p * n + j] as i64)
                .sum();
            want[r * n + j] = (((acc + bias[j] as i64) as f32) * scales[j]).max(0.0);
        }
    }
    for m in engines(&bytes) {
        let got = m.logits(&x, batch).unwrap();
        assert_eq!(got.shape, vec![batch, n]);
        for (g, w) in got.data.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{}: {g} vs {w}",
                m.backend()
            );
        }
    }
}

/// MatMulInteger -> Cast -> Mul(scale) -> QuantizeLinear, the QOperator chain: the engine
/// folds it into one step, and must round `(acc · scale) / y_scale` as the operators do, not
/// `acc · (scale / y_scale)`, which lands one level off next to a rounding tie (a
/// `mobilenetv2:0.25` export disagreed with ONNX Runtime and tract on one image of 40 by
/// 0.52 in a logit that way). Sums chosen where the two differ; the expected values are
/// what ONNX Runtime 1.32 computes for them.
#[test]
fn a_quantize_linear_after_float_operators_divides_as_they_do() {
    let (scale, y_scale) = (0.003f32, 0.4f32);
    let folded = scale / y_scale;
    let sums: Vec<i32> = (-16000..16000)
        .filter(|&t| {
            let (exact, fast) = ((t as f32 * scale) / y_scale, t as f32 * folded);
            exact.round_ties_even() != fast.round_ties_even()
        })
        .take(8)
        .collect();
    assert!(sums.len() >= 4, "no sum next to a tie: {sums:?}");
    // Sums from two int8 inputs against weights [127, 1]: t = 127·a + b.
    let x: Vec<f32> = sums
        .iter()
        .flat_map(|&t| {
            let a = (t as f32 / 127.0).round() as i32;
            [a as f32, (t - 127 * a) as f32]
        })
        .collect();
    let bytes = model(
        vec![
            node("QuantizeLinear", &["x", "one", "z"], "xq", vec![]),
            node("MatMulInteger", &["xq", "w"], "acc", vec![]),
            node("Cast", &["acc"], "accf", vec![int("to", 1)]),
            node("Mul", &["accf", "s"], "y", vec![]),
            node("QuantizeLinear", &["y", "ys", "z"], "yq", vec![]),
            node("DequantizeLinear", &["yq", "ys", "z"], "out", vec![]),
        ],
        vec![
            f32s("one", &[], &[1.0]),
            i8s("z", &[], &[0]),
            i8s("w", &[2, 1], &[127, 1]),
            f32s("s", &[], &[scale]),
            f32s("ys", &[], &[y_scale]),
        ],
        value("x", &[-1, 2]),
        "out",
    );
    let want: Vec<f32> = sums
        .iter()
        .map(|&t| {
            ((t as f32 * scale) / y_scale)
                .round_ties_even()
                .clamp(-128.0, 127.0)
                * y_scale
        })
        .collect();
    // ONNX Runtime gives exactly `want` on this graph (with and without its graph
    // optimizations); tract folds the scales as the engine used to, one level off.
    for m in engines(&bytes) {
        let got = m.logits(&x, sums.len()).unwrap().data;
        if m.backend() == Backend::Tract.name() {
            let off = got
                .iter()
                .zip(&want)
                .all(|(g, w)| (g - w).abs() <= y_scale * 1.001);
            assert!(off, "tract: {got:?} vs {want:?}");
        } else {
            assert_eq!(got, want, "{}", m.backend());
        }
    }
}

/// ConvInteger with padding and two groups, on u8 activations with a zero point (the
/// dynamic-quantization form), against a direct loop: strided (the patch-gathering path) and
/// with stride 1 on rows wide enough for the direct-taps path.
#[test]
fn grouped_strided_padded_integer_convolution_matches_reference() {
    check_conv([4, 7, 9], 6, [3, 3], 2, 2, 1);
    check_conv([4, 6, 20], 6, [3, 5], 2, 1, 2);
    check_conv([1, 28, 28], 3, [5, 5], 1, 1, 2);
    check_conv([16, 9, 9], 36, [2, 2], 2, 1, 0);
}

/// Dilated kernels (taps two or three pixels apart), integer and float, against the
/// references: first layers of one to three channels (their windows gathered into one row,
/// padding filled with the zero point), a dense layer, depthwise, strided.
#[test]
fn dilated_convolutions_match_reference() {
    let case = |c, h, o, k, group, stride, pad, dilation| ConvCase {
        c,
        h,
        w: h + 3,
        o,
        k: [k, k],
        group,
        stride,
        pad: [pad; 4],
        dilation,
    };
    let cases = [
        case(1, 12, 4, 3, 1, 1, 2, 2),
        case(3, 11, 5, 3, 1, 2, 1, 2),
        case(2, 13, 3, 5, 1, 1, 4, 2),
        case(8, 10, 6, 3, 1, 1, 3, 3),
        case(6, 9, 6, 3, 6, 1, 2, 2),
        case(6, 10, 6, 3, 6, 2, 1, 2),
    ];
    for case in cases {
        check_conv_case(case);
        let (weights, bias): (Vec<f32>, Vec<f32>) = (
            spread(case.weight_len(), 9, 100)
                .into_iter()
                .map(|v| v as f32 * 0.01)
                .collect(),
            (0..case.o).map(|i| i as f32 * 0.1 - 0.3).collect(),
        );
        let x: Vec<f32> = spread(2 * case.c * case.h * case.w, 3, 500)
            .into_iter()
            .map(|v| v as f32 * 0.004)
            .collect();
        let want = case.f32_reference(2, &x, &weights, &bias);
        for m in engines(&case.f32_model(&weights, &bias)) {
            let got = m.logits(&x, 2).unwrap();
            for (i, (&g, &(w, mag))) in got.data.iter().zip(&want).enumerate() {
                let tol = 1e-5 * (mag + 1.0);
                assert!(
                    (g - w).abs() <= tol,
                    "{} {case:?} output {i}: {g} vs {w}",
                    m.backend()
                );
            }
        }
    }
}

/// Float first layers of up to sixteen filters (pixels in lanes on x86_64), symmetric and
/// asymmetric padding, against the reference output by output: biases large enough that the ReLU after them passes every
/// value, so no error hides below zero.
#[test]
fn narrow_float_layers_match_reference_output_by_output() {
    // The last two are TensorFlow's SAME on an even kernel (more padding at the bottom and
    // right) and a lopsided pad (left and bottom only).
    for (c, h, o, k, pad) in [
        (1, 28, 3, 5, [2; 4]),
        (3, 9, 11, 3, [1; 4]),
        (2, 6, 16, 3, [0; 4]),
        (1, 10, 8, 4, [1, 1, 2, 2]),
        (2, 7, 5, 3, [0, 2, 1, 0]),
    ] {
        let case = ConvCase {
            c,
            h,
            w: h + 5,
            o,
            k: [k, k],
            group: 1,
            stride: 1,
            pad,
            dilation: 1,
        };
        let weights: Vec<f32> = spread(case.weight_len(), 13, 100)
            .into_iter()
            .map(|v| v as f32 * 0.01)
            .collect();
        let bias: Vec<f32> = (0..o).map(|i| 20.0 + i as f32 * 0.5).collect();
        let x: Vec<f32> = spread(2 * c * h * case.w, 5, 500)
            .into_iter()
            .map(|v| v as f32 * 0.002)
            .collect();
        let want = case.f32_reference(2, &x, &weights, &bias);
        for m in engines(&case.f32_model(&weights, &bias)) {
            let got = m.logits(&x, 2).unwrap();
            for (i, (&g, &(w, mag))) in got.data.iter().zip(&want).enumerate() {
                assert!(w > 0.0, "{case:?}: the ReLU must pass output {i}");
                let tol = 1e-5 * (mag + 1.0);
                assert!(
                    (g - w).abs() <= tol,
                    "{} {case:?} output {i}: {g} vs {w}",
                    m.backend()
                );
            }
        }
    }
}

/// A float convolution (left out of quantization, as ONNX Runtime's quantizer does with
/// `nodes_to_exclude`) followed by `QuantizeLinear`: the quantization stays a step of its own
/// (folding it into a float layer's epilogue reached an int8 store the float kernels do not
/// have), and the output is the float one, quantized and dequantized.
#[test]
fn a_float_convolution_feeding_quantize_linear_runs() {
    let case = ConvCase {
        c: 2,
        h: 6,
        w: 7,
        o: 4,
        k: [3, 3],
        group: 1,
        stride: 1,
        pad: [1; 4],
        dilation: 1,
    };
    let weights: Vec<f32> = spread(case.weight_len(), 21, 100)
        .into_iter()
        .map(|v| v as f32 * 0.01)
        .collect();
    let bias = vec![0.1f32, -0.2, 0.3, 0.0];
    let (scale, zp) = (0.05f32, 3i8);
    let bytes = model(
        vec![
            node(
                "Conv",
                &["x", "w", "b"],
                "conv",
                vec![ints("pads", &[1; 4])],
            ),
            node("QuantizeLinear", &["conv", "s", "z"], "q", vec![]),
            node("DequantizeLinear", &["q", "s", "z"], "out", vec![]),
        ],
        vec![
            f32s("w", &[4, 2, 3, 3], &weights),
            f32s("b", &[4], &bias),
            f32s("s", &[], &[scale]),
            i8s("z", &[], &[zp]),
        ],
        value("x", &[-1, 2, 6, 7]),
        "out",
    );
    let x: Vec<f32> = spread(2 * 2 * 6 * 7, 4, 300)
        .into_iter()
        .map(|v| v as f32 * 0.01)
        .collect();
    // The float convolution without the ReLU of `f32_reference`: biases plus sums.
    let relu_free: Vec<f32> = {
        let shifted: Vec<f32> = bias.iter().map(|b| b + 100.0).collect();
        case.f32_reference(2, &x, &weights, &shifted)
            .into_iter()
            .map(|(v, _)| v - 100.0)
            .collect()
    };
    for m in engines(&bytes) {
        let got = m.logits(&x, 2).unwrap();
        for (i, (&g, &f)) in got.data.iter().zip(&relu_free).enumerate() {
            let q = ((f / scale).round_ties_even() + zp as f32).clamp(-128.0, 127.0);
            let want = (q - zp as f32) * scale;
            // On the int8 grid, and the step `want` is on (a value within rounding of a
            // step boundary may land on either side).
            let steps = g / scale;
            assert!(
                (steps - steps.round()).abs() < 1e-3 && (g - want).abs() <= scale * 1.001,
                "{} output {i}: {g} vs {want}",
                m.backend()
            );
        }
    }
}

/// Random shapes against the reference: odd channel counts, depthwise and grouped, 1x1 to 5x5
/// kernels, strides 1 and 2, padding up to half the kernel, images as small as the kernel.
#[test]
fn random_integer_convolutions_match_reference() {
    let mut draws = spread(10 * 40, 17, 1 << 20)
        .into_iter()
        .map(|v| v.unsigned_abs() as usize);
    let mut draw = |n: usize| draws.next().unwrap() % n;
    for _ in 0..40 {
        let group = [1, 1, 2, 3][draw(4)];
        let depthwise = draw(3) == 0;
        let (c, o, group) = if depthwise {
            let c = 1 + draw(40);
            (c, c, c)
        } else {
            (group * (1 + draw(20)), group * (1 + draw(24)), group)
        };
        let k = [1, 3, 3, 5][draw(4)];
        let stride = 1 + draw(2);
        let pad = draw(k / 2 + 1);
        let (h, w) = (k + draw(12), k + draw(12));
        check_conv([c, h, w], o, [k, k], group, stride, pad);
    }
}

fn check_conv(
    [c, h, w]: [usize; 3],
    o: usize,
    k: [usize; 2],
    group: usize,
    stride: usize,
    pad: usize,
) {
    let case = ConvCase {
        c,
        h,
        w,
        o,
        k,
        group,
        stride,
        pad: [pad; 4],
        dilation: 1,
    };
    check_conv_case(case);
}

fn check_conv_case(case: ConvCase) {
    let ConvCase { c, h, w, o, .. } = case;
    let weights: Vec<i8> = spread(case.weight_len(), 4, 127)
        .into_iter()
        .map(|v| v as i8)
        .collect();
    let bytes = case.int8_model(&weights);
    let x: Vec<f32> = spread(2 * c * h * w, 5, 900)
        .into_iter()
        .map(|v| v as f32 * 0.01 + 2.0)
        .collect();
    let want = case.int8_reference(2, &x, &weights);
    let (oh, ow) = case.out_hw();
    for m in engines(&bytes) {
        let got = m.logits(&x, 2).unwrap();
        assert_eq!(got.shape, vec![2, o, oh, ow], "{}", m.backend());
        assert_eq!(got.data, want, "{} {case:?}", m.backend());
    }
}

/// Float graphs run on the native engine too (so a build without tract runs f32 students),
/// while `auto` keeps handing them to tract when it is built in.
#[test]
fn float_graphs_run_natively_and_auto_picks_the_native_engine() {
    let bytes = model(
        vec![node("MatMul", &["x", "w"], "out", vec![])],
        vec![f32s("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0])],
        value("x", &[-1, 2]),
        "out",
    );
    let native = native(&bytes).unwrap();
    assert_eq!(native.backend(), "native");
    assert_eq!(native.logits(&[1.0, 1.0], 1).unwrap().data, vec![4.0, 6.0]);
    let m = Model::from_bytes(&bytes).unwrap();
    assert_eq!(m.backend(), "native");
    assert_eq!(m.logits(&[1.0, 1.0], 1).unwrap().data, vec![4.0, 6.0]);
    let err = m.logits(&[1.0, 1.0, 1.0], 1).unwrap_err();
    assert!(err.to_string().contains("expects shape [N, 2]"), "{err}");
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 1,
        f: v,
        ..Default::default()
    }
}

/// A grouped, strided, padded float convolution with bias and ReLU, then a `Gemm` with
/// transB, alpha and beta, against f64 arithmetic written out loop by loop.
#[test]
fn float_convolution_and_gemm_match_reference() {
    check_float_conv([4, 9, 11], 6, 2, 3, 2, 1);
    // One to three input channels: the window is gathered into one row (a first layer).
    check_float_conv([3, 9, 11], 5, 1, 5, 1, 2);
    check_float_conv([1, 8, 10], 4, 1, 3, 2, 1);
    check_float_conv([2, 7, 7], 9, 1, 3, 1, 0);
    // Sixteen or fewer filters, stride 1: pixels in lanes on x86_64 (blocks of eight pixels,
    // rows that end mid-block).
    check_float_conv([1, 28, 28], 3, 1, 5, 1, 2);
    check_float_conv([2, 6, 17], 8, 1, 3, 1, 1);
    // Sixteen and eleven filters: two passes of eight over the same planes.
    check_float_conv([1, 10, 12], 16, 1, 3, 1, 1);
    check_float_conv([3, 9, 9], 11, 1, 3, 1, 1);
    // Depthwise: interior pixels a row at a time (8 channels; 20, whose last 4 go one by one;
    // 5x5; stride 2), border pixels one by one; 7x7 (49 taps) pixel by pixel throughout.
    check_float_conv([8, 9, 11], 8, 8, 3, 1, 1);
    check_float_conv([20, 7, 9], 20, 20, 3, 1, 1);
    check_float_conv([12, 10, 10], 12, 12, 5, 1, 2);
    check_float_conv([16, 9, 12], 16, 16, 3, 2, 1);
    check_float_conv([8, 9, 9], 8, 8, 7, 1, 3);
    // Big enough (about 2 M multiply-adds) for two threads to split it: tap pointers and
    // 12-row tiles.
    check_float_conv([16, 12, 12], 32, 1, 3, 1, 1);
}

fn check_float_conv(
    [c, h, w]: [usize; 3],
    o: usize,
    group: usize,
    k: usize,
    stride: usize,
    pad: usize,
) {
    let classes = 5;
    let cg = c / group;
    let wconv: Vec<f32> = spread(o * cg * k * k, 7, 100)
        .into_iter()
        .map(|v| v as f32 * 0.01)
        .collect();
    let bconv: Vec<f32> = (0..o).map(|i| i as f32 * 0.1 - 0.2).collect();
    let (oh, ow) = (
        (h + 2 * pad - k) / stride + 1,
        (w + 2 * pad - k) / stride + 1,
    );
    let features = o * oh * ow;
    let wfc: Vec<f32> = spread(classes * features, 8, 100)
        .into_iter()
        .map(|v| v as f32 * 0.003)
        .collect();
    let bfc: Vec<f32> = (0..classes).map(|i| 0.5 - i as f32 * 0.25).collect();
    let (alpha, beta) = (0.75f32, 2.0f32);
    let bytes = model(
        vec![
            node(
                "Conv",
                &["x", "wc", "bc"],
                "conv",
                vec![
                    ints("strides", &[stride as i64; 2]),
                    ints("pads", &[pad as i64; 4]),
                    int("group", group as i64),
                ],
            ),
            node("Relu", &["conv"], "act", vec![]),
            node("Flatten", &["act"], "flat", vec![int("axis", 1)]),
            node(
                "Gemm",
                &["flat", "wf", "bf"],
                "out",
                vec![int("transB", 1), float("alpha", alpha), float("beta", beta)],
            ),
        ],
        vec![
            f32s("wc", &[o as i64, cg as i64, k as i64, k as i64], &wconv),
            f32s("bc", &[o as i64], &bconv),
            f32s("wf", &[classes as i64, features as i64], &wfc),
            f32s("bf", &[classes as i64], &bfc),
        ],
        value("x", &[-1, c as i64, h as i64, w as i64]),
        "out",
    );
    let n = 3;
    let x: Vec<f32> = spread(n * c * h * w, 9, 500)
        .into_iter()
        .map(|v| v as f32 * 0.01)
        .collect();
    let mut want = vec![0f64; n * classes];
    for img in 0..n {
        let mut act = vec![0f64; features];
        for oc in 0..o {
            let g = oc / (o / group);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bconv[oc] as f64;
                    for ic in 0..cg {
                        for ky in 0..k {
                            for kx in 0..k {
                                let y = (oy * stride + ky) as i64 - pad as i64;
                                let xx = (ox * stride + kx) as i64 - pad as i64;
                                if y < 0 || xx < 0 || y >= h as i64 || xx >= w as i64 {
                                    continue;
                                }
                                let v = x
                                    [((img * c + g * cg + ic) * h + y as usize) * w + xx as usize]
                                    as f64;
                                acc += v * wconv[((oc * cg + ic) * k + ky) * k + kx] as f64;
                            }
                        }
                    }
                    act[(oc * oh + oy) * ow + ox] = acc.max(0.0);
                }
            }
        }
        for j in 0..classes {
            let dot: f64 = (0..features)
                .map(|p| act[p] * wfc[j * features + p] as f64)
                .sum();
            want[img * classes + j] = alpha as f64 * dot + beta as f64 * bfc[j] as f64;
        }
    }
    for m in engines(&bytes) {
        let got = m.logits(&x, n).unwrap();
        assert_eq!(got.shape, vec![n, classes], "{}", m.backend());
        for (g, w) in got.data.iter().zip(&want) {
            // f32 rounding grows with the value (the largest case's logits reach ~100).
            let tol = 1e-4 * (1.0 + w.abs());
            assert!((*g as f64 - w).abs() < tol, "{}: {g} vs {w}", m.backend());
        }
    }
    // Threads split pixels and channels, never one output's sum: one and two threads agree
    // bit for bit (depthwise row paths and narrow layers included).
    let on = |threads| {
        Model::from_bytes_with(
            &bytes,
            Options {
                backend: Backend::Native,
                threads,
                ..Default::default()
            },
        )
        .unwrap()
        .logits(&x, n)
        .unwrap()
        .data
    };
    assert_eq!(
        on(1),
        on(2),
        "{c}x{h}x{w}, {o} filters, group {group}, k {k}"
    );
}

/// A few hundred bytes declaring 10^12 elements must be refused before any allocation.
#[test]
fn huge_declared_tensors_are_refused_without_allocating() {
    let mut w = i8s("w", &[1_000_000, 1_000_000], &[]);
    w.raw_data = vec![1, 2, 3];
    let bytes = model(
        vec![node("MatMulInteger", &["x", "w"], "out", vec![])],
        vec![w],
        value("x", &[-1, 1_000_000]),
        "out",
    );
    assert!(bytes.len() < 300);
    for backend in [Backend::Native, Backend::Auto] {
        let err = Model::from_bytes_with(
            &bytes,
            Options {
                backend,
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("declares shape"),
            "{backend}: {err}"
        );
    }
}

/// Truncations and byte flips of a valid model: every engine answers Ok or Err, never a panic.
#[test]
fn mangled_models_never_panic() {
    let w: Vec<i8> = spread(16 * 4, 9, 127)
        .into_iter()
        .map(|v| v as i8)
        .collect();
    let bytes = model(
        vec![
            node("QuantizeLinear", &["x", "xs", "xz"], "xq", vec![]),
            node("MatMulInteger", &["xq", "w"], "acc", vec![]),
            node("Cast", &["acc"], "out", vec![int("to", 1)]),
        ],
        vec![
            f32s("xs", &[], &[0.1]),
            i8s("xz", &[], &[0]),
            i8s("w", &[16, 4], &w),
        ],
        value("x", &[-1, 16]),
        "out",
    );
    let input = vec![0.5f32; 16];
    let mut tried = 0;
    let mut variants: Vec<Vec<u8>> = (0..bytes.len()).map(|n| bytes[..n].to_vec()).collect();
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            variants.push(b);
        }
    }
    for b in &variants {
        for backend in [Backend::Native, Backend::Tract] {
            let r = std::panic::catch_unwind(|| {
                if let Ok(m) = Model::from_bytes_with(
                    b,
                    Options {
                        backend,
                        threads: 1,
                        ..Default::default()
                    },
                ) {
                    let _ = m.logits(&input, 1);
                }
            });
            assert!(r.is_ok(), "{backend} panicked on a mangled model");
            tried += 1;
        }
    }
    assert!(tried > 1000);
}

/// One model shared by four threads, 10,000 inferences each on inputs of their own, gives
/// exactly what one thread computes: `Model` is `Send + Sync` and runs share no state.
#[test]
fn one_model_serves_four_threads_with_single_threaded_results() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Model>();
    // A QOperator dense layer (the native engine's integer path) and its float twin.
    let (k, n) = (24, 5);
    let w: Vec<i8> = spread(k * n, 21, 127)
        .into_iter()
        .map(|v| v as i8)
        .collect();
    let wf: Vec<f32> = w.iter().map(|&v| v as f32 * 0.01).collect();
    let int8 = model(
        vec![
            dynamic_quantize(),
            node("MatMulInteger", &["xq", "w", "xz"], "acc", vec![]),
            node("Cast", &["acc"], "out", vec![int("to", 1)]),
        ],
        vec![i8s("w", &[k as i64, n as i64], &w)],
        value("x", &[-1, k as i64]),
        "out",
    );
    let float = model(
        vec![node("MatMul", &["x", "w"], "out", vec![])],
        vec![f32s("w", &[k as i64, n as i64], &wf)],
        value("x", &[-1, k as i64]),
        "out",
    );
    let inputs: Vec<Vec<f32>> = (0..4u64)
        .map(|t| {
            spread(k, 100 + t, 1000)
                .into_iter()
                .map(|v| v as f32 * 0.003)
                .collect()
        })
        .collect();
    for bytes in [int8, float] {
        for m in engines(&bytes) {
            let want: Vec<Vec<f32>> = inputs
                .iter()
                .map(|x| m.logits(x, 1).unwrap().data)
                .collect();
            std::thread::scope(|s| {
                for (x, want) in inputs.iter().zip(&want) {
                    let m = &m;
                    s.spawn(move || {
                        for i in 0..10_000 {
                            let got = m.logits(x, 1).unwrap().data;
                            assert_eq!(&got, want, "{} run {i}", m.backend());
                        }
                    });
                }
            });
        }
    }
}

/// Found by fuzzing the native engine: a convolution over an image of width 0 (padding made
/// the kernel fit) panicked while copying planes. It is now an error, float and int8 alike.
#[test]
fn fuzz_convolution_over_an_empty_image_is_an_error_not_a_panic() {
    let float = model(
        vec![node(
            "Conv",
            &["x", "w"],
            "out",
            vec![ints("pads", &[1, 1, 1, 1])],
        )],
        vec![f32s("w", &[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0])],
        value("x", &[-1, 1, 3, 0]),
        "out",
    );
    let int8 = model(
        vec![
            dynamic_quantize(),
            node(
                "ConvInteger",
                &["xq", "w", "xz"],
                "acc",
                vec![ints("pads", &[1, 1, 1, 1])],
            ),
            node("Cast", &["acc"], "out", vec![int("to", 1)]),
        ],
        vec![i8s("w", &[1, 1, 2, 2], &[1, 2, 3, 4])],
        value("x", &[-1, 1, 3, 0]),
        "out",
    );
    // The engine lowers the model when it loads, so the refusal comes then.
    for bytes in [float, int8] {
        let err = native(&bytes).unwrap_err();
        assert!(err.to_string().contains("empty image"), "{err}");
    }
}

/// Found by fuzzing the `model` target: a `ConvInteger` whose weights were a scalar (an
/// int8 initializer of shape []) read the shape's first dimension before anything checked
/// the weights were 4-D: an index panic. Both integer convolution paths now check first.
#[test]
fn fuzz_conv_integer_with_scalar_weights_is_an_error_not_a_panic() {
    let conv_integer = model(
        vec![node("ConvInteger", &["x", "w"], "out", vec![])],
        vec![i8s("w", &[], &[3])],
        value("x", &[-1, 1, 6, 6]),
        "out",
    );
    let qdq_conv = model(
        vec![
            node("QuantizeLinear", &["x", "s", "z"], "xq", vec![]),
            node("DequantizeLinear", &["xq", "s", "z"], "xd", vec![]),
            node("DequantizeLinear", &["w", "s", "z"], "wd", vec![]),
            node("Conv", &["xd", "wd"], "out", vec![]),
        ],
        vec![
            f32s("s", &[], &[0.1]),
            i8s("z", &[], &[0]),
            i8s("w", &[], &[3]),
        ],
        value("x", &[-1, 1, 6, 6]),
        "out",
    );
    for bytes in [conv_integer, qdq_conv] {
        let err = native(&bytes).unwrap_err();
        assert!(err.to_string().contains("2-D convolution"), "{err}");
    }
}

/// Float pooling over windows inside the image (the direct path for max) and across its
/// padded border, against a loop written out: max, and average with and without the padding
/// counted.
#[test]
fn float_pooling_matches_reference_inside_and_across_the_border() {
    let (h, w) = (7usize, 9usize);
    // Three channels (a count the engine compiles for) and five (any count).
    for (c, op, k, stride, pad, include) in [
        (3, "MaxPool", 3, 2, 1, false),
        (3, "MaxPool", 2, 2, 0, false),
        (5, "MaxPool", 3, 1, 1, false),
        (5, "MaxPool", 2, 2, 0, false),
        (3, "AveragePool", 3, 1, 1, true),
        (3, "AveragePool", 3, 2, 1, false),
    ] {
        let mut attrs = vec![
            ints("kernel_shape", &[k as i64; 2]),
            ints("strides", &[stride as i64; 2]),
            ints("pads", &[pad as i64; 4]),
        ];
        if op == "AveragePool" {
            attrs.push(int("count_include_pad", include as i64));
        }
        let bytes = model(
            vec![node(op, &["x"], "out", attrs)],
            vec![],
            value("x", &[-1, c as i64, h as i64, w as i64]),
            "out",
        );
        let x: Vec<f32> = spread(2 * c * h * w, 11, 1000)
            .into_iter()
            .map(|v| v as f32 * 0.01)
            .collect();
        let (oh, ow) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let mut want = Vec::new();
        for img in 0..2 {
            for ch in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (mut max, mut sum, mut inside) = (f32::NEG_INFINITY, 0f64, 0);
                        for ky in 0..k {
                            for kx in 0..k {
                                let y = (oy * stride + ky) as i64 - pad as i64;
                                let xx = (ox * stride + kx) as i64 - pad as i64;
                                if y < 0 || xx < 0 || y >= h as i64 || xx >= w as i64 {
                                    continue;
                                }
                                let v = x[((img * c + ch) * h + y as usize) * w + xx as usize];
                                max = max.max(v);
                                sum += v as f64;
                                inside += 1;
                            }
                        }
                        let count = if include { k * k } else { inside };
                        want.push(match op {
                            "MaxPool" => max,
                            _ => (sum / count as f64) as f32,
                        });
                    }
                }
            }
        }
        for m in engines(&bytes) {
            let got = m.logits(&x, 2).unwrap();
            assert_eq!(got.shape, vec![2, c, oh, ow], "{op} {}", m.backend());
            for (i, (&g, &e)) in got.data.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-6 * (1.0 + e.abs()),
                    "{op} k {k} stride {stride} pad {pad} on {}: output {i} {g} vs {e}",
                    m.backend()
                );
            }
        }
    }
}

/// Found by fuzzing the native engine: 16,777,215 columns of convolution padding turned a
/// 6x53 image into 200 million outputs (a timeout). Padding beyond the kernel's reach is
/// refused when the model loads, for convolutions and pooling alike.
#[test]
fn fuzz_padding_past_the_kernel_is_refused_at_load() {
    let conv = model(
        vec![node(
            "Conv",
            &["x", "w"],
            "out",
            vec![ints("pads", &[1, 1, 1, 16_777_215])],
        )],
        vec![f32s("w", &[1, 1, 3, 3], &[0.5; 9])],
        value("x", &[-1, 1, 6, 53]),
        "out",
    );
    let pool = model(
        vec![node(
            "MaxPool",
            &["x"],
            "out",
            vec![ints("kernel_shape", &[2, 2]), ints("pads", &[0, 0, 2, 0])],
        )],
        vec![],
        value("x", &[-1, 1, 6, 6]),
        "out",
    );
    for bytes in [conv, pool] {
        let err = native(&bytes).unwrap_err();
        assert!(err.to_string().contains("reach past"), "{err}");
    }
}

/// Found by the differential fuzz target (`engine_conv`): DynamicQuantizeLinear multiplied by
/// the reciprocal of the scale, and one input value next to a rounding tie landed one level
/// off the spec's `x / scale` (18 outputs off by 2, tract exact).
#[test]
fn fuzz_dynamic_quantization_divides_by_the_scale_as_the_spec_does() {
    let case = ConvCase {
        c: 16,
        h: 9,
        w: 9,
        o: 36,
        k: [2, 2],
        group: 2,
        stride: 1,
        pad: [0; 4],
        dilation: 1,
    };
    let weights: Vec<i8> = (0..case.weight_len()).map(|i| [2, 0][i % 2]).collect();
    let x: Vec<f32> = spread(2 * 16 * 81, 0, 1000)
        .into_iter()
        .map(|v| v as f32 * 0.003 - 1.28)
        .collect();
    let want = case.int8_reference(2, &x, &weights);
    for m in engines(&case.int8_model(&weights)) {
        assert_eq!(m.logits(&x, 2).unwrap().data, want, "{}", m.backend());
    }
}
