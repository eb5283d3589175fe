//! Lowering pooling: `MaxPool` and `AveragePool` over channels-last values (int8 stays int8
//! through a max), `GlobalAveragePool` and the `ReduceMean` over an image's plane that
//! PyTorch writes for `x.mean((2, 3))`.

use super::{corrupt, Builder, Node, Val};
use crate::engine::ir::{Elem, PoolKind, Step, Window};
use crate::error::Result;

pub(super) fn pool<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let a = &n.attrs;
    let bad = |e: String| n.bad(e);
    let auto_pad = a.string("auto_pad", "NOTSET");
    if auto_pad != "NOTSET" && auto_pad != "VALID" {
        return Err(n.bad(format!("auto_pad {auto_pad}")));
    }
    if a.sizes("dilations", vec![1, 1]).map_err(bad)? != [1, 1]
        || a.int("storage_order", 0) != 0
        || n.node.output.len() > 1
    {
        return Err(n.bad("dilations, storage order or indices output"));
    }
    let k = a.sizes("kernel_shape", vec![]).map_err(bad)?;
    let s = a.sizes("strides", vec![1, 1]).map_err(bad)?;
    let p = a.sizes("pads", vec![0; 4]).map_err(bad)?;
    let (&[kh, kw], &[sh, sw], &[p0, p1, p2, p3]) = (&k[..], &s[..], &p[..]) else {
        return Err(n.bad("only 2-D pooling"));
    };
    if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
        return Err(corrupt(format!(
            "node `{}`: empty window or zero stride",
            n.node.name
        )));
    }
    // ONNX requires pads smaller than the kernel; larger ones only multiply outputs.
    if p0.max(p2) >= kh || p1.max(p3) >= kw {
        return Err(n.bad(format!("pads {p:?} reach past a {kh}x{kw} window")));
    }
    let window = Window {
        kernel: [kh, kw],
        strides: [sh, sw],
        pads: [p0, p1, p2, p3],
        dilations: [1, 1],
    };
    let kind = if n.node.op_type == "MaxPool" {
        PoolKind::Max
    } else {
        PoolKind::Average(a.int("count_include_pad", 0) != 0)
    };
    let (x, int8) = match b.value(n, n.input(0))? {
        // The maximum of int8 values is the int8 of the maximum.
        Val::Dequantized(q) if kind == PoolKind::Max && b.qparams(q).is_some() => (q, true),
        Val::Dequantized(q) if b.qparams(q).is_some() => (q, false),
        _ => (b.f32_act(n, n.input(0))?, false),
    };
    let act = b.acts[x].clone();
    if act.shape.len() != 4 {
        return Err(n.bad(format!("input of rank {}", act.shape.len())));
    }
    let [batch, c, h, w] = act.nchw();
    let (oh, ow) = window
        .output(h, w, a.int("ceil_mode", 0) != 0)
        .filter(|&(oh, ow)| oh > 0 && ow > 0)
        .ok_or_else(|| {
            corrupt(format!(
                "node `{}`: the window does not fit the {h}x{w} input",
                n.node.name
            ))
        })?;
    let x = b.layout(x, true);
    let elem = if int8 { act.elem } else { Elem::F32 };
    let y = b.act(vec![batch, c, oh, ow], elem, true);
    b.step(Step::Pool { x, y, kind, window });
    b.bind(n.output(), Val::run_time(y, int8));
    Ok(())
}

pub(super) fn global_average_pool<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let x = match b.value(n, n.input(0))? {
        Val::Dequantized(q) if b.qparams(q).is_some() => q,
        _ => b.f32_act(n, n.input(0))?,
    };
    let act = b.acts[x].clone();
    if act.shape.len() != 4 {
        return Err(n.bad(format!("input of rank {}", act.shape.len())));
    }
    let [batch, c, _, _] = act.nchw();
    let x = b.layout(x, true);
    let y = b.act(vec![batch, c, 1, 1], Elem::F32, true);
    b.step(Step::GlobalAveragePool { x, y });
    b.bind(n.output(), Val::Act(y));
    Ok(())
}

/// `ReduceMean` over the spatial axes of an image (how PyTorch's `x.mean((2, 3))` exports):
/// a global average pool.
pub(super) fn reduce_mean<'g>(b: &mut Builder<'g>, n: &Node<'g>) -> Result<()> {
    let axes = match (b.opset >= 18, n.input(1)) {
        (true, "") => vec![],
        (true, name) => b
            .constant(name)
            .ok_or_else(|| n.bad("the axes must be constant"))?
            .to_i64()
            .map_err(|e| n.bad(e))?,
        (false, _) => n
            .attrs
            .ints("axes")
            .map(<[i64]>::to_vec)
            .unwrap_or_default(),
    };
    let mut axes: Vec<i64> = axes
        .iter()
        .map(|&a| if a < 0 { a + 4 } else { a })
        .collect();
    axes.sort_unstable();
    let rank = match b.value(n, n.input(0))? {
        Val::Act(a) | Val::Dequantized(a) => b.acts[a].shape.len(),
        Val::Const(_) => return Err(n.bad("constant input")),
    };
    if rank != 4 || axes != [2, 3] {
        return Err(n.bad(format!(
            "axes {axes:?} of a rank-{rank} value (only the spatial axes of an image)"
        )));
    }
    global_average_pool(b, n)?;
    if n.attrs.int("keepdims", 1) == 0 {
        let Some(Val::Act(y)) = b.env.get(n.output()).cloned() else {
            unreachable!("the pool binds its output")
        };
        let [batch, c, _, _] = b.acts[y].nchw();
        let flat = b.act(vec![batch, c], Elem::F32, false);
        b.step(Step::Copy { x: y, y: flat });
        b.bind(n.output(), Val::Act(flat));
    }
    Ok(())
}
