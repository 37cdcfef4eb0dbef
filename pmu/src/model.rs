//! A software Intel architectural PMU written from the SDM (vol. 3B ch. 20,
//! vol. 4 Table 2-2), for host tests and benchmarks: our machines have no PMU.
//!
//! It is deliberately written apart from the engine (`emulate`): the
//! property tests compare the two, so they must not share the #GP rules.
//!
//! What it models: GP counters (legacy writes sign-extend from bit 31,
//! full-width writes beyond the width #GP), event selectors (EN, USR, OS,
//! INT; counting only with CMASK = 0, INV = 0, E = 0), fixed counters and
//! FIXED_CTR_CTRL, GLOBAL_CTRL gating, overflow into GLOBAL_STATUS and a PMI
//! when enabled, STATUS_RESET/OVF_CTRL, STATUS_SET and INUSE (v4),
//! Freeze_PerfMon_On_PMI and Freeze_LBRs_On_PMI (legacy before v4,
//! streamlined CTR_Frz/LBR_Frz from v4), PERF_CAPABILITIES, PERF_METRICS as
//! a plain register, #GP for reserved bits and absent registers, RDPMC.
//! What it does not: PEBS, LBR records, AnyThread counting, CondChgd
//! sources, uncore.

pub use crate::events::{ArchEvent, Ring};
use crate::hw::{GpFault, PmuHardware, RDPMC_FIXED};
use crate::layout::{debugctl, evtsel, fixed_ctrl, status, PmuLayout, MAX_FIXED, MAX_GP};
use crate::msr::PmuReg;

/// How many PMU instructions were executed (for the switch-cost benchmark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstructionCounts {
    pub rdmsr: u64,
    pub wrmsr: u64,
    pub rdpmc: u64,
}

/// Every architectural register value (what a context can observe).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PmuRegisters {
    pub pmc: [u64; MAX_GP],
    pub evtsel: [u64; MAX_GP],
    pub fixed: [u64; MAX_FIXED],
    pub fixed_ctrl: u64,
    pub global_ctrl: u64,
    pub global_status: u64,
    pub debugctl: u64,
    pub perf_metrics: u64,
}

#[derive(Clone, Debug)]
pub struct ModelPmu {
    pub layout: PmuLayout,
    pub regs: PmuRegisters,
    /// PMIs raised so far.
    pub pmis: u64,
    pub counts: InstructionCounts,
    /// Selector or FIXED_CTR_CTRL writes made while GLOBAL_CTRL was non-zero
    /// (REFERENCE.md §4: stray events and PMIs). The switch must make none.
    pub control_writes_while_enabled: u64,
}

impl ModelPmu {
    /// A PMU after reset: everything 0 except GLOBAL_CTRL, whose GP enable
    /// bits are set (SDM vol. 3B §20.2.2: "the default value ... is to enable
    /// all general-purpose counters").
    pub fn new(layout: PmuLayout) -> Self {
        let mut regs = PmuRegisters::default();
        if layout.version >= 2 {
            regs.global_ctrl = layout.gp_mask();
        }
        Self { layout, regs, pmis: 0, counts: InstructionCounts::default(), control_writes_while_enabled: 0 }
    }

    fn exists(&self, reg: PmuReg) -> bool {
        let l = &self.layout;
        let gp = |i: u8| usize::from(i) < usize::from(l.gp_counters);
        match reg {
            PmuReg::Pmc(i) | PmuReg::EventSelect(i) => l.version >= 1 && gp(i),
            PmuReg::FullWidthPmc(i) => l.version >= 1 && gp(i) && l.fw_write(),
            PmuReg::Fixed(i) => l.version >= 2 && l.fixed.contains(u32::from(i)),
            PmuReg::FixedCtrl | PmuReg::GlobalCtrl | PmuReg::GlobalStatus | PmuReg::StatusReset => l.version >= 2,
            PmuReg::StatusSet | PmuReg::Inuse => l.version >= 4,
            PmuReg::PerfCapabilities => l.pdcm,
            PmuReg::DebugCtl => true,
            PmuReg::PerfMetrics => l.perf_metrics(),
        }
    }

    /// Status bits beyond the counters that exist on this version.
    fn status_extra_bits(&self) -> u64 {
        if self.layout.version >= 4 {
            status::TRACE_TOPA_PMI | status::LBR_FRZ | status::CTR_FRZ | status::OVF_UNCORE | status::OVF_BUFFER
        } else {
            status::OVF_BUFFER
        }
    }

    fn inuse(&self) -> u64 {
        let r = &self.regs;
        let mut v = 0;
        let mut pmi = false;
        for i in 0..usize::from(self.layout.gp_counters) {
            if r.evtsel[i] & evtsel::EVENT != 0 {
                v |= 1 << i;
            }
            pmi |= r.evtsel[i] & evtsel::INT != 0;
        }
        for i in self.layout.fixed.iter() {
            let field = (r.fixed_ctrl >> (4 * i)) & fixed_ctrl::FIELD;
            if field & (fixed_ctrl::OS | fixed_ctrl::USR) != 0 {
                v |= 1 << (32 + i);
            }
            pmi |= field & fixed_ctrl::PMI != 0;
        }
        if pmi {
            v |= 1 << 63;
        }
        v
    }

    fn read(&self, msr: u32) -> Result<u64, GpFault> {
        let reg = PmuReg::decode(msr).ok_or(GpFault)?;
        if !self.exists(reg) {
            return Err(GpFault);
        }
        let r = &self.regs;
        Ok(match reg {
            PmuReg::Pmc(i) | PmuReg::FullWidthPmc(i) => r.pmc[usize::from(i)],
            PmuReg::EventSelect(i) => r.evtsel[usize::from(i)],
            PmuReg::Fixed(i) => r.fixed[usize::from(i)],
            PmuReg::FixedCtrl => r.fixed_ctrl,
            PmuReg::GlobalCtrl => r.global_ctrl,
            PmuReg::GlobalStatus => r.global_status,
            // Write-only in effect: reads return 0.
            PmuReg::StatusReset | PmuReg::StatusSet => 0,
            PmuReg::Inuse => self.inuse(),
            PmuReg::PerfCapabilities => self.layout.perf_capabilities.bits(),
            PmuReg::DebugCtl => r.debugctl,
            PmuReg::PerfMetrics => r.perf_metrics,
        })
    }

    fn write(&mut self, msr: u32, value: u64) -> Result<(), GpFault> {
        let reg = PmuReg::decode(msr).ok_or(GpFault)?;
        if !self.exists(reg) {
            return Err(GpFault);
        }
        let l = self.layout;
        let check = |allowed: u64| {
            if value & !allowed == 0 {
                Ok(())
            } else {
                Err(GpFault)
            }
        };
        let r = &mut self.regs;
        match reg {
            // Legacy PMC writes: only bits 31:0 are written; bits above are
            // the sign extension of bit 31 (SDM vol. 3B §20.2.6).
            PmuReg::Pmc(i) => r.pmc[usize::from(i)] = (value as u32 as i32 as i64 as u64) & l.gp_value_mask(),
            // Full-width writes: bits beyond the counter width #GP.
            PmuReg::FullWidthPmc(i) => {
                check(l.gp_value_mask())?;
                r.pmc[usize::from(i)] = value;
            }
            PmuReg::EventSelect(i) => {
                let any = if l.anythread_allowed() { evtsel::ANY_THREAD } else { 0 };
                check(0xffff_ffff & !evtsel::ANY_THREAD | any)?;
                r.evtsel[usize::from(i)] = value;
            }
            // As KVM's intel_pmu_set_msr: the value is truncated to the width.
            PmuReg::Fixed(i) => r.fixed[usize::from(i)] = value & l.fixed_value_mask(),
            PmuReg::FixedCtrl => {
                let any = if l.anythread_allowed() { fixed_ctrl::ANY_THREAD } else { 0 };
                let per = fixed_ctrl::OS | fixed_ctrl::USR | fixed_ctrl::PMI | any;
                check(l.fixed.iter().fold(0, |acc, i| acc | per << (4 * i)))?;
                r.fixed_ctrl = value;
            }
            PmuReg::GlobalCtrl => {
                check(l.counter_bits())?;
                r.global_ctrl = value;
            }
            PmuReg::GlobalStatus | PmuReg::Inuse | PmuReg::PerfCapabilities => return Err(GpFault),
            PmuReg::StatusReset => {
                let extra = self.status_extra_bits() | status::COND_CHGD;
                check(l.counter_bits() | extra)?;
                self.regs.global_status &= !value;
            }
            PmuReg::StatusSet => {
                check(l.counter_bits() | self.status_extra_bits())?;
                self.regs.global_status |= value;
            }
            PmuReg::DebugCtl => {
                check(
                    debugctl::LBR
                        | debugctl::BTF
                        | debugctl::FREEZE_LBRS_ON_PMI
                        | debugctl::FREEZE_PERFMON_ON_PMI
                        | debugctl::FREEZE_WHILE_SMM,
                )?;
                r.debugctl = value;
            }
            PmuReg::PerfMetrics => r.perf_metrics = value,
        }
        Ok(())
    }

    /// Simulates `count` occurrences of `event` at `ring`.
    pub fn tick(&mut self, event: ArchEvent, count: u64, ring: Ring) {
        if count == 0 {
            return;
        }
        let l = self.layout;
        for i in 0..usize::from(l.gp_counters) {
            let sel = self.regs.evtsel[i];
            let (ev, umask) = event.encoding();
            let ring_ok = match ring {
                Ring::User => sel & evtsel::USR != 0,
                Ring::Kernel => sel & evtsel::OS != 0,
            };
            let counts = self.enabled(i as u32)
                && sel & evtsel::EN != 0
                && sel & (evtsel::CMASK | evtsel::INV | evtsel::EDGE) == 0
                && (sel & evtsel::EVENT) as u8 == ev
                && ((sel & evtsel::UMASK) >> 8) as u8 == umask
                && ring_ok;
            if counts {
                let (value, wrapped) = add_wrapping(self.regs.pmc[i], count, l.gp_value_mask());
                self.regs.pmc[i] = value;
                if wrapped {
                    self.overflow(i as u32, sel & evtsel::INT != 0);
                }
            }
        }
        if let Some(f) = event.fixed_counter() {
            if l.version >= 2 && l.fixed.contains(f as u32) {
                let field = (self.regs.fixed_ctrl >> (4 * f)) & fixed_ctrl::FIELD;
                let ring_ok = match ring {
                    Ring::User => field & fixed_ctrl::USR != 0,
                    Ring::Kernel => field & fixed_ctrl::OS != 0,
                };
                if self.enabled(32 + f as u32) && ring_ok {
                    let (value, wrapped) = add_wrapping(self.regs.fixed[f], count, l.fixed_value_mask());
                    self.regs.fixed[f] = value;
                    if wrapped {
                        self.overflow(32 + f as u32, field & fixed_ctrl::PMI != 0);
                    }
                }
            }
        }
    }

    /// Counter `bit` (GLOBAL_CTRL numbering) may count now.
    fn enabled(&self, bit: u32) -> bool {
        if self.layout.version < 2 {
            return bit < 32; // v1: no GLOBAL_CTRL, no fixed counters
        }
        let frozen = self.layout.version >= 4 && self.regs.global_status & status::CTR_FRZ != 0;
        !frozen && self.regs.global_ctrl & (1 << bit) != 0
    }

    /// A counter wrapped: set its STATUS bit (v2+) and raise a PMI if enabled,
    /// with the freezes DEBUGCTL asks for (SDM vol. 3B §20.2.4.1, §20.2.6.2).
    fn overflow(&mut self, bit: u32, pmi: bool) {
        let v4 = self.layout.version >= 4;
        if self.layout.version >= 2 {
            self.regs.global_status |= 1 << bit;
        }
        if !pmi {
            return;
        }
        self.pmis += 1;
        if self.regs.debugctl & debugctl::FREEZE_PERFMON_ON_PMI != 0 {
            if v4 {
                self.regs.global_status |= status::CTR_FRZ;
            } else {
                self.regs.global_ctrl = 0;
            }
        }
        if self.regs.debugctl & debugctl::FREEZE_LBRS_ON_PMI != 0 {
            if v4 {
                self.regs.global_status |= status::LBR_FRZ;
            } else {
                self.regs.debugctl &= !debugctl::LBR;
            }
        }
    }

    /// What the VM-entry/VM-exit "load IA32_PERF_GLOBAL_CTRL" controls do:
    /// replace GLOBAL_CTRL without an MSR instruction (and without its #GP
    /// check: VM entry checks the reserved bits itself). Returns the old value.
    pub fn vmcs_swap_global_ctrl(&mut self, value: u64) -> u64 {
        core::mem::replace(&mut self.regs.global_ctrl, value)
    }

    fn rdpmc_value(&self, ecx: u32) -> Result<u64, GpFault> {
        let fast = ecx & (1 << 31) != 0;
        let index = ecx & !(RDPMC_FIXED | 1 << 31);
        let value = if ecx & RDPMC_FIXED != 0 {
            if index >= MAX_FIXED as u32 || !self.exists(PmuReg::Fixed(index as u8)) {
                return Err(GpFault);
            }
            self.regs.fixed[index as usize]
        } else {
            if index >= u32::from(self.layout.gp_counters) {
                return Err(GpFault);
            }
            self.regs.pmc[index as usize]
        };
        Ok(if fast { value & 0xffff_ffff } else { value })
    }
}

/// `value + count` within `mask`, and whether it wrapped.
fn add_wrapping(value: u64, count: u64, mask: u64) -> (u64, bool) {
    let sum = u128::from(value) + u128::from(count);
    ((sum & u128::from(mask)) as u64, sum > u128::from(mask))
}

impl PmuHardware for ModelPmu {
    fn rdmsr(&mut self, msr: u32) -> Result<u64, GpFault> {
        self.counts.rdmsr += 1;
        self.read(msr)
    }

    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault> {
        self.counts.wrmsr += 1;
        if matches!(PmuReg::decode(msr), Some(PmuReg::EventSelect(_) | PmuReg::FixedCtrl)) && self.regs.global_ctrl != 0
        {
            self.control_writes_while_enabled += 1;
        }
        self.write(msr, value)
    }

    fn rdpmc(&mut self, index: u32) -> Result<u64, GpFault> {
        self.counts.rdpmc += 1;
        self.rdpmc_value(index)
    }
}
