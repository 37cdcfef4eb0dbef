//! The IDT and the exception path.
//!
//! Each vector has a small stub (pushes a dummy error code where the CPU does
//! not push one, then the vector number) that jumps to a common routine
//! saving every general register, so the report can show them all — the
//! `x86-interrupt` ABI can't, and it needs nightly. Stubs are 32 bytes apart,
//! so one symbol locates all of them.
//!
//! A #GP whose RIP is a registered fault-tolerant instruction (see
//! [`super::msr`]) resumes at that instruction's fixup instead of ending the
//! machine: that is how perfvisor probes MSRs that may not exist.

use core::arch::global_asm;
use spin::Once;
use x86_64::registers::control::{Cr0, Cr2, Cr3, Cr4};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::VirtAddr;

use super::gdt::CRITICAL_IST_INDEX;

/// The saved state, in the order the common routine pushes it (lowest address first).
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const STUB_STRIDE: u64 = 32;

global_asm!(
    ".macro PV_EXCEPTION_STUB vec, has_error_code",
    "    .balign 32",
    "    .if \\has_error_code == 0",
    "    push 0",
    "    .endif",
    "    push \\vec",
    "    jmp {common}",
    ".endm",
    ".pushsection .text.perfvisor_exceptions, \"ax\"",
    ".balign 32",
    ".global perfvisor_exception_stubs",
    "perfvisor_exception_stubs:",
    "PV_EXCEPTION_STUB 0, 0",
    "PV_EXCEPTION_STUB 1, 0",
    "PV_EXCEPTION_STUB 2, 0",
    "PV_EXCEPTION_STUB 3, 0",
    "PV_EXCEPTION_STUB 4, 0",
    "PV_EXCEPTION_STUB 5, 0",
    "PV_EXCEPTION_STUB 6, 0",
    "PV_EXCEPTION_STUB 7, 0",
    "PV_EXCEPTION_STUB 8, 1",
    "PV_EXCEPTION_STUB 9, 0",
    "PV_EXCEPTION_STUB 10, 1",
    "PV_EXCEPTION_STUB 11, 1",
    "PV_EXCEPTION_STUB 12, 1",
    "PV_EXCEPTION_STUB 13, 1",
    "PV_EXCEPTION_STUB 14, 1",
    "PV_EXCEPTION_STUB 15, 0",
    "PV_EXCEPTION_STUB 16, 0",
    "PV_EXCEPTION_STUB 17, 1",
    "PV_EXCEPTION_STUB 18, 0",
    "PV_EXCEPTION_STUB 19, 0",
    "PV_EXCEPTION_STUB 20, 0",
    "PV_EXCEPTION_STUB 21, 1",
    "PV_EXCEPTION_STUB 22, 0",
    "PV_EXCEPTION_STUB 23, 0",
    "PV_EXCEPTION_STUB 24, 0",
    "PV_EXCEPTION_STUB 25, 0",
    "PV_EXCEPTION_STUB 26, 0",
    "PV_EXCEPTION_STUB 27, 0",
    "PV_EXCEPTION_STUB 28, 0",
    "PV_EXCEPTION_STUB 29, 1",
    "PV_EXCEPTION_STUB 30, 1",
    "PV_EXCEPTION_STUB 31, 0",
    ".popsection",
    common = sym exception_common,
);

/// Saves the general registers, calls [`dispatch`] with a pointer to the
/// frame, restores them and returns from the exception.
#[unsafe(naked)]
extern "C" fn exception_common() {
    core::arch::naked_asm!(
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14", "push r15",
        "mov rdi, rsp",
        "cld",
        "call {dispatch}",
        "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9", "pop r8",
        "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx", "pop rax",
        // Drop the vector and the error code.
        "add rsp, 16",
        "iretq",
        dispatch = sym dispatch,
    )
}

unsafe extern "C" {
    /// The first stub; vector v's stub is at `+ v * STUB_STRIDE`.
    static perfvisor_exception_stubs: u8;
}

static IDT: Once<InterruptDescriptorTable> = Once::new();

/// Loads an IDT whose 32 exception vectors all go through [`dispatch`].
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        let base = &raw const perfvisor_exception_stubs as u64;
        let stub = |vector: u64| VirtAddr::new(base + vector * STUB_STRIDE);
        // Every architecturally defined exception vector (SDM vol. 3A
        // Table 7-1); the reserved ones stay not-present.
        macro_rules! route {
            ($($field:ident = $vector:literal),* $(,)?) => {$(
                // SAFETY: the address is this vector's stub, which accepts
                // the frame the CPU delivers for it (with or without an
                // error code) and returns with IRETQ.
                unsafe { idt.$field.set_handler_addr(stub($vector)) };
            )*};
        }
        route!(
            divide_error = 0,
            debug = 1,
            breakpoint = 3,
            overflow = 4,
            bound_range_exceeded = 5,
            invalid_opcode = 6,
            device_not_available = 7,
            invalid_tss = 10,
            segment_not_present = 11,
            stack_segment_fault = 12,
            general_protection_fault = 13,
            page_fault = 14,
            x87_floating_point = 16,
            alignment_check = 17,
            simd_floating_point = 19,
            virtualization = 20,
            cp_protection_exception = 21,
            hv_injection_exception = 28,
            vmm_communication_exception = 29,
            security_exception = 30,
        );
        // NMI, #DF and #MC may arrive on a broken stack: give them the IST stack.
        // SAFETY: as above; CRITICAL_IST_INDEX is a valid IST slot set up by gdt::init.
        unsafe {
            idt.non_maskable_interrupt.set_handler_addr(stub(2)).set_stack_index(CRITICAL_IST_INDEX);
            idt.double_fault.set_handler_addr(stub(8)).set_stack_index(CRITICAL_IST_INDEX);
            idt.machine_check.set_handler_addr(stub(18)).set_stack_index(CRITICAL_IST_INDEX);
        }
        idt
    });
    idt.load();
}

/// Architectural names of the exception vectors (SDM vol. 3A Table 7-1).
pub fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range exceeded",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack-segment fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 floating-point error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD floating-point",
        20 => "#VE virtualization exception",
        21 => "#CP control protection",
        _ => "reserved vector",
    }
}

extern "C" fn dispatch(frame: &mut ExceptionFrame) {
    // Every NMI is the guest's (the host uses none): note it for the next VM entry.
    if frame.vector == 2 {
        crate::events::note_host_nmi();
        return;
    }
    if frame.vector == 13 {
        if let Some(fixup) = super::msr::fixup_for(frame.rip) {
            frame.rip = fixup;
            return;
        }
    }
    report(frame);
    crate::verdict::fail("unhandled CPU exception");
}

/// Prints everything known about the exception on the serial console.
fn report(f: &ExceptionFrame) {
    use crate::serial::write_fmt_forced as out;
    out(format_args!(
        "\nEXCEPTION vector {} ({}) error code {:#x}\n",
        f.vector,
        exception_name(f.vector),
        f.error_code
    ));
    out(format_args!(
        "  RIP {:#018x}  CS {:#06x}  RFLAGS {:#010x}  RSP {:#018x}  SS {:#06x}\n",
        f.rip, f.cs, f.rflags, f.rsp, f.ss
    ));
    out(format_args!(
        "  CR0 {:#x}  CR2 {:#018x}  CR3 {:#018x}  CR4 {:#x}\n",
        Cr0::read_raw(),
        Cr2::read_raw(),
        Cr3::read_raw().0.start_address().as_u64(),
        Cr4::read_raw()
    ));
    out(format_args!("  RAX {:#018x}  RBX {:#018x}  RCX {:#018x}  RDX {:#018x}\n", f.rax, f.rbx, f.rcx, f.rdx));
    out(format_args!("  RSI {:#018x}  RDI {:#018x}  RBP {:#018x}  R8  {:#018x}\n", f.rsi, f.rdi, f.rbp, f.r8));
    out(format_args!("  R9  {:#018x}  R10 {:#018x}  R11 {:#018x}  R12 {:#018x}\n", f.r9, f.r10, f.r11, f.r12));
    out(format_args!("  R13 {:#018x}  R14 {:#018x}  R15 {:#018x}\n", f.r13, f.r14, f.r15));
}

/// Unblocks NMIs: a VM exit caused by an NMI leaves NMIs blocked in root
/// mode until the next IRET (SDM vol. 3C §28.5.5 "Updating Non-Register
/// State"), and perfvisor takes no interrupt that would execute one. An
/// IRETQ to the next instruction does it, changing nothing else.
pub fn unblock_nmis() {
    // SAFETY: builds an interrupt-return frame of the current SS, RSP,
    // RFLAGS and CS with the address of label 2, so IRETQ continues right
    // after itself on the same stack; its only other effect is that NMIs
    // are no longer blocked.
    unsafe {
        core::arch::asm!(
            "mov {sel:e}, ss",
            "mov {tmp}, rsp",
            "push {sel}",
            "push {tmp}",
            "pushfq",
            "mov {sel:e}, cs",
            "push {sel}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "iretq",
            "2:",
            sel = out(reg) _,
            tmp = out(reg) _,
        )
    };
}
