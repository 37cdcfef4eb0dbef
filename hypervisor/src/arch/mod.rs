//! CPU tables and privileged-instruction wrappers.

pub mod gdt;
pub mod idt;
pub mod msr;
