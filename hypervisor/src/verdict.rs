//! How a run ends: a verdict both emulators turn into an exit code
//! (REFERENCE.md §5), and a halt on real hardware.
//!
//! - pass: `out 0xf4, 0x10` (QEMU's isa-debug-exit exits (0x10 << 1) | 1 = 33),
//!   then `xchg bx, bx` (Bochs' magic breakpoint stops in the debugger, whose
//!   command file says `quit`: exit 0).
//! - fail: `out 0xf4, 0x11` (QEMU exits 35), then "Shutdown" to port 0x8900
//!   (Bochs' shutdown port; with `panic: action=fatal` it exits 1).
//!
//! On hardware both ports are unused; the CPU then halts with the verdict
//! as the last console line.
//!
//! With a nonce from the boot config (`config.rs`) the line carries it:
//! `perfvisor: verdict PASS [nonce]`, `perfvisor: verdict FAIL [nonce] (reason)`.
//! The guest never sees the nonce (it lives in perfvisor's memory, which
//! the EPT does not map), so it cannot forge the line; the runner accepts
//! a verdict only with its run's nonce and the matching exit code.

use x86_64::instructions::port::Port;

static NONCE: spin::Once<crate::config::Nonce> = spin::Once::new();

/// Sets the run's nonce (once, at boot).
pub fn set_nonce(nonce: crate::config::Nonce) {
    NONCE.call_once(|| nonce);
}

/// ` [nonce]` when there is one.
struct NonceTag;

impl core::fmt::Display for NonceTag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match NONCE.get().and_then(|n| core::str::from_utf8(n).ok()) {
            Some(n) => write!(f, " [{n}]"),
            None => Ok(()),
        }
    }
}

const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;
const PASS_CODE: u32 = 0x10;
const FAIL_CODE: u32 = 0x11;
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

pub fn pass() -> ! {
    crate::serial::write_fmt_forced(format_args!("perfvisor: verdict PASS{NonceTag}\n"));
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit when present and unused otherwise;
    // `xchg bx, bx` is an ordinary instruction that only Bochs treats specially.
    unsafe {
        Port::<u32>::new(ISA_DEBUG_EXIT_PORT).write(PASS_CODE);
        // xchg of a register with itself changes nothing.
        core::arch::asm!("xchg bx, bx", options(nomem, nostack, preserves_flags));
    }
    halt_forever()
}

pub fn fail(reason: impl core::fmt::Display) -> ! {
    crate::serial::write_fmt_forced(format_args!("perfvisor: verdict FAIL{NonceTag} ({reason})\n"));
    // SAFETY: as in `pass`; port 0x8900 is Bochs' shutdown port and unused elsewhere.
    unsafe {
        Port::<u32>::new(ISA_DEBUG_EXIT_PORT).write(FAIL_CODE);
        let mut shutdown = Port::<u8>::new(BOCHS_SHUTDOWN_PORT);
        for b in b"Shutdown" {
            shutdown.write(*b);
        }
    }
    halt_forever()
}

fn halt_forever() -> ! {
    x86_64::instructions::interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}
