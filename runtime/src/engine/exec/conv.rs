//! Running a [`Conv`] step: output rows (pixels, or samples of a dense layer) in tiles of the
//! micro-kernel's height, each tile's input reached through one pointer per kernel tap (a
//! pixel of the NHWC input, or the padding row), times every panel of output channels, then
//! the epilogue. Tiles and panels are split across the model's threads.

use std::cell::RefCell;

use super::Ctx;
use crate::engine::build::GATHER_MAX;
use crate::engine::ir::{Conv, Elem, Weights, Window};
use crate::engine::kernels::requant::Output;
use crate::engine::kernels::{qgemm, sgemm};

/// Where a convolution reads and writes.
struct Geometry {
    batch: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    /// Input values per pixel (all groups).
    ics: usize,
    /// Output values per pixel (all groups).
    ocs: usize,
    /// Input channels per group.
    cg: usize,
    /// Output channels per group.
    og: usize,
    groups: usize,
    window: Window,
    /// 1x1, stride 1, no padding: row m's input is pixel m.
    pointwise: bool,
    /// Each tap's distance (in values) from the window's first pixel.
    tap_offsets: [usize; FAST_TAPS],
}

impl Geometry {
    fn of(cx: &Ctx, c: &Conv) -> Geometry {
        let (x, y) = (&cx.acts[c.x], &cx.acts[c.y]);
        let (batch, ics, h, w, ocs, oh, ow) = if x.nhwc {
            let [n, ci, h, w] = x.nchw();
            let [_, co, oh, ow] = y.nchw();
            (n, ci, h, w, co, oh, ow)
        } else {
            // A dense layer: rows of features.
            let k = *x.shape.last().unwrap_or(&1);
            let o = *y.shape.last().unwrap_or(&1);
            (x.len() / k.max(1), k, 1, 1, o, 1, 1)
        };
        let win = c.window;
        let mut tap_offsets = [0; FAST_TAPS];
        if win.taps() <= FAST_TAPS {
            let mut t = 0;
            for ky in 0..win.kernel[0] {
                for kx in 0..win.kernel[1] {
                    tap_offsets[t] = (ky * win.dilations[0] * w + kx * win.dilations[1]) * ics;
                    t += 1;
                }
            }
        }
        Geometry {
            batch,
            h,
            w,
            oh,
            ow,
            ics,
            ocs,
            cg: ics / c.groups,
            og: ocs / c.groups,
            groups: c.groups,
            window: win,
            pointwise: win.kernel == [1, 1] && win.strides == [1, 1] && win.pads == [0; 4],
            tap_offsets,
        }
    }

    fn rows(&self) -> usize {
        self.batch * self.oh * self.ow
    }

    /// The output position of row `m`.
    fn cursor(&self, m: usize) -> Cursor {
        let hw = self.oh * self.ow;
        let (b, r) = (m / hw, m % hw);
        Cursor {
            m,
            b,
            oy: r / self.ow,
            ox: r % self.ow,
        }
    }

    /// The next row's position (no division: they cost more than a small layer's tile).
    fn advance(&self, c: &mut Cursor) {
        c.m += 1;
        c.ox += 1;
        if c.ox == self.ow {
            c.ox = 0;
            c.oy += 1;
            if c.oy == self.oh {
                c.oy = 0;
                c.b += 1;
            }
        }
    }

    /// Tap pointers of output row `m`, group `g`: `ind[t]` reaches the input pixel under tap
    /// `t` at the group's first channel, or `pad` where the tap falls outside the image.
    /// `cur` is row `m`'s position, or any other (then recomputed); it is left at row `m + 1`.
    ///
    /// # Safety
    /// `x` must hold the whole input.
    unsafe fn taps<T>(
        &self,
        x: *const T,
        pad: *const T,
        cur: &mut Cursor,
        m: usize,
        g: usize,
        ind: &mut [*const T],
    ) {
        let off = g * self.cg;
        if self.pointwise {
            ind[0] = x.add(m * self.ics + off);
            return;
        }
        if cur.m != m {
            *cur = self.cursor(m);
        }
        let win = &self.window;
        let y0 = (cur.oy * win.strides[0]) as isize - win.pads[0] as isize;
        let x0 = (cur.ox * win.strides[1]) as isize - win.pads[1] as isize;
        let (b, taps) = (cur.b, win.taps());
        self.advance(cur);
        let (span_y, span_x) = (
            (win.kernel[0] - 1) * win.dilations[0],
            (win.kernel[1] - 1) * win.dilations[1],
        );
        let inside =
            y0 >= 0 && x0 >= 0 && y0 as usize + span_y < self.h && x0 as usize + span_x < self.w;
        if inside && taps <= FAST_TAPS {
            let base = x.add(((b * self.h + y0 as usize) * self.w + x0 as usize) * self.ics + off);
            for (i, &o) in ind.iter_mut().zip(&self.tap_offsets[..taps]) {
                *i = base.add(o);
            }
            return;
        }
        let mut t = 0;
        for ky in 0..win.kernel[0] {
            let iy = y0 + (ky * win.dilations[0]) as isize;
            for kx in 0..win.kernel[1] {
                let ix = x0 + (kx * win.dilations[1]) as isize;
                ind[t] = if iy >= 0 && ix >= 0 && (iy as usize) < self.h && (ix as usize) < self.w {
                    x.add(((b * self.h + iy as usize) * self.w + ix as usize) * self.ics + off)
                } else {
                    pad
                };
                t += 1;
            }
        }
    }

    /// Output row `m`'s window of an ungrouped layer, tap after tap (`taps · ics` values),
    /// into `dst`; taps in the padding get `fill`. Each kernel row inside the image is one
    /// contiguous run of the input. `cur` as in [`Geometry::taps`].
    ///
    /// # Safety
    /// `x` must hold the whole input; `dst` must have room for the window.
    #[inline(always)]
    unsafe fn gather<T: Copy, const RUN: usize>(
        &self,
        x: *const T,
        fill: T,
        cur: &mut Cursor,
        m: usize,
        dst: *mut T,
    ) {
        if cur.m != m {
            *cur = self.cursor(m);
        }
        let win = &self.window;
        let y0 = (cur.oy * win.strides[0]) as isize - win.pads[0] as isize;
        let x0 = (cur.ox * win.strides[1]) as isize - win.pads[1] as isize;
        let b = cur.b;
        self.advance(cur);
        let ([kh, kw], [dy, dx], c) = (win.kernel, win.dilations, self.ics);
        let len = if RUN > 0 { RUN } else { kw * c };
        let run = dx == 1 && x0 >= 0 && x0 as usize + kw <= self.w;
        let mut out = dst;
        for ky in 0..kh {
            let iy = y0 + (ky * dy) as isize;
            if iy < 0 || iy as usize >= self.h {
                for i in 0..len {
                    *out.add(i) = fill;
                }
            } else {
                let line = x.add((b * self.h + iy as usize) * self.w * c);
                if run {
                    let src = line.add(x0 as usize * c);
                    for i in 0..len {
                        *out.add(i) = *src.add(i);
                    }
                } else {
                    for kx in 0..kw {
                        let ix = x0 + (kx * dx) as isize;
                        let inside = ix >= 0 && (ix as usize) < self.w;
                        for ch in 0..c {
                            *out.add(kx * c + ch) = if inside {
                                *line.add(ix as usize * c + ch)
                            } else {
                                fill
                            };
                        }
                    }
                }
            }
            out = out.add(len);
        }
    }

    /// Tap pointers of output rows `rows` (one tile), group `g`: `taps` per row, row after
    /// row in `ind`.
    ///
    /// # Safety
    /// As [`Geometry::taps`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_taps<T>(
        &self,
        x: *const T,
        pad: *const T,
        cur: &mut Cursor,
        rows: std::ops::Range<usize>,
        g: usize,
        taps: usize,
        ind: &mut [*const T],
    ) {
        for (r, m) in rows.enumerate() {
            self.taps(x, pad, cur, m, g, &mut ind[r * taps..(r + 1) * taps]);
        }
    }
}

/// Kernels with at most this many taps get their interior pixels' pointers from a table of
/// offsets.
const FAST_TAPS: usize = 49;

/// An output row's position: batch index, row and column.
#[derive(Clone, Copy)]
struct Cursor {
    m: usize,
    b: usize,
    oy: usize,
    ox: usize,
}

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
const STACK_POINTERS: usize = 6 * 81;

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

/// Rows gathered for a layer packed as one long tap (see `build::weights::gathered`): each
/// output row's window, tap after tap, copied straight from the image into a block the
/// kernel reads as one dense row.
struct Gathered<T: Copy, const N: usize> {
    block: [T; N],
    rows: [*const T; 8],
}

impl<T: Copy + Default, const N: usize> Gathered<T, N> {
    fn new() -> Self {
        Gathered {
            block: [T::default(); N],
            rows: [std::ptr::null(); 8],
        }
    }

    /// Gathers output rows `rows`, `stride` values apart; taps in the padding get `fill`.
    /// Returns one pointer per row.
    ///
    /// # Safety
    /// `x` must hold the whole input.
    unsafe fn rows(
        &mut self,
        geo: &Geometry,
        x: *const T,
        fill: T,
        cur: &mut Cursor,
        rows: std::ops::Range<usize>,
        stride: usize,
    ) -> &[*const T] {
        // The window's width in values, a constant where it is common: a copy of a length
        // known only at run time becomes a call to `memmove`, dearer than five bytes.
        match geo.window.kernel[1] * geo.ics {
            3 => self.fill::<3>(geo, x, fill, cur, rows, stride),
            5 => self.fill::<5>(geo, x, fill, cur, rows, stride),
            7 => self.fill::<7>(geo, x, fill, cur, rows, stride),
            9 => self.fill::<9>(geo, x, fill, cur, rows, stride),
            15 => self.fill::<15>(geo, x, fill, cur, rows, stride),
            21 => self.fill::<21>(geo, x, fill, cur, rows, stride),
            _ => self.fill::<0>(geo, x, fill, cur, rows, stride),
        }
    }

    /// [`Gathered::rows`] for windows `RUN` values wide (0: any width).
    #[inline(never)]
    unsafe fn fill<const RUN: usize>(
        &mut self,
        geo: &Geometry,
        x: *const T,
        fill: T,
        cur: &mut Cursor,
        rows: std::ops::Range<usize>,
        stride: usize,
    ) -> &[*const T] {
        let n = rows.len();
        for (r, m) in rows.enumerate() {
            let row = self.block.as_mut_ptr().add(r * stride);
            geo.gather::<T, RUN>(x, fill, cur, m, row);
            self.rows[r] = row;
        }
        &self.rows[..n]
    }
}

const _: () = assert!(qgemm::MR <= 8 && sgemm::MR <= 8);

thread_local! {
    /// A depthwise pixel's int32 sums.
    static SUMS: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
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
        let mut block = Gathered::<i8, { MR * (GATHER_MAX + 4) }>::new();
        let mut acc = [[0i32; 2 * NR]; MR];
        let mut cur = geo.cursor(0);
        for u in units {
            let (g, tile) = (u / tiles, u % tiles);
            let m0 = tile * MR;
            let real = MR.min(rows - m0);
            let ind: &[*const i8] = if gather {
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
                    Output::F32 { .. } if cols < 8 => {
                        let at = m0 * geo.ocs + ch0;
                        let dst = cx.ptr::<f32>(c.y).add(at);
                        let res = c.residual.map(|r| cx.ptr::<f32>(r).add(at) as *const f32);
                        c.requant
                            .tile_to_f32(&acc[..real], cols, ch0, dst, geo.ocs, res);
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
        let mut block = Gathered::<f32, { MR * GATHER_MAX }>::new();
        let mut acc = [[0f32; NR]; MR];
        let mut cur = geo.cursor(0);
        for u in units {
            let (g, tile) = (u / tiles, u % tiles);
            let m0 = tile * MR;
            let real = MR.min(rows - m0);
            let ind: &[*const f32] = if gather {
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
            for m in range {
                geo.taps(x, pad, &mut cur, m, 0, ind);
                d.pixel(cx.isa, ind, &mut s);
                if let Some(za) = dyn_zp {
                    s.iter_mut().zip(&d.sums).for_each(|(v, &w)| *v -= za * w);
                }
                epilogue(cx, c, &s, 0, m * geo.ocs);
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
        for m in range {
            geo.taps(x, pad, &mut cur, m, 0, ind);
            let dst = std::slice::from_raw_parts_mut(y.add(m * geo.ocs), d.c);
            d.pixel(cx.isa, cx.mode, ind, dst);
            let res = c.residual.map(|r| {
                std::slice::from_raw_parts(cx.ptr::<f32>(r).add(m * geo.ocs) as *const f32, d.c)
            });
            c.requant.finish_f32(0, res, dst);
        }
    };
    cx.pool.run(split.tasks(), &task);
}
