//! The arithmetic the engine's operators reduce to: int8 and f32 matrix products through
//! indirection ([`qgemm`], [`sgemm`]), depthwise convolutions ([`depthwise`]), and the
//! int32-to-int8/f32 epilogue ([`requant`]), each with a portable reference and SIMD paths
//! picked by the [`Isa`] detected once per process.

pub(crate) mod depthwise;
#[cfg(target_arch = "x86_64")]
pub(crate) mod narrow;
pub(crate) mod qgemm;
pub(crate) mod requant;
pub(crate) mod sgemm;

/// The instruction sets the kernels use. Only [`Isa::detect`] (and [`Isa::PORTABLE`]) make
/// one, so holding an `Isa` that names a set proves the CPU has it: the unsafe SIMD paths
/// rely on that, and nothing outside this module can forge it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Isa(Set);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Set {
    /// Plain Rust (any CPU).
    Portable,
    /// x86_64 with AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// x86_64 with AVX2 but no FMA (rare; int8 kernels only).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// aarch64 NEON (always present), without the dot-product instructions (Cortex-A72,
    /// the Raspberry Pi 4).
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// aarch64 NEON with SDOT/UDOT (Cortex-A76 and later: the Raspberry Pi 5, most phones).
    #[cfg(target_arch = "aarch64")]
    NeonDot,
}

impl Isa {
    /// Plain Rust, on any CPU.
    pub(crate) const PORTABLE: Isa = Isa(Set::Portable);

    /// The best set this CPU supports, detected once per process. `EDGEKD_ISA=portable` (or,
    /// on aarch64, `neon`) asks for less, to compare paths on one machine.
    pub(crate) fn detect() -> Isa {
        static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            let asked = std::env::var("EDGEKD_ISA").unwrap_or_default();
            if asked == "portable" {
                return Isa::PORTABLE;
            }
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") {
                    return if std::is_x86_feature_detected!("fma") {
                        Isa(Set::Avx2Fma)
                    } else {
                        Isa(Set::Avx2)
                    };
                }
            }
            #[cfg(target_arch = "aarch64")]
            {
                if asked != "neon" && std::arch::is_aarch64_feature_detected!("dotprod") {
                    return Isa(Set::NeonDot);
                }
                return Isa(Set::Neon);
            }
            #[allow(unreachable_code)]
            Isa::PORTABLE
        })
    }

    /// x86_64's AVX2 (then the CPU has it).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn is_avx2(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            matches!(self.0, Set::Avx2 | Set::Avx2Fma)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// x86_64's AVX2 with FMA.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn has_fma(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.0 == Set::Avx2Fma
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// aarch64's NEON (with or without the dot product).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub(crate) fn is_neon(self) -> bool {
        #[cfg(target_arch = "aarch64")]
        {
            matches!(self.0, Set::Neon | Set::NeonDot)
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            false
        }
    }

    /// aarch64's SDOT/UDOT.
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub(crate) fn has_dot(self) -> bool {
        #[cfg(target_arch = "aarch64")]
        {
            self.0 == Set::NeonDot
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            false
        }
    }

    /// Its name, for reports.
    pub(crate) fn name(self) -> &'static str {
        match self.0 {
            Set::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Set::Avx2Fma => "avx2+fma",
            #[cfg(target_arch = "x86_64")]
            Set::Avx2 => "avx2",
            #[cfg(target_arch = "aarch64")]
            Set::Neon => "neon",
            #[cfg(target_arch = "aarch64")]
            Set::NeonDot => "neon+dotprod",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cross tests run the kernels under emulated CPUs and say which set each must pick, so
    /// a detection that silently fell back would not pass for the path it skipped.
    #[test]
    fn the_detected_isa_is_the_one_expected() {
        if let Ok(want) = std::env::var("EDGEKD_EXPECT_ISA") {
            assert_eq!(Isa::detect().name(), want);
        }
    }
}
