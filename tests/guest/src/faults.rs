//! The guest's GDT and IDT, and recoverable faults: an instruction run
//! through [`rdmsr`]/[`wrmsr`] that faults resumes after itself with the
//! vector recorded, which is how tests check that perfvisor injects #GP.

use core::arch::{asm, naked_asm};
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::VirtAddr;

/// Where a recoverable instruction continues after a fault (0: not armed).
pub static RECOVER_RIP: AtomicU64 = AtomicU64::new(0);
/// The vector of the last recovered fault (u64::MAX: none).
static LAST_FAULT: AtomicU64 = AtomicU64::new(u64::MAX);

static mut GDT: GlobalDescriptorTable = GlobalDescriptorTable::new();
static mut IDT: InterruptDescriptorTable = InterruptDescriptorTable::new();

/// Frame after the stub: [rax][vector][error code][rip][cs][rflags][rsp][ss].
#[unsafe(naked)]
extern "C" fn fault_common() {
    naked_asm!(
        "push rax",
        "mov rax, [rip + {recover}]",
        "test rax, rax",
        "jz 2f",
        "mov [rsp + 24], rax",
        "mov rax, [rsp + 8]",
        "mov [rip + {last}], rax",
        "mov qword ptr [rip + {recover}], 0",
        "pop rax",
        "add rsp, 16",
        "iretq",
        "2:",
        "mov rdi, [rsp + 8]",
        "mov rsi, [rsp + 24]",
        "mov rdx, [rsp + 16]",
        "call {fatal}",
        recover = sym RECOVER_RIP,
        last = sym LAST_FAULT,
        fatal = sym unexpected_fault,
    )
}

macro_rules! fault_stub {
    ($name:ident, $vector:literal, pushes_error_code = $err:literal) => {
        #[unsafe(naked)]
        extern "C" fn $name() {
            naked_asm!(
                ".if {err} == 0",
                "push 0",
                ".endif",
                "push {vector}",
                "jmp {common}",
                err = const $err,
                vector = const $vector,
                common = sym fault_common,
            )
        }
    };
}

fault_stub!(divide_error, 0, pushes_error_code = 0);
fault_stub!(invalid_opcode, 6, pushes_error_code = 0);
fault_stub!(double_fault, 8, pushes_error_code = 1);
fault_stub!(general_protection, 13, pushes_error_code = 1);
fault_stub!(page_fault, 14, pushes_error_code = 1);

/// What an unrecoverable fault does (the guest reports it through a
/// hypercall, the native kernel on the serial console).
static UNEXPECTED_FAULT: AtomicU64 = AtomicU64::new(0);

/// Sets the handler for faults nobody armed a recovery for.
pub fn on_unexpected_fault(handler: fn(vector: u64, rip: u64, error_code: u64) -> !) {
    UNEXPECTED_FAULT.store(handler as usize as u64, Ordering::SeqCst);
}

extern "C" fn unexpected_fault(vector: u64, rip: u64, error_code: u64) -> ! {
    let handler = UNEXPECTED_FAULT.load(Ordering::SeqCst);
    if handler != 0 {
        // SAFETY: only `on_unexpected_fault` stores here, always a `fn` of this type.
        let handler: fn(u64, u64, u64) -> ! = unsafe { core::mem::transmute(handler as usize) };
        handler(vector, rip, error_code);
    }
    loop {
        x86_64::instructions::hlt();
    }
}

/// Loads the guest's GDT (code 0x08, data 0x10, matching the selectors
/// perfvisor started it with) and an IDT for the faults the tests provoke.
pub fn init() {
    // SAFETY: runs once at start, before anything else uses these statics;
    // they live forever, as `load` requires.
    unsafe {
        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = crate::ring3::add_segments(gdt, data);
        gdt.load_unsafe();
        x86_64::instructions::tables::load_tss(tss);
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        let addr = |f: extern "C" fn()| VirtAddr::new(f as usize as u64);
        idt.divide_error.set_handler_addr(addr(divide_error));
        idt.invalid_opcode.set_handler_addr(addr(invalid_opcode));
        idt.double_fault.set_handler_addr(addr(double_fault));
        idt.general_protection_fault.set_handler_addr(addr(general_protection));
        idt.page_fault.set_handler_addr(addr(page_fault));
        idt[PMI_VECTOR].set_handler_addr(addr(pmi_interrupt)).set_stack_index(crate::ring3::PMI_IST_INDEX);
        idt.non_maskable_interrupt.set_handler_addr(addr(crate::interrupts::nmi_entry));
        idt[crate::interrupts::HIGH_VECTOR].set_handler_addr(addr(crate::interrupts::high_entry));
        idt[crate::ring3::RETURN_VECTOR]
            .set_handler_addr(addr(crate::ring3::return_from_ring3))
            .set_privilege_level(x86_64::PrivilegeLevel::Ring3);
        idt.load_unsafe();
    }
}

/// The vector the PMU checks program into the LVTPC.
pub const PMI_VECTOR: u8 = 0xf0;
/// PMIs taken on [`PMI_VECTOR`].
static PMIS: AtomicU64 = AtomicU64::new(0);

/// Counts the interrupt and signals end-of-interrupt through the x2APIC
/// EOI register (MSR 0x80b).
#[unsafe(naked)]
extern "C" fn pmi_interrupt() {
    naked_asm!(
        "push rax",
        "push rcx",
        "push rdx",
        "lock inc qword ptr [rip + {count}]",
        "mov ecx, 0x80b",
        "xor eax, eax",
        "xor edx, edx",
        "wrmsr",
        "pop rdx",
        "pop rcx",
        "pop rax",
        "iretq",
        count = sym PMIS,
    )
}

/// How many PMIs arrived on [`PMI_VECTOR`].
pub fn pmis_taken() -> u64 {
    PMIS.load(Ordering::SeqCst)
}

/// The vector of the fault recovered since the last call, if any.
pub fn take_fault() -> Option<u8> {
    let v = LAST_FAULT.swap(u64::MAX, Ordering::SeqCst);
    (v != u64::MAX).then_some(v as u8)
}

/// RDMSR; `Err(vector)` if it faulted.
pub fn rdmsr(msr: u32) -> Result<u64, u8> {
    let (lo, hi): (u32, u32);
    // SAFETY: a faulting RDMSR resumes at label 2 through the recovery path;
    // RDMSR itself only reads.
    unsafe {
        asm!(
            "lea {t}, [rip + 2f]",
            "mov [rip + {recover}], {t}",
            "rdmsr",
            "2:",
            "mov qword ptr [rip + {recover}], 0",
            t = out(reg) _,
            recover = sym RECOVER_RIP,
            in("ecx") msr,
            inlateout("eax") 0u32 => lo,
            inlateout("edx") 0u32 => hi,
        )
    };
    match take_fault() {
        Some(v) => Err(v),
        None => Ok(u64::from(hi) << 32 | u64::from(lo)),
    }
}

/// WRMSR; `Err(vector)` if it faulted.
///
/// # Safety
/// The write must not break the guest (paging, segments...).
pub unsafe fn wrmsr(msr: u32, value: u64) -> Result<(), u8> {
    // SAFETY: the caller vouches for the write; a fault resumes at label 2.
    unsafe {
        asm!(
            "lea {t}, [rip + 2f]",
            "mov [rip + {recover}], {t}",
            "wrmsr",
            "2:",
            "mov qword ptr [rip + {recover}], 0",
            t = out(reg) _,
            recover = sym RECOVER_RIP,
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
        )
    };
    take_fault().map_or(Ok(()), Err)
}

/// Runs `f`, which may fault at any instruction before `resume` (an
/// address inside `f` from which it can return normally, e.g. its `ret`):
/// a fault continues there. `Err(vector)` if it faulted.
pub fn attempt(resume: u64, f: impl FnOnce() -> u64) -> Result<u64, u8> {
    take_fault();
    RECOVER_RIP.store(resume, Ordering::SeqCst);
    let value = f();
    RECOVER_RIP.store(0, Ordering::SeqCst);
    take_fault().map_or(Ok(value), Err)
}
