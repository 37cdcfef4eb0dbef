//! perfvisor's guest test kernel. perfvisor loads it (ELF64, linked at
//! `perfvisor_abi::layout::IMAGE_BASE`) and starts it in 64-bit mode with
//! RDI = the boot info; it runs the scenario the boot config chose and
//! ends with the Exit hypercall, whose status becomes the run's verdict.
//!
//! Like the hypervisor, it is type-checked for the host by
//! `cargo clippy --workspace`, where std is linked anyway.
#![cfg_attr(target_os = "none", no_std)]
#![no_main]

mod bench;
mod fuzz;
mod hostile;
mod suite;

use perfvisor_guest::{faults, fmt, hypercall};

use perfvisor_abi::{BootInfo, Scenario, BOOT_INFO_MAGIC};

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(info: *const BootInfo) -> ! {
    faults::init();
    // perfvisor maps guest memory identity (hypervisor/abi/src/lib.rs).
    perfvisor_guest::ring3::set_physical_memory_offset(0);
    faults::on_unexpected_fault(|vector, rip, error_code| {
        hypercall::write(fmt!("unexpected exception {vector} at RIP {rip:#x}, error code {error_code:#x}\n").as_str());
        hypercall::exit(99)
    });
    // SAFETY: perfvisor passes the address of a BootInfo in guest RAM.
    let info = unsafe { &*info };
    if info.magic != BOOT_INFO_MAGIC {
        hypercall::write("guest: bad boot info magic\n");
        hypercall::exit(98);
    }
    match Scenario::from_raw(info.scenario) {
        Some(Scenario::Suite) => hypercall::exit(u64::from(suite::run(info) != 0)),
        Some(Scenario::EptViolation) => {
            hypercall::write(fmt!("reading hypervisor memory at {:#x}\n", info.hypervisor_page).as_str());
            // SAFETY: deliberately touches memory the guest must not reach:
            // perfvisor stops the guest with an EPT violation before this returns.
            let v = unsafe { core::ptr::read_volatile(info.hypervisor_page as *const u64) };
            hypercall::write(fmt!("ISOLATION BROKEN: read {v:#x} from hypervisor memory\n").as_str());
            hypercall::exit(97)
        }
        Some(Scenario::TripleFault) => {
            hypercall::write("triple-faulting: empty IDT, then ud2\n");
            let empty = x86_64::structures::DescriptorTablePointer { limit: 0, base: x86_64::VirtAddr::new(0) };
            // SAFETY: deliberately unrecoverable: #UD cannot be delivered, nor
            // the #DF that follows, so the CPU triple-faults (a VM exit).
            unsafe {
                x86_64::instructions::tables::lidt(&empty);
                core::arch::asm!("ud2", options(noreturn));
            }
        }
        Some(Scenario::ExitStatus) => hypercall::exit(3),
        Some(Scenario::Bench) => {
            bench::run();
            hypercall::exit(0)
        }
        Some(Scenario::PmuFuzz) => {
            fuzz::run();
            hypercall::exit(0)
        }
        Some(Scenario::Hostile) => hypercall::exit(u64::from(hostile::run(info) != 0)),
        Some(Scenario::HostileIcr) => hypercall::exit(u64::from(hostile::run_icr() != 0)),
        Some(Scenario::Attack) => hostile::attack(info),
        None => {
            hypercall::write("guest: unknown scenario\n");
            hypercall::exit(96)
        }
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let msg = fmt!("guest panic: {}\n", info.message());
    hypercall::write(msg.as_str());
    hypercall::exit(95)
}
