//! `cargo xtask`: perfvisor's developer CLI. Run `cargo xtask help`.

mod bench;
mod bench_linux;
mod bench_pmu;
mod bochs_build;
mod commands;
mod images;
mod linux;
mod linux_report;
mod linux_runs;
mod setup;
mod side_by_side;
mod test;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Errors are one readable message for the user.
pub type Fallible<T> = Result<T, String>;

const HELP: &str = "\
cargo xtask <command> [options]

  build                       build the kernel (target/x86_64-unknown-none/release/hypervisor)
  image [--bios|--uefi] [-o PATH] [--config FILE] [LINUX GUEST]
                              build a disk image (both firmwares when neither flag is given)
  run [--emulator auto|qemu|bochs] [--firmware bios|uefi] [--cpu MODEL]
      [--config FILE] [BOCHS OPTIONS] [--timeout SECS] [LINUX GUEST]
                              boot perfvisor, stream its serial console, exit with its verdict
                              (auto: QEMU/KVM when this host can really run a VMX guest, else Bochs;
                              MODEL is a Bochs CPU model, default tigerlake, or a QEMU -cpu value)
  qemu [--gdb] [--tcg] [--firmware bios|uefi] [--config FILE]
                              boot in QEMU: KVM with nested VMX and the PMU when usable, else TCG;
                              --gdb waits for gdb on :1234 and prints how to attach
  bochs [--cpu MODEL] [--firmware bios|uefi] [BOCHS OPTIONS] [--config FILE] [--timeout SECS]
        [LINUX GUEST]         boot in Bochs (bochsrc written for you; console echoed)
                              LINUX GUEST: --kernel FILE [--initrd FILE] [--append TEXT] makes a Linux
                              kernel (bzImage or vmlinux) perfvisor's guest instead of the test kernel;
                              defaults: the LINUXTEST initramfs and the tests' command line (which
                              adds hpet=disable pci=off: the guest gets no device); time limit 600 s
  test [--filter TEXT] [--no-host] [--jobs N] [--bochs PATH]
                              host unit tests + end-to-end boots; last line `N passed, N failed`
  lint                        cargo fmt --check and clippy -D warnings over every crate
  pmu-report [--emulator auto|qemu|bochs] [--cpu MODEL] [BOCHS OPTIONS]
                              the PMU conformance checks natively and as perfvisor's guest, side by side
  linux-native [--cpu MODEL] [--kernel FILE] [--initrd FILE] [--append TEXT] [BOCHS OPTIONS]
                              boot a stock Debian kernel (or FILE) natively in Bochs with the
                              LINUXTEST initramfs; `cargo xtask linux-native --help` for more
  linux-report [--cpu MODEL] [BOCHS OPTIONS] [--from-runs]
                              Linux's PMU dmesg lines and LINUXTEST checks natively and as perfvisor's
                              guest, side by side; a difference outside the allowed table fails
                              (--from-runs: the logs in build/runs/; `cargo xtask linux-report --help`)
  msrs                        regenerate the Bochs msrs files in tests/bochs/ from the models' PMU layouts
  bench boot [--runs N]       median seconds to the first console line and to VMX root
  bench exits [--cpu MODEL]   instructions per CPUID/RDMSR/VMCALL exit, measured by the guest in Bochs
  bench bochs [--runs N] [--cpu MODEL]
                              the counting Bochs' speed with its PMU on vs off, and its build time
  bench pmu-switch            PMU instructions per VM exit/entry and per context switch (SDM model)
  bench linux [--cpu MODEL] [BOCHS OPTIONS] [--from-runs]
                              Linux's boot to /init under perfvisor vs natively (Bochs TSC ticks) and
                              perfvisor's VM exits by reason per phase, per idle second and per PMI
  help                        this text

BOCHS OPTIONS: Bochs is built once from tests/bochs/vendor + tests/bochs/patches (a counting PMU,
tests/bochs/PMU.md) into ~/.cache/perfvisor (PERFVISOR_CACHE); 3-6 minutes the first time.
  --bochs PATH                another Bochs binary (also PERFVISOR_BOCHS), e.g. Debian's /usr/bin/bochs
  --pmu counting|counting-save|stock
                              the counting PMU (default), plus the VM-exit 'save IA32_PERF_GLOBAL_CTRL'
                              control, or stock 2.7 (PMU MSRs as the model's msrs file of plain registers)
  --msrs FILE                 extra MSRs as plain registers (Bochs' cpu: msrs=)

Boot configs (--config) are text files: `log=debug`, `selftest=panic` (see hypervisor/src/config.rs).
Exit codes: 0 pass, 1 fail, 2 usage or setup error.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        println!("{HELP}");
        return ExitCode::from(2);
    };
    let wants_help = rest.iter().any(|a| a == "--help" || a == "-h");
    if wants_help && !matches!(command.as_str(), "linux-native" | "linux-report") {
        return match command_help(command) {
            Some(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("xtask: error: unknown command {command:?}\n\n{HELP}");
                ExitCode::from(2)
            }
        };
    }
    let result = match command.as_str() {
        "build" => commands::build(rest),
        "image" => commands::image(rest),
        "run" => commands::run(rest),
        "qemu" => commands::qemu(rest),
        "bochs" => commands::bochs(rest),
        "lint" => commands::lint(rest),
        "msrs" => commands::msrs(rest),
        "pmu-report" => commands::pmu_report(rest),
        "linux-native" => linux::linux_native(rest),
        "linux-report" => linux_report::linux_report(rest),
        "test" => test::test(rest),
        "bench" => bench::bench(rest),
        "help" | "--help" | "-h" => {
            println!("{HELP}");
            Ok(true)
        }
        other => Err(format!("unknown command {other:?}\n\n{HELP}")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `cargo xtask COMMAND --help`: that command's lines of [`HELP`] (every
/// variant, e.g. all `bench` benchmarks), the Bochs options where it takes
/// them, and the exit codes.
fn command_help(command: &str) -> Option<String> {
    let mut out = String::new();
    let mut in_block = false;
    for line in HELP.lines() {
        let starts_command = line.starts_with("  ") && !line.starts_with("   ");
        if starts_command {
            let name = line.split_whitespace().next().unwrap_or("");
            in_block = name == command;
        } else if line.trim().is_empty() || !line.starts_with(' ') {
            in_block = false;
        }
        if in_block {
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        return None;
    }
    let mut text = format!("cargo xtask {command} [options]\n\n{out}");
    if out.contains("BOCHS OPTIONS") {
        let bochs = HELP.split("BOCHS OPTIONS:").nth(1)?.split("\n\n").next()?;
        text.push_str(&format!("\nBOCHS OPTIONS:{bochs}\n"));
    }
    text.push_str("\nExit codes: 0 pass, 1 fail, 2 usage or setup error.");
    Some(text)
}

/// The workspace root (xtask's manifest is one level down).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs a command, turning a non-zero exit into an error naming `what`.
pub fn run_checked(cmd: &mut Command, what: &str) -> Fallible<()> {
    let status = cmd.status().map_err(|e| format!("{what}: could not start {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// A tiny option parser: `--flag`, `--key value`, `-o value`.
pub struct Options {
    args: Vec<String>,
}

impl Options {
    pub fn new(args: &[String]) -> Self {
        Self { args: args.to_vec() }
    }

    /// Removes `--name` if present.
    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.args.len();
        self.args.retain(|a| a != name);
        before != self.args.len()
    }

    /// Removes `--name VALUE` and returns VALUE.
    pub fn value(&mut self, names: &[&str]) -> Fallible<Option<String>> {
        let Some(i) = self.args.iter().position(|a| names.contains(&a.as_str())) else {
            return Ok(None);
        };
        if i + 1 >= self.args.len() {
            return Err(format!("{} needs a value", self.args[i]));
        }
        let value = self.args.remove(i + 1);
        self.args.remove(i);
        Ok(Some(value))
    }

    /// Everything must have been consumed.
    pub fn finish(self) -> Fallible<()> {
        match self.args.first() {
            None => Ok(()),
            Some(a) => Err(format!("unexpected argument {a:?} (see `cargo xtask help`)")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_has_help() {
        for command in [
            "build",
            "image",
            "run",
            "qemu",
            "bochs",
            "test",
            "lint",
            "pmu-report",
            "linux-report",
            "msrs",
            "bench",
            "help",
        ] {
            let text = super::command_help(command).unwrap_or_else(|| panic!("no help for {command}"));
            assert!(text.contains(&format!("  {command}")), "{command}: {text}");
        }
        assert!(super::command_help("bench").unwrap().contains("bench bochs"));
        assert!(super::command_help("bench").unwrap().contains("bench linux"));
        assert!(super::command_help("run").unwrap().contains("--bochs PATH"));
        assert!(super::command_help("frobnicate").is_none());
    }
}
