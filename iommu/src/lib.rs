//! Intel VT-d DMA remapping for perfvisor (README "Threat model": DMA).
//!
//! Without an IOMMU, a device the guest can program (an IDE or NVMe
//! controller, a NIC) can DMA anywhere in physical memory, perfvisor's code,
//! stacks, VMCS and EPT included: EPT confines the guest's CPU accesses, not
//! its devices'. The fix is DMA remapping: every device's requests go
//! through second-level tables that map the guest's RAM (identity, since
//! the guest's physical addresses are host-physical) and nothing of
//! perfvisor's. This crate has the parts of that which can be tested on a
//! host:
//!
//! - [`dmar`]: the ACPI DMAR table (remapping units, reserved memory
//!   regions, device scopes), parsed and checked from bytes;
//! - [`tables`]: finding the DMAR through the RSDP with the `acpi` crate;
//! - [`paging`]: the root, context and second-level tables of the one
//!   domain every device is put in, built from a frame source, and a walk
//!   that translates as the hardware does;
//! - [`regs`]: the register sequence that points a unit at the root table,
//!   invalidates its caches and enables translation, behind a trait.
//!
//! **Unverified on hardware**: perfvisor's machines (Bochs, QEMU TCG)
//! have no VT-d, so none of this has driven a real remapping unit, and
//! perfvisor does not enable translation yet — it only reports the DMAR at
//! boot. What is left to do on hardware: allocate the tables from the
//! hypervisor's pool, map each DRHD's registers uncached, run
//! [`regs::enable_translation`] on every unit, and check the fault
//! registers after a deliberate DMA to a hypervisor page.
#![cfg_attr(not(test), no_std)]

pub mod dmar;
pub mod paging;
pub mod regs;
pub mod tables;

/// The `acpi` crate, for the kernel's [`acpi::AcpiHandler`].
pub use acpi;
