//! The end-to-end cases: each boots an image and asserts on named console
//! lines and on the verdict.

use crate::boot::{boot, BootSpec, Verdict};
use crate::emulator::{BochsPmu, Emulator, Firmware};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The verdict a case expects.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    Pass,
    /// A fail verdict whose reason is exactly this.
    Fail(&'static str),
    /// No usable verdict, with this in the runner's explanation: a run the
    /// runner must not believe (a forged verdict, `hostile_forge_*`).
    Broken(&'static str),
}

/// The guest image a case's ramdisk carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestImage {
    None,
    /// tests/guest, the guest test kernel.
    TestKernel,
    /// Bytes that are not an ELF executable.
    Malformed,
    /// The guest test kernel with one defect (issue 11's malformed ELFs).
    MalformedElf(crate::malformed_elf::ElfDefect),
    /// No perfvisor at all: the image's kernel is the native PMU
    /// conformance kernel (tests/guest/src/bin/pmu-native.rs).
    NoHypervisor,
    /// No perfvisor: tests/linux-native boots the stock Debian kernel with
    /// the LINUXTEST initramfs (xtask/src/linux.rs, linux_cases.rs).
    LinuxNative,
    /// perfvisor with the stock Debian kernel and the LINUXTEST initramfs
    /// as its guest (hypervisor/src/linux.rs), or that bundle with a defect.
    LinuxGuest(LinuxDefect),
}

/// What is wrong with a Linux guest's bundle (e2e cases of the loader's
/// refusals, and of a guest kernel that panics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinuxDefect {
    None,
    /// vmlinux-headers replaced by bytes that are no ELF.
    MalformedKernel,
    /// No initrd part.
    NoInitrd,
    /// The command line ends with [`LINUX_PANIC_APPEND`]: the kernel boots,
    /// then panics.
    KernelPanics,
}

/// What [`LinuxDefect::KernelPanics`] appends to the guest's command line.
/// Linux 6.1 finds no `/no-such-init` in the initramfs, so it mounts the
/// root device instead (init/main.c `kernel_init_freeable`, then
/// init/do_mounts.c `prepare_namespace`); `/dev/no-such-disk` names none
/// (device 0,0) and with `pci=off` there is no disk at all, so the first
/// mount attempt fails and Linux panics `VFS: Unable to mount root fs on
/// unknown-block(0,0)`: deterministic, after the console is up (an earlier
/// panic would print nothing), at the point the initramfs's /init would run.
pub const LINUX_PANIC_APPEND: &str = "rdinit=/no-such-init root=/dev/no-such-disk";

/// What a case needs from the machine beyond the emulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// QEMU with KVM able to run a VMX guest (see [`crate::kvm`]).
    NestedKvm,
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub emulator: Emulator,
    pub firmware: Firmware,
    /// Boot config text passed in the ramdisk (hypervisor/src/config.rs).
    pub config: Option<&'static str>,
    pub guest: GuestImage,
    /// The guest runs its test suite: each `TEST name ... ok` line is a case.
    pub guest_suite: bool,
    /// Boot twice; the console line starting with this must be identical.
    pub repeatable_line: Option<&'static str>,
    pub expect: Expect,
    /// Substrings that must each appear in some console line.
    pub lines: &'static [&'static str],
    pub timeout: Duration,
    pub needs: Needs,
}

/// An image to build: firmware, boot config, guest.
pub type ImageKey = (Firmware, Option<&'static str>, GuestImage);

/// Bochs with the counting PMU (tests/bochs/PMU.md): the default test CPU.
fn bochs(model: &str) -> Emulator {
    Emulator::Bochs { model: model.to_string(), pmu: BochsPmu::Counting, msrs: None, cpus: 1 }
}

/// Bochs without a counting PMU, its PMU MSRs plain registers that never
/// count (tests/bochs/<model>.msrs): the fallback mode's machine.
fn bochs_pmu_registers(model: &str) -> Emulator {
    Emulator::Bochs {
        model: model.to_string(),
        pmu: BochsPmu::Stock,
        msrs: Some(crate::bochs_msrs::path(model).into()),
        cpus: 1,
    }
}

/// Stock Bochs: CPUID reports a PMU whose MSRs all #GP.
fn bochs_no_pmu_msrs(model: &str) -> Emulator {
    Emulator::Bochs { model: model.to_string(), pmu: BochsPmu::Stock, msrs: None, cpus: 1 }
}

const MEDIATED_V4: &str =
    "pmu: vPMU mode Mediated: host PMU v4+: GLOBAL_STATUS is restored with IA32_PERF_GLOBAL_STATUS_SET";

const TCG: Emulator = Emulator::Qemu { kvm: false, cpu: None };

const VMX_ROOT: &str = "vmx: entered VMX root mode";
const NO_VMX: &str = "vmx: VMX is not available: CPUID.1:ECX.VMX[bit 5] = 0";

/// Bochs boots BIOS images in ~2 s and UEFI (OVMF) in ~17 s here; the
/// limits leave room for a slower or busier machine.
const BOCHS_BIOS_LIMIT: Duration = Duration::from_secs(90);
const BOCHS_UEFI_LIMIT: Duration = Duration::from_secs(180);
const QEMU_LIMIT: Duration = Duration::from_secs(60);

/// Every end-to-end case, in the order they start (longest first, so
/// the parallel jobs finish together).
pub fn all() -> Vec<Case> {
    let mut cases = core_cases();
    cases.extend(crate::linux_cases::all());
    cases.extend(crate::hostile_cases::all());
    cases
}

/// perfvisor with its test kernel, the native PMU kernel, and the failure paths.
fn core_cases() -> Vec<Case> {
    vec![
        Case {
            name: "bochs-skylake-x-uefi",
            emulator: bochs("corei7_skylake_x"),
            firmware: Firmware::Uefi,
            config: None,
            guest: GuestImage::TestKernel,
            guest_suite: true,
            repeatable_line: None,
            expect: Expect::Pass,
            lines: &[
                "perfvisor 0.1.0 (ABI 1): hypervisor starting",
                // OVMF leaves IA32_FEATURE_CONTROL unlocked; perfvisor locks it.
                "vmx: IA32_FEATURE_CONTROL was unlocked: set to 0x5",
                "pmu: version 4, 4 GP counters x 48 bits",
                VMX_ROOT,
                MEDIATED_V4,
            ],
            timeout: BOCHS_UEFI_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-skylake-x-bios",
            emulator: bochs("corei7_skylake_x"),
            firmware: Firmware::Bios,
            config: None,
            guest: GuestImage::TestKernel,
            guest_suite: true,
            repeatable_line: None,
            expect: Expect::Pass,
            lines: &[
                "cpu: GenuineIntel family 0x6 model 0x55",
                "vmx: supported by the CPU (CPUID.1:ECX.VMX = 1)",
                "vmx: VMCS revision 0x",
                "vmx: control use MSR bitmaps: yes",
                "vmx: control EPT: yes",
                "vmx: control load IA32_PERF_GLOBAL_CTRL on entry: yes",
                "vmx: control load IA32_PERF_GLOBAL_CTRL on exit: yes",
                "pmu: version 4, 4 GP counters x 48 bits, fixed counters {0,1,2} x 48 bits",
                VMX_ROOT,
                MEDIATED_V4,
                "pmu: the guest sees version 4, 4 GP counters x 48 bits, fixed counters {0,1,2} x 48 bits",
            ],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-tigerlake-bios",
            emulator: bochs("tigerlake"),
            firmware: Firmware::Bios,
            config: None,
            guest: GuestImage::TestKernel,
            guest_suite: true,
            repeatable_line: None,
            expect: Expect::Pass,
            lines: &[
                "cpu: GenuineIntel",
                "pmu: CPUID.0AH eax=0x08300805 ebx=0x00000000 ecx=0x0000000f edx=0x00008604",
                "pmu: version 5, 8 GP counters x 48 bits, fixed counters {0,1,2,3} x 48 bits",
                VMX_ROOT,
                MEDIATED_V4,
                "pmu: the guest sees version 5, 8 GP counters x 48 bits, fixed counters {0,1,2,3} x 48 bits",
                "pmu: the guest's GLOBAL_CTRL round-trips through one MSR-list entry (VM-exit store and VM-entry load list); the host's 0 loaded at VM exit by the load control",
                "pmu: guest context put; the PMU is parked",
            ],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-tigerlake-fallback",
            emulator: bochs_pmu_registers("tigerlake"),
            firmware: Firmware::Bios,
            config: None,
            guest: GuestImage::TestKernel,
            guest_suite: true,
            repeatable_line: None,
            expect: Expect::Pass,
            lines: &[
                "pmu: vPMU mode Fallback: host PMU v5, but IA32_PERF_GLOBAL_STATUS_SET/RESET do not act on GLOBAL_STATUS",
                "pmu: the guest sees version 5, 8 GP counters x 48 bits, fixed counters {0,1,2,3} x 48 bits",
                "pmu: guest context put; the PMU is parked",
            ],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-tigerlake-save-control",
            emulator: Emulator::Bochs {
                model: "tigerlake".into(),
                pmu: BochsPmu::CountingWithSaveControl,
                msrs: None,
                cpus: 1,
            },
            firmware: Firmware::Bios,
            config: None,
            guest: GuestImage::TestKernel,
            guest_suite: true,
            repeatable_line: None,
            expect: Expect::Pass,
            lines: &[
                "vmx: control save IA32_PERF_GLOBAL_CTRL on exit: yes",
                MEDIATED_V4,
                "pmu: the guest's GLOBAL_CTRL round-trips through the VMCS (save and load controls); the host's 0 loaded at VM exit by the load control",
            ],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "qemu-tcg-bios-no-vmx",
            emulator: TCG,
            firmware: Firmware::Bios,
            config: None,
            guest: GuestImage::TestKernel,
            guest_suite: false,
            repeatable_line: None,
            expect: Expect::Fail("no VMX"),
            lines: &["perfvisor 0.1.0 (ABI 1): hypervisor starting", NO_VMX],
            timeout: QEMU_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "qemu-tcg-uefi-no-vmx",
            emulator: TCG,
            firmware: Firmware::Uefi,
            config: None,
            guest: GuestImage::TestKernel,
            guest_suite: false,
            repeatable_line: None,
            expect: Expect::Fail("no VMX"),
            lines: &["perfvisor 0.1.0 (ABI 1): hypervisor starting", NO_VMX],
            timeout: QEMU_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-selftest-panic",
            emulator: bochs("corei7_skylake_x"),
            firmware: Firmware::Bios,
            config: Some("selftest=panic\n"),
            guest: GuestImage::TestKernel,
            guest_suite: false,
            repeatable_line: None,
            expect: Expect::Fail("panic"),
            lines: &[
                "config: 15 bytes read from the ramdisk",
                "PANIC: selftest=panic: deliberate panic requested by the boot config",
                "  at hypervisor/src/main.rs:",
            ],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "qemu-tcg-selftest-exception",
            emulator: TCG,
            firmware: Firmware::Bios,
            config: Some("log=debug\nselftest=exception\n"),
            guest: GuestImage::TestKernel,
            guest_suite: false,
            repeatable_line: None,
            expect: Expect::Fail("unhandled CPU exception"),
            lines: &[
                "boot: log level DEBUG",
                "EXCEPTION vector 6 (#UD invalid opcode) error code 0x0",
                "  RIP 0x",
                "  CR0 0x",
                "  RAX 0x",
                "  R13 0x",
            ],
            timeout: QEMU_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "qemu-tcg-bad-config",
            emulator: TCG,
            firmware: Firmware::Bios,
            config: Some("log=info\nfrobnicate=1\n"),
            guest: GuestImage::TestKernel,
            guest_suite: false,
            repeatable_line: None,
            expect: Expect::Fail("bad boot config"),
            lines: &["config: line 2: \"frobnicate=1\": unknown key (known: log, selftest, guest, vpmu, vpmu_switch, watchdog)"],
            timeout: QEMU_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-guest-ept-violation",
            emulator: bochs("corei7_skylake_x"),
            firmware: Firmware::Bios,
            config: Some("guest=ept-violation\n"),
            guest: GuestImage::TestKernel,
            guest_suite: false,
            repeatable_line: None,
            expect: Expect::Fail("guest stopped: EPT violation"),
            lines: &[
                "guest: reading hypervisor memory at 0x",
                "vmx: EPT violation: guest read of an unmapped guest-physical page at guest-physical 0x",
                "exits:",
            ],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-guest-triple-fault",
            emulator: bochs("tigerlake"),
            firmware: Firmware::Bios,
            config: Some("guest=triple-fault\n"),
            guest: GuestImage::TestKernel,
            guest_suite: false,
            repeatable_line: None,
            expect: Expect::Fail("guest stopped: triple fault"),
            lines: &["vmx: the guest triple-faulted (RIP 0x", "VMCS dump:", "GuestRip", "triple fault"],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-guest-exit-status",
            emulator: bochs("corei7_skylake_x"),
            firmware: Firmware::Bios,
            config: Some("guest=exit-status\n"),
            guest: GuestImage::TestKernel,
            guest_suite: false,
            repeatable_line: None,
            expect: Expect::Fail("guest exit status 3"),
            lines: &["guest: exited with status 3", "VMCALL"],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-no-guest-image",
            emulator: bochs("corei7_skylake_x"),
            firmware: Firmware::Bios,
            config: None,
            guest: GuestImage::None,
            guest_suite: false,
            repeatable_line: None,
            expect: Expect::Fail("no guest image"),
            lines: &[VMX_ROOT, "guest: the ramdisk has no guest image"],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-malformed-guest-image",
            emulator: bochs("corei7_skylake_x"),
            firmware: Firmware::Bios,
            config: None,
            guest: GuestImage::Malformed,
            guest_suite: false,
            repeatable_line: None,
            expect: Expect::Fail("bad guest image"),
            lines: &["guest: the guest image (", "is unusable: the file is 33 bytes: shorter than an ELF64 header"],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-tigerlake-no-pmu-msrs",
            emulator: bochs_no_pmu_msrs("tigerlake"),
            firmware: Firmware::Bios,
            config: None,
            guest: GuestImage::TestKernel,
            guest_suite: true,
            repeatable_line: None,
            expect: Expect::Pass,
            lines: &[
                // Bochs sets PDCM but has no MSR 0x345 without the msrs file: the #GP must be caught.
                "pmu: IA32_PERF_CAPABILITIES (MSR 0x345) read raised #GP",
                "pmu: vPMU mode Off: CPUID.0AH advertises PMU version 5 but MSR 0xc1 raises #GP",
                "pmu: the guest sees no architectural PMU",
            ],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-pmu-fuzz",
            emulator: bochs("tigerlake"),
            firmware: Firmware::Bios,
            config: Some("guest=pmu-fuzz\n"),
            guest: GuestImage::TestKernel,
            guest_suite: false,
            repeatable_line: Some("guest: FUZZ seed "),
            expect: Expect::Pass,
            lines: &["guest: FUZZ seed 0x5eed0ff022: 100000 accesses", "guest: exited with status 0"],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-vpmu-mediated-refused",
            emulator: bochs_pmu_registers("corei7_skylake_x"),
            firmware: Firmware::Bios,
            config: Some("vpmu=mediated\n"),
            guest: GuestImage::TestKernel,
            guest_suite: false,
            repeatable_line: None,
            expect: Expect::Fail("vPMU configuration"),
            lines: &["pmu: vpmu=mediated needs a working IA32_PERF_GLOBAL_STATUS_SET; this v4 host's has no effect"],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        pmu_native("bochs-pmu-native-tigerlake", "tigerlake", &[NATIVE_BANNER, "pmu: version 5", " run, 0 failed"]),
        pmu_native("bochs-pmu-native-skylake-x", "corei7_skylake_x", &[NATIVE_BANNER, "pmu: version 4", " run, 0 failed"]),
        Case {
            name: "bochs-pmu-native-tigerlake-registers",
            emulator: bochs_pmu_registers("tigerlake"),
            firmware: Firmware::Bios,
            config: None,
            guest: GuestImage::NoHypervisor,
            guest_suite: false,
            repeatable_line: None,
            // Natively, Bochs' PMU registers keep values, but STATUS_SET/RESET do
            // not act on GLOBAL_STATUS, and a write that changes nothing cannot
            // fault: those two checks must fail there — what perfvisor hides.
            expect: Expect::Fail("pmu checks failed"),
            lines: &[
                "perfvisor-pmu-native: PMU conformance checks on the bare CPU",
                "TEST pmu_cpuid_and_counters_exist ... ok",
                "TEST pmu_global_ctrl_reset_value ... ok",
                "TEST pmu_perf_capabilities ... FAILED (PERF_CAPABILITIES write accepted)",
                "TEST pmu_status_set_reset_inuse ... FAILED (STATUS_SET did not set the bits)",
                "TEST pmu_values_survive_exits_and_switches ... FAILED (GLOBAL_STATUS = Ok(0) after the exits and a switch",
                "TESTS DONE 21 run, 3 failed",
            ],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-vpmu-msr-load-lists",
            emulator: bochs("tigerlake"),
            firmware: Firmware::Bios,
            config: Some("vpmu_switch=lists\n"),
            guest: GuestImage::TestKernel,
            guest_suite: true,
            repeatable_line: None,
            expect: Expect::Pass,
            lines: &[
                MEDIATED_V4,
                "pmu: the guest's GLOBAL_CTRL round-trips through one MSR-list entry (VM-exit store and VM-entry load list); the host's 0 loaded at VM exit by a VM-exit MSR-load list",
            ],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "qemu-kvm-bios",
            emulator: Emulator::Qemu {
                kvm: true,
                cpu: None,
            },
            firmware: Firmware::Bios,
            config: None,
            guest: GuestImage::TestKernel,
            guest_suite: true,
            repeatable_line: None,
            expect: Expect::Pass,
            lines: &[VMX_ROOT],
            timeout: QEMU_LIMIT,
            needs: Needs::NestedKvm,
        },
    ]
}

const NATIVE_BANNER: &str = "perfvisor-pmu-native: PMU conformance checks on the bare CPU";

/// The native PMU conformance kernel on the counting PMU of `model`: the
/// bare CPU must pass every conformance check a hardware PMU passes.
fn pmu_native(name: &'static str, model: &str, lines: &'static [&'static str]) -> Case {
    Case {
        name,
        emulator: bochs(model),
        firmware: Firmware::Bios,
        config: None,
        guest: GuestImage::NoHypervisor,
        guest_suite: true,
        repeatable_line: None,
        expect: Expect::Pass,
        lines,
        timeout: BOCHS_BIOS_LIMIT,
        needs: Needs::Nothing,
    }
}

/// The images the cases need.
pub fn images_needed(cases: &[Case]) -> Vec<ImageKey> {
    let mut keys: Vec<ImageKey> = Vec::new();
    for c in cases {
        if !keys.contains(&(c.firmware, c.config, c.guest)) {
            keys.push((c.firmware, c.config, c.guest));
        }
    }
    keys
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// Runs one case: boot, then compare verdict and console with the
/// expectation. A guest-suite case also yields one result per guest test
/// (`<case>/<test>`), and fails if the guest's own count disagrees.
pub fn run_case(case: &Case, image: &Path, run_root: &Path, kvm: &Result<(), String>) -> Vec<CaseResult> {
    let started = Instant::now();
    let result = |outcome| CaseResult { name: case.name.to_string(), outcome, elapsed: started.elapsed() };
    if case.needs == Needs::NestedKvm {
        if let Err(why) = kvm {
            return vec![result(Outcome::Skip(format!("needs QEMU/KVM with nested VMX: {why}")))];
        }
    }
    let spec = BootSpec {
        emulator: case.emulator.clone(),
        firmware: case.firmware,
        image: image.to_path_buf(),
        run_dir: run_root.join(case.name),
        timeout: case.timeout,
        echo: false,
        gdb: false,
        watch: Vec::new(),
    };
    let boot = match boot(&spec) {
        Err(e) => return vec![result(Outcome::Fail(format!("could not boot: {e}")))],
        Ok(boot) => boot,
    };
    let mut problems = Vec::new();
    if let Some(prefix) = case.repeatable_line {
        let line = |serial: &str| serial.lines().find(|l| l.starts_with(prefix)).map(str::to_string);
        let again = BootSpec { run_dir: run_root.join(format!("{}-again", case.name)), ..spec.clone() };
        match crate::boot::boot(&again).map(|b| b.serial) {
            Ok(serial) if line(&serial) == line(&boot.serial) => {}
            Ok(serial) => {
                problems.push(format!("a second boot gave {:?}, the first {:?}", line(&serial), line(&boot.serial)))
            }
            Err(e) => problems.push(format!("the second boot failed: {e}")),
        }
    }
    match (&case.expect, &boot.verdict) {
        (Expect::Pass, Verdict::Pass) => {}
        (Expect::Fail(want), Verdict::Fail(got)) if want == got => {}
        (Expect::Broken(want), Verdict::Broken(got)) if got.contains(want) => {}
        (expect, got) => problems.push(format!("expected verdict {expect:?}, got {got:?}")),
    }
    if let Some(m) = case.lines.iter().find(|needle| !boot.serial.lines().any(|l| l.contains(*needle))) {
        problems.push(format!("console lacks {m:?}"));
    }
    problems.extend(crate::hostile_cases::probe_problem(&boot.serial));
    let mut results = Vec::new();
    for (name, check) in crate::hostile_cases::runner_checks(case.name, &boot.run_dir) {
        let outcome = match check {
            Ok(figure) => {
                println!("FIGURE {}/{name}: {figure}", case.name);
                Outcome::Pass
            }
            Err(why) => {
                problems.push(format!("{name}: {why}"));
                Outcome::Fail(why)
            }
        };
        results.push(CaseResult { name: format!("{}/{name}", case.name), outcome, elapsed: Duration::ZERO });
    }
    if case.guest_suite {
        let tests = guest_tests(&boot.serial, matches!(case.guest, GuestImage::LinuxGuest(_)));
        match guest_tests_done(&boot.serial) {
            Some(n) if n == tests.len() && n > 0 => {}
            Some(n) => problems.push(format!("the guest says it ran {n} tests but reported {}", tests.len())),
            None => problems.push("the guest never printed `TESTS DONE` (it did not finish its suite)".into()),
        }
        for (name, outcome) in tests {
            results.push(CaseResult { name: format!("{}/{name}", case.name), outcome, elapsed: Duration::ZERO });
        }
    }
    let outcome = if problems.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(format!(
            "{} [{} after {:.1} s; files in {}]\n--- last console lines ---\n{}",
            problems.join("; "),
            case.emulator,
            boot.elapsed.as_secs_f64(),
            boot.run_dir.display(),
            boot.serial_tail(25)
        ))
    };
    results.insert(0, result(outcome));
    results
}

/// `TEST name ... ok|FAILED (why)|skipped (why)` lines, as the hypervisor
/// prints the guest's ReportTest hypercalls, and the Linux client's
/// `LINUXTEST name ... status` lines (closed by `LINUXTESTS DONE N run`).
/// `linux_guest`: the run's guest is Linux, whose console lines reach the
/// log as `guest: ` lines; only then are `guest: LINUXTEST` lines results
/// (from any other guest they would be forgeries).
pub fn guest_tests(serial: &str, linux_guest: bool) -> Vec<(String, Outcome)> {
    serial
        .lines()
        // Only LINUXTEST lines are taken from a Linux guest's output (TEST
        // lines are perfvisor's own).
        .filter_map(|l| {
            l.strip_prefix("TEST ").or_else(|| l.strip_prefix("LINUXTEST ")).or_else(|| {
                if linux_guest {
                    l.strip_prefix("guest: LINUXTEST ")
                } else {
                    None
                }
            })
        })
        .filter_map(|rest| rest.split_once(" ... "))
        .map(|(name, status)| {
            let reason = |prefix: &str| {
                let r = status.trim_start_matches(prefix).trim();
                r.strip_prefix('(').and_then(|r| r.strip_suffix(')')).unwrap_or(r).to_string()
            };
            let outcome = if status == "ok" {
                Outcome::Pass
            } else if status.starts_with("skipped") {
                Outcome::Skip(reason("skipped"))
            } else {
                Outcome::Fail(reason("FAILED"))
            };
            (name.to_string(), outcome)
        })
        .collect()
}

/// The count in the guest's closing `TESTS DONE N run, F failed` line.
fn guest_tests_done(serial: &str) -> Option<usize> {
    serial.lines().find_map(|l| l.split_once("TESTS DONE ")?.1.split_whitespace().next()?.parse().ok())
}

/// Runs `cases` on `jobs` threads; `report` is called as each finishes.
pub fn run_all(
    cases: &[Case],
    images: &HashMap<ImageKey, PathBuf>,
    run_root: &Path,
    kvm: &Result<(), String>,
    jobs: usize,
    report: &(dyn Fn(&CaseResult) + Sync),
) -> Vec<CaseResult> {
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let index = {
                    let mut n = next.lock().unwrap();
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(case) = cases.get(index) else { break };
                let case_results = match images.get(&(case.firmware, case.config, case.guest)) {
                    Some(image) => run_case(case, image, run_root, kvm),
                    None => vec![CaseResult {
                        name: case.name.to_string(),
                        outcome: Outcome::Fail("no image was built for this case".into()),
                        elapsed: Duration::ZERO,
                    }],
                };
                for result in case_results {
                    report(&result);
                    results.lock().unwrap().push(result);
                }
            });
        }
    });
    results.into_inner().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_unique_and_images_deduplicated() {
        let cases = all();
        let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cases.len());
        let images = images_needed(&cases);
        assert!(images.len() < cases.len());
        assert!(images.contains(&(Firmware::Uefi, None, GuestImage::TestKernel)));
    }

    #[test]
    fn guest_test_lines_become_outcomes() {
        let serial = "x\nTEST a ... ok\nTEST b ... FAILED (read 0x1)\nTEST c ... skipped (no PMU)\nguest: TESTS DONE 3 run, 1 failed\n";
        let t = guest_tests(serial, false);
        assert_eq!(t[0], ("a".into(), Outcome::Pass));
        assert_eq!(t[1], ("b".into(), Outcome::Fail("read 0x1".into())));
        assert_eq!(t[2], ("c".into(), Outcome::Skip("no PMU".into())));
        assert_eq!(guest_tests_done(serial), Some(3));
        let linux = "LINUXTEST linux_pmu_driver ... ok\nLINUXTEST linux_rdpmc_fixed ... FAILED (no index)\nLINUXTESTS DONE 2 run, 1 failed\n";
        let t = guest_tests(linux, false);
        assert_eq!(t[0], ("linux_pmu_driver".into(), Outcome::Pass));
        assert_eq!(t[1], ("linux_rdpmc_fixed".into(), Outcome::Fail("no index".into())));
        assert_eq!(guest_tests_done(linux), Some(2));
        // A Linux guest's lines come prefixed; its `guest: TEST` lines are not perfvisor's and do not count.
        let guest = "guest: LINUXTEST linux_no_oops ... ok\nguest: TEST forged ... ok\nguest: LINUXTESTS DONE 1 run, 0 failed\n";
        let t = guest_tests(guest, true);
        assert_eq!(t, vec![("linux_no_oops".into(), Outcome::Pass)]);
        assert!(guest_tests(guest, false).is_empty(), "from another guest they are forgeries");
        assert_eq!(guest_tests_done(guest), Some(1));
    }
}
