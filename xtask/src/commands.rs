//! `build`, `image`, `run`, `qemu`, `bochs`.

use crate::images::{self, build_dir, kernel_elf, Builder};
use crate::setup;
use crate::{Fallible, Options};
use perfvisor_runner::boot::{boot, BootSpec, Verdict};
use perfvisor_runner::cases::GuestImage;
use perfvisor_runner::emulator::{BochsPmu, Emulator, Firmware};
use perfvisor_runner::kvm;
use std::path::PathBuf;
use std::time::Duration;

/// The Bochs CPU model used unless `--cpu` says otherwise: PMU v5.
pub const DEFAULT_BOCHS_MODEL: &str = "tigerlake";

pub fn build(args: &[String]) -> Fallible<bool> {
    Options::new(args).finish()?;
    setup::ensure_kernel_target()?;
    images::build_kernel()?;
    println!("kernel: {}", kernel_elf().display());
    Ok(true)
}

pub fn image(args: &[String]) -> Fallible<bool> {
    let mut o = Options::new(args);
    let bios = o.flag("--bios");
    let uefi = o.flag("--uefi");
    let out = o.value(&["-o", "--output"])?.map(PathBuf::from);
    let config = read_config(o.value(&["--config"])?)?;
    let linux = parse_linux_guest(&mut o)?;
    o.finish()?;
    let firmwares: Vec<Firmware> = match (bios, uefi) {
        (true, false) => vec![Firmware::Bios],
        (false, true) => vec![Firmware::Uefi],
        _ => vec![Firmware::Bios, Firmware::Uefi],
    };
    if out.is_some() && firmwares.len() != 1 {
        return Err("-o needs exactly one of --bios or --uefi".into());
    }
    let builder = Builder::new()?;
    for firmware in firmwares {
        let built = perfvisor_image(&builder, firmware, config.as_deref(), linux.as_ref())?;
        let path = match &out {
            Some(p) => {
                std::fs::copy(&built, p).map_err(|e| format!("copying to {}: {e}", p.display()))?;
                p.clone()
            }
            None => built,
        };
        println!("{} image: {}", firmware.name(), path.display());
    }
    Ok(true)
}

/// `--kernel FILE [--initrd FILE] [--append TEXT]`: a Linux guest instead of
/// the test kernel (hypervisor/src/linux.rs). Without `--initrd`: the test
/// initramfs; without `--append`: the tests' command line
/// (`crate::linux::guest_spec`).
fn parse_linux_guest(o: &mut Options) -> Fallible<Option<crate::linux::LinuxSpec>> {
    let kernel = o.value(&["--kernel"])?.map(PathBuf::from);
    let initrd = o.value(&["--initrd"])?.map(PathBuf::from);
    let append = o.value(&["--append"])?;
    let Some(kernel) = kernel else {
        if initrd.is_some() || append.is_some() {
            return Err("--initrd and --append need --kernel (a Linux guest)".into());
        }
        return Ok(None);
    };
    for (what, path) in [("kernel", Some(&kernel)), ("initrd", initrd.as_ref())] {
        if let Some(p) = path.filter(|p| !p.is_file()) {
            return Err(format!("--{what} {}: no such file", p.display()));
        }
    }
    let append = append.or(crate::linux::guest_spec().append);
    Ok(Some(crate::linux::LinuxSpec { kernel: Some(kernel), initrd, append }))
}

/// perfvisor's image with the test kernel, or with the Linux guest `linux`.
fn perfvisor_image(
    builder: &Builder,
    firmware: Firmware,
    config: Option<&str>,
    linux: Option<&crate::linux::LinuxSpec>,
) -> Fallible<PathBuf> {
    match linux {
        None => builder.image(firmware, config, GuestImage::TestKernel),
        Some(spec) => builder.linux_guest_image(firmware, config, spec, perfvisor_runner::cases::LinuxDefect::None),
    }
}

/// A Linux guest boots for minutes in Bochs: the default time limit then.
fn linux_timeout(timeout: Duration, explicit: bool, linux: bool) -> Duration {
    if linux && !explicit {
        Duration::from_secs(600)
    } else {
        timeout
    }
}

fn read_config(path: Option<String>) -> Fallible<Option<String>> {
    path.map(|p| std::fs::read_to_string(&p).map_err(|e| format!("boot config {p}: {e}"))).transpose()
}

fn parse_firmware(o: &mut Options) -> Fallible<Firmware> {
    match o.value(&["--firmware"])? {
        None => Ok(Firmware::Bios),
        Some(f) => Firmware::parse(&f).ok_or(format!("--firmware takes bios or uefi, not {f:?}")),
    }
}

fn parse_timeout(o: &mut Options, firmware: Firmware) -> Fallible<Duration> {
    match o.value(&["--timeout"])? {
        Some(s) => s.parse().map(Duration::from_secs).map_err(|_| format!("--timeout takes whole seconds, not {s:?}")),
        // Bochs+OVMF is the slowest boot (~17 s here).
        None => Ok(Duration::from_secs(if firmware == Firmware::Uefi { 180 } else { 90 })),
    }
}

/// Boots with the console streamed; exits with the verdict.
pub fn boot_interactive(
    emulator: Emulator,
    firmware: Firmware,
    image: PathBuf,
    timeout: Duration,
    gdb: bool,
) -> Fallible<bool> {
    let run_dir = build_dir().join("runs").join("interactive");
    eprintln!("xtask: booting {} in {emulator} ({} firmware); console follows", image.display(), firmware.name());
    let outcome = boot(&BootSpec { emulator, firmware, image, run_dir, timeout, echo: true, gdb, watch: Vec::new() })?;
    eprintln!();
    let files = outcome.run_dir.display();
    match outcome.verdict {
        Verdict::Pass => {
            eprintln!("xtask: verdict PASS after {:.1} s (files in {files})", outcome.elapsed.as_secs_f64());
            Ok(true)
        }
        Verdict::Fail(reason) => {
            eprintln!("xtask: verdict FAIL: {reason} (files in {files})");
            Ok(false)
        }
        Verdict::Timeout => {
            eprintln!("xtask: no verdict within {} s; stopped (files in {files})", timeout.as_secs());
            Ok(false)
        }
        Verdict::Broken(why) => {
            eprintln!("xtask: the run ended without a usable verdict: {why}");
            Ok(false)
        }
    }
}

/// QEMU/KVM if the probe boots into VMX root, else `Err(reason)`.
fn kvm_usable(builder: &Builder) -> Fallible<Result<(), String>> {
    let image = builder.image(Firmware::Bios, None, GuestImage::TestKernel)?;
    Ok(kvm::probe(&image, &build_dir().join("runs").join("kvm-probe")))
}

pub fn run(args: &[String]) -> Fallible<bool> {
    let mut o = Options::new(args);
    let choice = o.value(&["--emulator"])?.unwrap_or_else(|| "auto".into());
    let firmware = parse_firmware(&mut o)?;
    let cpu = o.value(&["--cpu"])?;
    let config = read_config(o.value(&["--config"])?)?;
    let bochs_options = BochsOptions::parse(&mut o)?;
    let linux = parse_linux_guest(&mut o)?;
    let explicit = args.iter().any(|a| a == "--timeout");
    let timeout = linux_timeout(parse_timeout(&mut o, firmware)?, explicit, linux.is_some());
    o.finish()?;
    setup::ensure_emulators()?;
    let builder = Builder::new()?;
    let bochs = |cpu: Option<String>| bochs_options.emulator(cpu);
    let emulator = match choice.as_str() {
        "bochs" => bochs(cpu)?,
        "qemu" => match kvm_usable(&builder)? {
            Ok(()) => Emulator::Qemu { kvm: true, cpu },
            Err(why) => {
                eprintln!("xtask: QEMU/KVM cannot run perfvisor here ({why}); using QEMU TCG, which has no VMX");
                Emulator::Qemu { kvm: false, cpu }
            }
        },
        "auto" => match kvm_usable(&builder)? {
            Ok(()) => Emulator::Qemu { kvm: true, cpu },
            Err(why) => {
                eprintln!("xtask: QEMU/KVM cannot run perfvisor here ({why}); using Bochs, which emulates VMX");
                bochs(cpu)?
            }
        },
        other => return Err(format!("--emulator takes auto, qemu or bochs, not {other:?}")),
    };
    let image = perfvisor_image(&builder, firmware, config.as_deref(), linux.as_ref())?;
    boot_interactive(emulator, firmware, image, timeout, false)
}

pub fn qemu(args: &[String]) -> Fallible<bool> {
    let mut o = Options::new(args);
    let gdb = o.flag("--gdb");
    let force_tcg = o.flag("--tcg");
    let firmware = parse_firmware(&mut o)?;
    let config = read_config(o.value(&["--config"])?)?;
    let timeout = parse_timeout(&mut o, firmware)?;
    o.finish()?;
    setup::ensure_emulators()?;
    let builder = Builder::new()?;
    let kvm = if force_tcg {
        false
    } else {
        match kvm_usable(&builder)? {
            Ok(()) => true,
            Err(why) => {
                eprintln!(
                    "xtask: QEMU/KVM cannot run perfvisor here ({why}); using TCG (no VMX: expect the no-VMX verdict)"
                );
                false
            }
        }
    };
    let image = builder.image(firmware, config.as_deref(), GuestImage::TestKernel)?;
    if gdb {
        eprintln!(
            "xtask: QEMU waits for gdb on localhost:1234. In another terminal:\n    \
             gdb -ex 'symbol-file -o 0xffff800000000000 {}' -ex 'target remote :1234'\n\
             (the kernel is loaded at 0xffff800000000000; see KERNEL_BASE in hypervisor/src/main.rs)",
            kernel_elf().display()
        );
    }
    boot_interactive(Emulator::Qemu { kvm, cpu: None }, firmware, image, timeout, gdb)
}

pub fn bochs(args: &[String]) -> Fallible<bool> {
    let mut o = Options::new(args);
    let cpu = o.value(&["--cpu"])?;
    let firmware = parse_firmware(&mut o)?;
    let bochs_options = BochsOptions::parse(&mut o)?;
    let config = read_config(o.value(&["--config"])?)?;
    let linux = parse_linux_guest(&mut o)?;
    let explicit = args.iter().any(|a| a == "--timeout");
    let timeout = linux_timeout(parse_timeout(&mut o, firmware)?, explicit, linux.is_some());
    o.finish()?;
    setup::ensure_emulators()?;
    let emulator = bochs_options.emulator(cpu)?;
    let builder = Builder::new()?;
    let image = perfvisor_image(&builder, firmware, config.as_deref(), linux.as_ref())?;
    eprintln!("xtask: bochsrc and logs go to {}", build_dir().join("runs/interactive").display());
    boot_interactive(emulator, firmware, image, timeout, false)
}

/// `cargo fmt --check` and `cargo clippy -D warnings` over every crate:
/// the host crates, the kernel for its real target, and boot/ (nightly).
pub fn lint(args: &[String]) -> Fallible<bool> {
    Options::new(args).finish()?;
    setup::ensure_kernel_target()?;
    let nightly = setup::ensure_nightly()?;
    let root = crate::workspace_root();
    let boot = root.join("boot");
    let cargo = |dir: &std::path::Path, toolchain: Option<&str>, args: &[&str]| {
        let mut cmd = std::process::Command::new("cargo");
        if let Some(t) = toolchain {
            cmd.arg(format!("+{t}")).env_remove("RUSTUP_TOOLCHAIN");
        }
        cmd.args(args).current_dir(dir);
        cmd
    };
    let checks: Vec<(&str, std::process::Command)> = vec![
        ("cargo fmt --check", cargo(&root, None, &["fmt", "--all", "--check"])),
        ("cargo fmt --check (boot/)", cargo(&boot, None, &["fmt", "--check"])),
        (
            "cargo clippy --workspace --all-targets",
            cargo(&root, None, &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
        ),
        (
            "cargo clippy (kernel, x86_64-unknown-none)",
            cargo(
                &root,
                None,
                &["clippy", "-p", "hypervisor", "--target", setup::KERNEL_TARGET, "--", "-D", "warnings"],
            ),
        ),
        (
            "cargo clippy (guest test kernel, x86_64-unknown-none)",
            cargo(
                &root,
                None,
                &["clippy", "-p", "perfvisor-guest", "--target", setup::KERNEL_TARGET, "--", "-D", "warnings"],
            ),
        ),
        (
            "cargo clippy (native Linux boot kernel, x86_64-unknown-none)",
            cargo(
                &root,
                None,
                &["clippy", "-p", "perfvisor-linux-native", "--target", setup::KERNEL_TARGET, "--", "-D", "warnings"],
            ),
        ),
        ("cargo clippy (boot/)", cargo(&boot, Some(&nightly), &["clippy", "--", "-D", "warnings"])),
    ];
    let mut clean = true;
    for (what, mut cmd) in checks {
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        println!("{} lint: {what}", if ok { "PASS" } else { "FAIL" });
        clean &= ok;
    }
    Ok(clean)
}

/// How a command's Bochs runs: `--bochs PATH`, `--pmu counting|stock`, `--msrs FILE`.
pub struct BochsOptions {
    binary: Option<String>,
    pmu: BochsPmu,
    msrs: Option<PathBuf>,
}

impl BochsOptions {
    pub fn parse(o: &mut Options) -> Fallible<Self> {
        let binary = o.value(&["--bochs"])?;
        let pmu = match o.value(&["--pmu"])?.as_deref() {
            None | Some("counting") => BochsPmu::Counting,
            Some("counting-save") => BochsPmu::CountingWithSaveControl,
            Some("stock") => BochsPmu::Stock,
            Some(other) => return Err(format!("--pmu takes counting, counting-save or stock, not {other:?}")),
        };
        let msrs = o.value(&["--msrs"])?.map(PathBuf::from);
        Ok(Self { binary, pmu, msrs })
    }

    /// Bochs with `cpu` (default: tigerlake), the Bochs binary resolved
    /// (built if need be). A stock PMU gets the model's committed msrs file
    /// unless `--msrs` names another: the fallback mode's plain registers.
    pub fn emulator(&self, cpu: Option<String>) -> Fallible<Emulator> {
        crate::bochs_build::resolve(self.binary.clone())?;
        let model = cpu.unwrap_or_else(|| DEFAULT_BOCHS_MODEL.into());
        let msrs = match self.pmu {
            BochsPmu::Stock => self.msrs.clone().or_else(|| default_msrs(&model)),
            _ => self.msrs.clone(),
        };
        Ok(Emulator::Bochs { model, pmu: self.pmu, msrs, cpus: 1 })
    }
}

/// The committed msrs file of a Bochs model (its PMU MSRs as registers, so
/// the vPMU is on), when there is one; said on the console.
fn default_msrs(model: &str) -> Option<PathBuf> {
    let relative = perfvisor_runner::bochs_msrs::path(model);
    let path = crate::workspace_root().join(&relative);
    if path.exists() {
        eprintln!("xtask: Bochs gets its PMU MSRs from {relative} (--msrs FILE for another)");
        Some(path)
    } else {
        None
    }
}

/// Writes tests/bochs/<model>.msrs for every Bochs model perfvisor tests.
pub fn msrs(args: &[String]) -> Fallible<bool> {
    use perfvisor_runner::bochs_msrs;
    Options::new(args).finish()?;
    for m in &bochs_msrs::MODELS {
        let path = crate::workspace_root().join(bochs_msrs::path(m.model));
        std::fs::create_dir_all(path.parent().expect("a file path has a parent")).map_err(|e| e.to_string())?;
        std::fs::write(&path, bochs_msrs::generate(m)).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(true)
}

/// `cargo xtask pmu-report`: the PMU conformance checks booted natively and
/// as perfvisor's guest on the same machine, side by side. On an Intel box
/// with KVM (or bare metal images) this shows whether the vPMU behaves as
/// the real PMU does.
pub fn pmu_report(args: &[String]) -> Fallible<bool> {
    let mut o = Options::new(args);
    let choice = o.value(&["--emulator"])?.unwrap_or_else(|| "auto".into());
    let cpu = o.value(&["--cpu"])?;
    let bochs_options = BochsOptions::parse(&mut o)?;
    o.finish()?;
    setup::ensure_emulators()?;
    let builder = Builder::new()?;
    let bochs = |cpu: Option<String>| bochs_options.emulator(cpu);
    let emulator = match choice.as_str() {
        "bochs" => bochs(cpu)?,
        "qemu" | "auto" => match kvm_usable(&builder)? {
            Ok(()) => Emulator::Qemu { kvm: true, cpu },
            Err(why) if choice == "auto" => {
                eprintln!("xtask: QEMU/KVM cannot run perfvisor here ({why}); using Bochs");
                bochs(cpu)?
            }
            Err(why) => return Err(format!("QEMU/KVM cannot run perfvisor here: {why}")),
        },
        other => return Err(format!("--emulator takes auto, qemu or bochs, not {other:?}")),
    };
    let mut columns = Vec::new();
    for (label, guest) in [("native", GuestImage::NoHypervisor), ("perfvisor guest", GuestImage::TestKernel)] {
        let image = builder.image(Firmware::Bios, None, guest)?;
        let outcome = boot(&BootSpec {
            emulator: emulator.clone(),
            firmware: Firmware::Bios,
            image,
            run_dir: build_dir().join("runs").join(format!("pmu-report-{}", label.replace(' ', "-"))),
            timeout: Duration::from_secs(180),
            echo: false,
            gdb: false,
            watch: Vec::new(),
        })?;
        let tests: Vec<(String, perfvisor_runner::cases::Outcome)> =
            perfvisor_runner::cases::guest_tests(&outcome.serial, false)
                .into_iter()
                .filter(|(name, _)| name.starts_with("pmu_"))
                .collect();
        columns.push((label, tests, outcome.verdict));
    }
    use crate::side_by_side::{rows, show};
    println!("PMU conformance on {emulator}: natively and as perfvisor's guest");
    println!("{:<40} {:<45} perfvisor guest", "check", "native");
    for (name, native, guest) in rows(&columns[0].1, &columns[1].1) {
        println!("{name:<40} {:<45} {}", show(native), show(guest));
    }
    println!("verdicts: native {:?}, guest {:?}", columns[0].2, columns[1].2);
    Ok(true)
}
