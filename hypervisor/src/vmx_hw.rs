//! The VMX instructions: VMCLEAR, VMPTRLD, VMREAD, VMWRITE, INVEPT,
//! INVVPID (SDM vol. 3C ch. 31). Failure (RFLAGS.CF = VMfailInvalid,
//! RFLAGS.ZF = VMfailValid with the error in the VM-instruction error
//! field) becomes a `VmcsError` naming the field and the error.

use core::arch::asm;
use vmx::vmcs::{instruction, VmcsAccess, VmcsError};

const RFLAGS_CF: u64 = 1 << 0;
const RFLAGS_ZF: u64 = 1 << 6;
const VM_INSTRUCTION_ERROR: u64 = 0x4400;

/// The current VMCS of this logical processor (after VMPTRLD).
pub struct ActiveVmcs;

fn instruction_error() -> u32 {
    let value: u64;
    // SAFETY: VMREAD of the VM-instruction error field; with no current VMCS
    // it fails harmlessly (the value is then meaningless and reported as 0).
    let rflags: u64 = unsafe {
        let flags;
        asm!("vmread {v}, {f}", "pushfq", "pop {fl}", v = out(reg) value, f = in(reg) VM_INSTRUCTION_ERROR, fl = out(reg) flags);
        flags
    };
    if rflags & (RFLAGS_CF | RFLAGS_ZF) != 0 {
        0
    } else {
        value as u32
    }
}

/// For instructions other than VMREAD/VMWRITE (`what`: an
/// `instruction::*` pseudo-encoding).
fn check(rflags: u64, what: u32) -> Result<(), VmcsError> {
    if rflags & RFLAGS_CF != 0 {
        Err(VmcsError { encoding: what, instruction_error: 0 })
    } else if rflags & RFLAGS_ZF != 0 {
        Err(VmcsError { encoding: what, instruction_error: instruction_error() })
    } else {
        Ok(())
    }
}

/// A failed VMREAD/VMWRITE (CF or ZF set), described off the hot path.
#[cold]
#[inline(never)]
fn access_failed(encoding: u32) -> VmcsError {
    // VMfailValid leaves the error number readable; VMfailInvalid (no current
    // VMCS) does not, and `instruction_error` then says 0.
    VmcsError { encoding, instruction_error: instruction_error() }
}

// VMREAD/VMWRITE run on every VM exit: `setbe` (CF or ZF: VMfail) keeps
// VMREAD's success test to two instructions; VMWRITE, which has no output,
// branches straight to its failure path (asm goto).
impl VmcsAccess for ActiveVmcs {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmcsError> {
        let (value, failed): (u64, u8);
        // SAFETY: VMREAD only reads the current VMCS; failure is reported in RFLAGS.
        unsafe {
            asm!(
                "vmread {v}, {f}",
                "setbe {failed}",
                v = out(reg) value,
                f = in(reg) u64::from(encoding),
                failed = out(reg_byte) failed,
                options(nostack),
            )
        };
        if failed != 0 {
            return Err(access_failed(encoding));
        }
        Ok(value)
    }

    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmcsError> {
        // SAFETY: VMWRITE changes only the current VMCS, which this hypervisor
        // owns; the values take effect at the next VM entry, whose checks
        // (SDM vol. 3C ch. 27) reject inconsistent state before running it.
        // VMfail (CF or ZF) jumps to the label: one branch, no flag copy.
        unsafe {
            asm!(
                "vmwrite {f}, {v}",
                "jbe {failed}",
                f = in(reg) u64::from(encoding),
                v = in(reg) value,
                failed = label { return Err(access_failed(encoding)) },
                options(nostack),
            )
        };
        Ok(())
    }
}

/// VMCLEAR: initializes the VMCS region at `phys` and makes it inactive.
///
/// # Safety
/// `phys` must be a 4-KiB VMCS region owned by the hypervisor, with its
/// revision identifier written.
pub unsafe fn vmclear(phys: u64) -> Result<(), VmcsError> {
    let rflags: u64;
    // SAFETY: the caller guarantees `phys` is a VMCS region we own.
    unsafe { asm!("vmclear [{p}]", "pushfq", "pop {fl}", p = in(reg) &phys, fl = out(reg) rflags) };
    check(rflags, instruction::VMCLEAR)
}

/// VMPTRLD: makes the VMCS at `phys` current.
///
/// # Safety
/// As for [`vmclear`].
pub unsafe fn vmptrld(phys: u64) -> Result<(), VmcsError> {
    let rflags: u64;
    // SAFETY: the caller guarantees `phys` is a VMCS region we own.
    unsafe { asm!("vmptrld [{p}]", "pushfq", "pop {fl}", p = in(reg) &phys, fl = out(reg) rflags) };
    check(rflags, instruction::VMPTRLD)
}

/// INVEPT single-context (type 1) for `eptp` (SDM vol. 3C §31.3, INVEPT).
pub fn invept_single_context(eptp: u64) -> Result<(), VmcsError> {
    let descriptor: [u64; 2] = [eptp, 0];
    let rflags: u64;
    // SAFETY: INVEPT only invalidates cached translations; the descriptor
    // lives on the stack for the duration of the instruction.
    unsafe {
        asm!("invept {t}, [{d}]", "pushfq", "pop {fl}", t = in(reg) 1u64, d = in(reg) &descriptor, fl = out(reg) rflags)
    };
    check(rflags, instruction::INVEPT)
}

/// INVVPID single-context (type 1) for `vpid`.
pub fn invvpid_single_context(vpid: u16) -> Result<(), VmcsError> {
    let descriptor: [u64; 2] = [u64::from(vpid), 0];
    let rflags: u64;
    // SAFETY: as for INVEPT.
    unsafe {
        asm!("invvpid {t}, [{d}]", "pushfq", "pop {fl}", t = in(reg) 1u64, d = in(reg) &descriptor, fl = out(reg) rflags)
    };
    check(rflags, instruction::INVVPID)
}
