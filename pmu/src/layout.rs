//! What a PMU has — enough to decide every #GP — and the register layout
//! facts both the engine and the model use (SDM vol. 3B ch. 20, vol. 4).

use crate::cpuid::{ArchPerfmon, FixedCounterSet};
use crate::PerfCapabilities;

/// GP counters with architectural MSR addresses: IA32_PERFEVTSEL0..7 are
/// 0x186..0x18d (0x18e.. is taken), so at most 8 GP counters are addressable.
pub const MAX_GP: usize = 8;
/// Fixed counter i is bit 32+i; bit 48 is PERF_METRICS.
pub const MAX_FIXED: usize = 16;

/// The PMU's shape: counters, widths, features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmuLayout {
    pub version: u8,
    pub gp_counters: u8,
    pub gp_width: u8,
    pub fixed: FixedCounterSet,
    pub fixed_width: u8,
    /// CPUID.0AH.EDX[15]: AnyThread is deprecated (then its bits are reserved).
    pub anythread_deprecated: bool,
    /// CPUID.1:ECX.PDCM: IA32_PERF_CAPABILITIES exists.
    pub pdcm: bool,
    /// Meaningful only when `pdcm`.
    pub perf_capabilities: PerfCapabilities,
}

/// IA32_PERF_GLOBAL_STATUS bits beyond the counters (SDM vol. 4 Table 2-2;
/// REFERENCE.md §1).
pub mod status {
    pub const PERF_METRICS: u64 = 1 << 48;
    pub const TRACE_TOPA_PMI: u64 = 1 << 55;
    pub const LBR_FRZ: u64 = 1 << 58;
    pub const CTR_FRZ: u64 = 1 << 59;
    pub const ASCI: u64 = 1 << 60;
    pub const OVF_UNCORE: u64 = 1 << 61;
    pub const OVF_BUFFER: u64 = 1 << 62;
    pub const COND_CHGD: u64 = 1 << 63;
}

/// IA32_PERFEVTSELx fields (SDM vol. 3B §20.2.1.1, Figure 20-1).
pub mod evtsel {
    pub const EVENT: u64 = 0xff;
    pub const UMASK: u64 = 0xff << 8;
    pub const USR: u64 = 1 << 16;
    pub const OS: u64 = 1 << 17;
    pub const EDGE: u64 = 1 << 18;
    pub const PIN_CONTROL: u64 = 1 << 19;
    pub const INT: u64 = 1 << 20;
    pub const ANY_THREAD: u64 = 1 << 21;
    pub const EN: u64 = 1 << 22;
    pub const INV: u64 = 1 << 23;
    pub const CMASK: u64 = 0xff << 24;
}

/// IA32_FIXED_CTR_CTRL: 4 bits per counter at 4*i (SDM vol. 3B §20.2.2, Figure 20-2).
pub mod fixed_ctrl {
    pub const OS: u64 = 1 << 0;
    pub const USR: u64 = 1 << 1;
    pub const ANY_THREAD: u64 = 1 << 2;
    pub const PMI: u64 = 1 << 3;
    pub const FIELD: u64 = 0xf;
}

/// IA32_DEBUGCTL bits the PMU interacts with (SDM vol. 3B §18.4.1, §20.2.4.1).
pub mod debugctl {
    pub const LBR: u64 = 1 << 0;
    pub const BTF: u64 = 1 << 1;
    pub const FREEZE_LBRS_ON_PMI: u64 = 1 << 11;
    pub const FREEZE_PERFMON_ON_PMI: u64 = 1 << 12;
    pub const FREEZE_WHILE_SMM: u64 = 1 << 14;
}

impl PmuLayout {
    /// A typical Intel layout: 48-bit counters, PDCM set, AnyThread
    /// deprecated from v5, and full-width writes when `fw_write`.
    pub fn typical(version: u8, gp_counters: u8, fixed: u32, fw_write: bool) -> Self {
        Self {
            version,
            gp_counters,
            gp_width: 48,
            fixed: FixedCounterSet(fixed),
            fixed_width: 48,
            anythread_deprecated: version >= 5,
            pdcm: true,
            perf_capabilities: if fw_write { PerfCapabilities::FW_WRITE } else { PerfCapabilities::empty() },
        }
    }

    /// The layout CPUID.0AH (plus PDCM and PERF_CAPABILITIES) describes.
    pub fn from_cpuid(p: &ArchPerfmon, pdcm: bool, perf_capabilities: u64) -> Self {
        Self {
            version: p.version,
            gp_counters: p.gp_counters.min(MAX_GP as u8),
            gp_width: p.gp_width,
            fixed: FixedCounterSet(p.fixed.0 & FixedCounterSet::first(MAX_FIXED as u32).0),
            fixed_width: p.fixed_width,
            anythread_deprecated: p.anythread_deprecated,
            pdcm,
            perf_capabilities: PerfCapabilities::from_bits_retain(if pdcm { perf_capabilities } else { 0 }),
        }
    }

    pub fn gp_mask(&self) -> u64 {
        (1u64 << self.gp_counters) - 1
    }

    pub fn fixed_mask(&self) -> u64 {
        u64::from(self.fixed.0) << 32
    }

    pub fn gp_value_mask(&self) -> u64 {
        width_mask(self.gp_width)
    }

    pub fn fixed_value_mask(&self) -> u64 {
        width_mask(self.fixed_width)
    }

    /// Full-width counter writes (IA32_A_PMCx) exist.
    pub fn fw_write(&self) -> bool {
        self.pdcm && self.perf_capabilities.contains(PerfCapabilities::FW_WRITE)
    }

    /// IA32_PERF_METRICS exists (with fixed counter 3).
    pub fn perf_metrics(&self) -> bool {
        self.pdcm && self.perf_capabilities.contains(PerfCapabilities::PERF_METRICS) && self.fixed.contains(3)
    }

    /// AnyThread may be set (v3 and v4; deprecated from v5 on).
    pub fn anythread_allowed(&self) -> bool {
        self.version >= 3 && !self.anythread_deprecated
    }

    /// The counter bits of GLOBAL_CTRL/STATUS (plus PERF_METRICS).
    pub fn counter_bits(&self) -> u64 {
        self.gp_mask() | self.fixed_mask() | if self.perf_metrics() { status::PERF_METRICS } else { 0 }
    }
}

/// `bits` ones (a counter of that width holds values up to this).
pub fn width_mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}
