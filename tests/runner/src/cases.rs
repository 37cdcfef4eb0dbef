//! The end-to-end cases: each boots an image and asserts on named console
//! lines and on the verdict.

use crate::boot::{boot, BootSpec, Verdict};
use crate::emulator::{Emulator, Firmware};
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
}

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
    /// Boot config text passed as the ramdisk (hypervisor/src/config.rs).
    pub config: Option<&'static str>,
    pub expect: Expect,
    /// Substrings that must each appear in some console line.
    pub lines: &'static [&'static str],
    pub timeout: Duration,
    pub needs: Needs,
}

/// An image to build: firmware plus optional boot config.
pub type ImageKey = (Firmware, Option<&'static str>);

fn bochs(model: &str) -> Emulator {
    Emulator::Bochs {
        model: model.to_string(),
        msrs: None,
    }
}

const TCG: Emulator = Emulator::Qemu {
    kvm: false,
    cpu: None,
};

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
    vec![
        Case {
            name: "bochs-skylake-x-uefi",
            emulator: bochs("corei7_skylake_x"),
            firmware: Firmware::Uefi,
            config: None,
            expect: Expect::Pass,
            lines: &[
                "perfvisor 0.1.0 (ABI 1): hypervisor starting",
                // OVMF leaves IA32_FEATURE_CONTROL unlocked; perfvisor locks it.
                "vmx: IA32_FEATURE_CONTROL was unlocked: set to 0x5",
                "pmu: version 4, 4 GP counters x 48 bits",
                VMX_ROOT,
            ],
            timeout: BOCHS_UEFI_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-skylake-x-bios",
            emulator: bochs("corei7_skylake_x"),
            firmware: Firmware::Bios,
            config: None,
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
                // Bochs sets PDCM but has no MSR 0x345: the #GP must be caught.
                "pmu: IA32_PERF_CAPABILITIES (MSR 0x345) read raised #GP",
                VMX_ROOT,
            ],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "bochs-tigerlake-bios",
            emulator: bochs("tigerlake"),
            firmware: Firmware::Bios,
            config: None,
            expect: Expect::Pass,
            lines: &[
                "cpu: GenuineIntel",
                "pmu: CPUID.0AH eax=0x08300805 ebx=0x00000000 ecx=0x0000000f edx=0x00008604",
                "pmu: version 5, 8 GP counters x 48 bits, fixed counters {0,1,2,3} x 48 bits",
                VMX_ROOT,
            ],
            timeout: BOCHS_BIOS_LIMIT,
            needs: Needs::Nothing,
        },
        Case {
            name: "qemu-tcg-bios-no-vmx",
            emulator: TCG,
            firmware: Firmware::Bios,
            config: None,
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
            expect: Expect::Fail("bad boot config"),
            lines: &["config: line 2: \"frobnicate=1\": unknown key (known: log, selftest)"],
            timeout: QEMU_LIMIT,
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
            expect: Expect::Pass,
            lines: &[VMX_ROOT],
            timeout: QEMU_LIMIT,
            needs: Needs::NestedKvm,
        },
    ]
}

/// The images the cases need.
pub fn images_needed(cases: &[Case]) -> Vec<ImageKey> {
    let mut keys: Vec<ImageKey> = Vec::new();
    for c in cases {
        if !keys.contains(&(c.firmware, c.config)) {
            keys.push((c.firmware, c.config));
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

/// Runs one case: boot, then compare verdict and console with the expectation.
pub fn run_case(
    case: &Case,
    image: &Path,
    run_root: &Path,
    kvm: &Result<(), String>,
) -> CaseResult {
    let started = Instant::now();
    let result = |outcome| CaseResult {
        name: case.name.to_string(),
        outcome,
        elapsed: started.elapsed(),
    };
    if case.needs == Needs::NestedKvm {
        if let Err(why) = kvm {
            return result(Outcome::Skip(format!(
                "needs QEMU/KVM with nested VMX: {why}"
            )));
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
    let outcome = match boot(&spec) {
        Err(e) => Outcome::Fail(format!("could not boot: {e}")),
        Ok(boot) => {
            let verdict_ok = match (&case.expect, &boot.verdict) {
                (Expect::Pass, Verdict::Pass) => Ok(()),
                (Expect::Fail(want), Verdict::Fail(got)) if want == got => Ok(()),
                (expect, got) => Err(format!("expected verdict {expect:?}, got {got:?}")),
            };
            let missing = case
                .lines
                .iter()
                .find(|needle| !boot.serial.lines().any(|l| l.contains(*needle)));
            match (verdict_ok, missing) {
                (Ok(()), None) => Outcome::Pass,
                (verdict, missing) => {
                    let mut why = String::new();
                    if let Err(v) = verdict {
                        why.push_str(&v);
                    }
                    if let Some(m) = missing {
                        if !why.is_empty() {
                            why.push_str("; ");
                        }
                        why.push_str(&format!("console lacks {m:?}"));
                    }
                    Outcome::Fail(format!(
                        "{why} [{} after {:.1} s; files in {}]\n--- last console lines ---\n{}",
                        case.emulator,
                        boot.elapsed.as_secs_f64(),
                        boot.run_dir.display(),
                        boot.serial_tail(25)
                    ))
                }
            }
        }
    };
    result(outcome)
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
                let result = match images.get(&(case.firmware, case.config)) {
                    Some(image) => run_case(case, image, run_root, kvm),
                    None => CaseResult {
                        name: case.name.to_string(),
                        outcome: Outcome::Fail("no image was built for this case".into()),
                        elapsed: Duration::ZERO,
                    },
                };
                report(&result);
                results.lock().unwrap().push(result);
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
        assert!(images.contains(&(Firmware::Uefi, None)));
    }
}
