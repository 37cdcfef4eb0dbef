//! Events for the guest that perfvisor must not lose: NMIs, and events
//! whose delivery a VM exit interrupted.
//!
//! # NMIs
//! Every NMI is the guest's: perfvisor's host uses none (its PMU stays
//! parked) and the guest owns the local APIC, so an LVTPC in NMI mode is the
//! guest's PMI. NMI exiting is on with "virtual NMIs" (SDM vol. 3C §26.3):
//! an NMI that arrives while the guest runs exits, one that arrives while
//! perfvisor runs goes to the host's handler; both become one pending NMI,
//! injected before VM entry when the guest is not blocking NMIs (virtual-NMI
//! blocking, which the guest's IRET clears, or MOV-SS/STI blocking), else
//! NMI-window exiting brings perfvisor back the moment it can be. NMIs do
//! not queue beyond one pending, as on hardware.
//!
//! An NMI that reaches the host handler after the run loop looked for one
//! (between that check and VMRESUME) would otherwise wait for the guest's
//! next exit, however late: the handler arms the VMX-preemption timer at 0,
//! so that entry exits at once and the loop injects it (SDM vol. 3C §26.7.4).
//!
//! # The hang watchdog
//! The same timer bounds how long the guest may run without making
//! progress ([`crate::exits`]: a hypercall resets the budget, a HLT with
//! interrupts off spends some of it): with the "save VMX-preemption timer
//! value" exit control the countdown carries over exits, so the budget is
//! guest time since the last reset. When the watchdog is armed the pin
//! control stays on; the NMI path above then saves the remaining budget
//! before it sets the timer to 0, and the forced exit puts it back.
//!
//! # Events in flight (SDM vol. 3C §28.2.4, §27.2.1)
//! A VM exit during event delivery (an EPT violation on the handler's stack,
//! an NMI exit while an interrupt was being delivered, ...) leaves the event
//! in the IDT-vectoring information. It is re-injected at the next entry:
//! for an external interrupt the APIC has already moved the vector to its
//! ISR, so dropping it would wedge the guest's APIC at that priority.
//! Exits caused by instructions (CPUID, RDMSR, ...) never occur during
//! delivery, so their path reads nothing.

use crate::vmx_hw::ActiveVmcs;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use vmx::controls::{PinControls, PrimaryControls};
use vmx::exit::{injection_info, EventKind};
use vmx::vmcs::{Vmcs32, VmcsAccess, VmcsError};

/// Interruptibility state: blocking by STI, by MOV SS, by (virtual) NMI
/// (SDM vol. 3C §25.4.2 Table 25-3).
const BLOCKED_BY_STI: u32 = 1 << 0;
const BLOCKED_BY_MOV_SS: u32 = 1 << 1;
const BLOCKED_BY_NMI: u32 = 1 << 3;
const VALID: u32 = 1 << 31;
const ERROR_CODE_VALID: u32 = 1 << 11;

/// One NMI waits for the guest.
static NMI_PENDING: AtomicBool = AtomicBool::new(false);
/// The CPU has the VMX-preemption timer (set once at setup).
static PREEMPTION_TIMER: AtomicBool = AtomicBool::new(false);
/// The hang watchdog owns the timer (pin control always on).
static WATCHDOG: AtomicBool = AtomicBool::new(false);
/// The NMI path set the timer to 0; the budget it replaced.
static FORCED: AtomicBool = AtomicBool::new(false);
static SAVED_BUDGET: AtomicU32 = AtomicU32::new(0);

/// Says whether the preemption timer may be used to force an exit.
pub fn init(preemption_timer_available: bool) {
    PREEMPTION_TIMER.store(preemption_timer_available, Ordering::SeqCst);
}

/// The host's NMI handler: an NMI arrived while perfvisor ran.
pub fn note_host_nmi() {
    NMI_PENDING.store(true, Ordering::SeqCst);
    if PREEMPTION_TIMER.load(Ordering::Relaxed) {
        // Perhaps the run loop has already looked: make the entry exit at once.
        let _ = set_pin(PinControls::PREEMPTION_TIMER, true).and_then(|()| {
            let mut v = ActiveVmcs;
            if WATCHDOG.load(Ordering::Relaxed) && !FORCED.swap(true, Ordering::SeqCst) {
                SAVED_BUDGET.store(v.read32(Vmcs32::PreemptionTimerValue)?, Ordering::SeqCst);
            }
            v.write32(Vmcs32::PreemptionTimerValue, 0)
        });
    }
}

/// Arms the hang watchdog with `budget` timer ticks: the pin control
/// stays on from now on, with "save VMX-preemption timer value" where the
/// CPU has it (`save`; that control needs the pin control on, SDM vol. 3C
/// §27.2.1.2). `false`: the CPU has no preemption timer.
pub fn arm_watchdog(budget: u32, save: bool) -> Result<bool, VmcsError> {
    if !PREEMPTION_TIMER.load(Ordering::SeqCst) {
        return Ok(false);
    }
    WATCHDOG.store(true, Ordering::SeqCst);
    let mut v = ActiveVmcs;
    v.write32(Vmcs32::PreemptionTimerValue, budget)?;
    set_pin(PinControls::PREEMPTION_TIMER, true)?;
    if save {
        let exit = v.read32(Vmcs32::ExitControls)?;
        v.write32(Vmcs32::ExitControls, exit | vmx::controls::ExitControls::SAVE_PREEMPTION_TIMER.bits())?;
    }
    Ok(true)
}

/// An NMI made the guest exit (NMI exiting): it is the guest's.
pub fn queue_nmi() {
    NMI_PENDING.store(true, Ordering::SeqCst);
}

/// Whether an NMI waits for the guest (the run loop's cheap check).
#[inline(always)]
pub fn nmi_pending() -> bool {
    NMI_PENDING.load(Ordering::Relaxed)
}

/// Gives the watchdog its full budget again (the guest made progress).
/// Runs before the run loop's NMI check, so an NMI the reset overwrites
/// the forcing 0 of is still seen there.
#[cold]
#[inline(never)]
pub fn reset_watchdog(budget: u32) -> Result<(), VmcsError> {
    FORCED.store(false, Ordering::SeqCst);
    ActiveVmcs.write32(Vmcs32::PreemptionTimerValue, budget)
}

/// The preemption timer made this exit. `Ok(true)`: the watchdog's
/// budget ran out. An exit the NMI path forced gets the budget back;
/// without the watchdog the timer is disarmed.
#[cold]
pub fn on_preemption_timer() -> Result<bool, VmcsError> {
    if FORCED.swap(false, Ordering::SeqCst) {
        if WATCHDOG.load(Ordering::SeqCst) {
            ActiveVmcs.write32(Vmcs32::PreemptionTimerValue, SAVED_BUDGET.load(Ordering::SeqCst).max(1))?;
            return Ok(false);
        }
    } else if WATCHDOG.load(Ordering::SeqCst) {
        return Ok(true);
    }
    set_pin(PinControls::PREEMPTION_TIMER, false).map(|()| false)
}

fn set_pin(bit: PinControls, on: bool) -> Result<(), VmcsError> {
    let mut v = ActiveVmcs;
    let pin = v.read32(Vmcs32::PinControls)?;
    let wanted = if on { pin | bit.bits() } else { pin & !bit.bits() };
    if wanted != pin {
        v.write32(Vmcs32::PinControls, wanted)?;
    }
    Ok(())
}

fn set_nmi_window(on: bool) -> Result<(), VmcsError> {
    let mut v = ActiveVmcs;
    let primary = v.read32(Vmcs32::PrimaryControls)?;
    let bit = PrimaryControls::NMI_WINDOW_EXITING.bits();
    let wanted = if on { primary | bit } else { primary & !bit };
    if wanted != primary {
        v.write32(Vmcs32::PrimaryControls, wanted)?;
    }
    Ok(())
}

/// Before VM entry, with an NMI pending: inject it if the guest can take
/// it now, else exit at the NMI window.
#[cold]
#[inline(never)]
pub fn deliver_nmi() -> Result<(), VmcsError> {
    let mut v = ActiveVmcs;
    let injecting = v.read32(Vmcs32::EntryInterruptionInfo)? & VALID != 0;
    let blocked = v.read32(Vmcs32::GuestInterruptibility)? & (BLOCKED_BY_STI | BLOCKED_BY_MOV_SS | BLOCKED_BY_NMI) != 0;
    if injecting || blocked {
        return set_nmi_window(true);
    }
    NMI_PENDING.store(false, Ordering::SeqCst);
    wake_from_hlt(&mut v)?;
    v.write32(Vmcs32::EntryInterruptionInfo, injection_info(2, EventKind::Nmi, false))?;
    set_nmi_window(false)
}

/// A guest halted in HLT (a Linux guest: HLT does not exit) that takes an
/// injected event resumes as the hardware would: an event delivered in the
/// HLT state leaves it, with RIP already past the HLT. An NMI exit can
/// arrive in the guest's HLT state; entering with the state made active
/// is what KVM does too (`vmx_clear_hlt`), and needs no reliance on how a
/// CPU treats injection into HLT.
fn wake_from_hlt(v: &mut ActiveVmcs) -> Result<(), VmcsError> {
    const HLT: u32 = 1;
    if v.read32(Vmcs32::GuestActivityState)? == HLT {
        v.write32(Vmcs32::GuestActivityState, 0)?;
    }
    Ok(())
}

/// After an exit that may have interrupted event delivery: re-inject the
/// event from the IDT-vectoring information, with its error code and, for
/// software interrupts and exceptions, the instruction length.
#[cold]
#[inline(never)]
pub fn requeue_vectored_event() -> Result<(), VmcsError> {
    let mut v = ActiveVmcs;
    let info = v.read32(Vmcs32::IdtVectoringInfo)?;
    if info & VALID == 0 {
        return Ok(());
    }
    // Bits 30:12 of the entry field are reserved; bit 12 of the vectoring
    // field is undefined (SDM vol. 3C §25.9.3, §25.8.3).
    let entry = info & (VALID | ERROR_CODE_VALID | 0x7ff);
    if info & ERROR_CODE_VALID != 0 {
        let code = v.read32(Vmcs32::IdtVectoringErrorCode)?;
        v.write32(Vmcs32::EntryExceptionErrorCode, code)?;
    }
    let kind = (info >> 8) & 7;
    // Software interrupt, privileged software exception, software exception.
    if matches!(kind, 4..=6) {
        let len = v.read32(Vmcs32::ExitInstructionLength)?;
        v.write32(Vmcs32::EntryInstructionLength, len)?;
    }
    if kind == 2 {
        // An NMI whose delivery was cut short never blocked: entry requires
        // the guest unblocked to inject it (SDM vol. 3C §26.3.1.5).
        let state = v.read32(Vmcs32::GuestInterruptibility)?;
        v.write32(Vmcs32::GuestInterruptibility, state & !BLOCKED_BY_NMI)?;
    }
    wake_from_hlt(&mut v)?;
    v.write32(Vmcs32::EntryInterruptionInfo, entry)
}
