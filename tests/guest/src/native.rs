//! What the kernels booted without perfvisor share (the native PMU
//! conformance kernel, the native Linux loader): COM1 without a lock, and
//! the verdict ports (REFERENCE.md §5).

use x86_64::instructions::port::Port;

mod com1 {
    use uart_16550::backend::PioBackend;
    use uart_16550::{BaudRate, Config, Uart16550Tty};

    /// COM1 at 115200 baud, or nothing if it is missing.
    pub struct Console(Option<Uart16550Tty<PioBackend>>);

    impl Console {
        pub fn com1() -> Self {
            let config = Config { baud_rate: BaudRate::Baud115200, ..Config::DEFAULT };
            // SAFETY: 0x3f8 is COM1; nothing else in these kernels uses it.
            Self(unsafe { Uart16550Tty::new_port(0x3f8, config) }.ok())
        }
    }

    impl core::fmt::Write for Console {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            match self.0.as_mut() {
                Some(tty) => tty.write_str(s),
                None => Ok(()),
            }
        }
    }
}

pub use com1::Console;

static mut CONSOLE: Option<Console> = None;

/// The console, opened on first use. These kernels are single-threaded and
/// never print from an interrupt handler, so no lock is needed.
pub fn console() -> &'static mut Console {
    // SAFETY: one CPU, and no interrupt handler prints: no two references
    // are live at once.
    unsafe { (*core::ptr::addr_of_mut!(CONSOLE)).get_or_insert_with(Console::com1) }
}

/// Ends the run after the verdict line was printed: pass = `out 0xf4`
/// then Bochs' magic breakpoint; fail = `out 0xf4` then Bochs' shutdown port.
pub fn exit(pass: bool) -> ! {
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit or unused, 0x8900 Bochs'
    // shutdown port or unused; `xchg bx, bx` changes nothing.
    unsafe {
        Port::<u32>::new(0xf4).write(if pass { 0x10 } else { 0x11 });
        if pass {
            core::arch::asm!("xchg bx, bx", options(nomem, nostack, preserves_flags));
        } else {
            let mut shutdown = Port::<u8>::new(0x8900);
            for b in b"Shutdown" {
                shutdown.write(*b);
            }
        }
    }
    loop {
        x86_64::instructions::hlt();
    }
}
