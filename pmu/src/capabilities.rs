//! IA32_PERF_CAPABILITIES (MSR 0x345; SDM vol. 3B §20.6.1 / vol. 4 Table 2-2).
//! The MSR exists iff CPUID.1:ECX.PDCM[bit 15].

use bitflags::bitflags;
use core::fmt;

bitflags! {
    /// The single-bit fields; LBR format and PEBS record format are fields.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct PerfCapabilities: u64 {
        /// Bit 6: PEBS trap (record after the instruction).
        const PEBS_TRAP = 1 << 6;
        /// Bit 7: PEBS saves architectural registers.
        const PEBS_ARCH_REG = 1 << 7;
        /// Bit 12: Freeze while SMM is supported.
        const SMM_FREEZE = 1 << 12;
        /// Bit 13: full-width counter writes through IA32_A_PMCn.
        const FW_WRITE = 1 << 13;
        /// Bit 14: PEBS baseline (adaptive PEBS).
        const PEBS_BASELINE = 1 << 14;
        /// Bit 15: IA32_PERF_METRICS is available.
        const PERF_METRICS = 1 << 15;
        // The remaining bits are fields or model-specific; keep them.
        const _ = !0;
    }
}

impl PerfCapabilities {
    /// Bits 5:0: LBR record format.
    pub fn lbr_format(self) -> u8 {
        (self.bits() & 0x3f) as u8
    }

    /// Bits 11:8: PEBS record format.
    pub fn pebs_format(self) -> u8 {
        ((self.bits() >> 8) & 0xf) as u8
    }
}

/// `0x... (LBR fmt 5, PEBS fmt 4, FW_WRITE, PERF_METRICS)`.
impl fmt::Display for PerfCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} (LBR fmt {}, PEBS fmt {}", self.bits(), self.lbr_format(), self.pebs_format())?;
        for (name, flag) in [
            ("PEBS_TRAP", Self::PEBS_TRAP),
            ("PEBS_ARCH_REG", Self::PEBS_ARCH_REG),
            ("SMM_FREEZE", Self::SMM_FREEZE),
            ("FW_WRITE", Self::FW_WRITE),
            ("PEBS_BASELINE", Self::PEBS_BASELINE),
            ("PERF_METRICS", Self::PERF_METRICS),
        ] {
            if self.contains(flag) {
                write!(f, ", {name}")?;
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_lake_like_value_decodes() {
        // LBR fmt 5, PEBS trap + arch regs, PEBS fmt 4, SMM freeze, FW_WRITE,
        // PEBS baseline, PERF_METRICS.
        let caps = PerfCapabilities::from_bits_retain(0xf4c5);
        assert_eq!(caps.lbr_format(), 5);
        assert_eq!(caps.pebs_format(), 4);
        assert!(caps.contains(PerfCapabilities::FW_WRITE | PerfCapabilities::PERF_METRICS));
        assert_eq!(
            caps.to_string(),
            "0xf4c5 (LBR fmt 5, PEBS fmt 4, PEBS_TRAP, PEBS_ARCH_REG, SMM_FREEZE, \
             FW_WRITE, PEBS_BASELINE, PERF_METRICS)"
        );
    }
}
