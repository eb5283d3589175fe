//! Where each run-time value lives: one arena per run, every value at an offset fixed when
//! the program is built. Values whose lives overlap get disjoint bytes; the others share.
//! Each value is followed by slack the kernels may read past its end (a 4-byte group of
//! int8 channels, a vector), so no read strays into another value.

use super::build::Program;
use super::ir::{Act, Conv, Step, Weights};

/// Bytes after every value that kernels may read (never write).
const SLACK: usize = 64;
/// Alignment of every value.
const ALIGN: usize = 64;

/// The arena's layout for one program.
#[derive(Debug)]
pub(crate) struct Placement {
    /// Offset of each value.
    pub offsets: Vec<usize>,
    /// Offset of each step's row of padding (convolutions that pad: the input's zero point
    /// repeated over a pixel's channels).
    pub pads: Vec<Option<usize>>,
    /// Arena bytes.
    pub size: usize,
}

/// Bytes of a convolution's padding row: one input pixel's channels and the kernels' reach.
pub(crate) fn pad_bytes(program: &Program, step: &Step) -> Option<usize> {
    match step {
        Step::Conv(c) if c.window.pads != [0; 4] => Some(pad_bytes_for(&program.acts, c)),
        _ => None,
    }
}

/// Bytes of the padding row of convolution `c`.
pub(crate) fn pad_bytes_for(acts: &[Act], c: &Conv) -> usize {
    let x = &acts[c.x];
    let channels = x.shape.get(1).copied().unwrap_or(1);
    let extra = match &*c.weights {
        Weights::Q(p) => p.quads * 4,
        Weights::F(p) => p.cin,
        _ => 0,
    };
    (channels + extra) * x.elem.size()
}

pub(crate) fn place(program: &Program) -> Placement {
    let steps = program.steps.len();
    // Each block: bytes, first and last step it is live in.
    let mut blocks: Vec<(usize, usize, usize)> = Vec::new();
    let mut first = vec![usize::MAX; program.acts.len()];
    let mut last = vec![0usize; program.acts.len()];
    first[program.input] = 0;
    for (i, s) in program.steps.iter().enumerate() {
        for y in s.outputs() {
            first[y] = first[y].min(i);
            last[y] = last[y].max(i);
        }
        for x in s.inputs() {
            last[x] = last[x].max(i);
        }
        // The scalars of a dynamic quantization are read wherever its values are.
        for x in s.inputs() {
            if let super::ir::Elem::Q8Dynamic { scale, zp } = program.acts[x].elem {
                last[scale] = last[scale].max(i);
                last[zp] = last[zp].max(i);
            }
        }
    }
    for (_, o) in &program.outputs {
        if let Ok(a) = o {
            last[*a] = steps;
        }
    }
    for (a, act) in program.acts.iter().enumerate() {
        let start = if first[a] == usize::MAX { 0 } else { first[a] };
        blocks.push((act.bytes() + SLACK, start, last[a].max(start)));
    }
    let mut pad_block = vec![None; steps];
    for (i, s) in program.steps.iter().enumerate() {
        if let Some(bytes) = pad_bytes(program, s) {
            pad_block[i] = Some(blocks.len());
            blocks.push((bytes + SLACK, i, i));
        }
    }
    let offsets = assign(&blocks);
    let size = blocks
        .iter()
        .zip(&offsets)
        .map(|(b, o)| o + b.0)
        .max()
        .unwrap_or(0);
    Placement {
        offsets: offsets[..program.acts.len()].to_vec(),
        pads: pad_block.iter().map(|b| b.map(|b| offsets[b])).collect(),
        size,
    }
}

/// First-fit offsets, largest blocks first: a block goes at the lowest aligned offset where
/// no block live at the same time already sits.
fn assign(blocks: &[(usize, usize, usize)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(blocks[i].0));
    let mut placed: Vec<(usize, usize)> = Vec::new(); // (block, offset)
    let mut offsets = vec![0; blocks.len()];
    for i in order {
        let (size, s, e) = blocks[i];
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(j, _)| blocks[j].1 <= e && s <= blocks[j].2)
            .map(|&(j, o)| (o, o + blocks[j].0))
            .collect();
        busy.sort_unstable();
        let mut at = 0;
        for (lo, hi) in busy {
            if at + size <= lo {
                break;
            }
            at = at.max(hi.next_multiple_of(ALIGN));
        }
        offsets[i] = at;
        placed.push((i, at));
    }
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_blocks_never_share_bytes_and_dead_ones_do() {
        let blocks = [
            (100, 0, 2),
            (200, 1, 3),
            (100, 3, 4),
            (64, 4, 5),
            (300, 5, 6),
        ];
        let o = assign(&blocks);
        for i in 0..blocks.len() {
            assert_eq!(o[i] % ALIGN, 0);
            for j in 0..i {
                let live = blocks[i].1 <= blocks[j].2 && blocks[j].1 <= blocks[i].2;
                let overlap = o[i] < o[j] + blocks[j].0 && o[j] < o[i] + blocks[i].0;
                assert!(!(live && overlap), "{i} and {j}");
            }
        }
        // The last block reuses the bytes of the first ones.
        assert!(o[4] < 300);
    }
}
