//! Model loading and one inference on arbitrary bytes, on the native engine: an error or
//! logits, never a panic, a hang or an allocation the bytes do not justify.
#![no_main]

use edgekd_runtime::{Backend, Model, Options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = Options {
        backend: Backend::Native,
        threads: 1,
        ..Default::default()
    };
    let Ok(model) = Model::from_bytes_with(data, options) else {
        return;
    };
    let Some(per_sample) = model.info().inputs.first().and_then(|i| i.sample_len()) else {
        return;
    };
    // Inputs too large for a fuzzing run are not what is being tested.
    if per_sample > 1 << 16 {
        return;
    }
    let input: Vec<f32> = (0..per_sample).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect();
    let _ = model.logits(&input, 1);
});
