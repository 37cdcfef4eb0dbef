//! Interrupt handlers the PMI checks need beyond `faults`' PMI counter: an
//! NMI handler that behaves like a perf driver's (reads and resets
//! GLOBAL_STATUS, optionally reloads a counter, unmasks the LVTPC), and a
//! "higher-priority interrupt" whose handler runs a check while its vector
//! is in service.
//!
//! Handlers use raw RDMSR/WRMSR of registers that exist (no fault recovery:
//! an NMI may interrupt a recoverable access of the code it interrupts).

use core::arch::naked_asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// A vector in the same priority class as [`crate::faults::PMI_VECTOR`]
/// (0xf0-0xff: class 15): while it is in service, the PMI must wait.
pub const HIGH_VECTOR: u8 = 0xf8;

const IA32_PERF_GLOBAL_STATUS: u32 = 0x38e;
const IA32_PERF_GLOBAL_STATUS_RESET: u32 = 0x390;
const X2APIC_LVT_PMI: u32 = 0x834;
const X2APIC_EOI: u32 = 0x80b;
/// LVTPC in NMI delivery mode, unmasked.
pub const LVT_NMI: u64 = 4 << 8;

/// NMIs taken.
pub static NMIS: AtomicU64 = AtomicU64::new(0);
/// GLOBAL_STATUS as each of the first 8 NMIs found it.
pub static NMI_STATUS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
/// If non-zero: (MSR << 48 | value) the NMI handler writes to reload a
/// counter (value below 2^48), as an NMI watchdog does.
pub static NMI_RELOAD: AtomicU64 = AtomicU64::new(0);
/// The NMI handler unmasks the LVTPC (NMI mode) before returning.
pub static NMI_UNMASK: AtomicU64 = AtomicU64::new(1);
/// What [`HIGH_VECTOR`]'s handler runs while its vector is in service.
static HIGH_BODY: AtomicU64 = AtomicU64::new(0);

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called for MSRs the checks made sure exist; RDMSR only reads.
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: PMU and x2APIC registers the checks made sure exist.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

/// Saves the caller-saved registers, calls `$body` (an `extern "C" fn()`),
/// restores them and returns from the interrupt.
macro_rules! trampoline {
    ($name:ident, $body:path) => {
        #[unsafe(naked)]
        pub(crate) extern "C" fn $name() {
            naked_asm!(
                "push rax", "push rcx", "push rdx", "push rsi", "push rdi",
                "push r8", "push r9", "push r10", "push r11",
                "push rbp",
                "mov rbp, rsp",
                "and rsp, -16",
                "cld",
                "call {body}",
                "mov rsp, rbp",
                "pop rbp",
                "pop r11", "pop r10", "pop r9", "pop r8",
                "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
                "iretq",
                body = sym $body,
            )
        }
    };
}

trampoline!(nmi_entry, on_nmi);
trampoline!(high_entry, on_high);

extern "C" fn on_nmi() {
    let n = NMIS.fetch_add(1, Ordering::SeqCst) as usize;
    let status = rdmsr(IA32_PERF_GLOBAL_STATUS);
    if let Some(slot) = NMI_STATUS.get(n) {
        slot.store(status, Ordering::SeqCst);
    }
    if status != 0 {
        wrmsr(IA32_PERF_GLOBAL_STATUS_RESET, status);
    }
    let reload = NMI_RELOAD.load(Ordering::SeqCst);
    if reload != 0 {
        wrmsr((reload >> 48) as u32, reload & 0xffff_ffff_ffff);
    }
    if NMI_UNMASK.load(Ordering::SeqCst) != 0 {
        wrmsr(X2APIC_LVT_PMI, LVT_NMI);
    }
}

extern "C" fn on_high() {
    let body = HIGH_BODY.load(Ordering::SeqCst);
    if body != 0 {
        // SAFETY: only `run_in_service` stores here, always a `fn()`.
        let body: fn() = unsafe { core::mem::transmute(body as usize) };
        body();
    }
}

/// Sends [`HIGH_VECTOR`] to this CPU (x2APIC SELF IPI) with interrupts on,
/// so `body` runs in its handler with the vector in service. `body`
/// signals EOI itself ([`eoi`]) when it wants to.
pub fn run_in_service(body: fn()) {
    HIGH_BODY.store(body as usize as u64, Ordering::SeqCst);
    wrmsr(0x83f, u64::from(HIGH_VECTOR));
    // SAFETY: interrupts on for a moment: the self-IPI is taken here, every
    // other source is masked by the checks.
    unsafe { core::arch::asm!("sti", "nop", "nop", "cli", options(nomem, nostack)) };
    HIGH_BODY.store(0, Ordering::SeqCst);
}

/// End of interrupt: retires the highest-priority vector in service.
pub fn eoi() {
    wrmsr(X2APIC_EOI, 0);
}

/// The x2APIC in-service register as 8 x 32 bits (MSRs 0x810-0x817).
pub fn in_service() -> [u32; 8] {
    core::array::from_fn(|i| rdmsr(0x810 + i as u32) as u32)
}
