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
mod cpuid_cache;
mod dma;
mod events;
mod exits;
mod guard;
mod linux;
mod loader;
mod memory;
mod pmi;
mod report;
mod serial;
mod vcpu;
mod verdict;
mod vmx_hw;
mod vmxon;
mod vpmu;

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
        if have_console { "" } else { " (no 16550 answered at COM1)" }
    );

    arch::gdt::init();
    arch::idt::init();

    let (mut config, guest_image, linux_bundle) = read_ramdisk(boot_info);
    if linux_bundle.is_some() && config.watchdog_ms != 0 {
        // The watchdog counts hypercalls as progress; Linux makes none.
        config.watchdog_ms = 0;
    }
    if let Some(level) = config.log_level {
        serial::init_logger(level);
    }
    info!("boot: log level {}, kernel image at {:#x}", log::max_level(), boot_info.kernel_image_offset);

    let Some(phys_offset) = boot_info.physical_memory_offset.into_option() else {
        verdict::fail("the bootloader did not map physical memory");
    };
    let (usable, regions) = memory::init(&boot_info.memory_regions, phys_offset);
    info!("memory: {} MiB usable in {regions} regions, physical memory mapped at {phys_offset:#x}", usable >> 20);

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
    let vmxon_region = match vmxon::enter_root_mode(caps) {
        Ok(region) => {
            info!("vmx: entered VMX root mode (VMXON region at {:#x})", region.0);
            region
        }
        Err(e) => {
            error!("vmx: could not enter VMX root mode: {e}");
            verdict::fail("VMXON");
        }
    };
    dma::report(boot_info.rsdp_addr.into_option(), memory::phys_map());
    let vpmu = match vpmu::setup(caps, config.vpmu, config.vpmu_msr_lists) {
        Ok(v) => v,
        Err(e) => {
            error!("pmu: {e}");
            verdict::fail("vPMU configuration");
        }
    };
    let guest = match linux_bundle {
        Some(bundle) => GuestKind::Linux { bundle, rsdp: boot_info.rsdp_addr.into_option() },
        None => GuestKind::TestKernel(guest_image),
    };
    run_guest(caps, guest, &config, vmxon_region.0, vpmu)
}

/// What the ramdisk asks perfvisor to run.
enum GuestKind {
    /// The test kernel (an ELF executable), if the ramdisk has one.
    TestKernel(Option<&'static [u8]>),
    /// A Linux kernel with its initrd and command line (`linux.rs`).
    Linux { bundle: &'static [u8], rsdp: Option<u64> },
}

/// Loads the guest, runs it to its end, and gives the verdict.
fn run_guest(
    caps: &vmx::VmxCaps,
    guest: GuestKind,
    config: &BootConfig,
    hypervisor_page: u64,
    mut vpmu: vpmu::Vpmu,
) -> ! {
    let (ram, ram_count) = memory::guest_ram();
    let ram_bytes: u64 = ram[..ram_count].iter().map(|r| r.end - r.start).sum();
    info!("guest: {} MiB of RAM in {ram_count} ranges from {:#x}", ram_bytes >> 20, ram[0].start);
    let scenario = config.scenario;
    let (start, entry) = match guest {
        GuestKind::TestKernel(None) => {
            error!(
                "guest: the ramdisk has no guest image (cargo xtask builds images with one; see `cargo xtask help`)"
            );
            verdict::fail("no guest image");
        }
        GuestKind::TestKernel(Some(image)) => {
            let entry = match loader::load(image, &ram[..ram_count], scenario, config.attack, hypervisor_page) {
                Ok(entry) => entry,
                Err(e) => {
                    error!("guest: the guest image ({} bytes) is unusable: {e}", image.len());
                    verdict::fail("bad guest image");
                }
            };
            let start = vcpu::GuestStart {
                rip: entry,
                // As if `call`ed: RSP + 8 is 16-byte aligned at the entry (SysV ABI).
                rsp: perfvisor_abi::layout::STACK_TOP - 8,
                cr3: loader::GUEST_CR3,
                rdi: perfvisor_abi::layout::BOOT_INFO,
                rsi: 0,
                linux: None,
            };
            (start, entry)
        }
        GuestKind::Linux { bundle, rsdp } => {
            let (low, low_count) = memory::low_ram(linux::LOW_RAM_END);
            let (acpi, acpi_count) = memory::acpi_regions();
            let loaded = match linux::load(bundle, &ram[..ram_count], &low[..low_count], &acpi[..acpi_count], rsdp) {
                Ok(l) => l,
                Err(e) => {
                    error!("linux: the Linux guest cannot be loaded: {e}");
                    verdict::fail("bad Linux guest");
                }
            };
            info!("linux: watchdog off (Linux makes no hypercalls, the watchdog's sign of progress)");
            linux::enable_x2apic();
            let start = vcpu::GuestStart {
                rip: loaded.entry,
                rsp: 0,
                cr3: loaded.cr3,
                rdi: 0,
                rsi: loaded.zero_page,
                linux: Some(vcpu::LinuxPlatform { gdt: loaded.gdt, low, low_count, acpi, acpi_count }),
            };
            (start, loaded.entry)
        }
    };
    let is_linux = start.linux.is_some();
    let other_context = match vpmu.prepare_other_context() {
        Ok(c) => c,
        Err(_) => {
            error!("pmu: could not prepare the second PMU context (a PMU MSR raised #GP)");
            verdict::fail("vPMU setup");
        }
    };
    if vpmu.engine.load(&mut vpmu::KernelPmu).is_err() {
        error!("pmu: loading the guest's PMU context raised #GP");
        verdict::fail("vPMU setup");
    }
    let vcpu = match vcpu::Vcpu::new(caps, &ram[..ram_count], exits::passthrough_msrs(), &start, &vpmu) {
        Ok(v) => v,
        Err(e) => {
            error!("vmx: could not set up the guest's VMCS: {e}");
            verdict::fail("VMCS setup");
        }
    };
    let cpuid = cpuid_cache::CpuidCache::build(&vpmu.guest, is_linux);
    let mut guard = match guard::Guard::new(caps, config.watchdog_ms) {
        Ok(g) => g,
        Err(e) => {
            error!("vmx: {e}");
            verdict::fail("VMCS setup");
        }
    };
    // A Linux guest's kernel panic, said on its console, ends it at once (guard.rs).
    guard.com1.linux = is_linux;
    let mut guest = exits::Guest {
        guard,
        vcpu,
        vpmu,
        other_context,
        pmis: Default::default(),
        cpuid,
        ram,
        ram_count,
        exits: [0; exits::COUNTED_REASONS],
        exits_at_phase: [0; exits::COUNTED_REASONS],
        phases_reported: 0,
        linux: is_linux,
    };
    if is_linux {
        // The TSC at entry: `cargo xtask bench linux` measures the boot to
        // /init from it (the guest's TSC is the host's: no offsetting).
        // SAFETY: RDTSC reads a counter; CR4.TSD is clear in root mode.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        info!("guest: starting Linux at {entry:#x} (TSC {tsc})");
    } else {
        info!("guest: starting ({scenario:?}) at {entry:#x}");
    }
    let end = guest.run();
    guest.guard.end(&guest.exits);
    guest.end_pmu();
    guest.report_exit_counts();
    match end {
        exits::GuestEnd::Exited(0) => {
            info!("guest: exited with status 0");
            verdict::pass()
        }
        exits::GuestEnd::Exited(status) => {
            info!("guest: exited with status {status}");
            verdict::fail(format_args!("guest exit status {status}"))
        }
        exits::GuestEnd::Stopped(why) => verdict::fail(format_args!("guest stopped: {why}")),
    }
}

/// The ramdisk: a boot config and/or a guest image (see `config.rs`). The
/// run's nonce, if any, is copied into perfvisor's memory and zeroed in the
/// ramdisk.
/// The third value: the whole ramdisk when it carries a Linux guest.
fn read_ramdisk(boot_info: &BootInfo) -> (BootConfig, Option<&'static [u8]>, Option<&'static [u8]>) {
    let Some(addr) = boot_info.ramdisk_addr.into_option() else {
        return (BootConfig::DEFAULT, None, None);
    };
    // SAFETY: the bootloader maps the ramdisk writable at `ramdisk_addr`
    // for `ramdisk_len` bytes, never unmaps it, and nothing else refers to it.
    let bytes: &'static mut [u8] =
        unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, boot_info.ramdisk_len as usize) };
    let nonce_range = match config::split_ramdisk(bytes) {
        Ok(p) => p.nonce.map(|n| {
            let start = n.as_ptr() as usize - bytes.as_ptr() as usize;
            start..start + n.len()
        }),
        Err(e) => {
            error!("config: the ramdisk ({} bytes) is malformed: {e}", bytes.len());
            verdict::fail("bad ramdisk");
        }
    };
    if let Some(range) = nonce_range {
        match config::parse_nonce(&bytes[range.clone()]) {
            Some(nonce) => {
                verdict::set_nonce(nonce);
                bytes[range].fill(0);
                info!("config: the run's nonce is in perfvisor's memory (zeroed in the ramdisk)");
            }
            None => info!("config: no nonce (the placeholder was not patched): verdict lines carry none"),
        }
    }
    let bytes: &'static [u8] = bytes;
    let parts = match config::split_ramdisk(bytes) {
        Ok(p) => p,
        Err(e) => {
            error!("config: the ramdisk ({} bytes) is malformed: {e}", bytes.len());
            verdict::fail("bad ramdisk");
        }
    };
    let config = parts.config.map_or(BootConfig::DEFAULT, |text| {
        let Ok(text) = core::str::from_utf8(text) else {
            error!("config: the boot config ({} bytes) is not UTF-8 text", text.len());
            verdict::fail("bad boot config");
        };
        match BootConfig::parse(text) {
            Ok(config) => {
                info!("config: {} bytes read from the ramdisk", text.len());
                config
            }
            Err(e) => {
                error!("config: line {}: {:?}: {}", e.line, e.text, e.problem);
                verdict::fail("bad boot config");
            }
        }
    });
    (config, parts.guest, parts.linux.then_some(bytes))
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    serial::write_fmt_forced(format_args!("\nPANIC: {}\n", info.message()));
    if let Some(location) = info.location() {
        serial::write_fmt_forced(format_args!("  at {}:{}:{}\n", location.file(), location.line(), location.column()));
    }
    verdict::fail("panic")
}
