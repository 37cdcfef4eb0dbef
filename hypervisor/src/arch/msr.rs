//! MSR access. Plain `rdmsr`/`wrmsr` are `unsafe fn`s; the `*_checked`
//! forms turn the #GP a missing MSR raises into an `Err`, through an
//! exception fixup (see [`super::idt`]), so the hypervisor can probe MSRs
//! that CPUID says nothing reliable about (PERF_CAPABILITIES under Bochs,
//! PMU MSRs on a CPU that only claims a PMU).

use core::arch::global_asm;

/// An MSR access raised #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrFault {
    pub msr: u32,
}

global_asm!(
    ".pushsection .text.perfvisor_msr, \"ax\"",
    // u32 perfvisor_rdmsr_checked(u32 msr /* edi */, u64 *out /* rsi */): 0 = ok, 1 = #GP.
    ".global perfvisor_rdmsr_checked",
    "perfvisor_rdmsr_checked:",
    "    mov ecx, edi",
    ".global perfvisor_rdmsr_insn",
    "perfvisor_rdmsr_insn:",
    "    rdmsr",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov [rsi], rax",
    "    xor eax, eax",
    "    ret",
    ".global perfvisor_rdmsr_fixup",
    "perfvisor_rdmsr_fixup:",
    "    mov eax, 1",
    "    ret",
    // u32 perfvisor_wrmsr_checked(u32 msr /* edi */, u64 value /* rsi */): 0 = ok, 1 = #GP.
    ".global perfvisor_wrmsr_checked",
    "perfvisor_wrmsr_checked:",
    "    mov ecx, edi",
    "    mov eax, esi",
    "    mov rdx, rsi",
    "    shr rdx, 32",
    ".global perfvisor_wrmsr_insn",
    "perfvisor_wrmsr_insn:",
    "    wrmsr",
    "    xor eax, eax",
    "    ret",
    ".global perfvisor_wrmsr_fixup",
    "perfvisor_wrmsr_fixup:",
    "    mov eax, 1",
    "    ret",
    // u32 perfvisor_xsetbv_checked(u32 xcr /* edi */, u64 value /* rsi */): 0 = ok, 1 = #GP.
    ".global perfvisor_xsetbv_checked",
    "perfvisor_xsetbv_checked:",
    "    mov ecx, edi",
    "    mov eax, esi",
    "    mov rdx, rsi",
    "    shr rdx, 32",
    ".global perfvisor_xsetbv_insn",
    "perfvisor_xsetbv_insn:",
    "    xsetbv",
    "    xor eax, eax",
    "    ret",
    ".global perfvisor_xsetbv_fixup",
    "perfvisor_xsetbv_fixup:",
    "    mov eax, 1",
    "    ret",
    ".popsection",
);

unsafe extern "C" {
    fn perfvisor_rdmsr_checked(msr: u32, out: *mut u64) -> u32;
    fn perfvisor_wrmsr_checked(msr: u32, value: u64) -> u32;
    fn perfvisor_xsetbv_checked(xcr: u32, value: u64) -> u32;
    static perfvisor_rdmsr_insn: u8;
    static perfvisor_rdmsr_fixup: u8;
    static perfvisor_wrmsr_insn: u8;
    static perfvisor_wrmsr_fixup: u8;
    static perfvisor_xsetbv_insn: u8;
    static perfvisor_xsetbv_fixup: u8;
}

/// Where execution resumes when the instruction at `rip` raises #GP, if it
/// is one of the fault-tolerant MSR instructions above.
pub fn fixup_for(rip: u64) -> Option<u64> {
    let table = [
        (&raw const perfvisor_rdmsr_insn, &raw const perfvisor_rdmsr_fixup),
        (&raw const perfvisor_wrmsr_insn, &raw const perfvisor_wrmsr_fixup),
        (&raw const perfvisor_xsetbv_insn, &raw const perfvisor_xsetbv_fixup),
    ];
    table.iter().find(|(insn, _)| *insn as u64 == rip).map(|(_, fixup)| *fixup as u64)
}

/// Reads an MSR; a #GP (no such MSR) becomes `Err`.
pub fn rdmsr_checked(msr: u32) -> Result<u64, MsrFault> {
    let mut value = 0;
    // SAFETY: RDMSR has no side effects besides the read (or the #GP the
    // fixup turns into a return code); `value` is a valid out pointer.
    match unsafe { perfvisor_rdmsr_checked(msr, &mut value) } {
        0 => Ok(value),
        _ => Err(MsrFault { msr }),
    }
}

/// Writes an MSR; a #GP becomes `Err` and leaves the MSR unchanged.
///
/// # Safety
/// The write itself must be sound: MSRs change paging, interrupt delivery,
/// the PMU... The caller vouches for this MSR and value.
pub unsafe fn wrmsr_checked(msr: u32, value: u64) -> Result<(), MsrFault> {
    // SAFETY: the caller vouches for the write; a #GP returns 1 through the fixup.
    match unsafe { perfvisor_wrmsr_checked(msr, value) } {
        0 => Ok(()),
        _ => Err(MsrFault { msr }),
    }
}

/// Loads XCR `xcr` with `value` (XSETBV); a #GP becomes `Err`.
///
/// # Safety
/// CR4.OSXSAVE must be set (else XSETBV raises #UD, which is not caught),
/// and the caller vouches for the state components enabled: perfvisor's
/// host uses no extended state, so XCR0 is the guest's.
pub unsafe fn xsetbv_checked(xcr: u32, value: u64) -> Result<(), MsrFault> {
    // SAFETY: the caller vouches for the write; a #GP returns 1 through the fixup.
    match unsafe { perfvisor_xsetbv_checked(xcr, value) } {
        0 => Ok(()),
        _ => Err(MsrFault { msr: xcr }),
    }
}
