//! perfvisor's VT-x library.
//!
//! `no_std` and free of privileged instructions: hardware access goes through
//! the small traits the kernel implements, so the logic is tested on the host.
#![cfg_attr(not(test), no_std)]

pub mod caps;
pub mod controls;
pub mod ept;
pub mod errors;
pub mod exit;
pub mod guard;
pub mod msr;
pub mod msr_bitmap;
pub mod msr_list;
pub mod vmcs;

pub use caps::{ControlCap, VmxBasic, VmxCaps};
