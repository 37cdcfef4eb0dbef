//! The PMU conformance checks booted natively — on bare metal, in QEMU or
//! in Bochs, without perfvisor — so `cargo xtask pmu-report` can compare
//! what the hardware does with what perfvisor's guest sees. Output goes to
//! COM1 (115200 baud) in the guest suite's `TEST name ... ok` form; the run
//! ends with the same verdict ports as perfvisor (REFERENCE.md §5).
#![cfg_attr(target_os = "none", no_std)]
#![no_main]

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::{entry_point, BootInfo};
use core::fmt::Write;
use perfvisor_guest::faults;
use perfvisor_guest::pmu_checks::{self, Check};
use spin_free::Console;
use x86_64::instructions::port::Port;

/// Physical memory mapped (anywhere): the ring-3 check walks the page tables.
const BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config
};

entry_point!(main, config = &BOOTLOADER_CONFIG);

/// The serial console without a lock: this kernel is single-threaded and
/// never interrupted (interrupts stay off).
mod spin_free {
    use uart_16550::backend::PioBackend;
    use uart_16550::{BaudRate, Config, Uart16550Tty};

    pub struct Console(Option<Uart16550Tty<PioBackend>>);

    impl Console {
        pub fn com1() -> Self {
            let config = Config { baud_rate: BaudRate::Baud115200, ..Config::DEFAULT };
            // SAFETY: 0x3f8 is COM1; nothing else in this kernel uses it.
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

static mut CONSOLE: Option<Console> = None;

fn console() -> &'static mut Console {
    // SAFETY: set once at the start of `main`, before anything prints; one CPU, no interrupts.
    unsafe { (*core::ptr::addr_of_mut!(CONSOLE)).get_or_insert_with(Console::com1) }
}

/// Pass: `out 0xf4` then Bochs' magic breakpoint; fail: `out 0xf4` then Bochs' shutdown port.
fn verdict(pass: bool) -> ! {
    // The same verdict line as perfvisor's, so the runner reads both alike.
    let _ = writeln!(console(), "perfvisor: verdict {}", if pass { "PASS" } else { "FAIL (pmu checks failed)" });
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit or unused, 0x8900 Bochs' shutdown
    // port or unused; `xchg bx, bx` changes nothing.
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

fn main(info: &'static mut BootInfo) -> ! {
    let _ = writeln!(console(), "\nperfvisor-pmu-native: PMU conformance checks on the bare CPU");
    faults::init();
    if let Some(offset) = info.physical_memory_offset.into_option() {
        perfvisor_guest::ring3::set_physical_memory_offset(offset);
    }
    faults::on_unexpected_fault(|vector, rip, error_code| {
        let _ = writeln!(console(), "unexpected exception {vector} at RIP {rip:#x}, error code {error_code:#x}");
        verdict(false)
    });
    let _ = writeln!(console(), "pmu: {}", pmu_checks::Pmu::detect().arch);
    let (mut run, mut failed) = (0, 0);
    pmu_checks::run(|name, check| {
        run += 1;
        let out = console();
        let _ = match check {
            Check::Pass => writeln!(out, "TEST {name} ... ok"),
            Check::Skip(why) => writeln!(out, "TEST {name} ... skipped ({why})"),
            Check::Fail(why) => {
                failed += 1;
                writeln!(out, "TEST {name} ... FAILED ({})", why.as_str())
            }
        };
    });
    let _ = writeln!(console(), "TESTS DONE {run} run, {failed} failed");
    verdict(failed == 0)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(console(), "PANIC: {}", info.message());
    verdict(false)
}
