//! DMA at boot (README "Threat model"): looks for the ACPI DMAR table (the
//! firmware's report of VT-d remapping units) and says what it means.
//!
//! perfvisor does not enable DMA remapping yet: the `iommu` crate has the
//! DMAR parser, the DMA page tables and the enable sequence, host-tested
//! but never run on a VT-d machine. So on every machine a device the guest
//! could program could DMA into perfvisor's memory; what closes that today
//! is that the guest reaches no device (I/O ports refused, no MMIO mapped).

use crate::memory::PhysMap;
use core::ptr::NonNull;
use iommu::acpi::{AcpiHandler, PhysicalMapping};
use iommu::dmar::Dmar;
use log::{info, warn};

/// At most this many units and regions are listed.
const LISTED: usize = 8;

/// What closes the hole today, and where the real fix stands.
const TODAY: &str = "The guest reaches no device here (every I/O port but the 8259s is refused, PCI configuration \
     and ATA ports included, and no MMIO is mapped), so it cannot program one. perfvisor's VT-d code (iommu crate: \
     DMAR parsing, DMA page tables, enable sequence) exists but is unverified on hardware; see README \"Threat model\"";

/// ACPI tables through the bootloader's linear map of physical memory.
#[derive(Clone, Copy)]
struct LinearMap(PhysMap);

impl AcpiHandler for LinearMap {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let ptr = NonNull::new(self.0.ptr::<T>(phys as u64)).expect("the linear map is not at address 0");
        // SAFETY: the bootloader maps all physical memory (at least the
        // first 4 GiB and every region of its memory map, where firmware
        // puts the ACPI tables) at the offset; the mapping stays for the
        // kernel's life, so nothing needs unmapping.
        unsafe { PhysicalMapping::new(phys, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Reports the platform's DMA remapping hardware, or its absence, with
/// what a missing IOMMU means for perfvisor.
pub fn report(rsdp: Option<u64>, map: PhysMap) {
    let Some(rsdp) = rsdp else {
        warn!(
            "dma: the bootloader found no ACPI RSDP, so no DMAR table (VT-d) could be looked for, and no IOMMU is \
             set up: a device the guest could program could DMA into perfvisor's memory (code, stacks, VMCS, EPT) \
             and take over the machine. {TODAY}"
        );
        return;
    };
    // SAFETY: the RSDP address is the firmware's, passed on by the
    // bootloader; `LinearMap` maps any physical address the tables name.
    match unsafe { iommu::tables::find_dmar(LinearMap(map), rsdp as usize) } {
        Ok(None) => warn!(
            "dma: no DMAR table in the ACPI tables, so no IOMMU (VT-d) to confine device DMA: a device the guest \
             could program could DMA into perfvisor's memory (code, stacks, VMCS, EPT) and take over the machine. \
             {TODAY}"
        ),
        Ok(Some(found)) => {
            describe(&found.dmar(), found.physical_address());
            warn!(
                "dma: DMA remapping is not yet enabled: a device the guest could program could DMA into perfvisor's \
                 memory (code, stacks, VMCS, EPT) and take over the machine. {TODAY}"
            );
        }
        Err(e) => warn!(
            "dma: {e}; no IOMMU is set up: a device the guest could program could DMA into perfvisor's memory \
             (code, stacks, VMCS, EPT) and take over the machine. {TODAY}"
        ),
    }
}

fn describe(dmar: &Dmar<'_>, at: usize) {
    let flags = dmar.flags();
    info!(
        "dma: DMAR table at {at:#x}: host address width {} bits, {} remapping unit(s), {} reserved memory \
         region(s) (RMRR){}{}",
        dmar.host_address_width(),
        dmar.units().count(),
        dmar.rmrrs().count(),
        if flags.intr_remap { ", interrupt remapping supported" } else { "" },
        if flags.dma_ctrl_platform_opt_in { ", platform DMA limited to the RMRRs at hand-off" } else { "" },
    );
    for (i, unit) in dmar.units().enumerate().take(LISTED) {
        let scopes = unit.scopes().count();
        info!(
            "dma: unit {i}: registers at {:#x} ({} KiB), segment {}, {}{scopes} device scope(s)",
            unit.register_base,
            unit.register_len() / 1024,
            unit.segment,
            if unit.include_pci_all {
                "every PCI device not listed under another unit (INCLUDE_PCI_ALL), "
            } else {
                ""
            },
        );
    }
    for (i, r) in dmar.rmrrs().enumerate().take(LISTED) {
        info!(
            "dma: RMRR {i}: {:#x}..={:#x}, segment {}, {} device(s) that need it identity-mapped",
            r.base,
            r.limit,
            r.segment,
            r.scopes().count()
        );
    }
}
