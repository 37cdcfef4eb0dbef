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
//!
//! Its layout is its own: [`ModelLayout::from_cpuid`] reads the raw
//! CPUID.0AH registers, CPUID.1:ECX.PDCM and IA32_PERF_CAPABILITIES as the
//! SDM describes them, apart from the engine's `PmuLayout` and its helpers
//! (`counter_bits`, `perf_metrics`, `anythread_allowed`, ...), so the
//! property tests check those too. Only register field positions (the
//! `layout::{evtsel, fixed_ctrl, status, debugctl}` constants) and MSR
//! addresses are shared.

use crate::cpuid::CpuidRegs;
pub use crate::events::{ArchEvent, Ring};
use crate::hw::{GpFault, PmuHardware, RDPMC_FIXED};
use crate::layout::{debugctl, evtsel, fixed_ctrl, status, PmuLayout, MAX_FIXED, MAX_GP};
use crate::msr::PmuReg;

/// IA32_PERF_CAPABILITIES bit 13: full-width writes through IA32_A_PMCx
/// (SDM vol. 3B §20.2.6, vol. 4 Table 2-2).
const CAPS_FW_WRITE: u64 = 1 << 13;
/// IA32_PERF_CAPABILITIES bit 15: PERF_METRICS_AVAILABLE (vol. 4 Table 2-2:
/// IA32_PERF_METRICS and GLOBAL_CTRL/STATUS bit 48 exist iff it is set).
const CAPS_PERF_METRICS: u64 = 1 << 15;
/// GLOBAL_CTRL/STATUS bit of PERF_METRICS.
const PERF_METRICS_BIT: u64 = 1 << 48;

/// The model's view of the PMU, read off the raw enumeration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelLayout {
    /// CPUID.0AH:EAX[7:0].
    pub version: u8,
    /// CPUID.0AH:EAX[15:8] (the model holds at most 8: IA32_PERFEVTSEL8 would be 0x18e).
    pub gp_counters: u8,
    /// CPUID.0AH:EAX[23:16].
    pub gp_width: u8,
    /// Bit i = fixed counter i exists.
    pub fixed: u32,
    /// CPUID.0AH:EDX[12:5].
    pub fixed_width: u8,
    /// AnyThread (IA32_PERFEVTSELx bit 21, FIXED_CTR_CTRL bit 2+4i) may be set.
    pub anythread: bool,
    /// CPUID.1:ECX.PDCM: IA32_PERF_CAPABILITIES exists.
    pub pdcm: bool,
    /// IA32_PERF_CAPABILITIES (0 without PDCM).
    pub perf_capabilities: u64,
}

impl ModelLayout {
    /// SDM vol. 2A CPUID leaf 0AH and vol. 3B §20.2:
    /// - version 1 has no fixed counters and no global registers (EDX is
    ///   reserved below version 2);
    /// - "Fixed-function performance counter i is supported if ECX[i] ||
    ///   EDX[4:0] > i", where ECX is the fixed-counter bitmap from version
    ///   5 on (reserved before);
    /// - AnyThread exists from version 3 (§20.2.3) and is deprecated, its
    ///   bits reserved, when EDX[15] is set;
    /// - IA32_PERF_CAPABILITIES exists iff PDCM, and its bits 13 (full-width
    ///   writes) and 15 (PERF_METRICS) enumerate IA32_A_PMCx and IA32_PERF_METRICS.
    pub fn from_cpuid(leaf_0a: CpuidRegs, pdcm: bool, perf_capabilities: u64) -> Self {
        let version = (leaf_0a.eax & 0xff) as u8;
        let edx_fixed = leaf_0a.edx & 0x1f;
        let mut fixed = 0u32;
        if version >= 2 {
            for i in 0..MAX_FIXED as u32 {
                let in_bitmap = version >= 5 && leaf_0a.ecx & (1 << i) != 0;
                if in_bitmap || edx_fixed > i {
                    fixed |= 1 << i;
                }
            }
        }
        Self {
            version,
            gp_counters: (((leaf_0a.eax >> 8) & 0xff) as u8).min(MAX_GP as u8),
            gp_width: ((leaf_0a.eax >> 16) & 0xff) as u8,
            fixed,
            fixed_width: if version >= 2 { ((leaf_0a.edx >> 5) & 0xff) as u8 } else { 0 },
            anythread: version >= 3 && leaf_0a.edx & (1 << 15) == 0,
            pdcm,
            perf_capabilities: if pdcm { perf_capabilities } else { 0 },
        }
    }

    fn has_fixed(&self, i: u32) -> bool {
        i < 32 && self.fixed & (1 << i) != 0
    }

    fn fw_write(&self) -> bool {
        self.perf_capabilities & CAPS_FW_WRITE != 0
    }

    fn perf_metrics(&self) -> bool {
        self.version >= 2 && self.perf_capabilities & CAPS_PERF_METRICS != 0
    }

    fn gp_enable_bits(&self) -> u64 {
        (1u64 << self.gp_counters) - 1
    }

    /// Bits of GLOBAL_CTRL (and the counter bits of STATUS/RESET/SET).
    fn global_bits(&self) -> u64 {
        let fixed = u64::from(self.fixed) << 32;
        self.gp_enable_bits() | fixed | if self.perf_metrics() { PERF_METRICS_BIT } else { 0 }
    }

    fn mask(bits: u8) -> u64 {
        if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }

    fn gp_value_mask(&self) -> u64 {
        Self::mask(self.gp_width)
    }

    fn fixed_value_mask(&self) -> u64 {
        Self::mask(self.fixed_width)
    }
}

/// The raw enumeration a [`PmuLayout`] stands for: CPUID.0AH as a CPU with
/// that layout reports it (SDM vol. 2A), PDCM and PERF_CAPABILITIES. Encodes
/// fields only, so the model still derives everything itself.
pub fn raw_enumeration(l: &PmuLayout) -> (CpuidRegs, bool, u64) {
    let eax = u32::from(l.version) | u32::from(l.gp_counters) << 8 | u32::from(l.gp_width) << 16 | 8 << 24;
    let ecx = if l.version >= 5 { l.fixed.0 } else { 0 };
    let edx = l.fixed.0.trailing_ones()
        | if l.fixed.0 == 0 { 0 } else { u32::from(l.fixed_width) << 5 }
        | if l.anythread_deprecated { 1 << 15 } else { 0 };
    (CpuidRegs::new(eax, 0, ecx, edx), l.pdcm, if l.pdcm { l.perf_capabilities.bits() } else { 0 })
}

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
    pub layout: ModelLayout,
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
    pub fn from_cpuid(leaf_0a: CpuidRegs, pdcm: bool, perf_capabilities: u64) -> Self {
        let layout = ModelLayout::from_cpuid(leaf_0a, pdcm, perf_capabilities);
        let mut regs = PmuRegisters::default();
        if layout.version >= 2 {
            regs.global_ctrl = layout.gp_enable_bits();
        }
        Self { layout, regs, pmis: 0, counts: InstructionCounts::default(), control_writes_while_enabled: 0 }
    }

    /// The PMU a CPU enumerating `layout` has ([`raw_enumeration`]).
    pub fn new(layout: PmuLayout) -> Self {
        let (leaf_0a, pdcm, caps) = raw_enumeration(&layout);
        Self::from_cpuid(leaf_0a, pdcm, caps)
    }

    fn exists(&self, reg: PmuReg) -> bool {
        let l = &self.layout;
        let gp = |i: u8| usize::from(i) < usize::from(l.gp_counters);
        match reg {
            PmuReg::Pmc(i) | PmuReg::EventSelect(i) => l.version >= 1 && gp(i),
            PmuReg::FullWidthPmc(i) => l.version >= 1 && gp(i) && l.fw_write(),
            PmuReg::Fixed(i) => l.version >= 2 && l.has_fixed(u32::from(i)),
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
        for i in (0..MAX_FIXED as u32).filter(|&i| self.layout.has_fixed(i)) {
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
            PmuReg::PerfCapabilities => self.layout.perf_capabilities,
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
                let any = if l.anythread { evtsel::ANY_THREAD } else { 0 };
                check(0xffff_ffff & !evtsel::ANY_THREAD | any)?;
                r.evtsel[usize::from(i)] = value;
            }
            // As KVM's intel_pmu_set_msr: the value is truncated to the width.
            PmuReg::Fixed(i) => r.fixed[usize::from(i)] = value & l.fixed_value_mask(),
            PmuReg::FixedCtrl => {
                let any = if l.anythread { fixed_ctrl::ANY_THREAD } else { 0 };
                let per = fixed_ctrl::OS | fixed_ctrl::USR | fixed_ctrl::PMI | any;
                check((0..MAX_FIXED as u32).filter(|&i| l.has_fixed(i)).fold(0, |acc, i| acc | per << (4 * i)))?;
                r.fixed_ctrl = value;
            }
            PmuReg::GlobalCtrl => {
                check(l.global_bits())?;
                r.global_ctrl = value;
            }
            PmuReg::GlobalStatus | PmuReg::Inuse | PmuReg::PerfCapabilities => return Err(GpFault),
            PmuReg::StatusReset => {
                let extra = self.status_extra_bits() | status::COND_CHGD;
                check(l.global_bits() | extra)?;
                self.regs.global_status &= !value;
            }
            PmuReg::StatusSet => {
                check(l.global_bits() | self.status_extra_bits())?;
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

    /// Simulates `count` occurrences of `event` at `ring`, as one batch:
    /// every counter enabled when it starts counts all of it, and a freeze
    /// an overflow's PMI causes takes effect after it (on hardware the
    /// freeze comes with the PMI, which skids past the overflowing event).
    pub fn tick(&mut self, event: ArchEvent, count: u64, ring: Ring) {
        if count == 0 {
            return;
        }
        let l = self.layout;
        let enabled = self.enabled_counters();
        for i in 0..usize::from(l.gp_counters) {
            let sel = self.regs.evtsel[i];
            let (ev, umask) = event.encoding();
            let ring_ok = match ring {
                Ring::User => sel & evtsel::USR != 0,
                Ring::Kernel => sel & evtsel::OS != 0,
            };
            let counts = enabled & (1 << i) != 0
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
            if l.version >= 2 && l.has_fixed(f as u32) {
                let field = (self.regs.fixed_ctrl >> (4 * f)) & fixed_ctrl::FIELD;
                let ring_ok = match ring {
                    Ring::User => field & fixed_ctrl::USR != 0,
                    Ring::Kernel => field & fixed_ctrl::OS != 0,
                };
                if enabled & (1 << (32 + f)) != 0 && ring_ok {
                    let (value, wrapped) = add_wrapping(self.regs.fixed[f], count, l.fixed_value_mask());
                    self.regs.fixed[f] = value;
                    if wrapped {
                        self.overflow(32 + f as u32, field & fixed_ctrl::PMI != 0);
                    }
                }
            }
        }
    }

    /// The counters (GLOBAL_CTRL numbering) that may count now.
    fn enabled_counters(&self) -> u64 {
        if self.layout.version < 2 {
            return self.layout.gp_enable_bits(); // v1: no GLOBAL_CTRL, no fixed counters
        }
        // Streamlined freeze (v4): nothing counts while CTR_Frz is set.
        let frozen = self.layout.version >= 4 && self.regs.global_status & status::CTR_FRZ != 0;
        if frozen {
            0
        } else {
            self.regs.global_ctrl
        }
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

    /// The same for IA32_DEBUGCTL: VM entry loads the guest's ("load debug
    /// controls"), VM exit saves it ("save debug controls") and clears the
    /// MSR. Returns the old value.
    pub fn vmcs_swap_debugctl(&mut self, value: u64) -> u64 {
        core::mem::replace(&mut self.regs.debugctl, value)
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

    /// Outside VMX the running context's DEBUGCTL is the MSR itself.
    fn debugctl(&mut self) -> Result<u64, GpFault> {
        Ok(self.regs.debugctl)
    }

    fn set_debugctl(&mut self, value: u64) -> Result<(), GpFault> {
        self.regs.debugctl = value;
        Ok(())
    }
}
