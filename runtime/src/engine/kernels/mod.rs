//! The arithmetic the engine's operators reduce to: int8 and f32 matrix products through
//! indirection ([`qgemm`], [`sgemm`]), depthwise convolutions ([`depthwise`]), and the
//! int32-to-int8/f32 epilogue ([`requant`]), each with a portable reference and SIMD paths
//! picked by the [`Isa`] detected once per process.

pub(crate) mod depthwise;
#[cfg(target_arch = "x86_64")]
pub(crate) mod narrow;
pub(crate) mod qgemm;
pub(crate) mod requant;
#[cfg(target_arch = "x86_64")]
mod requant_avx512;
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
    /// x86_64 with AVX2 but no FMA (rare; int8 kernels only).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86_64 with AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// AVX2 and FMA with AVX-VNNI, the VEX-encoded `vpdpbusd` on 256-bit registers (Alder
    /// Lake and later client cores).
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// AVX-512 (F, BW, VL) with VNNI: `vpdpbusd` on 512-bit registers (Ice Lake and later
    /// servers, Zen 4 and 5).
    #[cfg(target_arch = "x86_64")]
    Avx512,
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

    /// The best set this CPU supports, detected once per process. `EDGEKD_ISA` names a
    /// lesser one (any of [`Isa::available`]'s names: `portable`, `avx2+fma`, `neon`, ...) to
    /// compare paths on one machine; a name the CPU lacks leaves the best.
    pub(crate) fn detect() -> Isa {
        static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            let asked = std::env::var("EDGEKD_ISA").unwrap_or_default();
            let sets = Isa::available();
            let best = *sets.last().expect("portable is always available");
            // Older spellings: `avx2` for the FMA set, `dotprod` for the SDOT one.
            let asked = match asked.as_str() {
                "avx2" if sets.iter().any(|i| i.name() == "avx2+fma") => "avx2+fma",
                "dotprod" => "neon+dotprod",
                other => other,
            };
            sets.into_iter().find(|i| i.name() == asked).unwrap_or(best)
        })
    }

    /// Every set this CPU supports, from [`Isa::PORTABLE`] up: the kernels' tests run each.
    pub(crate) fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut sets = vec![Isa::PORTABLE];
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            if has!("avx2") {
                if !has!("fma") {
                    sets.push(Isa(Set::Avx2));
                } else {
                    sets.push(Isa(Set::Avx2Fma));
                    if has!("avxvnni") {
                        sets.push(Isa(Set::AvxVnni));
                    }
                    if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni")
                    {
                        sets.push(Isa(Set::Avx512));
                    }
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            sets.push(Isa(Set::Neon));
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                sets.push(Isa(Set::NeonDot));
            }
        }
        sets
    }

    /// x86_64's AVX-VNNI (the 256-bit, VEX-encoded `vpdpbusd`) without AVX-512.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn has_avx_vnni(self) -> bool {
        self.0 == Set::AvxVnni
    }

    /// x86_64's AVX-512 F, BW, VL and VNNI.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn has_avx512(self) -> bool {
        self.0 == Set::Avx512
    }

    /// x86_64's AVX2 (then the CPU has it).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn is_avx2(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            matches!(
                self.0,
                Set::Avx2 | Set::Avx2Fma | Set::AvxVnni | Set::Avx512
            )
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
            matches!(self.0, Set::Avx2Fma | Set::AvxVnni | Set::Avx512)
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
            #[cfg(target_arch = "x86_64")]
            Set::AvxVnni => "avx2+fma+avxvnni",
            #[cfg(target_arch = "x86_64")]
            Set::Avx512 => "avx512+vnni",
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
