//! The end-to-end cases that boot Linux: the stock kernel judging the
//! counting PMU natively and as perfvisor's guest.
//!
//! `bochs-linux-guest-*` boot perfvisor (mediated vPMU) with the same
//! kernel and initramfs as its guest (hypervisor/src/linux.rs; command line
//! `xtask::linux::guest_spec`): the same LINUXTEST checks, read from the
//! guest's `guest: ` console lines; the guest's write to port 0xf4 ends the
//! run. `bochs-linux-guest-bad-kernel` and `-no-initrd`: the loader refuses
//! a malformed kernel and a bundle without an initrd in words, with a fail
//! verdict. `bochs-linux-guest-kernel-panic`: a guest kernel that panics
//! (`LinuxDefect::KernelPanics`) ends the run at its panic line, with the
//! reason on perfvisor's console and a fail verdict.
//!
//! `bochs-linux-native-*` boot tests/linux-native, which loads the stock
//! Debian kernel and the LINUXTEST initramfs (xtask/src/linux.rs): Linux's
//! own perf driver must accept the PMU (`Performance Events: ... Intel PMU
//! driver.`, the version and counters CPUID.0AH gives), nothing may oops,
//! and `instructions:u`/`branches:u` of a known loop must be exact. Each
//! `LINUXTEST` line is a named result (`guest_suite`).

use crate::cases::{Case, Expect, GuestImage, LinuxDefect, Needs};
use crate::emulator::{BochsPmu, Emulator, Firmware};
use std::time::Duration;

/// The MSRs Bochs lacks that Linux reads unchecked (IA32_MISC_ENABLE, the
/// machine-check MSRs); relative to the workspace.
pub const LINUX_MSRS: &str = "tests/bochs/linux.msrs";

/// A Linux run takes ~160-180 s here (the counting Bochs, tigerlake, one
/// job alone): ~65 s for the BIOS bootloader to read the 30 MB bundle (the
/// initramfs carries Debian's perf tool and its libraries), ~2 s to
/// decompress, ~10 s for Linux to reach /init, ~25 s for the NMI-watchdog
/// check, ~60 s for the perf tool's runs. The limit leaves room for a busy
/// machine (two jobs on two cores), under perfvisor as natively.
const LINUX_LIMIT: Duration = Duration::from_secs(480);

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

/// perfvisor with a Linux guest (hypervisor/src/linux.rs), mediated vPMU.
fn guest(name: &'static str, model: &str, defect: LinuxDefect, expect: Expect, lines: &'static [&'static str]) -> Case {
    Case {
        name,
        emulator: Emulator::Bochs { model: model.into(), pmu: BochsPmu::Counting, msrs: None, cpus: 1 },
        firmware: Firmware::Bios,
        config: Some("vpmu=mediated"),
        guest: GuestImage::LinuxGuest(defect),
        guest_suite: defect == LinuxDefect::None,
        repeatable_line: None,
        expect,
        lines,
        timeout: LINUX_LIMIT,
        needs: Needs::Nothing,
    }
}

/// Every Linux case.
pub fn all() -> Vec<Case> {
    vec![
        guest(
            "bochs-linux-guest-bad-kernel",
            "tigerlake",
            LinuxDefect::MalformedKernel,
            Expect::Fail("bad Linux guest"),
            &["linux: the Linux guest cannot be loaded: vmlinux-headers: not an ELF file"],
        ),
        guest(
            "bochs-linux-guest-no-initrd",
            "tigerlake",
            LinuxDefect::NoInitrd,
            Expect::Fail("bad Linux guest"),
            &["linux: the Linux guest cannot be loaded: the bundle has no initrd"],
        ),
        // The kernel panics (the root device it is told to mount does not
        // exist): perfvisor reads the panic line on the guest's console and
        // fails the run with its reason, before the reboot that follows.
        guest(
            "bochs-linux-guest-kernel-panic",
            "tigerlake",
            LinuxDefect::KernelPanics,
            Expect::Fail("guest stopped: guest kernel panic"),
            &[
                "guest: starting Linux at",
                "guest: Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
                "linux: the guest kernel panicked: VFS: Unable to mount root fs on unknown-block(0,0)",
            ],
        ),
        guest(
            "bochs-linux-guest-tigerlake",
            "tigerlake",
            LinuxDefect::None,
            Expect::Pass,
            &[
                "guest: starting Linux at",
                "guest: init: Linux 6.1.",
                // The driver line (`... Intel PMU driver.`) is longer than a
                // `guest: ` line (100 bytes, hypervisor/src/guard.rs) and
                // wraps; linux_pmu_driver checks it whole inside the guest.
                "guest: dmesg: Performance Events:",
                "guest: LINUXTEST linux_pmu_driver ... ok",
                "guest: dmesg: ... version: 5",
                "guest: dmesg: ... generic registers: 8",
                "guest: dmesg: ... fixed-purpose events: 4",
                "guest: LINUXTEST linux_instructions_exact ... ok",
                "guest: exited with status 0",
            ],
        ),
        guest(
            "bochs-linux-guest-skylake-x",
            "corei7_skylake_x",
            LinuxDefect::None,
            Expect::Pass,
            &[
                "guest: starting Linux at",
                "guest: init: Linux 6.1.",
                "guest: dmesg: Performance Events:",
                "guest: LINUXTEST linux_pmu_driver ... ok",
                "guest: dmesg: ... version: 4",
                "guest: dmesg: ... generic registers: 4",
                "guest: dmesg: ... fixed-purpose events: 3",
                "guest: LINUXTEST linux_instructions_exact ... ok",
                "guest: exited with status 0",
            ],
        ),
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
