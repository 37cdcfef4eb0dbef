//! perfvisor's end-to-end runner: boots images in Bochs and QEMU, follows
//! the serial console, and turns console and exit code into a verdict.
//! `cargo xtask` drives it; the case table is in [`cases`].

pub mod bochs_msrs;
pub mod boot;
pub mod cases;
pub mod emulator;
pub mod hostile_cases;
pub mod kvm;
pub mod linux_cases;
pub mod malformed_elf;
pub mod summary;
