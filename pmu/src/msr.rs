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
