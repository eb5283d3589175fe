//! Where a convolution's output rows read their input: the layer's geometry, each row's tap
//! pointers (a pixel of the NHWC input, or the padding row), and the gathered windows of
//! layers packed as one long tap.

use super::Ctx;
use crate::engine::ir::{Conv, Window};
use crate::engine::kernels::{qgemm, sgemm};

/// Where a convolution reads and writes.
pub(super) struct Geometry {
    batch: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    /// Input values per pixel (all groups).
    pub(super) ics: usize,
    /// Output values per pixel (all groups).
    pub(super) ocs: usize,
    /// Input channels per group.
    pub(super) cg: usize,
    /// Output channels per group.
    pub(super) og: usize,
    pub(super) groups: usize,
    pub(super) window: Window,
    /// 1x1, stride 1, no padding: row m's input is pixel m.
    pointwise: bool,
    /// Each tap's distance (in values) from the window's first pixel.
    tap_offsets: [usize; FAST_TAPS],
}

impl Geometry {
    pub(super) fn of(cx: &Ctx, c: &Conv) -> Geometry {
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

    pub(super) fn rows(&self) -> usize {
        self.batch * self.oh * self.ow
    }

    /// Images, the input's `[h, w]` and the output's `[oh, ow]`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) fn sizes(&self) -> (usize, [usize; 2], [usize; 2]) {
        (self.batch, [self.h, self.w], [self.oh, self.ow])
    }

    /// Each tap's distance (in values) from the window's first pixel; empty for kernels of
    /// more than `FAST_TAPS` taps.
    pub(super) fn tap_offsets(&self) -> &[usize] {
        let taps = self.window.taps();
        if taps <= FAST_TAPS {
            &self.tap_offsets[..taps]
        } else {
            &[]
        }
    }

    /// When output row `m`'s whole window lies inside the image: where its window starts
    /// (in values from the input's start), and how many output rows from `m` on, in the
    /// same image row, are such too (each `stride · ics` values after the one before).
    pub(super) fn interior_run(&self, m: usize) -> Option<(usize, usize)> {
        self.inside_run(&self.cursor(m), usize::MAX)
    }

    /// The output position of row `m`.
    pub(super) fn cursor(&self, m: usize) -> Cursor {
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
    pub(super) unsafe fn taps<T>(
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
    pub(super) unsafe fn tile_taps<T>(
        &self,
        x: *const T,
        pad: *const T,
        cur: &mut Cursor,
        rows: std::ops::Range<usize>,
        g: usize,
        taps: usize,
        ind: &mut [*const T],
    ) {
        if self.pointwise || taps > FAST_TAPS {
            for (r, m) in rows.enumerate() {
                self.taps(x, pad, cur, m, g, &mut ind[r * taps..(r + 1) * taps]);
            }
            return;
        }
        // Rows side by side in one output row whose windows lie inside the image (most rows)
        // have the first one's pointers, `stride` pixels on each: no bounds checks per tap.
        let step = self.window.strides[1] * self.ics;
        let offsets = &self.tap_offsets[..taps];
        let (m0, n) = (rows.start, rows.len());
        let mut r = 0;
        while r < n {
            if cur.m != m0 + r {
                *cur = self.cursor(m0 + r);
            }
            let Some((start, run)) = self.inside_run(cur, n - r) else {
                self.taps(x, pad, cur, m0 + r, g, &mut ind[r * taps..(r + 1) * taps]);
                r += 1;
                continue;
            };
            let base = x.add(start + g * self.cg);
            for (k, row) in ind[r * taps..(r + run) * taps]
                .chunks_exact_mut(taps)
                .enumerate()
            {
                let first = base.add(k * step);
                for (i, &o) in row.iter_mut().zip(offsets) {
                    *i = first.add(o);
                }
            }
            cur.m += run - 1;
            cur.ox += run - 1;
            self.advance(cur);
            r += run;
        }
    }

    /// When the window of the row at `c` lies inside the image: where it starts (in values
    /// from the input's start) and how many rows from it on, at most `n`, in the same output
    /// row, are such too.
    fn inside_run(&self, c: &Cursor, n: usize) -> Option<(usize, usize)> {
        let win = &self.window;
        let reach = |k: usize, d: usize| (k - 1) * d;
        let y0 = (c.oy * win.strides[0]).checked_sub(win.pads[0])?;
        if y0 + reach(win.kernel[0], win.dilations[0]) >= self.h {
            return None;
        }
        let x0 = (c.ox * win.strides[1]).checked_sub(win.pads[1])?;
        let last = self
            .w
            .checked_sub(1 + reach(win.kernel[1], win.dilations[1]))?;
        if x0 > last {
            return None;
        }
        let run = ((last - x0) / win.strides[1] + 1)
            .min(self.ow - c.ox)
            .min(n);
        Some((((c.b * self.h + y0) * self.w + x0) * self.ics, run))
    }
}

/// Kernels with at most this many taps get their interior pixels' pointers from a table of
/// offsets.
const FAST_TAPS: usize = 49;

/// An output row's position: batch index, row and column.
#[derive(Clone, Copy)]
pub(super) struct Cursor {
    m: usize,
    b: usize,
    oy: usize,
    ox: usize,
}

/// Rows gathered for a layer packed as one long tap (see `build::weights::gathered`): each
/// output row's window, tap after tap, copied straight from the image into a block the
/// kernel reads as one dense row.
pub(super) struct Gathered<T: Copy, const N: usize> {
    block: [T; N],
    rows: [*const T; ROWS_MAX],
}

/// The most rows a micro-kernel call takes.
const ROWS_MAX: usize = 12;

impl<T: Copy + Default, const N: usize> Gathered<T, N> {
    pub(super) fn new() -> Self {
        Gathered {
            block: [T::default(); N],
            rows: [std::ptr::null(); ROWS_MAX],
        }
    }

    /// Gathers output rows `rows`, `stride` values apart; taps in the padding get `fill`.
    /// Returns one pointer per row.
    ///
    /// # Safety
    /// `x` must hold the whole input.
    pub(super) unsafe fn rows(
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

const _: () = assert!(qgemm::MR <= ROWS_MAX && sgemm::MR <= ROWS_MAX);
