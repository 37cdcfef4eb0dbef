//! Building the kernel and its disk images.

use crate::setup::{self, KERNEL_TARGET};
use crate::{run_checked, workspace_root, Fallible};
use perfvisor_runner::cases::GuestImage;
use perfvisor_runner::emulator::Firmware;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Command;

/// The build output directory (images, run directories).
pub fn build_dir() -> PathBuf {
    workspace_root().join("build")
}

/// The kernel ELF with debug info (what gdb loads).
pub fn kernel_elf() -> PathBuf {
    workspace_root().join("target").join(KERNEL_TARGET).join("release").join("hypervisor")
}

/// What image building needs, prepared once per xtask run.
pub struct Builder {
    stripped_kernel: PathBuf,
    stripped_native: PathBuf,
    stripped_guest: PathBuf,
    boot_tool: PathBuf,
    nightly: String,
}

impl Builder {
    /// Builds the kernel and the image tool; images come from [`Builder::image`].
    pub fn new() -> Fallible<Self> {
        setup::ensure_kernel_target()?;
        let nightly = setup::ensure_nightly()?;
        build_kernel()?;
        let dir = build_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // The bootloader copies the whole ELF into the image and BIOS loads
        // it sector by sector: debug info makes a Bochs boot ~10x slower.
        let stripped_kernel = dir.join("hypervisor.stripped.elf");
        run_checked(
            Command::new(setup::llvm_objcopy(&nightly)?).arg("--strip-debug").arg(kernel_elf()).arg(&stripped_kernel),
            "llvm-objcopy --strip-debug",
        )?;
        run_checked(
            Command::new("cargo")
                .args(["build", "--release", "--package", "perfvisor-guest", "--bin", "perfvisor-pmu-native"])
                .args(["--target", KERNEL_TARGET])
                .current_dir(workspace_root()),
            "cargo build (native PMU conformance kernel)",
        )?;
        let stripped_native = dir.join("perfvisor-pmu-native.stripped.elf");
        run_checked(
            Command::new(setup::llvm_objcopy(&nightly)?)
                .arg("--strip-debug")
                .arg(workspace_root().join("target").join(KERNEL_TARGET).join("release").join("perfvisor-pmu-native"))
                .arg(&stripped_native),
            "llvm-objcopy --strip-debug (native kernel)",
        )?;
        build_guest()?;
        let stripped_guest = dir.join("perfvisor-guest.stripped.elf");
        run_checked(
            Command::new(setup::llvm_objcopy(&nightly)?).arg("--strip-debug").arg(guest_elf()).arg(&stripped_guest),
            "llvm-objcopy --strip-debug (guest)",
        )?;
        let boot_tool = build_boot_tool(&nightly)?;
        Ok(Self { stripped_kernel, stripped_native, stripped_guest, boot_tool, nightly })
    }

    /// A disk image for `firmware` whose ramdisk bundles `config` (the boot
    /// config) and `guest` (see hypervisor/src/config.rs for the format).
    pub fn image(&self, firmware: Firmware, config: Option<&str>, guest: GuestImage) -> Fallible<PathBuf> {
        if guest == GuestImage::LinuxNative {
            // The guest's command line natively too: the same kernel,
            // initramfs and command line on both sides, so `linux-report`
            // and `bench linux` compare like with like (`pci=off` alone
            // changes what ACPI prints during boot).
            return self.linux_native_image(firmware, &crate::linux::guest_spec());
        }
        if let GuestImage::LinuxGuest(defect) = guest {
            return self.linux_guest_image(firmware, config, &crate::linux::guest_spec(), defect);
        }
        let dir = build_dir().join("images");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut h = DefaultHasher::new();
        (config, guest).hash(&mut h);
        let stem = format!("perfvisor-{}-{:08x}", firmware.name(), h.finish() as u32);
        let image = dir.join(format!("{stem}.img"));
        let mut cmd = Command::new(&self.boot_tool);
        let kernel = if guest == GuestImage::NoHypervisor { &self.stripped_native } else { &self.stripped_kernel };
        cmd.arg("--kernel").arg(kernel);
        let guest_bytes = match guest {
            GuestImage::None | GuestImage::NoHypervisor => None,
            GuestImage::TestKernel => Some(
                std::fs::read(&self.stripped_guest)
                    .map_err(|e| format!("reading {}: {e}", self.stripped_guest.display()))?,
            ),
            // Deliberately not an ELF executable: the loader must refuse it in words.
            GuestImage::Malformed => Some(b"\x7fELF but not really an executable".to_vec()),
            GuestImage::MalformedElf(defect) => {
                let elf = std::fs::read(&self.stripped_guest)
                    .map_err(|e| format!("reading {}: {e}", self.stripped_guest.display()))?;
                Some(perfvisor_runner::malformed_elf::corrupt(&elf, defect).map_err(|e| format!("{defect:?}: {e}"))?)
            }
            GuestImage::LinuxNative | GuestImage::LinuxGuest(_) => unreachable!("handled above"),
        };
        // --- nonce (issue 11): perfvisor's ramdisk always carries the nonce slot ---
        let nonce_slot = guest != GuestImage::NoHypervisor;
        if config.is_some() || guest_bytes.is_some() || nonce_slot {
            let path = dir.join(format!("{stem}.ramdisk"));
            std::fs::write(&path, bundle(config.unwrap_or(""), guest_bytes.as_deref(), nonce_slot))
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            cmd.arg("--ramdisk").arg(path);
        }
        cmd.arg(format!("--{}", firmware.name())).arg(&image);
        run_checked(cmd.stdout(std::process::Stdio::null()), "perfvisor-boot")?;
        Ok(image)
    }
}

// --- Linux on the counting Bochs (xtask/src/linux.rs) ---
impl Builder {
    /// A builder for Linux-native images only: the image tool, not
    /// perfvisor's kernels (`cargo xtask linux-native`).
    pub fn for_linux_native() -> Fallible<Self> {
        setup::ensure_kernel_target()?;
        let nightly = setup::ensure_nightly()?;
        let boot_tool = build_boot_tool(&nightly)?;
        let none = PathBuf::new();
        Ok(Self {
            stripped_kernel: none.clone(),
            stripped_native: none.clone(),
            stripped_guest: none,
            boot_tool,
            nightly,
        })
    }

    /// A disk image whose kernel is tests/linux-native and whose ramdisk is
    /// the Linux bundle of `spec` (kernel, initrd, command line).
    pub fn linux_native_image(&self, firmware: Firmware, spec: &crate::linux::LinuxSpec) -> Fallible<PathBuf> {
        run_checked(
            Command::new("cargo")
                .args(["build", "--release", "--package", "perfvisor-linux-native", "--target", KERNEL_TARGET])
                .current_dir(workspace_root()),
            "cargo build (native Linux boot kernel)",
        )?;
        let dir = build_dir().join("images");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let stripped = build_dir().join("perfvisor-linux-native.stripped.elf");
        run_checked(
            Command::new(setup::llvm_objcopy(&self.nightly)?)
                .arg("--strip-debug")
                .arg(workspace_root().join("target").join(KERNEL_TARGET).join("release").join("perfvisor-linux-native"))
                .arg(&stripped),
            "llvm-objcopy --strip-debug (native Linux boot kernel)",
        )?;
        let mut h = DefaultHasher::new();
        spec.hash(&mut h);
        let stem = format!("linux-native-{}-{:08x}", firmware.name(), h.finish() as u32);
        let ramdisk = dir.join(format!("{stem}.ramdisk"));
        std::fs::write(&ramdisk, crate::linux::bundle(spec)?)
            .map_err(|e| format!("writing {}: {e}", ramdisk.display()))?;
        let image = dir.join(format!("{stem}.img"));
        run_checked(
            Command::new(&self.boot_tool)
                .arg("--kernel")
                .arg(&stripped)
                .arg("--ramdisk")
                .arg(&ramdisk)
                .arg(format!("--{}", firmware.name()))
                .arg(&image)
                .stdout(std::process::Stdio::null()),
            "perfvisor-boot (Linux native)",
        )?;
        Ok(image)
    }
    /// A perfvisor disk image whose ramdisk carries a Linux guest: the boot
    /// config, the Linux parts of `spec` (hypervisor/src/linux.rs), the nonce
    /// slot; `defect` spoils the bundle for the loader's refusal cases.
    pub fn linux_guest_image(
        &self,
        firmware: Firmware,
        config: Option<&str>,
        spec: &crate::linux::LinuxSpec,
        defect: perfvisor_runner::cases::LinuxDefect,
    ) -> Fallible<PathBuf> {
        use perfvisor_runner::cases::LinuxDefect;
        let dir = build_dir().join("images");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut h = DefaultHasher::new();
        (spec, config, defect).hash(&mut h);
        let stem = format!("perfvisor-linux-{}-{:08x}", firmware.name(), h.finish() as u32);
        let mut parts = vec![("config", config.unwrap_or("").as_bytes().to_vec())];
        for (name, bytes) in crate::linux::bundle_parts(spec)? {
            match (defect, name) {
                (LinuxDefect::MalformedKernel, "vmlinux-headers") => {
                    parts.push((name, b"this is not an ELF kernel".to_vec()))
                }
                (LinuxDefect::NoInitrd, "initrd" | "initrd.lz4") => {}
                (LinuxDefect::KernelPanics, "cmdline") => {
                    let mut line = bytes;
                    line.push(b' ');
                    line.extend_from_slice(perfvisor_runner::cases::LINUX_PANIC_APPEND.as_bytes());
                    parts.push((name, line))
                }
                _ => parts.push((name, bytes)),
            }
        }
        parts.push(("nonce", perfvisor_runner::boot::NONCE_SLOT.to_vec()));
        let ramdisk = dir.join(format!("{stem}.ramdisk"));
        std::fs::write(&ramdisk, crate::linux::write_bundle(&parts))
            .map_err(|e| format!("writing {}: {e}", ramdisk.display()))?;
        let image = dir.join(format!("{stem}.img"));
        run_checked(
            Command::new(&self.boot_tool)
                .arg("--kernel")
                .arg(&self.stripped_kernel)
                .arg("--ramdisk")
                .arg(&ramdisk)
                .arg(format!("--{}", firmware.name()))
                .arg(&image)
                .stdout(std::process::Stdio::null()),
            "perfvisor-boot (Linux guest)",
        )?;
        Ok(image)
    }
}

// --- end Linux ---

/// The ramdisk bundle: header lines `name length`, an empty line, the
/// parts; with `nonce_slot`, the placeholder the runner patches per run
/// (`perfvisor_runner::boot::NONCE_SLOT`).
fn bundle(config: &str, guest: Option<&[u8]>, nonce_slot: bool) -> Vec<u8> {
    let slot = perfvisor_runner::boot::NONCE_SLOT;
    let mut header = format!("#perfvisor-bundle v1\nconfig {}\n", config.len());
    if let Some(g) = guest {
        header.push_str(&format!("guest {}\n", g.len()));
    }
    if nonce_slot {
        header.push_str(&format!("nonce {}\n", slot.len()));
    }
    header.push('\n');
    let mut out = header.into_bytes();
    out.extend_from_slice(config.as_bytes());
    out.extend_from_slice(guest.unwrap_or_default());
    if nonce_slot {
        out.extend_from_slice(slot);
    }
    out
}

/// The guest test kernel ELF (with debug info).
pub fn guest_elf() -> PathBuf {
    workspace_root().join("target").join(KERNEL_TARGET).join("release").join("perfvisor-guest")
}

/// The guest test kernel: an ET_EXEC at a fixed address, hence a static
/// relocation model for the final crate (tests/guest/link.ld places it).
pub fn build_guest() -> Fallible<()> {
    run_checked(
        Command::new("cargo")
            .args(["rustc", "--release", "--package", "perfvisor-guest", "--bin", "perfvisor-guest"])
            .args(["--target", KERNEL_TARGET, "--"])
            .args(["-C", "relocation-model=static"])
            .current_dir(workspace_root()),
        "cargo rustc (guest test kernel)",
    )
}

/// `cargo build` of the kernel for x86_64-unknown-none on the pinned stable.
pub fn build_kernel() -> Fallible<()> {
    run_checked(
        Command::new("cargo")
            .args(["build", "--release", "--package", "hypervisor", "--target", KERNEL_TARGET])
            .current_dir(workspace_root()),
        "cargo build (kernel)",
    )
}

/// The image builder (boot/), built with the nightly its build script needs.
fn build_boot_tool(nightly: &str) -> Fallible<PathBuf> {
    let boot = workspace_root().join("boot");
    let tool = boot.join("target/release/perfvisor-boot");
    if !tool.exists() {
        eprintln!("xtask: building the image tool with {nightly} (the first build compiles the bootloader: 2-3 min)");
    }
    run_checked(
        Command::new("cargo")
            .arg(format!("+{nightly}"))
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(boot.join("Cargo.toml"))
            .current_dir(&boot)
            // The outer `cargo xtask` pins the stable toolchain through this variable.
            .env_remove("RUSTUP_TOOLCHAIN"),
        "cargo build (boot/)",
    )?;
    Ok(tool)
}
