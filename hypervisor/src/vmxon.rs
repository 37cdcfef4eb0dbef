//! Entering VMX root operation (SDM vol. 3C §24.7 "Enabling and Entering
//! VMX Operation", §24.8 "Restrictions on VMX Operation").

use crate::arch::msr::{rdmsr_checked, wrmsr_checked};
use crate::memory::{self, PhysFrame};
use core::arch::asm;
use core::fmt;
use vmx::msr::{FEATURE_CONTROL_LOCKED, FEATURE_CONTROL_VMXON_OUTSIDE_SMX, IA32_FEATURE_CONTROL};
use vmx::VmxCaps;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};

/// Why VMX root mode could not be entered, in words a user can act on.
pub enum VmxonError {
    FeatureControlUnreadable,
    DisabledByFirmware(u64),
    FeatureControlWriteFaulted,
    OutOfMemory,
    /// CR0/CR4 need a value the VMX fixed-bit MSRs forbid.
    ControlRegister {
        name: &'static str,
        value: u64,
        fixed: u64,
    },
    /// VMXON set RFLAGS.CF (VMfailInvalid) or ZF (VMfailValid).
    VmxonFailed {
        rflags: u64,
    },
}

impl fmt::Display for VmxonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FeatureControlUnreadable => f.write_str("IA32_FEATURE_CONTROL (MSR 0x3a) read raised #GP"),
            Self::DisabledByFirmware(v) => write!(
                f,
                "VMX is disabled by firmware: IA32_FEATURE_CONTROL = {v:#x} is locked without \
                 'VMXON outside SMX' (bit 2); enable VT-x in the firmware setup"
            ),
            Self::FeatureControlWriteFaulted => f.write_str("setting IA32_FEATURE_CONTROL raised #GP"),
            Self::OutOfMemory => f.write_str("no free frame for the VMXON region"),
            Self::ControlRegister { name, value, fixed } => {
                write!(f, "{name} would have to be {fixed:#x} for VMX operation but is {value:#x}")
            }
            Self::VmxonFailed { rflags } => write!(
                f,
                "VMXON failed (RFLAGS {rflags:#x}: {})",
                if rflags & 1 != 0 { "VMfailInvalid: bad VMXON region or revision" } else { "VMfailValid" }
            ),
        }
    }
}

/// Enables VMX and executes VMXON. Returns the VMXON region.
pub fn enter_root_mode(caps: &VmxCaps) -> Result<PhysFrame, VmxonError> {
    // IA32_FEATURE_CONTROL: OVMF and many BIOSes leave it unlocked; then we
    // set "VMXON outside SMX" and lock it (SDM vol. 3C §24.7).
    let fc = rdmsr_checked(IA32_FEATURE_CONTROL).map_err(|_| VmxonError::FeatureControlUnreadable)?;
    if fc & FEATURE_CONTROL_LOCKED == 0 {
        let value = fc | FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMXON_OUTSIDE_SMX;
        // SAFETY: setting the VMX enable and lock bits only permits VMXON;
        // it changes nothing the kernel relies on.
        unsafe { wrmsr_checked(IA32_FEATURE_CONTROL, value) }.map_err(|_| VmxonError::FeatureControlWriteFaulted)?;
        log::info!("vmx: IA32_FEATURE_CONTROL was unlocked: set to {value:#x} (VMXON outside SMX, locked)");
    } else if fc & FEATURE_CONTROL_VMXON_OUTSIDE_SMX == 0 {
        return Err(VmxonError::DisabledByFirmware(fc));
    }

    // CR0 and CR4 must respect the VMX fixed bits (SDM vol. 3D §A.7, §A.8)
    // with CR4.VMXE set. perfvisor adds only CR0.NE and CR4.VMXE; any other
    // bit the fixed MSRs would change is reported instead of forced.
    let cr0 = Cr0::read_raw() | Cr0Flags::NUMERIC_ERROR.bits();
    let want_cr0 = caps.fix_cr0(cr0);
    if want_cr0 != cr0 {
        return Err(VmxonError::ControlRegister { name: "CR0", value: cr0, fixed: want_cr0 });
    }
    let cr4 = Cr4::read_raw() | Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS.bits();
    let want_cr4 = caps.fix_cr4(cr4);
    if want_cr4 != cr4 {
        return Err(VmxonError::ControlRegister { name: "CR4", value: cr4, fixed: want_cr4 });
    }
    // SAFETY: only CR0.NE (native FPU errors) and CR4.VMXE are added; both
    // values satisfy the VMX fixed bits checked above, and neither changes
    // paging or protection.
    unsafe {
        Cr0::write_raw(want_cr0);
        Cr4::write_raw(want_cr4);
    }

    // The VMXON region: a zeroed 4 KiB frame starting with the VMCS
    // revision identifier (SDM vol. 3C §25.11.5).
    let region = memory::allocate_frame().ok_or(VmxonError::OutOfMemory)?;
    let revision = caps.basic().revision_id();
    // SAFETY: the frame was just allocated for this purpose and is mapped
    // writable through the physical-memory map.
    unsafe { memory::phys_map().ptr::<u32>(region.0).write_volatile(revision) };

    let rflags: u64;
    // SAFETY: VMX is enabled in IA32_FEATURE_CONTROL and CR4, CR0/CR4 obey the
    // fixed bits, and the operand is the physical address of a valid VMXON
    // region. Failure is reported in RFLAGS.CF/ZF, read right after.
    unsafe {
        asm!(
            "vmxon [{addr}]",
            "pushfq",
            "pop {flags}",
            addr = in(reg) &region.0,
            flags = lateout(reg) rflags,
        )
    };
    if rflags & (1 | 1 << 6) != 0 {
        return Err(VmxonError::VmxonFailed { rflags });
    }
    Ok(region)
}
