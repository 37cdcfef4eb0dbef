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
use perfvisor_guest::native::{self, console};
use perfvisor_guest::pmu_checks::{self, Check};

/// Physical memory mapped (anywhere): the ring-3 check walks the page tables.
const BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config
};

entry_point!(main, config = &BOOTLOADER_CONFIG);

/// The verdict line (the same as perfvisor's, so the runner reads both
/// alike), then the verdict ports.
fn verdict(pass: bool) -> ! {
    let _ = writeln!(console(), "perfvisor: verdict {}", if pass { "PASS" } else { "FAIL (pmu checks failed)" });
    native::exit(pass)
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
