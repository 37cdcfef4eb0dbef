//! The mediated PMU engine: one guest context's PMU, its MSR policy, the
//! emulation of every intercepted access, and the world switch.
//!
//! # The hardware states
//! Between contexts the hardware PMU is *parked*: every counter, selector,
//! FIXED_CTR_CTRL, PERF_METRICS and GLOBAL_STATUS is 0, and GLOBAL_CTRL is
//! 0 because the VM-exit control "load IA32_PERF_GLOBAL_CTRL" loads the
//! host's 0 (`HostPmu::park` makes it so at boot). `load` therefore writes
//! only non-zero values, and reads GLOBAL_STATUS only when it has a status
//! to restore; `put` reads back what the context may have changed and parks
//! the hardware again, so no value of one context is ever readable by
//! another.
//!
//! # Failures
//! A #GP during `load` or `put` never leaves a context half-loaded: a
//! failed `load` parks what it had loaded and leaves the context unloaded
//! (its saved state untouched); `put` carries on past a #GP, parks all it
//! can and always leaves the context unloaded. Either returns the first
//! #GP. [`VirtualPmu::is_loaded`] says which state a context is in.
//!
//! # Per VM exit/entry
//! Nothing: GLOBAL_CTRL is saved and loaded by the VMCS (SDM vol. 3C
//! §25.7.1, §25.8.1: "save/load IA32_PERF_GLOBAL_CTRL"; a one-entry
//! VM-exit MSR-store list where the save control is missing), everything
//! else stays in the hardware while the guest's context is loaded. Zero PMU
//! instructions per round trip, unless the hypervisor emulated an instruction
//! a guest counter counts ([`VirtualPmu::account_retired`]).
//!
//! # Lazy counter pass-through
//! A counter is *loaded* while its selector (or FIXED_CTR_CTRL field) is
//! non-zero or its value is. Reads of a guest counter always pass through
//! (an unloaded counter reads 0 in hardware, which is its value); writes pass
//! through only once it is loaded, so the first write — the only way an
//! unused counter becomes non-zero — is seen and loads it. Unused counters
//! cost nothing at a switch.

use crate::events::{ArchEvent, Ring};
use crate::hw::{GpFault, PmuHardware, RDPMC_FIXED, RDPMC_METRICS};
use crate::layout::{debugctl, evtsel, fixed_ctrl, status, PmuLayout, MAX_FIXED, MAX_GP};
use crate::msr::{self, PmuReg};

/// How perfvisor runs the guest's PMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Host PMU v4+: counters in hardware, GLOBAL_STATUS restored with STATUS_SET.
    Mediated,
    /// Host PMU v2/v3: counters in hardware, GLOBAL_STATUS kept in software
    /// (there is no STATUS_SET to restore it; seed 003).
    Fallback,
    /// No guest PMU: CPUID.0AH = 0 and every PMU MSR #GPs.
    Off,
}

/// Whether an access exits to the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    PassThrough,
    Intercept,
}

/// One MSR's routing, with why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrPolicy {
    pub msr: u32,
    pub read: Access,
    pub write: Access,
    pub reason: &'static str,
}

/// Events the guest may count: applied to the selector values loaded into
/// hardware (a denied event's selector is loaded with EN clear), while the
/// guest reads back what it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventFilter {
    /// `(event select, umask)` pairs.
    pub events: [(u8, u8); 8],
    pub len: usize,
    /// true: only the listed events count; false: the listed events don't.
    pub allow_list: bool,
    /// Fixed counters the guest may enable (bit i = fixed counter i).
    pub fixed_allowed: u32,
}

impl EventFilter {
    /// Everything allowed.
    pub const NONE: Self = Self { events: [(0, 0); 8], len: 0, allow_list: false, fixed_allowed: u32::MAX };

    fn allows(&self, selector: u64) -> bool {
        let key = ((selector & evtsel::EVENT) as u8, ((selector & evtsel::UMASK) >> 8) as u8);
        self.events[..self.len].contains(&key) == self.allow_list
    }

    /// The selector value loaded into hardware. AnyThread (v3/v4) never
    /// reaches the hardware: it would count the other logical processor
    /// of the core, which is not the guest's (issue 10); the guest reads
    /// back the bit it wrote and counts its own thread.
    pub fn hw_selector(&self, guest: u64) -> u64 {
        let own_thread = guest & !evtsel::ANY_THREAD;
        if self.allows(guest) {
            own_thread
        } else {
            own_thread & !evtsel::EN
        }
    }

    /// The FIXED_CTR_CTRL value loaded into hardware (AnyThread stripped,
    /// as in [`EventFilter::hw_selector`]).
    pub fn hw_fixed_ctrl(&self, guest: u64) -> u64 {
        let any_thread = (0..MAX_FIXED as u32).fold(0, |m, i| m | fixed_ctrl::ANY_THREAD << (4 * i));
        (0..MAX_FIXED as u32)
            .filter(|i| self.fixed_allowed & (1 << i) == 0)
            .fold(guest & !any_thread, |v, i| v & !(fixed_ctrl::FIELD << (4 * i)))
    }
}

/// The guest context's PMU.
#[derive(Clone, Debug)]
pub struct VirtualPmu {
    guest: PmuLayout,
    host: PmuLayout,
    mode: Mode,
    filter: EventFilter,
    /// Bit e set: some enabled selector or fixed counter may count
    /// `ArchEvent::ALL[e]` (kept current so the exit path tests one bit).
    may_count: u8,
    /// Selectors and FIXED_CTR_CTRL as the guest wrote them.
    evtsel: [u64; MAX_GP],
    fixed_ctrl: u64,
    /// The guest's GLOBAL_CTRL: the VMCS guest-state field's value. The
    /// hypervisor copies it into the VMCS before VM entry and back after
    /// VM exit ([`VirtualPmu::on_vm_exit`]).
    pub global_ctrl: u64,
    /// Counter values while the context is not loaded.
    pmc: [u64; MAX_GP],
    fixed: [u64; MAX_FIXED],
    perf_metrics: u64,
    /// Mediated: GLOBAL_STATUS while not loaded. Fallback: the software
    /// part of GLOBAL_STATUS, always (the guest sees it ORed with hardware's).
    status: u64,
    /// Counters in hardware during this load (GLOBAL_CTRL bit numbering).
    loaded_counters: u64,
    loaded: bool,
    /// Hardware GLOBAL_STATUS may be non-zero (put must read it).
    status_maybe_set: bool,
}

/// Makes hardware GLOBAL_STATUS, read as `hw`, equal `guest` with the
/// toggle method (KVM's mediated PMU; SDM vol. 3B §20.2.4: STATUS_RESET
/// clears, STATUS_SET sets): `toggle = guest ^ hw`, then
/// `STATUS_RESET <- hw & toggle` and `STATUS_SET <- guest & toggle`.
/// `guest` must hold only bits STATUS_SET accepts.
fn restore_status(hw_pmu: &mut impl PmuHardware, hw: u64, guest: u64) -> Result<(), GpFault> {
    let toggle = guest ^ hw;
    if hw & toggle != 0 {
        hw_pmu.wrmsr(msr::IA32_PERF_GLOBAL_STATUS_RESET, hw & toggle)?;
    }
    if guest & toggle != 0 {
        hw_pmu.wrmsr(msr::IA32_PERF_GLOBAL_STATUS_SET, guest & toggle)?;
    }
    Ok(())
}

/// Keeps the first error of a sequence that carries on past errors.
fn first_error(result: &mut Result<(), GpFault>, step: Result<(), GpFault>) {
    if result.is_ok() {
        *result = step;
    }
}

/// The context's counters are not loaded: an engine call that needs the
/// hardware was made at the wrong time.
const NOT_LOADED: &str = "the vPMU context must be loaded for this";

impl VirtualPmu {
    /// A guest PMU after reset (GLOBAL_CTRL = the GP enable bits).
    pub fn new(guest: PmuLayout, host: PmuLayout, mode: Mode) -> Self {
        let guest = if mode == Mode::Off { PmuLayout { version: 0, gp_counters: 0, ..guest } } else { guest };
        Self {
            guest,
            host,
            mode,
            filter: EventFilter::NONE,
            may_count: 0,
            evtsel: [0; MAX_GP],
            fixed_ctrl: 0,
            global_ctrl: if guest.version >= 2 { guest.gp_mask() } else { 0 },
            pmc: [0; MAX_GP],
            fixed: [0; MAX_FIXED],
            perf_metrics: 0,
            status: 0,
            loaded_counters: 0,
            loaded: false,
            status_maybe_set: false,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The context's state is in the hardware (between a successful `load`
    /// and the next `put`).
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    pub fn guest_layout(&self) -> &PmuLayout {
        &self.guest
    }

    /// The guest's counter layout equals the host's: GLOBAL_CTRL/STATUS/RESET
    /// and RDPMC can go to hardware unchanged.
    pub fn same_counters_as_host(&self) -> bool {
        self.guest.counter_bits() == self.host.counter_bits()
            && self.guest.gp_width == self.host.gp_width
            && self.guest.fixed_width == self.host.fixed_width
    }

    /// RDPMC must exit: otherwise it would read host counters the guest lacks.
    pub fn rdpmc_exiting(&self) -> bool {
        self.mode == Mode::Off || !self.same_counters_as_host()
    }

    // ----- register existence and reserved bits, for the guest's layout -----

    fn guest_has(&self, reg: PmuReg) -> bool {
        let g = &self.guest;
        let v = g.version;
        match reg {
            PmuReg::Pmc(i) | PmuReg::EventSelect(i) => v >= 2 && i < g.gp_counters,
            PmuReg::FullWidthPmc(i) => v >= 2 && i < g.gp_counters && g.fw_write(),
            PmuReg::Fixed(i) => v >= 2 && g.fixed.contains(u32::from(i)),
            PmuReg::FixedCtrl | PmuReg::GlobalCtrl | PmuReg::GlobalStatus | PmuReg::StatusReset => v >= 2,
            PmuReg::StatusSet | PmuReg::Inuse => v >= 4,
            PmuReg::PerfCapabilities => v >= 2 && g.pdcm,
            PmuReg::PerfMetrics => v >= 2 && g.perf_metrics(),
            // DEBUGCTL is switched by the VMCS, not by the vPMU.
            PmuReg::DebugCtl => false,
        }
    }

    /// Status bits other than the counters' that the guest's version defines.
    fn status_flag_bits(&self) -> u64 {
        match self.guest.version {
            4.. => status::TRACE_TOPA_PMI | status::LBR_FRZ | status::CTR_FRZ | status::OVF_UNCORE | status::OVF_BUFFER,
            _ => status::OVF_BUFFER,
        }
    }

    /// The saved GLOBAL_STATUS bits `load` restores through STATUS_SET: the
    /// guest's counters and the v4 flags, all of which STATUS_SET accepts
    /// (SDM vol. 4, IA32_PERF_GLOBAL_STATUS_SET). Bits it has no way to set
    /// (CondChgd, ASCI, anything the host CPU set beyond the guest's
    /// layout) are dropped rather than faulting the whole restore.
    fn settable_status(&self) -> u64 {
        self.guest.counter_bits() | self.status_flag_bits()
    }

    /// GLOBAL_STATUS bits `put` clears through STATUS_RESET: what RESET
    /// (OVF_CTRL) defines on the host.
    fn resettable_status(&self) -> u64 {
        let flags = if self.host.version >= 4 {
            status::TRACE_TOPA_PMI
                | status::LBR_FRZ
                | status::CTR_FRZ
                | status::ASCI
                | status::OVF_UNCORE
                | status::OVF_BUFFER
        } else {
            status::OVF_BUFFER
        };
        self.host.counter_bits() | flags | status::COND_CHGD
    }

    fn evtsel_writable(&self) -> u64 {
        let anythread = if self.guest.anythread_allowed() { evtsel::ANY_THREAD } else { 0 };
        (0xffff_ffff & !evtsel::ANY_THREAD) | anythread
    }

    fn fixed_ctrl_writable(&self) -> u64 {
        let field = fixed_ctrl::OS
            | fixed_ctrl::USR
            | fixed_ctrl::PMI
            | if self.guest.anythread_allowed() { fixed_ctrl::ANY_THREAD } else { 0 };
        self.guest.fixed.iter().map(|i| field << (4 * i)).fold(0, |a, b| a | b)
    }

    // ----- the MSR policy -----

    /// How `msr` is routed now. Counter writes change from Intercept to
    /// PassThrough when the counter is loaded: refresh the MSR bitmap after
    /// every intercepted access and every `load`.
    pub fn policy(&self, msr: u32) -> MsrPolicy {
        use Access::{Intercept, PassThrough};
        let rule = |read, write, reason| MsrPolicy { msr, read, write, reason };
        let Some(reg) = PmuReg::decode(msr).filter(|&r| self.guest_has(r)) else {
            return rule(Intercept, Intercept, "absent for this guest: every access #GPs");
        };
        let counter_bit = match reg {
            PmuReg::Pmc(i) | PmuReg::FullWidthPmc(i) => Some(u64::from(i)),
            PmuReg::Fixed(i) => Some(32 + u64::from(i)),
            _ => None,
        };
        let equal = self.same_counters_as_host();
        match reg {
            _ if counter_bit.is_some_and(|b| self.loaded && self.loaded_counters & (1 << b) != 0) => {
                rule(PassThrough, PassThrough, "a loaded counter: the hardware holds the guest's value")
            }
            _ if counter_bit.is_some() => rule(
                PassThrough,
                Intercept,
                "an unloaded counter reads 0 in hardware, its value; the first write loads it",
            ),
            PmuReg::EventSelect(_) | PmuReg::FixedCtrl => {
                rule(Intercept, Intercept, "the event filter: hardware holds a filtered value, the guest reads its own")
            }
            PmuReg::GlobalCtrl if equal => {
                rule(PassThrough, PassThrough, "the VMCS saves and loads it; the guest has the host's counters")
            }
            PmuReg::GlobalCtrl => rule(Intercept, Intercept, "bits of host counters the guest lacks must #GP"),
            PmuReg::GlobalStatus | PmuReg::StatusReset if self.mode == Mode::Fallback => {
                rule(Intercept, Intercept, "no STATUS_SET before v4: GLOBAL_STATUS is partly kept in software")
            }
            PmuReg::GlobalStatus | PmuReg::StatusReset if equal => {
                rule(PassThrough, PassThrough, "restored at load with STATUS_SET; same counters as the host")
            }
            PmuReg::GlobalStatus | PmuReg::StatusReset => {
                rule(Intercept, Intercept, "bits of host counters the guest lacks must be hidden / #GP")
            }
            PmuReg::StatusSet => {
                rule(Intercept, Intercept, "lets perfvisor know GLOBAL_STATUS may be non-zero (put reads it only then)")
            }
            PmuReg::Inuse => {
                rule(Intercept, Intercept, "derived from the guest's selectors, not the filtered hardware ones")
            }
            PmuReg::PerfCapabilities => rule(Intercept, Intercept, "the guest sees a narrowed value; writes #GP"),
            PmuReg::PerfMetrics => rule(PassThrough, PassThrough, "paired with fixed counter 3, switched with it"),
            _ => rule(Intercept, Intercept, "not a vPMU register"),
        }
    }

    /// The policy of every PMU MSR (the table the MSR bitmap is built from).
    pub fn policies(&self) -> impl Iterator<Item = MsrPolicy> + '_ {
        msr::all_pmu_msrs().map(|m| self.policy(m))
    }

    /// Writes [`VirtualPmu::policies`] into the guest's MSR bitmap: what the
    /// hypervisor installs at start and after every intercepted PMU access.
    pub fn install_msr_bitmap(&self, bitmap: &mut vmx::msr_bitmap::MsrBitmap) {
        use vmx::msr_bitmap::Intercept;
        let bit = |a: Access| {
            if a == Access::PassThrough {
                Intercept::PassThrough
            } else {
                Intercept::Exit
            }
        };
        for p in self.policies() {
            // Every PMU MSR lies in the bitmap's low range.
            let _ = bitmap.set_read(p.msr, bit(p.read));
            let _ = bitmap.set_write(p.msr, bit(p.write));
        }
    }

    /// Whether some guest counter could count `event` (enabled selector or
    /// fixed-counter field for it): the one-bit test before accounting.
    #[inline]
    pub fn may_count(&self, event: ArchEvent) -> bool {
        self.may_count & (1 << event as u8) != 0
    }

    /// Recomputes [`Self::may_count`]'s bits after the selectors, the fixed
    /// counters' controls or the filter changed.
    fn refresh_may_count(&mut self) {
        self.may_count = 0;
        if self.mode == Mode::Off {
            return;
        }
        for (bit, event) in ArchEvent::ALL.into_iter().enumerate() {
            let (ev, umask) = event.encoding();
            let gp = self.evtsel[..usize::from(self.guest.gp_counters)].iter().any(|&s| {
                s & evtsel::EN != 0 && (s & evtsel::EVENT) as u8 == ev && ((s & evtsel::UMASK) >> 8) as u8 == umask
            });
            let fixed = event
                .fixed_counter()
                .is_some_and(|f| (self.fixed_ctrl >> (4 * f)) & (fixed_ctrl::OS | fixed_ctrl::USR) != 0);
            if gp || fixed {
                self.may_count |= 1 << bit;
            }
        }
    }

    /// Installs an event filter (applied to the hardware selectors at the
    /// next load and on every selector write).
    pub fn set_filter(&mut self, filter: EventFilter) {
        self.filter = filter;
        self.refresh_may_count();
    }

    // ----- helpers for the hardware side -----

    /// The MSR that writes counter `bit`: IA32_A_PMCx where the host has
    /// full-width writes (every bit restored), else IA32_PMCx, whose writes
    /// sign-extend from bit 31 on hardware: without FW_WRITE a saved value
    /// that is not the sign extension of its low 32 bits is restored
    /// inexactly (the hypervisor logs this limitation at boot).
    fn counter_msr(&self, bit: u32) -> u32 {
        if bit >= 32 {
            msr::IA32_FIXED_CTR0 + (bit - 32)
        } else if self.host.fw_write() {
            msr::IA32_A_PMC0 + bit
        } else {
            msr::IA32_PMC0 + bit
        }
    }

    fn gp_in_use(&self, i: usize) -> bool {
        self.evtsel[i] != 0 || self.pmc[i] != 0
    }

    fn fixed_in_use(&self, i: u32) -> bool {
        (self.fixed_ctrl >> (4 * i)) & fixed_ctrl::FIELD != 0 || self.fixed[i as usize] != 0
    }

    /// Makes counter `bit` live in hardware now (during a load), writing
    /// its value.
    fn load_counter(&mut self, hw: &mut impl PmuHardware, bit: u32, value: u64) -> Result<(), GpFault> {
        self.loaded_counters |= 1 << bit;
        if value != 0 {
            hw.wrmsr(self.counter_msr(bit), value)?;
        }
        Ok(())
    }

    // ----- the world switch -----

    /// Puts the context's PMU state into the (parked) hardware. Call after
    /// a VM exit left GLOBAL_CTRL = 0, before the VM entry that loads the
    /// guest's GLOBAL_CTRL. Selectors are written only while GLOBAL_CTRL is 0.
    /// On a #GP the hardware is parked again and the context stays unloaded.
    pub fn load(&mut self, hw: &mut impl PmuHardware) -> Result<(), GpFault> {
        assert!(!self.loaded, "vPMU context loaded twice");
        self.loaded = true;
        self.loaded_counters = 0;
        self.status_maybe_set = false;
        if self.mode == Mode::Off {
            return Ok(());
        }
        let result = self.load_registers(hw);
        if result.is_err() {
            self.unload_after_fault(hw);
        }
        result
    }

    fn load_registers(&mut self, hw: &mut impl PmuHardware) -> Result<(), GpFault> {
        for i in 0..usize::from(self.guest.gp_counters) {
            if self.gp_in_use(i) {
                self.load_counter(hw, i as u32, self.pmc[i])?;
                let sel = self.filter.hw_selector(self.evtsel[i]);
                if sel != 0 {
                    hw.wrmsr(msr::IA32_PERFEVTSEL0 + i as u32, sel)?;
                }
            }
        }
        let perf_metrics = self.guest.perf_metrics();
        for i in self.guest.fixed.iter() {
            if self.fixed_in_use(i) {
                self.load_counter(hw, 32 + i, self.fixed[i as usize])?;
            }
            // PERF_METRICS right after fixed counter 3 (REFERENCE.md §4).
            // It is passed through, so it is part of every load and put of
            // a context that has it.
            if i == 3 && perf_metrics {
                self.loaded_counters |= status::PERF_METRICS;
                if self.perf_metrics != 0 {
                    hw.wrmsr(msr::IA32_PERF_METRICS, self.perf_metrics)?;
                }
            }
        }
        let fixed_ctrl = self.filter.hw_fixed_ctrl(self.fixed_ctrl);
        if fixed_ctrl != 0 {
            hw.wrmsr(msr::IA32_FIXED_CTR_CTRL, fixed_ctrl)?;
        }
        if self.mode == Mode::Mediated {
            let want = self.status & self.settable_status();
            if want != 0 {
                // Toggle against what the hardware holds, not an assumed 0.
                self.status_maybe_set = true;
                let now = hw.rdmsr(msr::IA32_PERF_GLOBAL_STATUS)?;
                restore_status(hw, now, want)?;
            }
        }
        Ok(())
    }

    /// A `load` faulted part-way: park what it loaded (best effort) and
    /// leave the context unloaded; its saved state was not changed.
    fn unload_after_fault(&mut self, hw: &mut impl PmuHardware) {
        let _ = hw.wrmsr(msr::IA32_FIXED_CTR_CTRL, 0);
        for i in 0..self.guest.gp_counters.min(MAX_GP as u8) {
            if self.loaded_counters & (1 << i) != 0 {
                let _ = hw.wrmsr(msr::IA32_PERFEVTSEL0 + u32::from(i), 0);
                let _ = hw.wrmsr(self.counter_msr(u32::from(i)), 0);
            }
        }
        for i in self.guest.fixed.iter() {
            if self.loaded_counters & (1 << (32 + i)) != 0 {
                let _ = hw.wrmsr(self.counter_msr(32 + i), 0);
            }
        }
        if self.loaded_counters & status::PERF_METRICS != 0 {
            let _ = hw.wrmsr(msr::IA32_PERF_METRICS, 0);
        }
        if self.status_maybe_set {
            if let Ok(st) = hw.rdmsr(msr::IA32_PERF_GLOBAL_STATUS) {
                let _ = hw.wrmsr(msr::IA32_PERF_GLOBAL_STATUS_RESET, st & self.resettable_status());
            }
        }
        self.loaded = false;
        self.loaded_counters = 0;
        self.status_maybe_set = false;
    }

    /// Saves the context's PMU state and parks the hardware: after `put`
    /// nothing the guest wrote is readable. Call while GLOBAL_CTRL is 0
    /// (after a VM exit). The context is unloaded afterwards even if a
    /// register faulted (the first #GP is returned; a value that could not
    /// be read keeps its last saved value).
    pub fn put(&mut self, hw: &mut impl PmuHardware) -> Result<(), GpFault> {
        assert!(self.loaded, "vPMU context put while not loaded");
        self.loaded = false;
        let loaded = core::mem::take(&mut self.loaded_counters);
        let status_maybe_set = core::mem::take(&mut self.status_maybe_set);
        if self.mode == Mode::Off {
            return Ok(());
        }
        let mut result = Ok(());
        if status_maybe_set || loaded != 0 {
            match hw.rdmsr(msr::IA32_PERF_GLOBAL_STATUS) {
                Ok(hw_status) => {
                    let clear = hw_status & self.resettable_status();
                    if clear != 0 {
                        first_error(&mut result, hw.wrmsr(msr::IA32_PERF_GLOBAL_STATUS_RESET, clear));
                    }
                    match self.mode {
                        Mode::Mediated => self.status = hw_status,
                        _ => self.status |= hw_status,
                    }
                }
                Err(e) => first_error(&mut result, Err(e)),
            }
        }
        if self.filter.hw_fixed_ctrl(self.fixed_ctrl) != 0 {
            first_error(&mut result, hw.wrmsr(msr::IA32_FIXED_CTR_CTRL, 0));
        }
        for i in 0..usize::from(self.guest.gp_counters) {
            if loaded & (1 << i) == 0 {
                continue;
            }
            // Zeroed unless it read back 0.
            let read = hw.rdpmc(i as u32);
            if let Ok(v) = read {
                self.pmc[i] = v;
            }
            if read != Ok(0) {
                first_error(&mut result, read.map(|_| ()));
                first_error(&mut result, hw.wrmsr(self.counter_msr(i as u32), 0));
            }
            if self.filter.hw_selector(self.evtsel[i]) != 0 {
                first_error(&mut result, hw.wrmsr(msr::IA32_PERFEVTSEL0 + i as u32, 0));
            }
        }
        // PERF_METRICS is saved before fixed counter 3 is touched and
        // cleared right after it, mirroring `load` (REFERENCE.md §4).
        let perf_metrics = (loaded & status::PERF_METRICS != 0).then(|| hw.rdmsr(msr::IA32_PERF_METRICS));
        if let Some(Ok(v)) = perf_metrics {
            self.perf_metrics = v;
        }
        for i in self.guest.fixed.iter() {
            if loaded & (1 << (32 + i)) != 0 {
                let read = hw.rdpmc(RDPMC_FIXED | i);
                if let Ok(v) = read {
                    self.fixed[i as usize] = v;
                }
                if read != Ok(0) {
                    first_error(&mut result, read.map(|_| ()));
                    first_error(&mut result, hw.wrmsr(self.counter_msr(32 + i), 0));
                }
            }
            if i == 3 && perf_metrics.is_some_and(|read| read != Ok(0)) {
                first_error(&mut result, perf_metrics.unwrap_or(Ok(0)).map(|_| ()));
                first_error(&mut result, hw.wrmsr(msr::IA32_PERF_METRICS, 0));
            }
        }
        result
    }

    /// After a VM exit: the guest's GLOBAL_CTRL as the VMCS saved it.
    pub fn on_vm_exit(&mut self, saved_global_ctrl: u64) {
        self.global_ctrl = saved_global_ctrl;
    }

    // ----- emulation of intercepted accesses (context loaded, in a VM exit) -----

    /// The guest's RDMSR of an intercepted PMU MSR.
    pub fn read(&mut self, hw: &mut impl PmuHardware, msr: u32) -> Result<u64, GpFault> {
        let reg = PmuReg::decode(msr).filter(|&r| self.guest_has(r)).ok_or(GpFault)?;
        debug_assert!(self.loaded, "{NOT_LOADED}");
        let guest_status_bits = self.guest.counter_bits() | self.status_flag_bits() | status::COND_CHGD;
        Ok(match reg {
            PmuReg::Pmc(i) | PmuReg::FullWidthPmc(i) => self.counter_value(hw, u32::from(i))?,
            PmuReg::Fixed(i) => self.counter_value(hw, 32 + u32::from(i))?,
            PmuReg::EventSelect(i) => self.evtsel[usize::from(i)],
            PmuReg::FixedCtrl => self.fixed_ctrl,
            PmuReg::GlobalCtrl => self.global_ctrl,
            PmuReg::GlobalStatus => {
                let hw_status = hw.rdmsr(msr::IA32_PERF_GLOBAL_STATUS)?;
                let soft = if self.mode == Mode::Fallback { self.status } else { 0 };
                (hw_status | soft) & guest_status_bits
            }
            PmuReg::StatusReset | PmuReg::StatusSet => 0,
            PmuReg::Inuse => self.inuse(),
            PmuReg::PerfCapabilities => self.guest.perf_capabilities.bits(),
            PmuReg::PerfMetrics if self.loaded_counters & (status::PERF_METRICS) != 0 => {
                hw.rdmsr(msr::IA32_PERF_METRICS)?
            }
            PmuReg::PerfMetrics => self.perf_metrics,
            PmuReg::DebugCtl => return Err(GpFault),
        })
    }

    fn counter_value(&self, hw: &mut impl PmuHardware, bit: u32) -> Result<u64, GpFault> {
        if self.loaded_counters & (1 << bit) == 0 {
            return Ok(0);
        }
        hw.rdpmc(if bit >= 32 { RDPMC_FIXED | (bit - 32) } else { bit })
    }

    /// IA32_PERF_GLOBAL_INUSE as v4 defines it, from the guest's own values.
    fn inuse(&self) -> u64 {
        let gp = (0..usize::from(self.guest.gp_counters))
            .filter(|&i| self.evtsel[i] & evtsel::EVENT != 0)
            .fold(0u64, |v, i| v | 1 << i);
        let fixed = self
            .guest
            .fixed
            .iter()
            .filter(|i| (self.fixed_ctrl >> (4 * i)) & (fixed_ctrl::OS | fixed_ctrl::USR) != 0)
            .fold(0u64, |v, i| v | 1 << (32 + i));
        let pmi = self.evtsel.iter().any(|s| s & evtsel::INT != 0)
            || self.guest.fixed.iter().any(|i| (self.fixed_ctrl >> (4 * i)) & fixed_ctrl::PMI != 0);
        gp | fixed | if pmi { 1 << 63 } else { 0 }
    }

    /// The guest's WRMSR of an intercepted PMU MSR; `Err` = inject #GP.
    pub fn write(&mut self, hw: &mut impl PmuHardware, msr: u32, value: u64) -> Result<(), GpFault> {
        let reg = PmuReg::decode(msr).filter(|&r| self.guest_has(r)).ok_or(GpFault)?;
        debug_assert!(self.loaded, "{NOT_LOADED}");
        let fits = |allowed: u64| {
            if value & !allowed == 0 {
                Ok(())
            } else {
                Err(GpFault)
            }
        };
        match reg {
            PmuReg::Pmc(i) => {
                // SDM vol. 3B §20.2.6: bits 31:0 written, sign-extended from bit 31.
                let v = value as u32 as i32 as i64 as u64 & self.guest.gp_value_mask();
                self.write_counter(hw, u32::from(i), v)
            }
            PmuReg::FullWidthPmc(i) => {
                fits(self.guest.gp_value_mask())?;
                self.write_counter(hw, u32::from(i), value)
            }
            PmuReg::Fixed(i) => self.write_counter(hw, 32 + u32::from(i), value & self.guest.fixed_value_mask()),
            PmuReg::EventSelect(i) => {
                fits(self.evtsel_writable())?;
                let i = usize::from(i);
                let old_hw = self.filter.hw_selector(self.evtsel[i]);
                self.evtsel[i] = value;
                let new_hw = self.filter.hw_selector(value);
                if value != 0 && self.loaded_counters & (1 << i) == 0 {
                    self.load_counter(hw, i as u32, 0)?;
                }
                if new_hw != old_hw {
                    hw.wrmsr(msr, new_hw)?;
                }
                self.refresh_may_count();
                Ok(())
            }
            PmuReg::FixedCtrl => {
                fits(self.fixed_ctrl_writable())?;
                let old_hw = self.filter.hw_fixed_ctrl(self.fixed_ctrl);
                self.fixed_ctrl = value;
                for i in self.guest.fixed.iter() {
                    let bit = 32 + i;
                    if (value >> (4 * i)) & fixed_ctrl::FIELD != 0 && self.loaded_counters & (1 << bit) == 0 {
                        self.load_counter(hw, bit, 0)?;
                    }
                }
                let new_hw = self.filter.hw_fixed_ctrl(value);
                if new_hw != old_hw {
                    hw.wrmsr(msr, new_hw)?;
                }
                self.refresh_may_count();
                Ok(())
            }
            PmuReg::GlobalCtrl => {
                fits(self.guest.counter_bits())?;
                self.global_ctrl = value;
                Ok(())
            }
            PmuReg::StatusReset => {
                fits(self.guest.counter_bits() | self.status_flag_bits() | status::COND_CHGD)?;
                if self.mode == Mode::Fallback {
                    self.status &= !value;
                }
                hw.wrmsr(msr, value)
            }
            PmuReg::StatusSet => {
                fits(self.guest.counter_bits() | self.status_flag_bits())?;
                if self.mode == Mode::Fallback {
                    self.status |= value;
                    return Ok(());
                }
                self.status_maybe_set = true;
                hw.wrmsr(msr, value)
            }
            PmuReg::PerfMetrics => {
                self.loaded_counters |= status::PERF_METRICS;
                hw.wrmsr(msr, value)
            }
            PmuReg::GlobalStatus | PmuReg::Inuse | PmuReg::PerfCapabilities | PmuReg::DebugCtl => Err(GpFault),
        }
    }

    fn write_counter(&mut self, hw: &mut impl PmuHardware, bit: u32, value: u64) -> Result<(), GpFault> {
        if self.loaded_counters & (1 << bit) == 0 {
            if value == 0 {
                return Ok(()); // unloaded counters are 0 already
            }
            return self.load_counter(hw, bit, value);
        }
        hw.wrmsr(self.counter_msr(bit), value)
    }

    /// The guest's RDPMC when it exits ([`VirtualPmu::rdpmc_exiting`]).
    pub fn rdpmc(&mut self, hw: &mut impl PmuHardware, ecx: u32) -> Result<u64, GpFault> {
        // ECX[29] reads IA32_PERF_METRICS (SDM vol. 2B RDPMC; Linux's
        // top-down code uses it): the guest's value, which it owns while loaded.
        if ecx & RDPMC_METRICS != 0 {
            if ecx != RDPMC_METRICS || !self.guest_has(PmuReg::PerfMetrics) {
                return Err(GpFault);
            }
            return hw.rdmsr(msr::IA32_PERF_METRICS);
        }
        let fast = ecx & (1 << 31) != 0;
        let index = ecx & !(RDPMC_FIXED | 1 << 31);
        let reg = if ecx & RDPMC_FIXED != 0 {
            PmuReg::Fixed(u8::try_from(index).map_err(|_| GpFault)?)
        } else {
            PmuReg::Pmc(u8::try_from(index).map_err(|_| GpFault)?)
        };
        if index >= 32 || !self.guest_has(reg) {
            return Err(GpFault);
        }
        let bit = if ecx & RDPMC_FIXED != 0 { 32 + index } else { index };
        let v = self.counter_value(hw, bit)?;
        Ok(if fast { v & 0xffff_ffff } else { v })
    }

    /// The hypervisor emulated `count` retirements of `event` for the guest
    /// at `ring` (CPUID, RDMSR, WRMSR, VMCALL exits): hardware did not count
    /// them, so every guest counter that would have is incremented here, an
    /// overflow sets its GLOBAL_STATUS bit, and the return value says how
    /// many PMIs the guest is owed. Costs PMU instructions only when a
    /// counter counts the event.
    pub fn account_retired(
        &mut self,
        hw: &mut impl PmuHardware,
        event: ArchEvent,
        count: u64,
        ring: Ring,
    ) -> Result<u32, GpFault> {
        if self.mode == Mode::Off || count == 0 {
            return Ok(0);
        }
        let (ev, umask) = event.encoding();
        let ring_bit = match ring {
            Ring::User => (evtsel::USR, fixed_ctrl::USR),
            Ring::Kernel => (evtsel::OS, fixed_ctrl::OS),
        };
        let mut counting: u64 = 0;
        let mut pmi_enabled: u64 = 0;
        for i in 0..usize::from(self.guest.gp_counters) {
            let sel = self.filter.hw_selector(self.evtsel[i]);
            if sel & evtsel::EN != 0
                && sel & ring_bit.0 != 0
                && sel & (evtsel::CMASK | evtsel::INV | evtsel::EDGE) == 0
                && (sel & evtsel::EVENT) as u8 == ev
                && ((sel & evtsel::UMASK) >> 8) as u8 == umask
            {
                counting |= 1 << i;
                if sel & evtsel::INT != 0 {
                    pmi_enabled |= 1 << i;
                }
            }
        }
        if let Some(f) = event.fixed_counter().map(|f| f as u32) {
            let field = (self.filter.hw_fixed_ctrl(self.fixed_ctrl) >> (4 * f)) & fixed_ctrl::FIELD;
            if self.guest.fixed.contains(f) && field & ring_bit.1 != 0 {
                counting |= 1 << (32 + f);
                if field & fixed_ctrl::PMI != 0 {
                    pmi_enabled |= 1 << (32 + f);
                }
            }
        }
        counting &= self.global_ctrl;
        if counting == 0 {
            return Ok(0);
        }
        let streamlined = self.guest.version >= 4;
        // Streamlined freeze (v4): nothing counts while CTR_Frz is set.
        if streamlined {
            let soft = if self.mode == Mode::Fallback { self.status } else { 0 };
            if (hw.rdmsr(msr::IA32_PERF_GLOBAL_STATUS)? | soft) & status::CTR_FRZ != 0 {
                return Ok(0);
            }
        }
        let mut overflowed = 0u64;
        for bit in (0..64).filter(|b| counting & (1u64 << b) != 0) {
            let mask = if bit >= 32 { self.guest.fixed_value_mask() } else { self.guest.gp_value_mask() };
            let index = if bit >= 32 { RDPMC_FIXED | (bit - 32) } else { bit };
            let old = if self.loaded_counters & (1 << bit) != 0 { hw.rdpmc(index)? } else { 0 };
            let sum = u128::from(old) + u128::from(count);
            if sum > u128::from(mask) {
                overflowed |= 1 << bit;
            }
            self.write_counter(hw, bit, (sum & u128::from(mask)) as u64)?;
        }
        let pmis = overflowed & pmi_enabled;
        let mut set = overflowed;
        if pmis != 0 {
            // What the processor does when it signals the PMI, as the
            // guest's DEBUGCTL asks (SDM vol. 3B §20.2.4.1, §20.2.6.2):
            // v4 sets CTR_Frz/LBR_Frz; v2/v3 clear GLOBAL_CTRL and DEBUGCTL.LBR.
            let dbg = hw.debugctl()?;
            if dbg & debugctl::FREEZE_PERFMON_ON_PMI != 0 {
                if streamlined {
                    set |= status::CTR_FRZ;
                } else {
                    self.global_ctrl = 0;
                }
            }
            if dbg & debugctl::FREEZE_LBRS_ON_PMI != 0 {
                if streamlined {
                    set |= status::LBR_FRZ;
                } else if dbg & debugctl::LBR != 0 {
                    hw.set_debugctl(dbg & !debugctl::LBR)?;
                }
            }
        }
        if set != 0 {
            match self.mode {
                Mode::Mediated => {
                    hw.wrmsr(msr::IA32_PERF_GLOBAL_STATUS_SET, set)?;
                    self.status_maybe_set = true;
                }
                _ => self.status |= set,
            }
        }
        Ok(pmis.count_ones())
    }
}
