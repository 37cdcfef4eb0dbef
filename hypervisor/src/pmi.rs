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
//! NMIs, an LVTPC in NMI mode is unambiguous too: every NMI is the guest's
//! and [`crate::events`] injects it as a virtual NMI when the guest can take it.
//!
//! # PMIs owed by software accounting
//! Instructions perfvisor emulates (CPUID, RDMSR, ...) are counted in
//! software; when that overflows a counter whose PMI bit is set, the PMI is
//! raised through the guest's own local APIC, so the APIC does what it does
//! for a hardware PMI: the LVTPC (read through its x2APIC MSR) gives the
//! vector or NMI delivery; a masked LVTPC delivers nothing; a fixed vector
//! is sent as a self-IPI (x2APIC SELF IPI register), so it waits in the IRR
//! for the guest's TPR, its in-service interrupts and RFLAGS.IF, and the
//! guest's EOI retires it and nothing else; NMI delivery becomes the
//! guest's pending NMI ([`crate::events`]). Delivery sets the LVTPC mask
//! bit, as the processor does when it signals a PMI through that entry (why
//! PMI handlers, Linux's among them, unmask it again). A guest whose APIC
//! is in xAPIC mode cannot be reached that way yet: such PMIs are counted
//! and reported as undeliverable.

use crate::arch::msr::{rdmsr_checked, wrmsr_checked};
use vmx::vmcs::VmcsError;

pub const IA32_APIC_BASE: u32 = 0x1b;
/// The x2APIC MSRs (SDM vol. 3A §12.12.1.2).
pub const X2APIC_MSRS: core::ops::RangeInclusive<u32> = 0x800..=0x8ff;
const X2APIC_LVT_PMI: u32 = 0x834;
/// SELF IPI: a fixed interrupt to this APIC (SDM vol. 3A §12.12.11).
const X2APIC_SELF_IPI: u32 = 0x83f;
const APIC_BASE_X2APIC_ENABLE: u64 = 1 << 10;
const LVT_MASKED: u64 = 1 << 16;
const LVT_DELIVERY_MODE: u64 = 7 << 8;
const DELIVERY_FIXED: u64 = 0;
const DELIVERY_NMI: u64 = 4 << 8;

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

impl PendingPmis {
    /// Raises every owed PMI through the guest's APIC. Call at the end of
    /// every VM exit that may have owed one.
    #[cold]
    #[inline(never)]
    pub fn deliver(&mut self) -> Result<(), VmcsError> {
        while self.owed > 0 {
            self.owed -= 1;
            let x2apic = rdmsr_checked(IA32_APIC_BASE).is_ok_and(|b| b & APIC_BASE_X2APIC_ENABLE != 0);
            let lvtpc = if x2apic { rdmsr_checked(X2APIC_LVT_PMI).ok() } else { None };
            match lvtpc {
                Some(lvt) if lvt & LVT_MASKED != 0 => self.masked += 1,
                Some(lvt) if matches!(lvt & LVT_DELIVERY_MODE, DELIVERY_FIXED | DELIVERY_NMI) => {
                    if lvt & LVT_DELIVERY_MODE == DELIVERY_NMI {
                        crate::events::queue_nmi();
                    } else {
                        // SAFETY: the x2APIC is the guest's (passed through);
                        // a self-IPI of the LVTPC's vector is exactly the
                        // interrupt the guest's own PMU would have raised.
                        let _ = unsafe { wrmsr_checked(X2APIC_SELF_IPI, lvt & 0xff) };
                    }
                    // SAFETY: as above; the processor sets this mask bit
                    // itself when it delivers a PMI.
                    let _ = unsafe { wrmsr_checked(X2APIC_LVT_PMI, lvt | LVT_MASKED) };
                    self.delivered += 1;
                }
                _ => self.undeliverable += 1,
            }
        }
        Ok(())
    }
}
