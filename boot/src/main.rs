//! `perfvisor-boot --kernel ELF [--ramdisk FILE] [--bios OUT] [--uefi OUT]`
//!
//! Wraps the kernel ELF (and an optional ramdisk: perfvisor's boot config,
//! later a guest image) into raw disk images with the `bootloader` crate.
//! Run through `cargo xtask image`, which picks the toolchain.

use bootloader::{BiosBoot, BootConfig, UefiBoot};
use std::path::PathBuf;
use std::process::ExitCode;

struct Args {
    kernel: PathBuf,
    ramdisk: Option<PathBuf>,
    bios: Option<PathBuf>,
    uefi: Option<PathBuf>,
}

const USAGE: &str = "usage: perfvisor-boot --kernel ELF [--ramdisk FILE] [--bios OUT] [--uefi OUT]";

fn parse_args() -> Result<Args, String> {
    let mut kernel = None;
    let mut args = Args { kernel: PathBuf::new(), ramdisk: None, bios: None, uefi: None };
    let mut it = std::env::args_os().skip(1);
    while let Some(flag) = it.next() {
        let flag = flag.to_string_lossy().into_owned();
        let mut value = || it.next().map(PathBuf::from).ok_or(format!("{flag} needs a path"));
        match flag.as_str() {
            "--kernel" => kernel = Some(value()?),
            "--ramdisk" => args.ramdisk = Some(value()?),
            "--bios" => args.bios = Some(value()?),
            "--uefi" => args.uefi = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    args.kernel = kernel.ok_or("--kernel is required")?;
    if args.bios.is_none() && args.uefi.is_none() {
        return Err("nothing to build: give --bios and/or --uefi".into());
    }
    Ok(args)
}

/// The bootloader's own settings: its log goes to the serial console only
/// (framebuffer logging is slow under emulation and invisible headless), at
/// warning level so perfvisor's report is the bulk of the console.
fn boot_config() -> BootConfig {
    let mut config = BootConfig::default();
    config.frame_buffer_logging = false;
    config.serial_logging = true;
    config.log_level = bootloader_boot_config::LevelFilter::Warn;
    config
}

fn build(args: &Args) -> Result<(), String> {
    if !args.kernel.is_file() {
        return Err(format!("kernel ELF {} does not exist", args.kernel.display()));
    }
    let config = boot_config();
    if let Some(out) = &args.bios {
        let mut bios = BiosBoot::new(&args.kernel);
        bios.set_boot_config(&config);
        if let Some(r) = &args.ramdisk {
            bios.set_ramdisk(r);
        }
        bios.create_disk_image(out).map_err(|e| format!("BIOS image {}: {e:#}", out.display()))?;
        println!("BIOS image: {}", out.display());
    }
    if let Some(out) = &args.uefi {
        let mut uefi = UefiBoot::new(&args.kernel);
        uefi.set_boot_config(&config);
        if let Some(r) = &args.ramdisk {
            uefi.set_ramdisk(r);
        }
        uefi.create_disk_image(out).map_err(|e| format!("UEFI image {}: {e:#}", out.display()))?;
        println!("UEFI image: {}", out.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(|args| build(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perfvisor-boot: {e}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}
