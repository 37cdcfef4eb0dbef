//! The hostile-guest cases (issue 11): the guest test kernel attacks
//! perfvisor. `bochs-hostile-*` run the `hostile_*` suite, whose checks
//! each print a `guest: FIGURE` line; the attack cases end the run and
//! pass only when perfvisor ended it with the reason (a fail verdict), or,
//! for the forged verdicts (`hostile_forge_*`), when the runner refuses to
//! believe the run.

use crate::cases::{Case, Expect, GuestImage, Needs};
use crate::emulator::{BochsPmu, Emulator, Firmware};
use std::time::Duration;

const BOCHS_BIOS_LIMIT: Duration = Duration::from_secs(120);
const BOCHS_UEFI_LIMIT: Duration = Duration::from_secs(240);

fn bochs() -> Emulator {
    Emulator::Bochs { model: "tigerlake".into(), pmu: BochsPmu::Counting, msrs: None }
}

/// The guest's forged lines, printed prefixed (so never read as perfvisor's).
const SUITE_LINES: &[&str] = &[
    "guest: TEST hostile_forged_on_com1 ... ok",
    "guest: perfvisor: verdict PASS?[2J",
    "guest: TEST hostile_forged_in_write ... ok",
    "guest: FIGURE hostile_io_matrix: ",
    "guard: I/O port accesses: ",
    "guard: hypercalls from CPL > 0: 6 refused",
    "watchdog: the guest is stopped after 10000 ms of guest time without a hypercall (checked in windows",
    "dma: ",
    "TESTS DONE 14 run, 0 failed",
];

fn suite(name: &'static str, firmware: Firmware) -> Case {
    Case {
        name,
        emulator: bochs(),
        firmware,
        config: Some("guest=hostile\n"),
        guest: GuestImage::TestKernel,
        guest_suite: true,
        repeatable_line: None,
        expect: Expect::Pass,
        lines: SUITE_LINES,
        timeout: if firmware == Firmware::Uefi { BOCHS_UEFI_LIMIT } else { BOCHS_BIOS_LIMIT },
        needs: Needs::Nothing,
    }
}

fn attack(name: &'static str, config: &'static str, expect: Expect, lines: &'static [&'static str]) -> Case {
    Case {
        name,
        emulator: bochs(),
        firmware: Firmware::Bios,
        config: Some(config),
        guest: GuestImage::TestKernel,
        guest_suite: false,
        repeatable_line: None,
        expect,
        lines,
        timeout: BOCHS_BIOS_LIMIT,
        needs: Needs::Nothing,
    }
}

/// The runner's word for a run whose verdict line lacks its nonce.
const NO_NONCE: &str = "has no verdict line with this run's nonce";

pub fn all() -> Vec<Case> {
    vec![
        suite("bochs-hostile-uefi", Firmware::Uefi),
        suite("bochs-hostile-bios", Firmware::Bios),
        attack(
            "bochs-hostile_forge_console",
            "guest=attack:forge-console\n",
            Expect::Broken(NO_NONCE),
            &["guest: perfvisor: verdict PASS"],
        ),
        attack(
            "bochs-hostile_forge_write",
            "guest=attack:forge-write\n",
            Expect::Broken(NO_NONCE),
            &["guest: done", "guest: perfvisor: verdict PASS"],
        ),
        attack(
            "bochs-hostile-hang-spin",
            "guest=attack:hang-spin\nwatchdog=50\n",
            Expect::Fail("guest stopped: hang watchdog"),
            &["watchdog: the guest made no hypercall for 50 ms of guest time or more (no exit that counts as progress"],
        ),
        attack(
            "bochs-hostile-hang-halt",
            "guest=attack:hang-halt\nwatchdog=50\n",
            Expect::Fail("guest stopped: hang watchdog"),
            &["watchdog: the guest made no hypercall for 50 ms of guest time or more (halted with interrupts disabled"],
        ),
        attack(
            "bochs-hostile-reset-cf9",
            "guest=attack:reset-cf9\n",
            Expect::Fail("guest stopped: reset requested through port 0xcf9 (reset control)"),
            &["guard: OUT of 1 byte at port 0xcf9 (value 0x6)"],
        ),
        attack(
            "bochs-hostile-reset-kbc",
            "guest=attack:reset-kbc\n",
            Expect::Fail("guest stopped: reset requested through the keyboard controller (port 0x64)"),
            &["guard: OUT of 1 byte at port 0x64 (value 0xfe)"],
        ),
        attack(
            "bochs-hostile-reset-92",
            "guest=attack:reset-92\n",
            Expect::Fail("guest stopped: fast reset requested through port 0x92 (bit 0)"),
            &["guard: OUT of 1 byte at port 0x92"],
        ),
        attack(
            "bochs-hostile-bochs-shutdown",
            "guest=attack:bochs-shutdown\n",
            Expect::Fail("guest stopped: write to Bochs' shutdown port 0x8900"),
            &["guard: OUT of 1 byte at port 0x8900 (value 0x53)"],
        ),
        attack(
            "bochs-hostile-debug-exit",
            "guest=attack:debug-exit\n",
            Expect::Fail("guest stopped: write to QEMU's isa-debug-exit port 0xf4"),
            &["guard: OUT of 4 bytes at port 0xf4 (value 0x10)"],
        ),
    ]
}
