//! The hardware interface the engine drives: the three PMU instructions.
//! The kernel implements it with RDMSR/WRMSR/RDPMC; host tests with the model.

/// The access raised #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpFault;

/// RDMSR, WRMSR and RDPMC on the current logical processor.
pub trait PmuHardware {
    fn rdmsr(&mut self, msr: u32) -> Result<u64, GpFault>;
    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault>;
    /// RDPMC with ECX = `index` (bit 30 selects the fixed counters).
    fn rdpmc(&mut self, index: u32) -> Result<u64, GpFault>;
}

/// RDPMC's ECX bit selecting fixed counters (SDM vol. 2B, RDPMC).
pub const RDPMC_FIXED: u32 = 1 << 30;
