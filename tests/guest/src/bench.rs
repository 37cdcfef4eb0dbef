//! Exit costs measured from inside the guest (`cargo xtask bench exits`).
//! Bochs' TSC advances with emulated instructions, so a TSC delta there is
//! an instruction count: the average over ITERATIONS exits minus a null
//! loop's average is the hypervisor's path length per exit (plus the VM
//! exit/entry themselves). On hardware the same figures are TSC cycles.

use crate::faults::rdmsr;
use crate::fmt;
use crate::hypercall::{self, vmcall};
use core::arch::x86_64::{__cpuid_count, _rdtsc};
use perfvisor_abi::Hypercall;

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

pub fn run() {
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
    hypercall::write(
        fmt!(
            "BENCH exits: {ITERATIONS} iterations each, TSC per iteration minus the null loop ({baseline}):\n\
             BENCH cpuid {}\nBENCH rdmsr-intercepted {}\nBENCH vmcall {}\n",
            cpuid.saturating_sub(baseline),
            msr.saturating_sub(baseline),
            vmcall.saturating_sub(baseline)
        )
        .as_str(),
    );
}
