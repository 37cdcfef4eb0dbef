//! The hostile-guest cases (issue 11): the guest test kernel attacks
//! perfvisor. `bochs-hostile-*` run the `hostile_*` suite, whose checks
//! each print a `guest: FIGURE` line; the attack cases end the run and
//! pass only when perfvisor ended it with the reason (a fail verdict), or,
//! for the forged verdicts (`hostile_forge_*`), when the runner refuses to
//! believe the run.

use crate::cases::{Case, Expect, GuestImage, Needs};
use crate::emulator::{BochsPmu, Emulator, Firmware};
use crate::malformed_elf::ElfDefect;
use std::time::Duration;

const BOCHS_BIOS_LIMIT: Duration = Duration::from_secs(120);
const BOCHS_UEFI_LIMIT: Duration = Duration::from_secs(240);

fn bochs() -> Emulator {
    Emulator::Bochs { model: "tigerlake".into(), pmu: BochsPmu::Counting, msrs: None, cpus: 1 }
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
    "TESTS DONE 15 run, 0 failed",
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

/// One malformed guest ELF (`crate::malformed_elf`): refused before the
/// guest starts, with the console naming the reason.
fn malformed_elf(defect: ElfDefect, name: &str, reason: &'static str) -> Case {
    let lines: &'static [&'static str] = Box::leak(Box::new(["guest: the guest image (", reason]));
    Case {
        name: Box::leak(format!("bochs-hostile_elf_{name}").into_boxed_str()),
        emulator: bochs(),
        firmware: Firmware::Bios,
        config: None,
        guest: GuestImage::MalformedElf(defect),
        guest_suite: false,
        repeatable_line: None,
        expect: Expect::Fail("bad guest image"),
        lines,
        timeout: BOCHS_BIOS_LIMIT,
        needs: Needs::Nothing,
    }
}

/// The memory probes: (attack, firmware, the access perfvisor must name).
/// Each touches one guest-physical page outside guest RAM and must end
/// with an EPT violation at the address the guest announced
/// ([`probe_problem`] compares them). UEFI's guest RAM has holes; BIOS's
/// is one range.
const PROBES: &[(&str, Firmware, &str)] = &[
    (
        "below-ram",
        Firmware::Bios,
        "EPT violation: guest read of an unmapped guest-physical page at guest-physical 0x1ffffff ",
    ),
    ("above-ram", Firmware::Bios, "EPT violation: guest read of an unmapped guest-physical page"),
    ("hole-start", Firmware::Uefi, "EPT violation: guest read of an unmapped guest-physical page"),
    ("hole-end", Firmware::Uefi, "EPT violation: guest read of an unmapped guest-physical page"),
    ("hypervisor-read", Firmware::Bios, "EPT violation: guest read of an unmapped guest-physical page"),
    ("hypervisor-write", Firmware::Bios, "EPT violation: guest write of an unmapped guest-physical page"),
    ("hypervisor-exec", Firmware::Bios, "EPT violation: guest instruction fetch of an unmapped guest-physical page"),
    ("page0", Firmware::Bios, "EPT violation: guest read of an unmapped guest-physical page at guest-physical 0x0 "),
    ("vga", Firmware::Bios, "EPT violation: guest read of an unmapped guest-physical page at guest-physical 0xa0000 "),
    (
        "bios-rom",
        Firmware::Bios,
        "EPT violation: guest read of an unmapped guest-physical page at guest-physical 0xfffff000 ",
    ),
    (
        "local-apic",
        Firmware::Bios,
        "EPT violation: guest read of an unmapped guest-physical page at guest-physical 0xfee00000 ",
    ),
    (
        "ioapic",
        Firmware::Bios,
        "EPT violation: guest read of an unmapped guest-physical page at guest-physical 0xfec00000 ",
    ),
    (
        "hpet",
        Firmware::Bios,
        "EPT violation: guest read of an unmapped guest-physical page at guest-physical 0xfed00000 ",
    ),
    (
        "pci-mmio",
        Firmware::Bios,
        "EPT violation: guest read of an unmapped guest-physical page at guest-physical 0xe0000000 ",
    ),
];

fn probe(what: &'static str, firmware: Firmware, access: &'static str) -> Case {
    let config = Box::leak(format!("guest=attack:probe-{what}\n").into_boxed_str());
    let lines: &'static [&'static str] = Box::leak(Box::new(["guest: probe: ", access]));
    Case {
        name: Box::leak(format!("bochs-hostile_probe_{}", what.replace('-', "_")).into_boxed_str()),
        firmware,
        timeout: if firmware == Firmware::Uefi { BOCHS_UEFI_LIMIT } else { BOCHS_BIOS_LIMIT },
        ..attack("", config, Expect::Fail("guest stopped: EPT violation"), lines)
    }
}

/// A probe run (`guest: probe: ... guest-physical <addr>`) must end with
/// the EPT violation at that address; `None` also when there is no probe.
pub fn probe_problem(serial: &str) -> Option<String> {
    let announced = serial.lines().find_map(|l| l.strip_prefix("guest: probe: "))?;
    let addr = announced.rsplit_once("guest-physical ").map(|(_, a)| a.trim())?;
    let stopped = serial
        .lines()
        .any(|l| l.contains("vmx: EPT violation: ") && l.contains(&format!(" at guest-physical {addr} ")));
    (!stopped).then(|| format!("the guest probed guest-physical {addr}, but no EPT violation names it"))
}

/// The 2-CPU ICR case's runner check.
pub const ICR_CASE: &str = "bochs-hostile-icr-2cpu";

/// What CPU 1 received after the BIOS handed over to the boot disk, from
/// Bochs' log (`bochs.log` in the run directory): the firmware's own
/// INIT/SIPI come before `Booting from`; perfvisor starts no AP; so any
/// INIT, start-up IPI, NMI or SMI delivered to APIC 1, or any start of
/// CPU 1, after it came from the guest.
pub fn aps_started(bochs_log: &str) -> Result<String, String> {
    let mut lines = bochs_log.lines();
    let firmware: Vec<&str> = lines.by_ref().take_while(|l| !l.contains("] Booting from ")).collect();
    let after: Vec<&str> = lines.collect();
    if after.is_empty() {
        return Err("Bochs' log has no `Booting from` line (or nothing after it)".into());
    }
    let count = |lines: &[&str], what: &str| lines.iter().filter(|l| l.contains(what)).count();
    let firmware_starts = count(&firmware, "] CPU 1 started up at ");
    if firmware_starts == 0 {
        return Err("CPU 1 never started in the firmware: is this a 2-CPU machine?".into());
    }
    let kinds = ["Deliver INIT IPI", "Deliver Start Up IPI", "Deliver NMI", "Deliver SMI"];
    let delivered: usize =
        kinds.iter().map(|k| after.iter().filter(|l| l.contains("[APIC1 ]") && l.contains(k)).count()).sum();
    let started = count(&after, "] CPU 1 started up at ");
    let text = format!(
        "APs started by the guest: {started}; INIT/SIPI/NMI/SMI delivered to CPU 1 after the firmware: {delivered} \
         (the firmware's own start-ups of CPU 1: {firmware_starts})"
    );
    if started == 0 && delivered == 0 {
        Ok(text)
    } else {
        Err(text)
    }
}

/// perfvisor's console bytes per guest event once each reason's log limit
/// is reached: the bytes of perfvisor's lines between the guest's
/// `FLOOD <kind> begin` and `FLOOD <kind> end <n>` lines, over n. Any byte
/// fails (a guest must not be able to grow the console with its events).
pub fn console_bytes_per_event(serial: &str) -> Result<String, String> {
    let mut figures = Vec::new();
    let mut logged = 0;
    let mut open: Option<(&str, usize)> = None;
    for line in serial.lines() {
        if let Some(rest) = line.strip_prefix("guest: FLOOD ") {
            match (rest.strip_suffix(" begin"), rest.split_once(" end "), open) {
                (Some(kind), _, None) => open = Some((kind, 0)),
                (_, Some((kind, n)), Some((begun, bytes))) if kind == begun => {
                    let n: usize = n.trim().parse().map_err(|_| format!("bad FLOOD line {line:?}"))?;
                    logged += bytes;
                    figures.push(format!("{kind} {bytes} bytes/{n} events"));
                    open = None;
                }
                _ => return Err(format!("unpaired FLOOD line {line:?}")),
            }
        } else if let Some((_, bytes)) = open.as_mut() {
            if !line.starts_with("guest: ") {
                *bytes += line.len() + 1;
            }
        }
    }
    if figures.is_empty() || open.is_some() {
        return Err("the guest's FLOOD lines are missing or unfinished".into());
    }
    let text = format!("console bytes per event after the log limit: {}", figures.join(", "));
    if logged == 0 {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The checks the runner makes itself for `case` (name, outcome, figure).
pub fn runner_checks(case: &str, run_dir: &std::path::Path) -> Vec<(&'static str, Result<String, String>)> {
    if case == "bochs-hostile-bios" || case == "bochs-hostile-uefi" {
        let serial = std::fs::read_to_string(run_dir.join(crate::emulator::SERIAL_LOG))
            .map_err(|e| format!("reading the console: {e}"));
        return vec![("hostile_console_bytes_per_event", serial.and_then(|s| console_bytes_per_event(&s)))];
    }
    if case != ICR_CASE {
        return Vec::new();
    }
    let log = std::fs::read_to_string(run_dir.join("bochs.log")).map_err(|e| format!("reading bochs.log: {e}"));
    vec![("hostile_icr_aps_started", log.and_then(|l| aps_started(&l)))]
}

/// The runner's word for a run whose verdict line lacks its nonce.
const NO_NONCE: &str = "has no verdict line with this run's nonce";

pub fn all() -> Vec<Case> {
    let mut cases = attacks();
    cases.extend(crate::malformed_elf::ALL.iter().map(|&(defect, name, reason)| malformed_elf(defect, name, reason)));
    cases.extend(PROBES.iter().map(|&(what, firmware, access)| probe(what, firmware, access)));
    cases
}

fn attacks() -> Vec<Case> {
    vec![
        Case {
            name: ICR_CASE,
            emulator: Emulator::Bochs { model: "tigerlake".into(), pmu: BochsPmu::Counting, msrs: None, cpus: 2 },
            config: Some("guest=hostile-icr\n"),
            guest_suite: true,
            ..attack(
                "",
                "",
                Expect::Pass,
                &[
                    "guest: FIGURE hostile_icr_to_cpu1_refused: 10 ICR writes to CPU 1",
                    "guard: x2APIC ICR = 0x10000c500 refused (INIT)",
                    "TESTS DONE 1 run, 0 failed",
                ],
            )
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_runs_must_name_the_announced_address() {
        let ok = "guest: probe: reading the IOAPIC at guest-physical 0xfec00000\nERROR vmx: EPT violation: guest read of an unmapped guest-physical page at guest-physical 0xfec00000 (linear 0xfec00000), RIP 0x1: not guest RAM\n";
        assert_eq!(probe_problem(ok), None);
        let other = ok.replace("page at guest-physical 0xfec00000", "page at guest-physical 0xfec00001");
        assert!(probe_problem(&other).is_some());
        let none = "guest: probe: reading the IOAPIC at guest-physical 0xfec00000\nguest: probe: REACHED 0xfec00000\n";
        assert!(probe_problem(none).is_some());
        assert_eq!(probe_problem("no probe here\n"), None);
    }

    #[test]
    fn console_bytes_are_counted_between_flood_marks() {
        let quiet =
            "guest: FLOOD a begin\nguest: x\nguest: FLOOD a end 1000\nguest: FLOOD b begin\nguest: FLOOD b end 10\n";
        assert_eq!(
            console_bytes_per_event(quiet).as_deref(),
            Ok("console bytes per event after the log limit: a 0 bytes/1000 events, b 0 bytes/10 events")
        );
        let loud = "guest: FLOOD a begin\nWARN  vmx: unknown hypercall 0x1\nguest: FLOOD a end 1000\n";
        assert!(console_bytes_per_event(loud).is_err());
        assert!(console_bytes_per_event("guest: FLOOD a begin\n").is_err());
        assert!(console_bytes_per_event("nothing\n").is_err());
    }

    #[test]
    fn aps_started_reads_what_cpu1_got_after_the_firmware() {
        let firmware = "1i[APIC1 ] Deliver INIT IPI\n2i[APIC1 ] Deliver Start Up IPI\n3i[CPU1  ] CPU 1 started up at 9F00:00000000 by APIC\n4i[BIOS  ] Booting from 0000:7c00\n";
        assert!(aps_started(&format!("{firmware}5i[CPU0  ] something\n")).is_ok());
        assert!(aps_started(&format!("{firmware}5i[APIC1 ] Deliver NMI\n")).is_err());
        assert!(aps_started(&format!("{firmware}5i[CPU1  ] CPU 1 started up at 0000:00000000 by APIC\n")).is_err());
        assert!(aps_started("4i[BIOS  ] Booting from 0000:7c00\n5i x\n").is_err(), "a 1-CPU machine proves nothing");
        assert!(aps_started("1i[CPU1  ] CPU 1 started up at 9F00:0 by APIC\n").is_err());
    }
}
