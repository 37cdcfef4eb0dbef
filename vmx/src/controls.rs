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
        /// A VM exit as soon as the guest can take an interrupt (RFLAGS.IF = 1, no blocking).
        const INTERRUPT_WINDOW_EXITING = 1 << 2;
        /// A VM exit as soon as there is no virtual-NMI blocking (needs virtual NMIs).
        const NMI_WINDOW_EXITING = 1 << 22;
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
        /// Saves the VMX-preemption timer's remaining value at VM exit, so
        /// the next entry counts on from it (the hang watchdog's budget).
        /// Allowed only with the timer's pin control on (SDM vol. 3C
        /// §27.2.1.2): set by the watchdog, which keeps the timer on.
        const SAVE_PREEMPTION_TIMER = 1 << 22;
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

use crate::caps::{MissingControls, VmxCaps};

/// The control values perfvisor programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedControls {
    pub pin: u32,
    pub primary: u32,
    pub secondary: u32,
    pub exit: u32,
    pub entry: u32,
}

/// What the vPMU needs from the controls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PmuControlNeeds {
    /// "Load IA32_PERF_GLOBAL_CTRL" on VM entry (required when set).
    pub load_global_ctrl_on_entry: bool,
    /// "Load IA32_PERF_GLOBAL_CTRL" on VM exit (required when set).
    pub load_global_ctrl_on_exit: bool,
    /// "Save IA32_PERF_GLOBAL_CTRL" on VM exit (required when set).
    pub save_global_ctrl_on_exit: bool,
    /// RDPMC must exit (the guest has fewer counters than the host).
    pub rdpmc_exiting: bool,
}

/// perfvisor's controls for a 64-bit guest: what it cannot run without
/// (I/O and MSR bitmaps, EPT, VPID, HLT exiting, 64-bit host and guest, EFER
/// switching; the GLOBAL_CTRL load controls when the vPMU is on) and what
/// it uses when present (PAT and debug-control switching, saving
/// GLOBAL_CTRL, RDTSCP, INVPCID, XSAVES for the guest); NMI exiting with
/// virtual NMIs is required.
/// Errors name the missing bits.
pub fn resolve_for_guest(caps: &VmxCaps, pmu: PmuControlNeeds) -> Result<ResolvedControls, MissingControls> {
    let bit = |on: bool, b| if on { b } else { ExitControls::empty() };
    let exit_pmu = bit(pmu.load_global_ctrl_on_exit, ExitControls::LOAD_PERF_GLOBAL_CTRL)
        | bit(pmu.save_global_ctrl_on_exit, ExitControls::SAVE_PERF_GLOBAL_CTRL);
    let entry_pmu =
        if pmu.load_global_ctrl_on_entry { EntryControls::LOAD_PERF_GLOBAL_CTRL } else { EntryControls::empty() };
    let rdpmc = if pmu.rdpmc_exiting { PrimaryControls::RDPMC_EXITING } else { PrimaryControls::empty() };
    Ok(ResolvedControls {
        // NMIs exit and are injected as virtual NMIs, so the CPU tracks the
        // guest's NMI blocking (IRET unblocks) and NMI-window exiting can
        // wait for it (SDM vol. 3C §26.3, §27.2): with NMI exiting alone an
        // injected NMI would block every later one.
        pin: caps.pin.resolve(
            "pin-based controls",
            (PinControls::NMI_EXITING | PinControls::VIRTUAL_NMIS).bits(),
            0,
        )?,
        primary: caps.primary.resolve(
            "primary processor-based controls",
            (PrimaryControls::HLT_EXITING
                | PrimaryControls::USE_IO_BITMAPS
                | PrimaryControls::USE_MSR_BITMAPS
                | PrimaryControls::ACTIVATE_SECONDARY_CONTROLS
                | rdpmc)
                .bits(),
            0,
        )?,
        secondary: caps.secondary.resolve(
            "secondary processor-based controls",
            (SecondaryControls::ENABLE_EPT | SecondaryControls::ENABLE_VPID).bits(),
            (SecondaryControls::ENABLE_RDTSCP | SecondaryControls::ENABLE_INVPCID | SecondaryControls::ENABLE_XSAVES)
                .bits(),
        )?,
        exit: caps.exit.resolve(
            "VM-exit controls",
            (ExitControls::HOST_ADDRESS_SPACE_SIZE | ExitControls::SAVE_EFER | ExitControls::LOAD_EFER | exit_pmu)
                .bits(),
            (ExitControls::SAVE_PAT | ExitControls::LOAD_PAT | ExitControls::SAVE_DEBUG_CONTROLS).bits(),
        )?,
        entry: caps.entry.resolve(
            "VM-entry controls",
            (EntryControls::IA32E_MODE_GUEST | EntryControls::LOAD_EFER | entry_pmu).bits(),
            (EntryControls::LOAD_PAT | EntryControls::LOAD_DEBUG_CONTROLS).bits(),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::ControlCap;

    /// The capability MSRs as perfvisor's boot report printed them in
    /// Bochs 2.7 (`vmx: capability MSRs ...`), TRUE_* values.
    fn bochs(secondary: u64, exit: u64, entry: u64, primary: u64, ept: u64) -> VmxCaps {
        VmxCaps {
            pin: ControlCap::from_msr(0x7f_0000_0016),
            primary: ControlCap::from_msr(primary),
            secondary: ControlCap::from_msr(secondary),
            exit: ControlCap::from_msr(exit),
            entry: ControlCap::from_msr(entry),
            ept_vpid: ept,
            ..Default::default()
        }
    }

    fn skylake_x() -> VmxCaps {
        bochs(0x0217_7fff_0000_0000, 0x007f_ffff_0003_6dfb, 0xffff_0000_11fb, 0xf7f9_fffe_0400_6172, 0x0f01_0633_4141)
    }

    fn tigerlake() -> VmxCaps {
        bochs(
            0x0297_7fff_0000_0000,
            0x107f_ffff_0003_6dfb,
            0x10_ffff_0000_11fb,
            0xfff9_fffe_0400_6172,
            0x0f01_06b3_4141,
        )
    }

    #[test]
    fn bochs_models_get_every_required_and_optional_control() {
        let pmu = PmuControlNeeds {
            load_global_ctrl_on_entry: true,
            load_global_ctrl_on_exit: true,
            save_global_ctrl_on_exit: false,
            rdpmc_exiting: false,
        };
        for caps in [skylake_x(), tigerlake()] {
            let c = resolve_for_guest(&caps, pmu).unwrap();
            assert!(ExitControls::from_bits_retain(c.exit).contains(ExitControls::LOAD_PERF_GLOBAL_CTRL));
            assert!(EntryControls::from_bits_retain(c.entry).contains(EntryControls::LOAD_PERF_GLOBAL_CTRL));
            assert!(!ExitControls::from_bits_retain(c.exit).contains(ExitControls::SAVE_PERF_GLOBAL_CTRL));
            assert_eq!(
                c.pin,
                0x16 | (PinControls::NMI_EXITING | PinControls::VIRTUAL_NMIS).bits(),
                "default1 bits kept"
            );
            assert!(PrimaryControls::from_bits_retain(c.primary).contains(
                PrimaryControls::USE_MSR_BITMAPS | PrimaryControls::USE_IO_BITMAPS | PrimaryControls::HLT_EXITING
            ));
            // Set only with the preemption timer on (SDM vol. 3C §27.2.1.2): the watchdog's job.
            assert!(!ExitControls::from_bits_retain(c.exit).contains(ExitControls::SAVE_PREEMPTION_TIMER));
            assert!(caps.exit.allows(ExitControls::SAVE_PREEMPTION_TIMER.bits()));
            let sec = SecondaryControls::from_bits_retain(c.secondary);
            assert!(sec.contains(SecondaryControls::ENABLE_EPT | SecondaryControls::ENABLE_VPID));
            assert!(ExitControls::from_bits_retain(c.exit).contains(ExitControls::LOAD_PAT | ExitControls::LOAD_EFER));
            assert!(EntryControls::from_bits_retain(c.entry).contains(EntryControls::IA32E_MODE_GUEST));
            // Bochs accepts the GLOBAL_CTRL load controls but has no save control.
            assert!(caps.exit.allows(ExitControls::LOAD_PERF_GLOBAL_CTRL.bits()));
            assert!(!caps.exit.allows(ExitControls::SAVE_PERF_GLOBAL_CTRL.bits()));
        }
    }

    #[test]
    fn a_cpu_without_vpid_is_refused_by_name() {
        let mut caps = skylake_x();
        caps.secondary.may_be_one &= !SecondaryControls::ENABLE_VPID.bits();
        let err = resolve_for_guest(&caps, PmuControlNeeds::default()).unwrap_err();
        assert_eq!(err.field, "secondary processor-based controls");
        assert_eq!(err.bits, SecondaryControls::ENABLE_VPID.bits());
        assert_eq!(err.to_string(), "the CPU cannot set required secondary processor-based controls bits 0x00000020");
    }
}
