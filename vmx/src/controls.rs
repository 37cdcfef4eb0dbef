//! VMX execution, exit and entry control bits (SDM vol. 3C §25.6–25.8,
//! Tables 25-5, 25-6, 25-7, 25-13, 25-15). Only the bits perfvisor uses or
//! reports are named.

use bitflags::bitflags;

bitflags! {
    /// Pin-based VM-execution controls (SDM vol. 3C Table 25-5).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct PinControls: u32 {
        const EXTERNAL_INTERRUPT_EXITING = 1 << 0;
        const NMI_EXITING = 1 << 3;
        const VIRTUAL_NMIS = 1 << 5;
        const PREEMPTION_TIMER = 1 << 6;
    }
}

bitflags! {
    /// Primary processor-based VM-execution controls (SDM vol. 3C Table 25-6).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct PrimaryControls: u32 {
        const HLT_EXITING = 1 << 7;
        const RDPMC_EXITING = 1 << 11;
        const UNCONDITIONAL_IO_EXITING = 1 << 24;
        const USE_IO_BITMAPS = 1 << 25;
        const USE_MSR_BITMAPS = 1 << 28;
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}

bitflags! {
    /// Secondary processor-based VM-execution controls (SDM vol. 3C Table 25-7).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SecondaryControls: u32 {
        const ENABLE_EPT = 1 << 1;
        const ENABLE_RDTSCP = 1 << 3;
        const ENABLE_VPID = 1 << 5;
        const UNRESTRICTED_GUEST = 1 << 7;
        const ENABLE_INVPCID = 1 << 12;
        const ENABLE_XSAVES = 1 << 20;
    }
}

bitflags! {
    /// Primary VM-exit controls (SDM vol. 3C Table 25-13).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ExitControls: u32 {
        const SAVE_DEBUG_CONTROLS = 1 << 2;
        const HOST_ADDRESS_SPACE_SIZE = 1 << 9;
        /// Loads the host's IA32_PERF_GLOBAL_CTRL from the host-state area.
        const LOAD_PERF_GLOBAL_CTRL = 1 << 12;
        const ACK_INTERRUPT_ON_EXIT = 1 << 15;
        const SAVE_PAT = 1 << 18;
        const LOAD_PAT = 1 << 19;
        const SAVE_EFER = 1 << 20;
        const LOAD_EFER = 1 << 21;
        /// Saves the guest's IA32_PERF_GLOBAL_CTRL into the guest-state area
        /// (first in Sapphire Rapids; older v4 CPUs need an MSR-store list).
        const SAVE_PERF_GLOBAL_CTRL = 1 << 30;
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}

bitflags! {
    /// VM-entry controls (SDM vol. 3C Table 25-15).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct EntryControls: u32 {
        const LOAD_DEBUG_CONTROLS = 1 << 2;
        const IA32E_MODE_GUEST = 1 << 9;
        /// Loads the guest's IA32_PERF_GLOBAL_CTRL from the guest-state area.
        const LOAD_PERF_GLOBAL_CTRL = 1 << 13;
        const LOAD_PAT = 1 << 14;
        const LOAD_EFER = 1 << 15;
    }
}
