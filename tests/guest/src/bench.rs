//! Exit costs measured from inside the guest (`cargo xtask bench exits`).
//! Bochs' TSC advances with emulated instructions at a fixed ratio, which a
//! loop of known length calibrates; the average over ITERATIONS exits minus
//! a null loop's average, so converted, is the hypervisor's path length per
//! exit (plus the VM exit/entry themselves). On hardware the calibration
//! measures cycles per instruction of that loop instead, and the figures
//! are only indicative.

use core::arch::x86_64::{__cpuid_count, _rdtsc};
use perfvisor_abi::Hypercall;
use perfvisor_guest::faults::rdmsr;
use perfvisor_guest::fmt;
use perfvisor_guest::hypercall::{self, vmcall};

const ITERATIONS: u64 = 10_000;

fn average(mut f: impl FnMut()) -> u64 {
    // SAFETY: RDTSC is unprivileged and does not exit here.
    let start = unsafe { _rdtsc() };
    for _ in 0..ITERATIONS {
        f();
    }
    // SAFETY: as above.
    (unsafe { _rdtsc() } - start) / ITERATIONS
}

/// TSC ticks per instruction, from a loop of exactly 2 x 100,000 instructions
/// (`dec rcx; jnz`): Bochs' TSC follows its instruction count, but not 1:1.
fn ticks_per_1000_instructions() -> u64 {
    // SAFETY: RDTSC is unprivileged; the loop only counts RCX down.
    unsafe {
        let start = _rdtsc();
        core::arch::asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) 100_000u64 => _);
        (_rdtsc() - start) * 1000 / 200_000
    }
}

pub fn run() {
    let per_1000 = ticks_per_1000_instructions().max(1);
    let baseline = average(|| core::hint::black_box(()));
    let cpuid = average(|| {
        core::hint::black_box(__cpuid_count(0, 0));
    });
    let msr = average(|| {
        let _ = core::hint::black_box(rdmsr(0x277));
    });
    let vmcall = average(|| {
        core::hint::black_box(vmcall(Hypercall::AbiVersion as u64, [0; 5]));
    });
    let instructions = |ticks: u64| ticks.saturating_sub(baseline) * 1000 / per_1000;
    hypercall::write(
        fmt!(
            "BENCH calibration: {per_1000} TSC ticks per 1000 instructions; null loop {baseline} ticks\n\
             BENCH cpuid {}\nBENCH rdmsr-intercepted {}\nBENCH vmcall {}\n",
            instructions(cpuid),
            instructions(msr),
            instructions(vmcall)
        )
        .as_str(),
    );
}
