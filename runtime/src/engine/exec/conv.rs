//! Running a [`Conv`] step: output rows (pixels, or samples of a dense layer) in tiles of the
//! micro-kernel's height, each tile's input reached through one pointer per kernel tap (a
//! pixel of the NHWC input, or the padding row), times every panel of output channels, then
//! the epilogue. Tiles and panels are split across the model's threads.

use std::cell::RefCell;

use super::geometry::{Gathered, Geometry};
use super::Ctx;
use crate::engine::ir::{Conv, Elem, Weights, GATHER_MAX};
use crate::engine::kernels::depthwise::FEpilogue;
use crate::engine::kernels::requant::Output;
#[cfg(target_arch = "x86_64")]
use crate::engine::kernels::{narrow, sgemm::FloatMode};
use crate::engine::kernels::{qgemm, sgemm};

/// How a layer's work is cut into tasks: `units` (group, tile of rows) split into `row_chunks`
/// contiguous runs, `pairs` panel groups into `pair_chunks`.
struct Split {
    units: usize,
    row_chunks: usize,
    pairs: usize,
    pair_chunks: usize,
}

impl Split {
    fn new(units: usize, pairs: usize, threads: usize, macs: usize) -> Split {
        // Below this a layer is done before the workers would have woken.
        const SERIAL_MACS: usize = 64 * 1024;
        let (row_chunks, pair_chunks) = if threads <= 1 || macs < SERIAL_MACS {
            (1, 1)
        } else if units >= 4 * threads {
            (4 * threads, 1)
        } else {
            (units, pairs.min((4 * threads).div_ceil(units)))
        };
        Split {
            units,
            row_chunks: row_chunks.min(units).max(1),
            pairs,
            pair_chunks: pair_chunks.max(1),
        }
    }

    fn tasks(&self) -> usize {
        self.row_chunks * self.pair_chunks
    }

    /// Units and panel groups of task `i`.
    fn task(&self, i: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (r, p) = (i / self.pair_chunks, i % self.pair_chunks);
        let cut = |n: usize, k: usize, i: usize| n * i / k..n * (i + 1) / k;
        (
            cut(self.units, self.row_chunks, r),
            cut(self.pairs, self.pair_chunks, p),
        )
    }
}

/// Tap pointers for one tile live on the stack up to this many.
const STACK_POINTERS: usize = 12 * 81;

/// A task's table of tap pointers: on the stack when it fits, else on the heap.
struct Pointers<T> {
    stack: [*const T; STACK_POINTERS],
    heap: Vec<*const T>,
}

impl<T> Pointers<T> {
    fn new() -> Pointers<T> {
        Pointers {
            stack: [std::ptr::null(); STACK_POINTERS],
            heap: Vec::new(),
        }
    }

    /// `n` pointers.
    fn table(&mut self, n: usize) -> &mut [*const T] {
        if n <= STACK_POINTERS {
            &mut self.stack[..n]
        } else {
            self.heap.resize(n, std::ptr::null());
            &mut self.heap
        }
    }
}

thread_local! {
    /// The int32 sums of a depthwise pixel, or of a row's run of them.
    static SUMS: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
    /// The padded planes of a narrow layer's image.
    #[cfg(target_arch = "x86_64")]
    static PLANES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs the step.
///
/// # Safety
/// The context's arena must hold every value at its planned offset, the padding row included.
pub(super) unsafe fn run(cx: &Ctx, c: &Conv, pad: Option<usize>) {
    let geo = Geometry::of(cx, c);
    let xa = &cx.acts[c.x];
    // The zero point of a dynamically quantized input, read now.
    let dyn_zp = match xa.elem {
        Elem::Q8Dynamic { zp, .. } => Some(*cx.ptr::<i32>(zp) - 128),
        _ => None,
    };
    let za = dyn_zp.unwrap_or(c.input_zp);
    if let Some(p) = pad {
        let bytes = crate::engine::plan::pad_bytes_for(cx.acts, c);
        if xa.elem.is_q8() {
            std::ptr::write_bytes(cx.base.add(p), za as i8 as u8, bytes);
        } else {
            std::ptr::write_bytes(cx.base.add(p), 0, bytes);
        }
    }
    let pad = pad.map_or(std::ptr::null(), |p| cx.base.add(p) as *const u8);
    match &*c.weights {
        Weights::Q(p) => q_gemm(cx, c, p, &geo, pad as *const i8, dyn_zp),
        Weights::F(p) => f_gemm(cx, c, p, &geo, pad as *const f32),
        Weights::QDepthwise(d) => q_depthwise(cx, c, d, &geo, pad as *const i8, dyn_zp),
        Weights::FDepthwise(d) => f_depthwise(cx, c, d, &geo, pad as *const f32),
    }
}

/// Writes one row of int32 sums (channels `ch0..`) through the epilogue to output row `row`.
unsafe fn epilogue(cx: &Ctx, c: &Conv, acc: &[i32], ch0: usize, at: usize) {
    let n = acc.len();
    match c.requant.out {
        Output::F32 { .. } => {
            let dst = std::slice::from_raw_parts_mut(cx.ptr::<f32>(c.y).add(at), n);
            match c.residual {
                Some(r) => {
                    let res = std::slice::from_raw_parts(cx.ptr::<f32>(r).add(at), n);
                    c.requant.to_f32_plus(cx.isa, acc, ch0, res, dst);
                }
                None => c.requant.to_f32(cx.isa, acc, ch0, dst),
            }
        }
        Output::Q8 { .. } => {
            let dst = std::slice::from_raw_parts_mut(cx.ptr::<i8>(c.y).add(at), n);
            c.requant.to_q8(cx.isa, acc, ch0, dst);
        }
        Output::I32 => {
            let dst = std::slice::from_raw_parts_mut(cx.ptr::<i32>(c.y).add(at), n);
            c.requant.to_i32(acc, ch0, dst);
        }
    }
}

unsafe fn q_gemm(
    cx: &Ctx,
    c: &Conv,
    p: &qgemm::QPacked,
    geo: &Geometry,
    pad: *const i8,
    dyn_zp: Option<i32>,
) {
    use qgemm::{MR, NR};
    let za = dyn_zp.unwrap_or(c.input_zp);
    let rows = geo.rows();
    let tiles = rows.div_ceil(MR);
    let panels = geo.og.div_ceil(NR);
    let pairs = panels.div_ceil(2);
    let taps = geo.window.taps();
    // Packed as one tap of the whole window: rows are gathered first.
    let gather = p.taps != taps;
    let macs = rows * geo.ocs * taps * geo.cg;
    let split = Split::new(geo.groups * tiles, pairs, cx.pool.threads(), macs);
    // Addresses, not pointers, cross into the tasks (raw pointers are not `Sync`).
    let (x, pad) = (cx.ptr::<i8>(c.x) as usize, pad as usize);
    let task = |i: usize| {
        let (x, pad) = (x as *const i8, pad as *const i8);
        let (units, pair_range) = split.task(i);
        let mut pointers = Pointers::<i8>::new();
        let ind = pointers.table(MR * taps);
        // Zeroed only where the layer is gathered: it is on every task's path.
        let mut block = gather.then(Gathered::<i8, { MR * (GATHER_MAX + 4) }>::new);
        let mut acc = [[0i32; 2 * NR]; MR];
        let mut cur = geo.cursor(0);
        for u in units {
            let (g, tile) = (u / tiles, u % tiles);
            let m0 = tile * MR;
            let real = MR.min(rows - m0);
            let ind: &[*const i8] = if let Some(block) = &mut block {
                block.rows(geo, x, za as i8, &mut cur, m0..m0 + real, p.quads * 4)
            } else {
                geo.tile_taps(x, pad, &mut cur, m0..m0 + real, g, taps, ind);
                ind
            };
            for pair in pair_range.clone() {
                let first = g * panels + pair * 2;
                let np = 2.min(panels - pair * 2);
                p.accumulate(cx.isa, ind, real, first, np, &mut acc);
                let cols = (np * NR).min(geo.og - pair * 2 * NR);
                if let Some(za) = dyn_zp {
                    for row in acc.iter_mut().take(real) {
                        for (j, v) in row.iter_mut().enumerate().take(cols) {
                            *v -= za * p.col_sums[first * NR + j];
                        }
                    }
                }
                let ch0 = g * geo.og + pair * 2 * NR;
                match c.requant.out {
                    Output::Q8 { .. } => {
                        let dst = cx.ptr::<i8>(c.y).add(m0 * geo.ocs + ch0);
                        c.requant
                            .tile_to_q8(cx.isa, &acc[..real], cols, ch0, dst, geo.ocs);
                        continue;
                    }
                    Output::F32 { .. } => {
                        let at = m0 * geo.ocs + ch0;
                        let dst = cx.ptr::<f32>(c.y).add(at);
                        let res = c.residual.map(|r| cx.ptr::<f32>(r).add(at) as *const f32);
                        c.requant
                            .tile_to_f32(cx.isa, &acc[..real], cols, ch0, dst, geo.ocs, res);
                        continue;
                    }
                    _ => {}
                }
                for (r, row) in acc.iter().enumerate().take(real) {
                    epilogue(cx, c, &row[..cols], ch0, (m0 + r) * geo.ocs + ch0);
                }
            }
        }
    };
    cx.pool.run(split.tasks(), &task);
}

unsafe fn f_gemm(cx: &Ctx, c: &Conv, p: &sgemm::FPacked, geo: &Geometry, pad: *const f32) {
    use sgemm::{MR, NR};
    let rows = geo.rows();
    let tiles = rows.div_ceil(MR);
    let panels = geo.og.div_ceil(NR);
    let taps = geo.window.taps();
    // Packed as one tap of the whole window: rows are gathered first.
    let gather = p.taps != taps;
    if gather && f_narrow(cx, c, p, geo) {
        return;
    }
    let macs = rows * geo.ocs * taps * geo.cg;
    let split = Split::new(geo.groups * tiles, panels, cx.pool.threads(), macs);
    let (x, y, pad) = (
        cx.ptr::<f32>(c.x) as usize,
        cx.ptr::<f32>(c.y) as usize,
        pad as usize,
    );
    let task = |i: usize| {
        let (x, y, pad) = (x as *const f32, y as *mut f32, pad as *const f32);
        let (units, panel_range) = split.task(i);
        let mut pointers = Pointers::<f32>::new();
        let ind = pointers.table(MR * taps);
        let mut block = gather.then(Gathered::<f32, { MR * GATHER_MAX }>::new);
        let mut acc = [[0f32; NR]; MR];
        let mut cur = geo.cursor(0);
        for u in units {
            let (g, tile) = (u / tiles, u % tiles);
            let m0 = tile * MR;
            let real = MR.min(rows - m0);
            let ind: &[*const f32] = if let Some(block) = &mut block {
                block.rows(geo, x, 0.0, &mut cur, m0..m0 + real, p.cin)
            } else {
                geo.tile_taps(x, pad, &mut cur, m0..m0 + real, g, taps, ind);
                ind
            };
            for panel in panel_range.clone() {
                p.accumulate(cx.isa, cx.mode, ind, real, g * panels + panel, &mut acc);
                let cols = NR.min(geo.og - panel * NR);
                let ch0 = g * geo.og + panel * NR;
                let at = m0 * geo.ocs + ch0;
                let res = c.residual.map(|r| cx.ptr::<f32>(r).add(at) as *const f32);
                c.requant
                    .tile_f32(cx.isa, &acc[..real], cols, ch0, y.add(at), geo.ocs, res);
            }
        }
    };
    cx.pool.run(split.tasks(), &task);
}

/// Runs a gathered float layer of at most sixteen output channels (one panel), stride 1,
/// with pixels in lanes (`kernels::narrow`, eight filters a pass): its GEMM would fill few of
/// the panel's lanes. False when the layer, CPU or float mode has no such path (exact mode
/// keeps the GEMM's summation order); the caller then takes the GEMM path.
unsafe fn f_narrow(cx: &Ctx, c: &Conv, p: &sgemm::FPacked, geo: &Geometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let win = &geo.window;
        let fits = cx.mode == FloatMode::Fast
            && cx.isa.has_fma()
            && geo.groups == 1
            && geo.og <= sgemm::NR
            && win.strides == [1, 1]
            && win.dilations == [1, 1]
            && c.residual.is_none()
            && p.taps == 1
            && p.cin == win.taps() * geo.cg;
        if !fits {
            return false;
        }
        // One panel of up to sixteen filters, in passes of eight over the same planes.
        let width = |o: usize| -> narrow::Row {
            match o {
                1 => narrow::row::<1>,
                2 => narrow::row::<2>,
                3 => narrow::row::<3>,
                4 => narrow::row::<4>,
                5 => narrow::row::<5>,
                6 => narrow::row::<6>,
                7 => narrow::row::<7>,
                _ => narrow::row::<8>,
            }
        };
        let eight = narrow::MAX_OUT;
        let passes = [
            (0, width(geo.og.min(eight))),
            (eight, width(geo.og.saturating_sub(eight).max(1))),
        ];
        let passes = &passes[..geo.og.div_ceil(eight)];
        let Output::F32 { lo, hi } = c.requant.out else {
            return false;
        };
        let bounds = [lo, hi];
        let (batch, [h, w], [oh, ow]) = geo.sizes();
        let planes = narrow::Planes::new(geo.ics, [h, w], win.pads);
        let macs = geo.rows() * geo.og * p.cin;
        let split = Split::new(batch * oh, 1, cx.pool.threads(), macs);
        let (x, y) = (cx.ptr::<f32>(c.x) as usize, cx.ptr::<f32>(c.y) as usize);
        let task = |i: usize| {
            let (x, y) = (x as *const f32, y as *mut f32);
            let (units, _) = split.task(i);
            PLANES.with(|buf| {
                let mut buf = buf.borrow_mut();
                // Zeroed each run: the borders must be, and other layers share the buffer.
                buf.clear();
                buf.resize(planes.len(), 0.0);
                let mut image = usize::MAX;
                for u in units {
                    let (b, oy) = (u / oh, u % oh);
                    if b != image {
                        let at = x.add(b * h * w * geo.ics);
                        planes.fill(at, [h, w], [win.pads[0], win.pads[1]], &mut buf);
                        image = b;
                    }
                    for &(o0, row) in passes {
                        let e = narrow::Epilogue {
                            add: &c.requant.add[o0..],
                            bounds,
                            dst: y.add((b * oh + oy) * ow * geo.ocs + o0),
                            stride: geo.ocs,
                        };
                        row(
                            &buf,
                            &planes,
                            oy,
                            ow,
                            win.kernel,
                            &p.data[o0..],
                            sgemm::NR,
                            e,
                        );
                    }
                }
            });
        };
        cx.pool.run(split.tasks(), &task);
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (cx, c, p, geo);
        false
    }
}

unsafe fn q_depthwise(
    cx: &Ctx,
    c: &Conv,
    d: &crate::engine::kernels::depthwise::QDepthwise,
    geo: &Geometry,
    pad: *const i8,
    dyn_zp: Option<i32>,
) {
    let rows = geo.rows();
    let split = Split::new(rows, 1, cx.pool.threads(), rows * d.c * d.taps * 8);
    let (x, pad) = (cx.ptr::<i8>(c.x) as usize, pad as usize);
    let task = |i: usize| {
        let (x, pad) = (x as *const i8, pad as *const i8);
        let (range, _) = split.task(i);
        SUMS.with(|s| {
            let mut s = s.borrow_mut();
            s.resize(d.c, 0);
            let mut pointers = Pointers::<i8>::new();
            let ind = pointers.table(d.taps);
            let mut cur = geo.cursor(0);
            let rows_at_once = d.has_run(cx.isa) && geo.tap_offsets().len() == d.taps;
            let mut m = range.start;
            while m < range.end {
                // Pixels whose windows lie inside the image, a run of a row at a time.
                if let Some((from, run)) = rows_at_once.then(|| geo.interior_run(m)).flatten() {
                    let n = run.min(range.end - m);
                    s.resize(n.max(1) * d.c, 0);
                    let step = geo.window.strides[1] * geo.ics;
                    let offsets = geo.tap_offsets();
                    if d.run(cx.isa, x.add(from), offsets, step, n, &mut s) {
                        for (i, px) in s.chunks_exact_mut(d.c).take(n).enumerate() {
                            if let Some(za) = dyn_zp {
                                px.iter_mut().zip(&d.sums).for_each(|(v, &w)| *v -= za * w);
                            }
                            epilogue(cx, c, px, 0, (m + i) * geo.ocs);
                        }
                        m += n;
                        continue;
                    }
                }
                geo.taps(x, pad, &mut cur, m, 0, ind);
                d.pixel(cx.isa, ind, &mut s[..d.c]);
                if let Some(za) = dyn_zp {
                    s.iter_mut().zip(&d.sums).for_each(|(v, &w)| *v -= za * w);
                }
                epilogue(cx, c, &s[..d.c], 0, m * geo.ocs);
                m += 1;
            }
        });
    };
    cx.pool.run(split.tasks(), &task);
}

unsafe fn f_depthwise(
    cx: &Ctx,
    c: &Conv,
    d: &crate::engine::kernels::depthwise::FDepthwise,
    geo: &Geometry,
    pad: *const f32,
) {
    let rows = geo.rows();
    let split = Split::new(rows, 1, cx.pool.threads(), rows * d.c * d.taps * 8);
    let Output::F32 { lo, hi } = c.requant.out else {
        unreachable!("a float depthwise layer writes f32");
    };
    let bounds = [lo, hi];
    let (x, y, pad) = (
        cx.ptr::<f32>(c.x) as usize,
        cx.ptr::<f32>(c.y) as usize,
        pad as usize,
    );
    let task = |i: usize| {
        let (x, y, pad) = (x as *const f32, y as *mut f32, pad as *const f32);
        let (range, _) = split.task(i);
        let mut pointers = Pointers::<f32>::new();
        let ind = pointers.table(d.taps);
        let mut cur = geo.cursor(0);
        let rows_at_once = d.has_run(cx.isa, cx.mode) && geo.tap_offsets().len() == d.taps;
        let mut m = range.start;
        while m < range.end {
            // Pixels whose windows lie inside the image, a run of a row at a time.
            if let Some((from, run)) = rows_at_once.then(|| geo.interior_run(m)).flatten() {
                let n = run.min(range.end - m);
                let e = FEpilogue {
                    add: &c.requant.add,
                    bounds,
                    residual: c
                        .residual
                        .map(|r| cx.ptr::<f32>(r).add(m * geo.ocs) as *const f32),
                    dst: y.add(m * geo.ocs),
                    step: geo.ocs,
                };
                let step = geo.window.strides[1] * geo.ics;
                let offsets = geo.tap_offsets();
                if d.run(cx.isa, cx.mode, x.add(from), offsets, step, n, &e) {
                    m += n;
                    continue;
                }
            }
            geo.taps(x, pad, &mut cur, m, 0, ind);
            let dst = std::slice::from_raw_parts_mut(y.add(m * geo.ocs), d.c);
            d.pixel(cx.isa, cx.mode, ind, dst);
            let res = c.residual.map(|r| {
                std::slice::from_raw_parts(cx.ptr::<f32>(r).add(m * geo.ocs) as *const f32, d.c)
            });
            c.requant.finish_f32(cx.isa, 0, res, dst);
            m += 1;
        }
    };
    cx.pool.run(split.tasks(), &task);
}
