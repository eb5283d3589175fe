//! Options shared by `train` and `distill`, and the experiment file (`--config exp.toml`) that can
//! hold any of them. A flag on the command line wins over the file; the file wins over defaults.

/// Fills each listed `Option` field of `$flags` that is `None` from `$file`.
macro_rules! prefer_flags {
    ($flags:ident, $file:ident, $($field:ident),*) => {
        $( if $flags.$field.is_none() { $flags.$field = $file.$field.clone(); } )*
    };
}

mod file;
mod kd;
mod train;
mod values;

// parse_config: the experiment fuzz target's entry point (it includes this module by path).
#[allow(unused_imports)]
pub use file::{parse_config, read_config, DistillFile, TrainFile};
pub use kd::{KdOpts, TeacherOpts};
pub use train::{shipped_subset, TrainOpts};
pub use values::{ColorArg, CriterionArg, ImageSize, ScopeArg};
