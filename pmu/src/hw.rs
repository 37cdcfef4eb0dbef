//! The hardware interface the engine drives: the three PMU instructions.
//! The kernel implements it with RDMSR/WRMSR/RDPMC; host tests with the model.

/// The access raised #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpFault;

/// RDMSR, WRMSR and RDPMC on the current logical processor, and the
/// running context's IA32_DEBUGCTL.
pub trait PmuHardware {
    fn rdmsr(&mut self, msr: u32) -> Result<u64, GpFault>;
    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault>;
    /// RDPMC with ECX = `index` (bit 30 selects the fixed counters).
    fn rdpmc(&mut self, index: u32) -> Result<u64, GpFault>;
    /// IA32_DEBUGCTL of the context the engine acts for (its freeze-on-PMI
    /// bits decide what a software-counted overflow freezes). In a VM exit
    /// that is the guest's value in the VMCS guest-state area, which the
    /// "save debug controls" exit control stored: the exit itself cleared
    /// the MSR (SDM vol. 3C, VM exits, "Loading Host Control Registers,
    /// Debug Registers, MSRs").
    fn debugctl(&mut self) -> Result<u64, GpFault>;
    /// Replaces that IA32_DEBUGCTL (the legacy LBR freeze clears its LBR bit).
    fn set_debugctl(&mut self, value: u64) -> Result<(), GpFault>;
}

/// RDPMC's ECX bit selecting fixed counters (SDM vol. 2B, RDPMC).
pub const RDPMC_FIXED: u32 = 1 << 30;
/// RDPMC's ECX bit 29: read IA32_PERF_METRICS.
pub const RDPMC_METRICS: u32 = 1 << 29;
