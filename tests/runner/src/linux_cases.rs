//! The end-to-end cases that boot Linux: the stock kernel judging the
//! counting PMU natively (and, later, as perfvisor's guest).
//!
//! `bochs-linux-native-*` boot tests/linux-native, which loads the stock
//! Debian kernel and the LINUXTEST initramfs (xtask/src/linux.rs): Linux's
//! own perf driver must accept the PMU (`Performance Events: ... Intel PMU
//! driver.`, the version and counters CPUID.0AH gives), nothing may oops,
//! and `instructions:u`/`branches:u` of a known loop must be exact. Each
//! `LINUXTEST` line is a named result (`guest_suite`).

use crate::cases::{Case, Expect, GuestImage, Needs};
use crate::emulator::{BochsPmu, Emulator, Firmware};
use std::time::Duration;

/// The MSRs Bochs lacks that Linux reads unchecked (IA32_MISC_ENABLE, the
/// machine-check MSRs); relative to the workspace.
pub const LINUX_MSRS: &str = "tests/bochs/linux.msrs";

/// A native Linux boot takes ~45 s here (the counting Bochs, tigerlake):
/// ~33 s for the BIOS bootloader to read the 15 MB bundle, ~2 s to
/// decompress it, ~10 s for Linux to reach /init, under 1 s of checks. The
/// limit leaves room for a busy machine (two jobs on two cores).
const LINUX_LIMIT: Duration = Duration::from_secs(240);

fn native(name: &'static str, model: &str, lines: &'static [&'static str]) -> Case {
    Case {
        name,
        emulator: Emulator::Bochs {
            model: model.into(),
            pmu: BochsPmu::Counting,
            msrs: Some(LINUX_MSRS.into()),
            cpus: 1,
        },
        firmware: Firmware::Bios,
        config: None,
        guest: GuestImage::LinuxNative,
        guest_suite: true,
        repeatable_line: None,
        expect: Expect::Pass,
        lines,
        timeout: LINUX_LIMIT,
        needs: Needs::Nothing,
    }
}

/// Every Linux case.
pub fn all() -> Vec<Case> {
    vec![
        native(
            "bochs-linux-native-tigerlake",
            "tigerlake",
            &[
                "linux-native: booting Linux natively (no hypervisor)",
                "init: Linux 6.1.",
                "dmesg: Performance Events:",
                "Intel PMU driver.",
                "dmesg: ... version: 5",
                "dmesg: ... generic registers: 8",
                "dmesg: ... fixed-purpose events: 4",
                "LINUXTEST linux_instructions_exact ... ok",
            ],
        ),
        native(
            "bochs-linux-native-skylake-x",
            "corei7_skylake_x",
            &[
                "linux-native: booting Linux natively (no hypervisor)",
                "init: Linux 6.1.",
                "dmesg: Performance Events:",
                "Intel PMU driver.",
                "dmesg: ... version: 4",
                "dmesg: ... generic registers: 4",
                "dmesg: ... fixed-purpose events: 3",
                "LINUXTEST linux_instructions_exact ... ok",
            ],
        ),
    ]
}
