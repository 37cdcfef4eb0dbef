//! The emulators perfvisor boots in, and the exact command lines.
//!
//! Facts measured on the project's machines are in REFERENCE.md §5; the
//! ones these command lines depend on are repeated where they are used.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The firmware that loads the bootloader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Firmware {
    Bios,
    Uefi,
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bios => "bios",
            Self::Uefi => "uefi",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bios" => Some(Self::Bios),
            "uefi" => Some(Self::Uefi),
            _ => None,
        }
    }
}

/// Where the emulators' files are (Debian's packages; Bochs itself is
/// built by xtask, see [`set_bochs_binary`]).
pub mod paths {
    pub const QEMU: &str = "qemu-system-x86_64";
    /// OVMF as one flash image: QEMU takes it with `-bios`, Bochs as its ROM.
    pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
    pub const BOCHS_BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
    pub const BOCHS_VGABIOS: &str = "/usr/share/bochs/VGABIOS-lgpl-latest";
}

static BOCHS_BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The Bochs binary every Bochs run uses (xtask sets it to the counting
/// build, or to `--bochs PATH`). Unset: `$PERFVISOR_BOCHS`, else `bochs`.
pub fn set_bochs_binary(path: PathBuf) {
    let _ = BOCHS_BINARY.set(path);
}

fn bochs_binary() -> PathBuf {
    BOCHS_BINARY.get().cloned().unwrap_or_else(|| {
        std::env::var_os("PERFVISOR_BOCHS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("bochs"))
    })
}

/// The PMU of the Bochs CPU (tests/bochs/PMU.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BochsPmu {
    /// Stock Bochs 2.7: CPUID reports a PMU but no PMU MSR exists, unless an
    /// `msrs=` file defines them as plain registers that never count.
    Stock,
    /// The counting PMU of tests/bochs/patches (`cpu: pmu=1`).
    Counting,
    /// Counting, and the VM-exit control "save IA32_PERF_GLOBAL_CTRL"
    /// advertised (`pmu_vmx_save_global_ctrl=1`): a Sapphire Rapids feature
    /// no 2.7 model's real counterpart has, offered to test that path.
    CountingWithSaveControl,
}

/// An emulator and its CPU.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Emulator {
    /// QEMU; `kvm` = hardware acceleration with nested VMX, else TCG
    /// (which emulates neither VMX nor the PMU). `cpu` overrides `-cpu`.
    Qemu { kvm: bool, cpu: Option<String> },
    /// Bochs 2.7 with one of its predefined CPU models
    /// (`corei7_skylake_x`: PMU v4; `tigerlake`: PMU v5), its PMU, and an
    /// optional `msrs=` file of extra MSRs; `cpus` CPUs (`cpu: count=`;
    /// perfvisor runs on the first, the others wait for a SIPI).
    Bochs { model: String, pmu: BochsPmu, msrs: Option<PathBuf>, cpus: u8 },
}

impl fmt::Display for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Qemu { kvm: true, .. } => f.write_str("QEMU/KVM"),
            Self::Qemu { kvm: false, .. } => f.write_str("QEMU TCG"),
            Self::Bochs { model, pmu: BochsPmu::Stock, .. } => write!(f, "Bochs {model} (stock PMU registers)"),
            Self::Bochs { model, cpus: 2.., .. } => write!(f, "Bochs {model} (counting PMU, several CPUs)"),
            Self::Bochs { model, .. } => write!(f, "Bochs {model} (counting PMU)"),
        }
    }
}

/// The exit codes each emulator gives the two verdicts (see
/// `hypervisor/src/verdict.rs`).
pub struct VerdictCodes {
    pub pass: i32,
    pub fail: i32,
}

impl Emulator {
    pub fn verdict_codes(&self) -> VerdictCodes {
        match self {
            // isa-debug-exit: (value << 1) | 1 for 0x10 and 0x11.
            Self::Qemu { .. } => VerdictCodes { pass: 33, fail: 35 },
            // Magic breakpoint then the debugger's `quit`: 0; shutdown port: 1.
            Self::Bochs { .. } => VerdictCodes { pass: 0, fail: 1 },
        }
    }

    /// The command that boots `disk` (a per-run copy) with its files in `run_dir`.
    pub fn command(&self, firmware: Firmware, disk: &Path, run_dir: &Path, gdb: bool) -> std::io::Result<Command> {
        match self {
            Self::Qemu { kvm, cpu } => Ok(qemu_command(*kvm, cpu.as_deref(), firmware, disk, run_dir, gdb)),
            Self::Bochs { model, pmu, msrs, cpus } => {
                bochs_command(model, *pmu, msrs.as_deref(), *cpus, firmware, disk, run_dir)
            }
        }
    }
}

/// The serial console file inside a run directory.
pub const SERIAL_LOG: &str = "serial.log";

fn qemu_command(kvm: bool, cpu: Option<&str>, firmware: Firmware, disk: &Path, run_dir: &Path, gdb: bool) -> Command {
    let mut cmd = Command::new(paths::QEMU);
    cmd.args(["-machine", "q35", "-m", "256M", "-display", "none", "-no-reboot", "-monitor", "none"]);
    cmd.arg("-serial").arg(format!("file:{}", run_dir.join(SERIAL_LOG).display()));
    // The verdict port (REFERENCE.md §5).
    cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    cmd.arg("-drive").arg(format!("format=raw,file={}", disk.display()));
    if firmware == Firmware::Uefi {
        cmd.args(["-bios", paths::OVMF]);
    }
    if kvm {
        // Nested VMX and the PMU of an Intel host; `enforce` makes QEMU
        // refuse to start (with the reason) where KVM cannot give the guest VMX.
        cmd.args(["-accel", "kvm", "-cpu", cpu.unwrap_or("host,+vmx,+pmu,enforce")]);
    } else {
        cmd.args(["-accel", "tcg"]);
        if let Some(cpu) = cpu {
            cmd.args(["-cpu", cpu]);
        }
    }
    if gdb {
        // gdbstub on tcp::1234, CPU stopped until gdb says `continue`.
        cmd.args(["-s", "-S"]);
    }
    cmd
}

/// The MSRs Bochs must have as plain registers for OVMF to boot
/// (REFERENCE.md §5): IA32_PLATFORM_ID.
const UEFI_MSRS: &str =
    "# IA32_PLATFORM_ID, read by OVMF\n0x017 0 00000000 00000000 00000000 00000000 00000000 00000000\n";

/// Writes `bochsrc`, the debugger command file and (when needed) the
/// merged `msrs` file into `run_dir`, and returns the command.
fn bochs_command(
    model: &str,
    pmu: BochsPmu,
    msrs: Option<&Path>,
    cpus: u8,
    firmware: Firmware,
    disk: &Path,
    run_dir: &Path,
) -> std::io::Result<Command> {
    let mut msr_text = String::new();
    if firmware == Firmware::Uefi {
        msr_text.push_str(UEFI_MSRS);
    }
    if let Some(file) = msrs {
        // Relative paths (the case table's) are the workspace's.
        let file = &Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(file);
        let text = std::fs::read_to_string(file)
            .map_err(|e| std::io::Error::new(e.kind(), format!("msrs file {}: {e}", file.display())))?;
        msr_text.push_str(&text);
    }
    let msrs_option = if msr_text.is_empty() {
        String::new()
    } else {
        let path = run_dir.join("bochs.msrs");
        std::fs::write(&path, &msr_text)?;
        format!(", msrs=\"{}\"", path.display())
    };
    let pmu_option = match pmu {
        BochsPmu::Stock => "",
        BochsPmu::Counting => ", pmu=1",
        BochsPmu::CountingWithSaveControl => ", pmu=1, pmu_vmx_save_global_ctrl=1",
    };
    let rom = match firmware {
        Firmware::Bios => paths::BOCHS_BIOS,
        Firmware::Uefi => paths::OVMF,
    };
    let rc = format!(
        "# Written by perfvisor's runner for one run.\n\
         megs: 256\n\
         romimage: file={rom}\n\
         vgaromimage: file={vgabios}\n\
         vga: extension=vbe\n\
         ata0-master: type=disk, path=\"{disk}\", mode=flat\n\
         boot: disk\n\
         # Debian's Bochs has no `nogui`; `term` needs no X server.\n\
         display_library: term\n\
         com1: enabled=1, mode=file, dev=\"{serial}\"\n\
         port_e9_hack: enabled=1\n\
         # The pass verdict: `xchg bx, bx` stops in the debugger, whose command file quits.\n\
         magic_break: enabled=1\n\
         # Any Bochs panic ends the run (exit 1), except the term display's\n\
         # complaint about the bootloader's 24-bit VBE mode, which it cannot draw.\n\
         panic: action=fatal, term=report\n\
         sound: driver=dummy\n\
         speaker: enabled=0\n\
         # ignore_bad_msrs=0: a missing MSR raises #GP as on hardware.\n\
         cpu: model={model}, count={cpus}, ips=50000000, reset_on_triple_fault=0, ignore_bad_msrs=0{pmu_option}{msrs_option}\n\
         clock: sync=none, time0=946684800\n\
         log: \"{log}\"\n",
        vgabios = paths::BOCHS_VGABIOS,
        disk = disk.display(),
        serial = run_dir.join(SERIAL_LOG).display(),
        log = run_dir.join("bochs.log").display(),
    );
    let rc_path = run_dir.join("bochsrc");
    std::fs::write(&rc_path, rc)?;
    let cmds = run_dir.join("bochs-debugger-commands");
    std::fs::write(&cmds, "c\nquit\n")?;
    let mut cmd = Command::new(bochs_binary());
    cmd.arg("-q").arg("-f").arg(&rc_path).arg("-rc").arg(&cmds);
    cmd.current_dir(run_dir);
    Ok(cmd)
}
