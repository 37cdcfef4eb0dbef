//! Installing what the build and the emulators need, so a fresh machine
//! runs `cargo xtask run` / `cargo xtask test` with nothing done by hand.

use crate::{run_checked, workspace_root, Fallible};
use perfvisor_runner::emulator::paths;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages: QEMU, OVMF and the BIOS/VGA ROMs Bochs boots from. Bochs
/// itself is built from the vendored source with our PMU patches
/// (crate::bochs_build); Debian's `bochs` is only for comparison.
pub const APT_PACKAGES: &[&str] = &["qemu-system-x86", "ovmf", "bochsbios", "vgabios"];

/// The nightly the `bootloader` image builder is known to build with
/// (REFERENCE.md §5: bootloader 0.11.15 and nightly 2026-05-19).
pub const NIGHTLY_DATE: &str = "2026-05-19";

/// The kernel's target.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// Installs the emulators (as root) or says exactly what to run.
pub fn ensure_emulators() -> Fallible<()> {
    let missing: Vec<&str> = [
        (paths::QEMU, which(paths::QEMU).is_some()),
        (paths::OVMF, Path::new(paths::OVMF).exists()),
        (paths::BOCHS_BIOS, Path::new(paths::BOCHS_BIOS).exists()),
        (paths::BOCHS_VGABIOS, Path::new(paths::BOCHS_VGABIOS).exists()),
    ]
    .into_iter()
    .filter(|(_, present)| !present)
    .map(|(name, _)| name)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get update && apt-get install -y {}", APT_PACKAGES.join(" "));
    if !is_root() {
        return Err(format!("missing {}; install them with:\n    sudo sh -c '{command}'", missing.join(", ")));
    }
    eprintln!("xtask: missing {}; installing: {command}", missing.join(", "));
    run_checked(Command::new("apt-get").arg("update").arg("-q"), "apt-get update")?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(APT_PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )?;
    Ok(())
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}

fn rustup(args: &[&str]) -> Fallible<()> {
    eprintln!("xtask: rustup {}", args.join(" "));
    run_checked(Command::new("rustup").args(args).current_dir(workspace_root()), "rustup")
}

fn sysroot(toolchain: Option<&str>) -> Option<PathBuf> {
    let mut cmd = Command::new("rustc");
    if let Some(t) = toolchain {
        cmd.arg(format!("+{t}"));
    }
    let out = cmd.args(["--print", "sysroot"]).current_dir(workspace_root()).output().ok()?;
    out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The pinned stable toolchain (rust-toolchain.toml) gets the kernel target.
pub fn ensure_kernel_target() -> Fallible<()> {
    let root = sysroot(None).ok_or("`rustc --print sysroot` failed: is the toolchain in rust-toolchain.toml installed? (rustup toolchain install 1.95.0)")?;
    if !root.join("lib/rustlib").join(KERNEL_TARGET).exists() {
        rustup(&["target", "add", KERNEL_TARGET])?;
    }
    Ok(())
}

/// The nightly for the image builder, with rust-src and llvm-tools.
/// Uses the machine's `nightly` when it is the pinned date, else installs
/// `nightly-<date>`. Returns the toolchain name for `cargo +NAME`.
pub fn ensure_nightly() -> Fallible<String> {
    let version = |t: &str| {
        Command::new("rustc")
            .arg(format!("+{t}"))
            .arg("-V")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let pinned = format!("nightly-{NIGHTLY_DATE}");
    let name = if version("nightly").is_some_and(|v| v.contains(NIGHTLY_DATE)) {
        "nightly".to_string()
    } else {
        if version(&pinned).is_none() {
            rustup(&["toolchain", "install", &pinned, "--profile", "minimal"])?;
        }
        pinned
    };
    let root = sysroot(Some(&name)).ok_or(format!("toolchain {name} has no sysroot"))?;
    let has_src = root.join("lib/rustlib/src/rust/library").exists();
    let has_llvm_tools = llvm_objcopy_in(&root).exists();
    if !has_src || !has_llvm_tools {
        rustup(&["component", "add", "rust-src", "llvm-tools-preview", "--toolchain", &name])?;
    }
    Ok(name)
}

fn llvm_objcopy_in(sysroot: &Path) -> PathBuf {
    sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-objcopy")
}

/// llvm-objcopy from the nightly's llvm-tools (strips the kernel for images).
pub fn llvm_objcopy(nightly: &str) -> Fallible<PathBuf> {
    let root = sysroot(Some(nightly)).ok_or(format!("toolchain {nightly} has no sysroot"))?;
    let tool = llvm_objcopy_in(&root);
    if tool.exists() {
        Ok(tool)
    } else {
        Err(format!("{} is missing (rustup component add llvm-tools-preview --toolchain {nightly})", tool.display()))
    }
}
