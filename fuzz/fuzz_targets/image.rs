//! One image-folder file (PNG or JPEG, or anything else) decoded to a model's layout: the first
//! byte picks grayscale or RGB and the output size. An error or exactly the requested pixels;
//! never a panic, and never an allocation past the limits whatever the header claims.
#![no_main]

use edgekd_runtime::image::{decode, ImageLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let channels = if pick & 1 == 0 { 1 } else { 3 };
    let side = 1 + (pick >> 1) as usize % 64;
    let limits = ImageLimits {
        max_side: 4096,
        max_alloc: 128 << 20,
    };
    if let Ok(pixels) = decode(bytes, channels, side, side, limits) {
        assert_eq!(pixels.len(), channels * side * side);
    }
});
