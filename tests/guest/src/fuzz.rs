//! `guest=pmu-fuzz`: 100,000 pseudo-random reads and writes over the PMU
//! MSR range and its neighbours, from a fixed seed. Every #GP perfvisor
//! injects is survived and counted; the same seed must give the same counts.

use perfvisor_guest::faults::{rdmsr, wrmsr};
use perfvisor_guest::fmt;
use perfvisor_guest::hypercall;

pub const SEED: u64 = 0x005e_ed0f_f022;
const ACCESSES: u64 = 100_000;

/// The PMU MSRs and their neighbours (IA32_DEBUGCTL left out: writing its
/// BTF/LBR bits would change how the guest itself runs).
const MSRS: [u32; 40] = [
    0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0x185, 0x186, 0x187, 0x188, 0x189, 0x18a, 0x18b, 0x18c,
    0x18d, 0x308, 0x309, 0x30a, 0x30b, 0x30c, 0x30d, 0x329, 0x345, 0x38c, 0x38d, 0x38e, 0x38f, 0x390, 0x391, 0x392,
    0x393, 0x4c0, 0x4c1, 0x4c2, 0x4c8, 0x4c9,
];

fn next(state: &mut u64) -> u64 {
    // xorshift64*
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

pub fn run() {
    let mut state = SEED;
    let (mut reads, mut writes, mut read_faults, mut write_faults) = (0u64, 0u64, 0u64, 0u64);
    for _ in 0..ACCESSES {
        let r = next(&mut state);
        let msr = MSRS[(r % MSRS.len() as u64) as usize];
        let value = match (r >> 8) % 4 {
            0 => 0,
            1 => next(&mut state) & 0xffff_ffff,
            2 => next(&mut state) & 0x0000_ffff_0000_00ff,
            _ => next(&mut state),
        };
        if r & (1 << 40) == 0 {
            reads += 1;
            read_faults += u64::from(rdmsr(msr).is_err());
        } else {
            writes += 1;
            // SAFETY: PMU MSRs and their unassigned neighbours only: a write
            // can at most make a counter count or raise a PMI, which the
            // guest (interrupts off) never takes.
            write_faults += u64::from(unsafe { wrmsr(msr, value) }.is_err());
        }
    }
    hypercall::write(
        fmt!(
            "FUZZ seed {SEED:#x}: {ACCESSES} accesses ({reads} reads, {writes} writes), {} #GP ({read_faults} on reads, {write_faults} on writes)\n",
            read_faults + write_faults
        )
        .as_str(),
    );
}
