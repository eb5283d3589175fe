//! A checkpoint (model.toml + model.safetensors) from arbitrary bytes: the spec text, then the
//! weights, split by a 2-byte little-endian length of the spec. The reader must return an
//! error or a model whose forward pass runs; never a panic or an allocation the weights' size
//! does not justify.
#![no_main]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use edgekd_distill::checkpoint::{model_from_weights, parse_spec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = u16::from_le_bytes(*len) as usize;
    if len > rest.len() {
        return;
    }
    let (spec_text, weights) = rest.split_at(len);
    let Ok(spec_text) = std::str::from_utf8(spec_text) else {
        return;
    };
    let Ok(spec) = parse_spec(spec_text, Path::new("model.toml")) else {
        return;
    };
    let Ok(model) = model_from_weights(&spec, weights, Path::new("model.safetensors"), &Device::Cpu)
    else {
        return;
    };
    let s = spec.input;
    let Some(len) = s
        .channels
        .checked_mul(s.rows)
        .and_then(|n| n.checked_mul(s.cols))
    else {
        return;
    };
    // Accepted weights bound the model's size, but not the input's: skip inputs too large
    // for a fuzzing run.
    if len > 1 << 16 {
        return;
    }
    let x = Tensor::zeros((1, len), DType::F32, &Device::Cpu).unwrap();
    let _ = model.forward(&x, false);
});
