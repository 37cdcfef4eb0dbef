//! perfvisor's PMU crate.
//!
//! `no_std` so the hypervisor links it; everything here is plain data and
//! logic, tested on the host with `cargo test -p pmu`.
#![cfg_attr(not(test), no_std)]

pub mod capabilities;
pub mod cpuid;
pub mod msr;

pub use capabilities::PerfCapabilities;
pub use cpuid::{ArchPerfmon, CpuidRegs, FixedCounterSet};
