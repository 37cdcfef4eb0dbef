//! What perfvisor's guest test kernel and the native PMU conformance
//! kernel share: fault recovery, formatting without an allocator, the
//! hypercall ABI's guest side, and the PMU conformance checks.
#![cfg_attr(target_os = "none", no_std)]

pub mod faults;
pub mod fmtbuf;
pub mod hypercall;
pub mod interrupts;
pub mod native;
pub mod pmu_checks;
pub mod ring3;
