//! Building the kernel and its disk images.

use crate::setup::{self, KERNEL_TARGET};
use crate::{run_checked, workspace_root, Fallible};
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
    workspace_root()
        .join("target")
        .join(KERNEL_TARGET)
        .join("release")
        .join("hypervisor")
}

/// What image building needs, prepared once per xtask run.
pub struct Builder {
    stripped_kernel: PathBuf,
    boot_tool: PathBuf,
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
            Command::new(setup::llvm_objcopy(&nightly)?)
                .arg("--strip-debug")
                .arg(kernel_elf())
                .arg(&stripped_kernel),
            "llvm-objcopy --strip-debug",
        )?;
        let boot_tool = build_boot_tool(&nightly)?;
        Ok(Self {
            stripped_kernel,
            boot_tool,
        })
    }

    /// A disk image for `firmware`, with `config` as the boot config.
    pub fn image(&self, firmware: Firmware, config: Option<&str>) -> Fallible<PathBuf> {
        let dir = build_dir().join("images");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let stem = match config {
            None => format!("perfvisor-{}", firmware.name()),
            Some(text) => {
                let mut h = DefaultHasher::new();
                text.hash(&mut h);
                format!(
                    "perfvisor-{}-config-{:08x}",
                    firmware.name(),
                    h.finish() as u32
                )
            }
        };
        let image = dir.join(format!("{stem}.img"));
        let mut cmd = Command::new(&self.boot_tool);
        cmd.arg("--kernel").arg(&self.stripped_kernel);
        if let Some(text) = config {
            let path = dir.join(format!("{stem}.config"));
            std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            cmd.arg("--ramdisk").arg(path);
        }
        cmd.arg(format!("--{}", firmware.name())).arg(&image);
        run_checked(cmd.stdout(std::process::Stdio::null()), "perfvisor-boot")?;
        Ok(image)
    }
}

/// `cargo build` of the kernel for x86_64-unknown-none on the pinned stable.
pub fn build_kernel() -> Fallible<()> {
    run_checked(
        Command::new("cargo")
            .args([
                "build",
                "--release",
                "--package",
                "hypervisor",
                "--target",
                KERNEL_TARGET,
            ])
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
