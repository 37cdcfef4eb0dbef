//! perfvisor: a bare-metal VT-x micro-hypervisor whose guest gets a mediated
//! architectural PMU. This is the kernel binary: it boots through the
//! `bootloader` crate (BIOS or UEFI), reports the platform on COM1, enters
//! VMX root mode and ends with a verdict the test runner reads.
//!
//! The kernel runs on `x86_64-unknown-none`. `cargo clippy --workspace` also
//! type-checks it for the host, where other members' dev-dependencies link
//! std anyway; `no_std` and the panic handler therefore apply to the real
//! target only (the host build is never linked: see `default-members`).
#![cfg_attr(target_os = "none", no_std)]
#![no_main]

mod arch;
mod config;
mod memory;
mod report;
mod serial;
mod verdict;
mod vmxon;

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::{entry_point, BootInfo};
use config::{BootConfig, SelfTest};
use log::{error, info};

/// The hypervisor's ABI version, reported at boot and (later) to guests.
pub const ABI_VERSION: u32 = 1;

const BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    // All of physical memory, mapped at an offset the bootloader picks:
    // VMXON regions, VMCSs and EPT tables are addressed physically.
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    // A fixed base so a debugger can place the symbols (`cargo xtask qemu --gdb`).
    config.mappings.kernel_base = Mapping::FixedAddress(KERNEL_BASE);
    config.kernel_stack_size = 256 * 1024;
    config
};

/// Where the bootloader loads the (position-independent) kernel image.
pub const KERNEL_BASE: u64 = 0xffff_8000_0000_0000;

entry_point!(kernel_main, config = &BOOTLOADER_CONFIG);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    let have_console = serial::init();
    serial::init_logger(serial::build_time_level());
    println!();
    println!(
        "perfvisor {} (ABI {ABI_VERSION}): hypervisor starting{}",
        env!("CARGO_PKG_VERSION"),
        if have_console {
            ""
        } else {
            " (no 16550 answered at COM1)"
        }
    );

    arch::gdt::init();
    arch::idt::init();

    let config = read_boot_config(boot_info);
    if let Some(level) = config.log_level {
        serial::init_logger(level);
    }
    info!(
        "boot: log level {}, kernel image at {:#x}",
        log::max_level(),
        boot_info.kernel_image_offset
    );

    let Some(phys_offset) = boot_info.physical_memory_offset.into_option() else {
        verdict::fail("the bootloader did not map physical memory");
    };
    let (usable, regions) = memory::init(&boot_info.memory_regions, phys_offset);
    info!(
        "memory: {} MiB usable in {regions} regions, physical memory mapped at {phys_offset:#x}",
        usable >> 20
    );

    match config.selftest {
        SelfTest::None => {}
        SelfTest::Panic => panic!("selftest=panic: deliberate panic requested by the boot config"),
        SelfTest::Exception => {
            info!("selftest: executing ud2 as the boot config asks");
            // SAFETY: ud2 raises #UD, which the exception path reports; it never returns here.
            unsafe { core::arch::asm!("ud2") };
        }
    }

    let platform = report::report();
    let Some(caps) = platform.vmx_caps.as_ref() else {
        error!(
            "vmx: VMX is not available: CPUID.1:ECX.VMX[bit 5] = 0 (QEMU TCG, or VT-x not \
             exposed to this machine); perfvisor needs VT-x"
        );
        verdict::fail("no VMX");
    };
    match vmxon::enter_root_mode(caps) {
        Ok(region) => info!(
            "vmx: entered VMX root mode (VMXON region at {:#x})",
            region.0
        ),
        Err(e) => {
            error!("vmx: could not enter VMX root mode: {e}");
            verdict::fail("VMXON");
        }
    }
    verdict::pass()
}

/// The boot config comes as the bootloader ramdisk (see `config.rs`).
fn read_boot_config(boot_info: &BootInfo) -> BootConfig {
    let Some(addr) = boot_info.ramdisk_addr.into_option() else {
        return BootConfig::DEFAULT;
    };
    // SAFETY: the bootloader maps the ramdisk at `ramdisk_addr` for
    // `ramdisk_len` bytes and never unmaps it.
    let bytes =
        unsafe { core::slice::from_raw_parts(addr as *const u8, boot_info.ramdisk_len as usize) };
    let Ok(text) = core::str::from_utf8(bytes) else {
        error!(
            "config: the boot config ({} bytes) is not UTF-8 text",
            bytes.len()
        );
        verdict::fail("bad boot config");
    };
    match BootConfig::parse(text) {
        Ok(config) => {
            info!("config: {} bytes read from the ramdisk", bytes.len());
            config
        }
        Err(e) => {
            error!("config: line {}: {:?}: {}", e.line, e.text, e.problem);
            verdict::fail("bad boot config");
        }
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    serial::write_fmt_forced(format_args!("\nPANIC: {}\n", info.message()));
    if let Some(location) = info.location() {
        serial::write_fmt_forced(format_args!(
            "  at {}:{}:{}\n",
            location.file(),
            location.line(),
            location.column()
        ));
    }
    verdict::fail("panic")
}
