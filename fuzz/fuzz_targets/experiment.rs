//! Experiment files (`train --config`, `distill --config`) from arbitrary text, through
//! everything the commands check before touching data: parsing, merging with the defaults,
//! the training, model and distillation settings. An error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The CLI's own module (the binary crate has no library to depend on).
#[allow(dead_code, unused_imports)]
#[path = "../../src/args/mod.rs"]
mod args;

use args::{parse_config, DistillFile, KdOpts, TrainFile, TrainOpts};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = parse_config::<TrainFile>(text) {
        let opts = TrainOpts::default().merge(&file.opts);
        let _ = opts.train_config();
        if let Some(model) = &file.model {
            let _ = opts.spec(model);
        }
    }
    if let Ok(file) = parse_config::<DistillFile>(text) {
        let opts = TrainOpts::default().merge(&file.opts);
        let kd = KdOpts::default().merge(&file.kd);
        if let Ok(cfg) = opts.train_config() {
            let _ = kd.config(cfg.optimizer.lr);
        }
        if let Some(student) = &kd.student {
            let _ = opts.spec(student);
        }
    }
});
