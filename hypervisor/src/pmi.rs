//! Delivering PMIs to the guest.
//!
//! # Mechanism: the guest owns the local APIC
//! perfvisor's host never takes interrupts (it runs with RFLAGS.IF = 0 and
//! has no handlers above vector 31) and never uses the PMU, so the local
//! APIC is the guest's: IA32_APIC_BASE and the x2APIC MSRs (0x800-0x8ff)
//! pass through, and external-interrupt exiting stays off. A PMI raised by
//! the hardware counters therefore goes through the guest's own LVTPC to
//! its IDT with no VM exit — exactly once, by construction. The two pitfalls
//! of REFERENCE.md §4 do not arise: a PMI that skids past a VM exit stays
//! pending in the APIC (the host's IF is 0) and is delivered at the next VM
//! entry, to its only possible owner; and since the host has no use for
//! NMIs, an LVTPC in NMI mode is unambiguous too: an NMI that exits (NMI
//! exiting) is reflected into the guest, and one that arrives in root mode
//! is noted ([`note_host_nmi`]) and injected at the next VM entry.
//!
//! # PMIs owed by software accounting
//! Instructions perfvisor emulates (CPUID, RDMSR, ...) are counted in
//! software; when that overflows a counter whose PMI bit is set, the PMI is
//! raised here the way the APIC would: the LVTPC (read through its x2APIC
//! MSR) gives the vector or NMI delivery; a masked LVTPC delivers nothing;
//! delivery sets the LVTPC mask bit, as the processor does when it signals a
//! PMI through that entry (why PMI handlers, Linux's among them, unmask it
//! again). The event
//! is injected at VM entry when the guest can take it (RFLAGS.IF = 1, no
//! STI/MOV-SS blocking, no other injection); otherwise interrupt-window
//! exiting brings perfvisor back as soon as it can. A guest whose APIC is in
//! xAPIC mode cannot be read that way: such PMIs are counted and reported.

use crate::arch::msr::{rdmsr_checked, wrmsr_checked};
use crate::vmx_hw::ActiveVmcs;
use vmx::controls::PrimaryControls;
use vmx::exit::{injection_info, EventKind};
use vmx::vmcs::{Vmcs32, VmcsAccess, VmcsError, VmcsNatural};

pub const IA32_APIC_BASE: u32 = 0x1b;
/// The x2APIC MSRs (SDM vol. 3A §12.12.1.2).
pub const X2APIC_MSRS: core::ops::RangeInclusive<u32> = 0x800..=0x8ff;
const X2APIC_LVT_PMI: u32 = 0x834;
const APIC_BASE_X2APIC_ENABLE: u64 = 1 << 10;
const LVT_MASKED: u64 = 1 << 16;
const LVT_DELIVERY_MODE: u64 = 7 << 8;
const DELIVERY_FIXED: u64 = 0;
const DELIVERY_NMI: u64 = 4 << 8;
const RFLAGS_IF: u64 = 1 << 9;
/// Blocking by STI and by MOV SS (SDM vol. 3C §25.4.2, interruptibility state).
const BLOCKED_BY_STI_OR_MOV_SS: u32 = 0b11;

/// An NMI arrived while perfvisor itself ran: it is the guest's.
static HOST_NMI: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Called by the host's NMI handler.
pub fn note_host_nmi() {
    HOST_NMI.store(true, core::sync::atomic::Ordering::SeqCst);
}

/// Whether an NMI noted in root mode waits for the guest.
pub fn host_nmi_pending() -> bool {
    HOST_NMI.load(core::sync::atomic::Ordering::Relaxed)
}

/// Injects an NMI into the guest (a reflected one, or one noted in root mode).
#[cold]
#[inline(never)]
pub fn inject_nmi() -> Result<(), VmcsError> {
    ActiveVmcs.write32(Vmcs32::EntryInterruptionInfo, injection_info(2, EventKind::Nmi, false))
}

/// Before VM entry: an NMI noted in root mode goes to the guest, unless an
/// event is already being injected (then it waits for the next entry).
pub fn forward_host_nmi() -> Result<(), VmcsError> {
    if HOST_NMI.load(core::sync::atomic::Ordering::SeqCst)
        && ActiveVmcs.read32(Vmcs32::EntryInterruptionInfo)? & (1 << 31) == 0
    {
        HOST_NMI.store(false, core::sync::atomic::Ordering::SeqCst);
        inject_nmi()?;
    }
    Ok(())
}

/// PMIs perfvisor owes the guest, and what became of them.
#[derive(Default)]
pub struct PendingPmis {
    pub owed: u64,
    pub delivered: u64,
    /// The LVTPC was masked: the APIC would not have delivered them either.
    pub masked: u64,
    /// The APIC was in xAPIC mode (or the LVTPC had a delivery mode other
    /// than fixed or NMI): not delivered.
    pub undeliverable: u64,
}

fn set_interrupt_window(on: bool) -> Result<(), VmcsError> {
    let mut v = ActiveVmcs;
    let primary = v.read32(Vmcs32::PrimaryControls)?;
    let bit = PrimaryControls::INTERRUPT_WINDOW_EXITING.bits();
    let wanted = if on { primary | bit } else { primary & !bit };
    if wanted != primary {
        v.write32(Vmcs32::PrimaryControls, wanted)?;
    }
    Ok(())
}

impl PendingPmis {
    /// Injects one owed PMI if the guest can take it now, else asks for an
    /// interrupt-window exit. Call at the end of every VM exit that may
    /// have owed one, and on interrupt-window exits.
    #[cold]
    #[inline(never)]
    pub fn deliver(&mut self) -> Result<(), VmcsError> {
        if self.owed == 0 {
            return set_interrupt_window(false);
        }
        let mut v = ActiveVmcs;
        let injecting = v.read32(Vmcs32::EntryInterruptionInfo)? & (1 << 31) != 0;
        let can_take = v.read_natural(VmcsNatural::GuestRflags)? & RFLAGS_IF != 0
            && v.read32(Vmcs32::GuestInterruptibility)? & BLOCKED_BY_STI_OR_MOV_SS == 0;
        if injecting || !can_take {
            return set_interrupt_window(true);
        }
        self.owed -= 1;
        let x2apic = rdmsr_checked(IA32_APIC_BASE).is_ok_and(|b| b & APIC_BASE_X2APIC_ENABLE != 0);
        let lvtpc = if x2apic { rdmsr_checked(X2APIC_LVT_PMI).ok() } else { None };
        match lvtpc {
            Some(lvt) if lvt & LVT_MASKED != 0 => self.masked += 1,
            Some(lvt) if matches!(lvt & LVT_DELIVERY_MODE, DELIVERY_FIXED | DELIVERY_NMI) => {
                let info = if lvt & LVT_DELIVERY_MODE == DELIVERY_NMI {
                    injection_info(2, EventKind::Nmi, false)
                } else {
                    injection_info(lvt as u8, EventKind::ExternalInterrupt, false)
                };
                v.write32(Vmcs32::EntryInterruptionInfo, info)?;
                // SAFETY: the x2APIC LVTPC belongs to the guest (the APIC is
                // passed through); setting its mask bit is what the processor
                // itself does when it delivers a PMI.
                let _ = unsafe { wrmsr_checked(X2APIC_LVT_PMI, lvt | LVT_MASKED) };
                self.delivered += 1;
            }
            _ => self.undeliverable += 1,
        }
        set_interrupt_window(self.owed > 0)
    }
}
