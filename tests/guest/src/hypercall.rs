//! The guest side of perfvisor's hypercall ABI (see `perfvisor_abi`).

use core::arch::asm;
use perfvisor_abi::{Hypercall, TestStatus};

/// VMCALL with RAX = `call` and up to five arguments; returns RAX.
pub fn vmcall(call: u64, a: [u64; 5]) -> u64 {
    let result: u64;
    // SAFETY: VMCALL exits to perfvisor, which reads the registers and
    // returns a result in RAX; guest memory is only read by it.
    unsafe {
        asm!("vmcall", inlateout("rax") call => result, in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("rcx") a[3], in("r8") a[4])
    };
    result
}

pub fn write(s: &str) -> u64 {
    vmcall(Hypercall::Write as u64, [s.as_ptr() as u64, s.len() as u64, 0, 0, 0])
}

pub fn report(status: TestStatus, name: &str, why: &str) {
    vmcall(
        Hypercall::ReportTest as u64,
        [status as u64, name.as_ptr() as u64, name.len() as u64, why.as_ptr() as u64, why.len() as u64],
    );
}

pub fn exit(status: u64) -> ! {
    vmcall(Hypercall::Exit as u64, [status, 0, 0, 0, 0]);
    // perfvisor never resumes a guest that exited.
    loop {
        // SAFETY: HLT only waits.
        unsafe { asm!("hlt") };
    }
}

pub fn exit_count(basic_reason: u64) -> u64 {
    vmcall(Hypercall::ExitCount as u64, [basic_reason, 0, 0, 0, 0])
}
