//! Every step but convolutions and quantization: layout changes, element-wise arithmetic,
//! pooling, softmax and the shape operators. None of them is a network's bottleneck; they
//! are written plainly, in loops the compiler vectorizes.

use super::quant::{self, params, quantize};
use super::Ctx;
use crate::engine::ir::{Act, Arith, Elem, Operand, PoolKind, QParams, Step, Unary, Window};

/// Storage-order dimensions of a value.
fn stored(a: &Act) -> Vec<usize> {
    if a.nhwc && a.shape.len() == 4 {
        let [n, c, h, w] = a.nchw();
        vec![n, h, w, c]
    } else {
        a.shape.clone()
    }
}

/// # Safety
/// As [`super::run_step`].
pub(super) unsafe fn run(cx: &Ctx, step: &Step) {
    match step {
        Step::Relayout { x, y, to_nhwc } => relayout(cx, *x, *y, *to_nhwc),
        Step::Quantize { x, y, q } => quant::quantize_step(cx, *x, *y, *q),
        Step::Dequantize { x, y } => quant::dequantize_step(cx, *x, *y),
        Step::DynamicQuantize { x, y, scale, zp } => {
            quant::dynamic_quantize_step(cx, *x, *y, *scale, *zp)
        }
        Step::QAdd { a, b, y, lo, hi } => quant::q_add_step(cx, *a, *b, *y, [*lo, *hi]),
        Step::Binary {
            a,
            b,
            y,
            op,
            lo,
            hi,
        } => binary(cx, a, b, *y, *op, *lo, *hi),
        Step::Unary { x, y, op } => {
            let (src, dst) = (cx.slice::<f32>(*x), cx.slice_mut::<f32>(*y));
            let f = |v: f32| match *op {
                Unary::Clip(lo, hi) => v.max(lo).min(hi),
                Unary::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                Unary::Tanh => v.tanh(),
                Unary::Exp => v.exp(),
                Unary::Neg => -v,
                Unary::Abs => v.abs(),
                Unary::Sqrt => v.sqrt(),
                Unary::RoundF16 => half::f16::from_f32(v).to_f32(),
            };
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d = f(v));
        }
        Step::Softmax { x, y, log, cols } => {
            let (src, dst) = (cx.slice::<f32>(*x), cx.slice_mut::<f32>(*y));
            for (s, d) in src.chunks(*cols).zip(dst.chunks_mut(*cols)) {
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = s.iter().map(|&v| (v - max).exp()).sum();
                if *log {
                    let ls = sum.ln();
                    d.iter_mut().zip(s).for_each(|(d, &v)| *d = v - max - ls);
                } else {
                    d.iter_mut()
                        .zip(s)
                        .for_each(|(d, &v)| *d = (v - max).exp() / sum);
                }
            }
        }
        Step::Pool { x, y, kind, window } => pool(cx, *x, *y, *kind, window),
        Step::GlobalAveragePool { x, y } => global_average_pool(cx, *x, *y),
        Step::Copy { x, y } => {
            std::ptr::copy_nonoverlapping(cx.ptr::<u8>(*x), cx.ptr::<u8>(*y), cx.acts[*x].bytes());
        }
        Step::Transpose { x, y, perm } => {
            let shape = &cx.acts[*x].shape;
            let (src, dst) = (cx.slice::<f32>(*x), cx.slice_mut::<f32>(*y));
            let mut st = vec![1usize; shape.len()];
            for i in (0..shape.len().saturating_sub(1)).rev() {
                st[i] = st[i + 1] * shape[i + 1];
            }
            let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let mut idx = vec![0usize; out.len()];
            for d in dst.iter_mut() {
                *d = src[idx
                    .iter()
                    .zip(perm)
                    .map(|(&i, &p)| i * st[p])
                    .sum::<usize>()];
                for k in (0..out.len()).rev() {
                    idx[k] += 1;
                    if idx[k] < out[k] {
                        break;
                    }
                    idx[k] = 0;
                }
            }
        }
        Step::Concat { xs, y, axis } => {
            let dst = cx.slice_mut::<f32>(*y);
            let outer: usize = cx.acts[*y].shape[..*axis].iter().product();
            let mut at = 0;
            for o in 0..outer {
                for &x in xs {
                    let inner: usize = cx.acts[x].shape[*axis..].iter().product();
                    let src = cx.slice::<f32>(x);
                    dst[at..at + inner].copy_from_slice(&src[o * inner..(o + 1) * inner]);
                    at += inner;
                }
            }
        }
        Step::ArgMax { x, y } => {
            let cols = *cx.acts[*x].shape.last().unwrap_or(&1);
            let (src, dst) = (cx.slice::<f32>(*x), cx.slice_mut::<i64>(*y));
            for (row, d) in src.chunks(cols.max(1)).zip(dst.iter_mut()) {
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = i;
                    }
                }
                *d = best as i64;
            }
        }
        Step::Convert { x, y } => convert(cx, *x, *y),
        Step::Conv(_) => unreachable!("convolutions run in exec::conv"),
    }
}

unsafe fn relayout(cx: &Ctx, x: usize, y: usize, to_nhwc: bool) {
    let [n, c, h, w] = cx.acts[x].nchw();
    let hw = h * w;
    let size = cx.acts[x].elem.size();
    let (src, dst) = (cx.ptr::<u8>(x) as *const u8, cx.ptr::<u8>(y));
    for b in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                let (nchw, nhwc) = ((b * c + ch) * hw + p, (b * hw + p) * c + ch);
                let (from, to) = if to_nhwc { (nchw, nhwc) } else { (nhwc, nchw) };
                std::ptr::copy_nonoverlapping(src.add(from * size), dst.add(to * size), size);
            }
        }
    }
}

/// An operand's values and strides against the output's storage dimensions.
unsafe fn operand<'a>(cx: &'a Ctx, o: &'a Operand, out: &[usize]) -> (&'a [f32], Vec<usize>) {
    let (values, dims): (&[f32], Vec<usize>) = match o {
        Operand::Act(a) => (cx.slice::<f32>(*a), stored(&cx.acts[*a])),
        Operand::Const(v, s) => (v.as_slice(), s.clone()),
    };
    let mut full = vec![1; out.len() - dims.len()];
    full.extend(dims);
    let mut strides = vec![0; out.len()];
    let mut s = 1;
    for i in (0..out.len()).rev() {
        strides[i] = if full[i] == 1 { 0 } else { s };
        s *= full[i];
    }
    (values, strides)
}

unsafe fn binary(cx: &Ctx, a: &Operand, b: &Operand, y: usize, op: Arith, lo: f32, hi: f32) {
    let out = stored(&cx.acts[y]);
    let (va, sa) = operand(cx, a, &out);
    let (vb, sb) = operand(cx, b, &out);
    let dst = cx.slice_mut::<f32>(y);
    let f = |x: f32, z: f32| {
        let v = match op {
            Arith::Add => x + z,
            Arith::Sub => x - z,
            Arith::Mul => x * z,
            Arith::Div => x / z,
            Arith::Max => x.max(z),
            Arith::Min => x.min(z),
        };
        v.max(lo).min(hi)
    };
    let rank = out.len();
    if rank == 0 {
        dst[0] = f(va[0], vb[0]);
        return;
    }
    let inner = out[rank - 1];
    let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
    let mut idx = vec![0usize; rank];
    for row in dst.chunks_mut(inner.max(1)) {
        let oa: usize = idx.iter().zip(&sa).map(|(i, s)| i * s).sum();
        let ob: usize = idx.iter().zip(&sb).map(|(i, s)| i * s).sum();
        match (ia, ib) {
            (1, 1) => row
                .iter_mut()
                .zip(&va[oa..])
                .zip(&vb[ob..])
                .for_each(|((d, &x), &z)| *d = f(x, z)),
            (1, 0) => row
                .iter_mut()
                .zip(&va[oa..])
                .for_each(|(d, &x)| *d = f(x, vb[ob])),
            (0, 1) => row
                .iter_mut()
                .zip(&vb[ob..])
                .for_each(|(d, &z)| *d = f(va[oa], z)),
            _ => row.iter_mut().for_each(|d| *d = f(va[oa], vb[ob])),
        }
        for k in (0..rank - 1).rev() {
            idx[k] += 1;
            if idx[k] < out[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// Pooling over NHWC values: f32 in and out, int8 in and out (max), or int8 in and f32 or
/// int8 out (average).
unsafe fn pool(cx: &Ctx, x: usize, y: usize, kind: PoolKind, win: &Window) {
    let [n, c, h, w] = cx.acts[x].nchw();
    let [_, _, oh, ow] = cx.acts[y].nchw();
    let (xe, ye) = (cx.acts[x].elem, cx.acts[y].elem);
    let src_q = xe.is_q8().then(|| (cx.slice::<i8>(x), params(cx, x)));
    let src_f = (!xe.is_q8()).then(|| cx.slice::<f32>(x));
    let mut acc = vec![0f32; c];
    let mut qmax = vec![
        i8::MIN;
        if src_q.is_some() && kind == PoolKind::Max {
            c
        } else {
            0
        }
    ];
    if let (Some(v), PoolKind::Max, Elem::F32) = (src_f, kind, ye) {
        return max_pool_f32(v, cx.slice_mut::<f32>(y), [n, c, h, w], [oh, ow], win);
    }
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let y0 = (oy * win.strides[0]) as isize - win.pads[0] as isize;
                let x0 = (ox * win.strides[1]) as isize - win.pads[1] as isize;
                let (mut inside, mut padded) = (0usize, 0usize);
                acc.fill(if kind == PoolKind::Max {
                    f32::NEG_INFINITY
                } else {
                    0.0
                });
                qmax.fill(i8::MIN);
                for ky in 0..win.kernel[0] as isize {
                    for kx in 0..win.kernel[1] as isize {
                        let (iy, ix) = (y0 + ky, x0 + kx);
                        // Positions within the padded image count for count_include_pad.
                        let in_padded =
                            iy < (h + win.pads[2]) as isize && ix < (w + win.pads[3]) as isize;
                        padded += in_padded as usize;
                        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                            continue;
                        }
                        inside += 1;
                        let at = ((b * h + iy as usize) * w + ix as usize) * c;
                        match (&src_f, &src_q, kind) {
                            (Some(v), _, PoolKind::Max) => acc
                                .iter_mut()
                                .zip(&v[at..at + c])
                                .for_each(|(a, &v)| *a = a.max(v)),
                            (Some(v), _, _) => acc
                                .iter_mut()
                                .zip(&v[at..at + c])
                                .for_each(|(a, &v)| *a += v),
                            (_, Some((v, _)), PoolKind::Max) => qmax
                                .iter_mut()
                                .zip(&v[at..at + c])
                                .for_each(|(a, &v)| *a = (*a).max(v)),
                            (_, Some((v, (s, z))), _) => acc
                                .iter_mut()
                                .zip(&v[at..at + c])
                                .for_each(|(a, &v)| *a += (v as i32 - z) as f32 * s),
                            _ => unreachable!(),
                        }
                    }
                }
                let at = ((b * oh + oy) * ow + ox) * c;
                if !qmax.is_empty() {
                    cx.slice_mut::<i8>(y)[at..at + c].copy_from_slice(&qmax);
                    continue;
                }
                if let PoolKind::Average(include_pad) = kind {
                    let count = if include_pad { padded } else { inside }.max(1) as f32;
                    acc.iter_mut().for_each(|a| *a /= count);
                }
                store(cx, y, ye, at, &acc);
            }
        }
    }
}

/// Float max pooling over NHWC values; the padding takes no part (ONNX's `MaxPool`). Each
/// window's taps inside the image are found once per row and column, and the maximum is
/// taken straight into the output.
fn max_pool_f32(v: &[f32], out: &mut [f32], nchw: [usize; 4], ohw: [usize; 2], win: &Window) {
    // A channel count known at compile time for the small ones (a first layer's): a copy of
    // three values of run-time length is a call to `memmove`.
    match nchw[1] {
        1 => max_pool_f32_for::<1>(v, out, nchw, ohw, win),
        2 => max_pool_f32_for::<2>(v, out, nchw, ohw, win),
        3 => max_pool_f32_for::<3>(v, out, nchw, ohw, win),
        4 => max_pool_f32_for::<4>(v, out, nchw, ohw, win),
        6 => max_pool_f32_for::<6>(v, out, nchw, ohw, win),
        8 => max_pool_f32_for::<8>(v, out, nchw, ohw, win),
        _ => max_pool_f32_for::<0>(v, out, nchw, ohw, win),
    }
}

/// [`max_pool_f32`] for `C` channels (0: any count).
fn max_pool_f32_for<const C: usize>(
    v: &[f32],
    out: &mut [f32],
    [n, c, h, w]: [usize; 4],
    [oh, ow]: [usize; 2],
    win: &Window,
) {
    let c = if C > 0 { C } else { c };
    if c == 0 {
        return;
    }
    // Taps `lo..hi` of a window starting at `start` (maybe in the padding) inside `0..size`.
    let inside = |start: isize, k: usize, size: usize| {
        let lo = (-start).max(0) as usize;
        let hi = (size as isize - start).clamp(0, k as isize) as usize;
        (lo.min(hi), hi)
    };
    let [kh, kw] = win.kernel;
    let mut pixels = out.chunks_exact_mut(c);
    for b in 0..n {
        for oy in 0..oh {
            let y0 = (oy * win.strides[0]) as isize - win.pads[0] as isize;
            let (ky0, ky1) = inside(y0, kh, h);
            for ox in 0..ow {
                let x0 = (ox * win.strides[1]) as isize - win.pads[1] as isize;
                let (kx0, kx1) = inside(x0, kw, w);
                let o = pixels.next().expect("one output pixel per window");
                let at = |ky: usize, kx: usize| {
                    let (iy, ix) = ((y0 + ky as isize) as usize, (x0 + kx as isize) as usize);
                    &v[((b * h + iy) * w + ix) * c..][..c]
                };
                // From -inf, as the general loop: a window of NaNs gives -inf there too.
                o.fill(f32::NEG_INFINITY);
                for ky in ky0..ky1 {
                    for kx in kx0..kx1 {
                        o.iter_mut()
                            .zip(at(ky, kx))
                            .for_each(|(o, &v)| *o = o.max(v));
                    }
                }
            }
        }
    }
}

/// Writes f32 values at element `at` of `y`, quantizing when `y` is int8.
unsafe fn store(cx: &Ctx, y: usize, ye: Elem, at: usize, v: &[f32]) {
    match ye {
        Elem::Q8(QParams { scale, zp, .. }) => {
            cx.slice_mut::<i8>(y)[at..at + v.len()]
                .iter_mut()
                .zip(v)
                .for_each(|(d, &v)| *d = quantize(v, scale, zp, -128, 127));
        }
        _ => cx.slice_mut::<f32>(y)[at..at + v.len()].copy_from_slice(v),
    }
}

unsafe fn global_average_pool(cx: &Ctx, x: usize, y: usize) {
    let [n, c, h, w] = cx.acts[x].nchw();
    let hw = h * w;
    let xe = cx.acts[x].elem;
    let mut acc = vec![0f32; c];
    let mut iacc = vec![0i32; c];
    for b in 0..n {
        if xe.is_q8() {
            let (s, z) = params(cx, x);
            let v = &cx.slice::<i8>(x)[b * hw * c..(b + 1) * hw * c];
            iacc.fill(0);
            for px in v.chunks(c) {
                iacc.iter_mut().zip(px).for_each(|(a, &v)| *a += v as i32);
            }
            acc.iter_mut()
                .zip(&iacc)
                .for_each(|(a, &t)| *a = (t - z * hw as i32) as f32 * s / hw as f32);
        } else {
            let v = &cx.slice::<f32>(x)[b * hw * c..(b + 1) * hw * c];
            acc.fill(0.0);
            for px in v.chunks(c) {
                acc.iter_mut().zip(px).for_each(|(a, &v)| *a += v);
            }
            acc.iter_mut().for_each(|a| *a /= hw as f32);
        }
        store(cx, y, cx.acts[y].elem, b * c, &acc);
    }
}

unsafe fn convert(cx: &Ctx, x: usize, y: usize) {
    let (xe, ye) = (cx.acts[x].elem, cx.acts[y].elem);
    let values: Vec<f64> = match xe {
        Elem::F32 => cx.slice::<f32>(x).iter().map(|&v| v as f64).collect(),
        Elem::I32 => cx.slice::<i32>(x).iter().map(|&v| v as f64).collect(),
        Elem::I64 => cx.slice::<i64>(x).iter().map(|&v| v as f64).collect(),
        Elem::Q8(QParams {
            unsigned: false, ..
        }) => cx.slice::<i8>(x).iter().map(|&v| v as f64).collect(),
        // uint8 values, held shifted by -128.
        Elem::Q8(_) | Elem::Q8Dynamic { .. } => cx
            .slice::<i8>(x)
            .iter()
            .map(|&v| v as f64 + 128.0)
            .collect(),
    };
    match ye {
        Elem::F32 => cx
            .slice_mut::<f32>(y)
            .iter_mut()
            .zip(&values)
            .for_each(|(d, &v)| *d = v as f32),
        Elem::I32 => cx
            .slice_mut::<i32>(y)
            .iter_mut()
            .zip(&values)
            .for_each(|(d, &v)| *d = v as i32),
        Elem::I64 => cx
            .slice_mut::<i64>(y)
            .iter_mut()
            .zip(&values)
            .for_each(|(d, &v)| *d = v as i64),
        e => unreachable!("conversion to {e:?}"),
    }
}
