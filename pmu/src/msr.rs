//! Architectural PMU MSR addresses (SDM vol. 4, Table 2-2 "IA-32
//! Architectural MSRs"; vol. 3B ch. 20).

/// IA32_PMCn, legacy GP counter n: writes sign-extend from bit 31.
pub const IA32_PMC0: u32 = 0xc1;
/// IA32_PERFEVTSELn.
pub const IA32_PERFEVTSEL0: u32 = 0x186;
/// IA32_DEBUGCTL: FREEZE_LBRS_ON_PMI (11), FREEZE_PERFMON_ON_PMI (12).
pub const IA32_DEBUGCTL: u32 = 0x1d9;
/// IA32_FIXED_CTRi.
pub const IA32_FIXED_CTR0: u32 = 0x309;
/// IA32_PERF_METRICS (paired with fixed counter 3).
pub const IA32_PERF_METRICS: u32 = 0x329;
/// IA32_PERF_CAPABILITIES: exists iff CPUID.1:ECX.PDCM[15].
pub const IA32_PERF_CAPABILITIES: u32 = 0x345;
/// IA32_FIXED_CTR_CTRL: 4 bits per fixed counter.
pub const IA32_FIXED_CTR_CTRL: u32 = 0x38d;
/// IA32_PERF_GLOBAL_STATUS (read-only).
pub const IA32_PERF_GLOBAL_STATUS: u32 = 0x38e;
/// IA32_PERF_GLOBAL_CTRL.
pub const IA32_PERF_GLOBAL_CTRL: u32 = 0x38f;
/// IA32_PERF_GLOBAL_STATUS_RESET (called OVF_CTRL before v4).
pub const IA32_PERF_GLOBAL_STATUS_RESET: u32 = 0x390;
/// IA32_PERF_GLOBAL_STATUS_SET (v4+).
pub const IA32_PERF_GLOBAL_STATUS_SET: u32 = 0x391;
/// IA32_PERF_GLOBAL_INUSE (v4+, read-only).
pub const IA32_PERF_GLOBAL_INUSE: u32 = 0x392;
/// IA32_A_PMCn, full-width GP counter n: exists iff PERF_CAPABILITIES.FW_WRITE.
pub const IA32_A_PMC0: u32 = 0x4c1;

use crate::layout::{MAX_FIXED, MAX_GP};

/// A PMU register by address (its existence depends on the layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PmuReg {
    Pmc(u8),
    FullWidthPmc(u8),
    EventSelect(u8),
    Fixed(u8),
    FixedCtrl,
    GlobalStatus,
    GlobalCtrl,
    StatusReset,
    StatusSet,
    Inuse,
    PerfCapabilities,
    DebugCtl,
    PerfMetrics,
}

impl PmuReg {
    pub fn decode(msr: u32) -> Option<Self> {
        let index = |base: u32, n: usize| (base..base + n as u32).contains(&msr).then(|| (msr - base) as u8);
        if let Some(i) = index(IA32_PMC0, MAX_GP) {
            return Some(Self::Pmc(i));
        }
        if let Some(i) = index(IA32_A_PMC0, MAX_GP) {
            return Some(Self::FullWidthPmc(i));
        }
        if let Some(i) = index(IA32_PERFEVTSEL0, MAX_GP) {
            return Some(Self::EventSelect(i));
        }
        if let Some(i) = index(IA32_FIXED_CTR0, MAX_FIXED) {
            return Some(Self::Fixed(i));
        }
        Some(match msr {
            IA32_FIXED_CTR_CTRL => Self::FixedCtrl,
            IA32_PERF_GLOBAL_STATUS => Self::GlobalStatus,
            IA32_PERF_GLOBAL_CTRL => Self::GlobalCtrl,
            IA32_PERF_GLOBAL_STATUS_RESET => Self::StatusReset,
            IA32_PERF_GLOBAL_STATUS_SET => Self::StatusSet,
            IA32_PERF_GLOBAL_INUSE => Self::Inuse,
            IA32_PERF_CAPABILITIES => Self::PerfCapabilities,
            IA32_DEBUGCTL => Self::DebugCtl,
            IA32_PERF_METRICS => Self::PerfMetrics,
            _ => return None,
        })
    }

    pub fn address(self) -> u32 {
        match self {
            Self::Pmc(i) => IA32_PMC0 + u32::from(i),
            Self::FullWidthPmc(i) => IA32_A_PMC0 + u32::from(i),
            Self::EventSelect(i) => IA32_PERFEVTSEL0 + u32::from(i),
            Self::Fixed(i) => IA32_FIXED_CTR0 + u32::from(i),
            Self::FixedCtrl => IA32_FIXED_CTR_CTRL,
            Self::GlobalStatus => IA32_PERF_GLOBAL_STATUS,
            Self::GlobalCtrl => IA32_PERF_GLOBAL_CTRL,
            Self::StatusReset => IA32_PERF_GLOBAL_STATUS_RESET,
            Self::StatusSet => IA32_PERF_GLOBAL_STATUS_SET,
            Self::Inuse => IA32_PERF_GLOBAL_INUSE,
            Self::PerfCapabilities => IA32_PERF_CAPABILITIES,
            Self::DebugCtl => IA32_DEBUGCTL,
            Self::PerfMetrics => IA32_PERF_METRICS,
        }
    }
}

/// Every PMU MSR address perfvisor knows, for policy tables and fuzzing.
pub fn all_pmu_msrs() -> impl Iterator<Item = u32> {
    let ranges = [(IA32_PMC0, MAX_GP), (IA32_A_PMC0, MAX_GP), (IA32_PERFEVTSEL0, MAX_GP), (IA32_FIXED_CTR0, MAX_FIXED)];
    ranges.into_iter().flat_map(|(base, n)| base..base + n as u32).chain([
        IA32_FIXED_CTR_CTRL,
        IA32_PERF_GLOBAL_STATUS,
        IA32_PERF_GLOBAL_CTRL,
        IA32_PERF_GLOBAL_STATUS_RESET,
        IA32_PERF_GLOBAL_STATUS_SET,
        IA32_PERF_GLOBAL_INUSE,
        IA32_PERF_CAPABILITIES,
        IA32_PERF_METRICS,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_round_trips_and_neighbours_are_not_pmu_registers() {
        for msr in all_pmu_msrs().chain([IA32_DEBUGCTL]) {
            assert_eq!(PmuReg::decode(msr).unwrap().address(), msr);
        }
        for msr in [0xc0, 0xc9, 0x185, 0x18e, 0x308, 0x38c, 0x393, 0x4c0, 0x4c9] {
            assert_eq!(PmuReg::decode(msr), None, "{msr:#x}");
        }
    }
}
