//! Running a register-only loop at CPL 3 and coming back, so PMU checks can
//! see the USR/OS filters switch at a ring transition.
//!
//! Down: IRETQ to a 64-bit ring-3 code segment. Up: `int 0x81` through a
//! DPL-3 interrupt gate, whose handler (on the TSS's RSP0 stack) restores
//! the caller's stack and returns. The page holding the ring-3 code gets
//! U/S = 1 at every paging level; nothing at ring 3 touches memory.

use core::arch::naked_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// The vector of the gate ring 3 uses to come back.
pub const RETURN_VECTOR: u8 = 0x81;

static mut TSS: TaskStateSegment = TaskStateSegment::new();
static mut RSP0_STACK: [u8; 4096] = [0; 4096];

/// The PMI's own stack (IST 1), alone in its page so a check can make
/// perfvisor trap writes to it: the PMI's delivery then exits mid-way.
#[repr(C, align(4096))]
pub struct PmiStack(pub [u8; 4096]);
pub static mut PMI_STACK: PmiStack = PmiStack([0; 4096]);
/// The IST slot (0-based) of [`PMI_STACK`].
pub const PMI_IST_INDEX: u16 = 0;
/// The caller's RSP while ring 3 runs.
static SAVED_RSP: AtomicU64 = AtomicU64::new(0);
static USER_CODE_SELECTOR: AtomicU64 = AtomicU64::new(0);
static USER_DATA_SELECTOR: AtomicU64 = AtomicU64::new(0);
static KERNEL_DATA_SELECTOR: AtomicU64 = AtomicU64::new(0);
/// Added to a physical address to reach it (0 where memory is identity
/// mapped, as in perfvisor's guest; the bootloader's offset natively).
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(u64::MAX);

/// Appends the user segments and the TSS to `gdt` (before it is loaded).
pub(crate) fn add_segments(gdt: &mut GlobalDescriptorTable, kernel_data: SegmentSelector) -> SegmentSelector {
    let user_data = gdt.append(Descriptor::user_data_segment());
    let user_code = gdt.append(Descriptor::user_code_segment());
    // SAFETY: called once from `faults::init` before the TSS is loaded;
    // the static lives forever.
    let tss = unsafe {
        let tss = &mut *core::ptr::addr_of_mut!(TSS);
        let top = core::ptr::addr_of!(RSP0_STACK) as u64 + 4096;
        tss.privilege_stack_table[0] = VirtAddr::new(top & !0xf);
        let pmi_top = core::ptr::addr_of!(PMI_STACK) as u64 + 4096;
        tss.interrupt_stack_table[usize::from(PMI_IST_INDEX)] = VirtAddr::new(pmi_top);
        gdt.append(Descriptor::tss_segment(tss))
    };
    USER_CODE_SELECTOR.store(u64::from(user_code.0), Ordering::SeqCst);
    USER_DATA_SELECTOR.store(u64::from(user_data.0), Ordering::SeqCst);
    KERNEL_DATA_SELECTOR.store(u64::from(kernel_data.0), Ordering::SeqCst);
    tss
}

/// Says where physical memory is mapped, for the page-table walk.
pub fn set_physical_memory_offset(offset: u64) {
    PHYS_OFFSET.store(offset, Ordering::SeqCst);
}

/// Marks the page of the ring-3 code user-accessible at every level.
/// `Err` says why ring 3 cannot be used here.
pub fn prepare() -> Result<(), &'static str> {
    prepare_page(ring3_loop as *const () as u64)?;
    prepare_page(ring3_vmcall as *const () as u64)
}

fn prepare_page(code: u64) -> Result<(), &'static str> {
    let offset = PHYS_OFFSET.load(Ordering::SeqCst);
    if offset == u64::MAX {
        return Err("the kernel did not say where physical memory is mapped");
    }
    let cr4 = x86_64::registers::control::Cr4::read_raw();
    if cr4 & (1 << 20) != 0 {
        return Err("SMEP is on (the kernel's code shares the page with the ring-3 loop)");
    }
    let (frame, _) = x86_64::registers::control::Cr3::read_raw();
    let mut table = frame.start_address().as_u64();
    const PRESENT: u64 = 1;
    const USER: u64 = 1 << 2;
    const HUGE: u64 = 1 << 7;
    for level in (0..4).rev() {
        let index = (code >> (12 + 9 * level)) & 0x1ff;
        let entry = (offset + table + index * 8) as *mut u64;
        // SAFETY: `entry` is a page-table entry of the active hierarchy,
        // reached through the physical-memory mapping; setting U/S on the
        // path to this kernel's own code page changes no translation.
        let value = unsafe { entry.read_volatile() };
        if value & PRESENT == 0 {
            return Err("the ring-3 code page is not mapped");
        }
        // SAFETY: as above.
        unsafe { entry.write_volatile(value | USER) };
        if level == 0 || (level < 3 && value & HUGE != 0) {
            break;
        }
        table = value & 0x000f_ffff_ffff_f000;
    }
    x86_64::instructions::tlb::flush_all();
    Ok(())
}

/// Runs `dec rcx; jnz` `n` times at CPL 3 (2n instructions, n branches),
/// then `int 0x81` back to ring 0. Interrupts stay as they are (off).
pub fn run_loop(n: u64) {
    // SAFETY: `prepare` made the loop's page user-accessible and
    // `faults::init` installed the return gate and the TSS; the naked
    // function saves and restores every callee-saved register.
    unsafe { enter_ring3(n) }
}

/// The body of a naked function that saves the callee-saved registers and
/// the stack (for [`return_from_ring3`]), runs `$setup`, and IRETQs to
/// `$code` at CPL 3 on the same stack, interrupts as they are.
macro_rules! iretq_to_ring3 {
    ($code:path, [$($setup:literal),*]) => {
        naked_asm!(
            "push rbx",
            "push rbp",
            "push r12",
            "push r13",
            "push r14",
            "push r15",
            "mov [rip + {saved}], rsp",
            $($setup,)*
            "mov rax, [rip + {user_data}]",
            "push rax",
            "push qword ptr [rip + {saved}]",
            "pushfq",
            "mov rax, [rip + {user_code}]",
            "push rax",
            "lea rax, [rip + {code}]",
            "push rax",
            "iretq",
            saved = sym SAVED_RSP,
            user_data = sym USER_DATA_SELECTOR,
            user_code = sym USER_CODE_SELECTOR,
            code = sym $code,
        )
    };
}

#[unsafe(naked)]
unsafe extern "C" fn enter_ring3(n: u64) {
    iretq_to_ring3!(ring3_loop, ["mov rcx, rdi"])
}

/// The ring-3 code: the loop, then the gate back.
#[unsafe(naked)]
extern "C" fn ring3_loop() {
    naked_asm!("2:", "dec rcx", "jnz 2b", "int {vector}", vector = const RETURN_VECTOR)
}

/// The DPL-3 gate's handler: drop the interrupt frame (RSP0 stack), take
/// back the caller's stack and segments, return from `enter_ring3`.
#[unsafe(naked)]
pub(crate) extern "C" fn return_from_ring3() {
    naked_asm!(
        // What the ring-3 VMCALL stub left (meaningless after the loop).
        "mov [rip + {result}], r15",
        "mov rsp, [rip + {saved}]",
        "mov rax, [rip + {kernel_data}]",
        "mov ss, ax",
        "mov ds, ax",
        "mov es, ax",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbp",
        "pop rbx",
        "ret",
        saved = sym SAVED_RSP,
        kernel_data = sym KERNEL_DATA_SELECTOR,
        result = sym RING3_RESULT,
    )
}

/// VMCALL at CPL 3 with RAX = `call`, RDI = `arg` (and RSI = `len`):
/// `Err(vector)` if it faulted (perfvisor refuses hypercalls from CPL 3
/// with #UD), else the hypercall's RAX.
pub fn vmcall_at_ring3(call: u64, arg: u64, len: u64) -> Result<u64, u8> {
    let resume = &raw const ring3_vmcall_done as u64;
    crate::faults::attempt(resume, || {
        // SAFETY: as for `run_loop`; the ring-3 stub runs VMCALL and comes
        // back through the return gate, also after a fault (the recovery
        // resumes it at `ring3_vmcall_done`, still at CPL 3).
        unsafe { enter_ring3_vmcall(call, arg, len) };
        // SAFETY: reads the value the stub left.
        unsafe { core::ptr::addr_of!(RING3_RESULT).read_volatile() }
    })
}

static mut RING3_RESULT: u64 = 0;

#[unsafe(naked)]
unsafe extern "C" fn enter_ring3_vmcall(call: u64, arg: u64, len: u64) {
    iretq_to_ring3!(ring3_vmcall, ["mov r12, rdi", "mov r13, rsi", "mov r14, rdx"])
}

/// The ring-3 code: VMCALL (RAX = r12, RDI = r13, RSI = r14), then the
/// gate back; RAX is kept in r15 for the kernel side to store. A fault
/// resumes at `ring3_vmcall_done` (r15 then holds the call number).
#[unsafe(naked)]
extern "C" fn ring3_vmcall() {
    naked_asm!(
        "mov rax, r12",
        "mov rdi, r13",
        "mov rsi, r14",
        "mov r15, r12",
        "vmcall",
        "mov r15, rax",
        ".global ring3_vmcall_done",
        "ring3_vmcall_done:",
        "int {vector}",
        vector = const RETURN_VECTOR,
    )
}

unsafe extern "C" {
    static ring3_vmcall_done: u8;
}
