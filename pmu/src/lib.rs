//! perfvisor's PMU crate: host PMU discovery, the guest's PMU
//! configuration, and (behind the `model` feature, always in tests) a
//! software PMU written from the SDM.
//!
//! `no_std` so the hypervisor links it; everything is plain data and logic,
//! tested on the host with `cargo test -p pmu`.
#![cfg_attr(not(test), no_std)]

pub mod capabilities;
pub mod cpuid;
pub mod events;
pub mod guest;
pub mod host;
pub mod hw;
pub mod layout;
pub mod mode;
#[cfg(any(test, feature = "model"))]
pub mod model;
#[cfg(test)]
mod model_tests;
pub mod msr;
#[cfg(test)]
mod switch_props;
pub mod vpmu;
#[cfg(test)]
mod vpmu_tests;

pub use capabilities::PerfCapabilities;
pub use cpuid::{ArchPerfmon, CpuidRegs, FixedCounterSet};
pub use layout::PmuLayout;
