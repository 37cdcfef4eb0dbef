//! Decoding the VMX capability MSRs (SDM vol. 3D appendix A).

use crate::controls::{EntryControls, ExitControls, PinControls, PrimaryControls, SecondaryControls};
use crate::msr;
use core::fmt;

/// IA32_VMX_BASIC (SDM vol. 3D §A.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxBasic(pub u64);

impl VmxBasic {
    /// Bits 30:0: the VMCS revision identifier VMXON and VMPTRLD regions carry.
    pub fn revision_id(self) -> u32 {
        (self.0 & 0x7fff_ffff) as u32
    }

    /// Bits 44:32: bytes to allocate for the VMXON region and a VMCS.
    pub fn region_size(self) -> u32 {
        ((self.0 >> 32) & 0x1fff) as u32
    }

    /// Bits 53:50: the memory type for VMCS accesses (6 = write-back).
    pub fn memory_type(self) -> u8 {
        ((self.0 >> 50) & 0xf) as u8
    }

    /// Bit 55: the IA32_VMX_TRUE_*_CTLS MSRs exist and report the
    /// default1 controls that may be cleared (SDM vol. 3D §A.2).
    pub fn true_controls(self) -> bool {
        self.0 & (1 << 55) != 0
    }
}

/// One control capability MSR: the low half is the allowed-0 settings (a 1
/// there means the control must be 1), the high half the allowed-1 settings
/// (a 0 there means the control must be 0). SDM vol. 3D §A.3–A.5.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlCap {
    pub must_be_one: u32,
    pub may_be_one: u32,
}

/// Controls that a configuration needs but the CPU cannot set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingControls {
    /// Which control field (e.g. "VM-exit controls").
    pub field: &'static str,
    /// The required bits the CPU cannot set.
    pub bits: u32,
}

impl fmt::Display for MissingControls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the CPU cannot set required {} bits {:#010x}", self.field, self.bits)
    }
}

impl ControlCap {
    pub fn from_msr(value: u64) -> Self {
        Self { must_be_one: value as u32, may_be_one: (value >> 32) as u32 }
    }

    pub fn allows(self, bits: u32) -> bool {
        self.may_be_one & bits == bits
    }

    /// The value to program: `required` (all must be settable, else an
    /// error naming them), plus whatever of `optional` is settable, plus the
    /// bits the CPU forces to 1.
    pub fn resolve(self, field: &'static str, required: u32, optional: u32) -> Result<u32, MissingControls> {
        let missing = required & !self.may_be_one;
        if missing != 0 {
            return Err(MissingControls { field, bits: missing });
        }
        Ok(required | (optional & self.may_be_one) | self.must_be_one)
    }
}

/// Every capability perfvisor consults, read once at boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxCaps {
    pub basic: u64,
    pub pin: ControlCap,
    pub primary: ControlCap,
    /// All-zero when the CPU has no secondary controls.
    pub secondary: ControlCap,
    pub exit: ControlCap,
    pub entry: ControlCap,
    pub misc: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    pub ept_vpid: u64,
}

impl VmxCaps {
    /// Reads the capability MSRs through `rdmsr`, preferring the TRUE_*
    /// MSRs when VMX_BASIC bit 55 says they exist. `rdmsr` returns `None`
    /// when the read faults; a missing optional MSR then reads as 0.
    pub fn read(mut rdmsr: impl FnMut(u32) -> Option<u64>) -> Self {
        let mut read = |m| rdmsr(m).unwrap_or(0);
        let basic = VmxBasic(read(msr::IA32_VMX_BASIC));
        let (pin, primary, exit, entry) = if basic.true_controls() {
            (
                msr::IA32_VMX_TRUE_PINBASED_CTLS,
                msr::IA32_VMX_TRUE_PROCBASED_CTLS,
                msr::IA32_VMX_TRUE_EXIT_CTLS,
                msr::IA32_VMX_TRUE_ENTRY_CTLS,
            )
        } else {
            (
                msr::IA32_VMX_PINBASED_CTLS,
                msr::IA32_VMX_PROCBASED_CTLS,
                msr::IA32_VMX_EXIT_CTLS,
                msr::IA32_VMX_ENTRY_CTLS,
            )
        };
        let primary = ControlCap::from_msr(read(primary));
        // IA32_VMX_PROCBASED_CTLS2 and IA32_VMX_EPT_VPID_CAP exist only if
        // the "activate secondary controls" bit may be 1 (SDM vol. 3D §A.3.3, §A.10).
        let has_secondary = primary.allows(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS.bits());
        let secondary = if has_secondary {
            ControlCap::from_msr(read(msr::IA32_VMX_PROCBASED_CTLS2))
        } else {
            ControlCap::default()
        };
        Self {
            basic: basic.0,
            pin: ControlCap::from_msr(read(pin)),
            primary,
            secondary,
            exit: ControlCap::from_msr(read(exit)),
            entry: ControlCap::from_msr(read(entry)),
            misc: read(msr::IA32_VMX_MISC),
            cr0_fixed0: read(msr::IA32_VMX_CR0_FIXED0),
            cr0_fixed1: read(msr::IA32_VMX_CR0_FIXED1),
            cr4_fixed0: read(msr::IA32_VMX_CR4_FIXED0),
            cr4_fixed1: read(msr::IA32_VMX_CR4_FIXED1),
            ept_vpid: if has_secondary { read(msr::IA32_VMX_EPT_VPID_CAP) } else { 0 },
        }
    }

    pub fn basic(&self) -> VmxBasic {
        VmxBasic(self.basic)
    }

    /// The controls perfvisor's design relies on, by name, with whether this
    /// CPU can set them. The order is the report's.
    pub fn features(&self) -> [(&'static str, bool); 11] {
        let sec = |c: SecondaryControls| {
            self.primary.allows(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS.bits()) && self.secondary.allows(c.bits())
        };
        [
            ("use MSR bitmaps", self.primary.allows(PrimaryControls::USE_MSR_BITMAPS.bits())),
            ("EPT", sec(SecondaryControls::ENABLE_EPT)),
            ("unrestricted guest", sec(SecondaryControls::UNRESTRICTED_GUEST)),
            ("VPID", sec(SecondaryControls::ENABLE_VPID)),
            ("save EFER on exit", self.exit.allows(ExitControls::SAVE_EFER.bits())),
            (
                "load EFER on exit/entry",
                self.exit.allows(ExitControls::LOAD_EFER.bits()) && self.entry.allows(EntryControls::LOAD_EFER.bits()),
            ),
            ("save PAT on exit", self.exit.allows(ExitControls::SAVE_PAT.bits())),
            (
                "load PAT on exit/entry",
                self.exit.allows(ExitControls::LOAD_PAT.bits()) && self.entry.allows(EntryControls::LOAD_PAT.bits()),
            ),
            ("load IA32_PERF_GLOBAL_CTRL on entry", self.entry.allows(EntryControls::LOAD_PERF_GLOBAL_CTRL.bits())),
            ("load IA32_PERF_GLOBAL_CTRL on exit", self.exit.allows(ExitControls::LOAD_PERF_GLOBAL_CTRL.bits())),
            ("save IA32_PERF_GLOBAL_CTRL on exit", self.exit.allows(ExitControls::SAVE_PERF_GLOBAL_CTRL.bits())),
        ]
    }

    /// `value` with the CR0 bits VMX operation fixes applied (SDM vol. 3D §A.7):
    /// a bit set in FIXED0 must be 1, a bit clear in FIXED1 must be 0.
    pub fn fix_cr0(&self, value: u64) -> u64 {
        (value | self.cr0_fixed0) & self.cr0_fixed1
    }

    /// The same for CR4 (SDM vol. 3D §A.8).
    pub fn fix_cr4(&self, value: u64) -> u64 {
        (value | self.cr4_fixed0) & self.cr4_fixed1
    }

    /// Pin-based controls decoded (for reports).
    pub fn pin_allowed(&self) -> PinControls {
        PinControls::from_bits_truncate(self.pin.may_be_one)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_fields() {
        // Revision 0x12, 4096-byte regions, write-back, TRUE controls.
        let b = VmxBasic(0x0098_1000_0000_0012 | (1 << 55));
        assert_eq!(b.revision_id(), 0x12);
        assert_eq!(b.region_size(), 0x1000);
        assert_eq!(b.memory_type(), 6);
        assert!(b.true_controls());
    }

    #[test]
    fn resolve_required_optional_and_forced() {
        let cap = ControlCap::from_msr(0x0000_ffff_0000_0016);
        assert_eq!(cap.resolve("pin", 0x1, 0x8000_0100).unwrap(), 0x0117);
        let err = cap.resolve("VM-exit controls", 0x4_0000, 0).unwrap_err();
        assert_eq!(err.bits, 0x4_0000);
        assert_eq!(err.to_string(), "the CPU cannot set required VM-exit controls bits 0x00040000");
    }

    #[test]
    fn true_msrs_preferred_when_basic_bit55_set() {
        let caps = VmxCaps::read(|m| match m {
            msr::IA32_VMX_BASIC => Some(1 << 55),
            msr::IA32_VMX_PROCBASED_CTLS => Some(0xffff_ffff_0401_e172),
            msr::IA32_VMX_TRUE_PROCBASED_CTLS => Some(0xffff_ffff_0400_6172),
            _ => None,
        });
        assert_eq!(caps.primary.must_be_one, 0x0400_6172);
        // No secondary MSR answered: reads as "nothing allowed".
        assert!(!caps.features()[1].1);
    }

    #[test]
    fn cr_fixed_bits() {
        let caps = VmxCaps {
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xffff_ffff,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x3727ff,
            ..Default::default()
        };
        assert_eq!(caps.fix_cr0(0x11), 0x8000_0031);
        assert_eq!(caps.fix_cr4(0x20), 0x2020);
        assert_eq!(caps.fix_cr4(1 << 30), 0x2000);
    }
}
