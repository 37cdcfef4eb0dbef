//! Host PMU discovery: CPUID.0AH, CPUID.1:ECX.PDCM, IA32_PERF_CAPABILITIES
//! and, when CPUID.(EAX=07H,ECX=1):EAX[8] enumerates it, leaf 23H
//! (Architectural Performance Monitoring Extended, SDM vol. 2A CPUID).

use crate::cpuid::{ArchPerfmon, CpuidRegs, FixedCounterSet};
use crate::hw::{GpFault, PmuHardware};
use crate::layout::{PmuLayout, MAX_FIXED, MAX_GP};
use crate::msr::{IA32_FIXED_CTR0, IA32_PERFEVTSEL0, IA32_PERF_GLOBAL_CTRL, IA32_PERF_GLOBAL_STATUS, IA32_PMC0};
use crate::PerfCapabilities;

/// What the boot code read; everything else is derived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostPmuInputs {
    pub leaf_0a: CpuidRegs,
    /// CPUID.1:ECX[15].
    pub pdcm: bool,
    /// IA32_PERF_CAPABILITIES; `None` when PDCM is clear or the read faulted.
    pub perf_capabilities: Option<u64>,
    /// Leaf 23H sub-leaves 0 and 1, when enumerated.
    pub leaf_23: Option<[CpuidRegs; 2]>,
}

/// The host PMU as perfvisor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPmu {
    pub arch: ArchPerfmon,
    pub layout: PmuLayout,
    /// GP counters by bitmap: contiguous from CPUID.0AH, or leaf 23H's.
    pub gp_bitmap: u32,
    /// PDCM is set but reading IA32_PERF_CAPABILITIES raised #GP.
    pub perf_capabilities_faulted: bool,
    /// Leaf 23H sub-leaf 1 was valid and used.
    pub has_leaf_23: bool,
}

impl HostPmu {
    pub fn discover(inputs: &HostPmuInputs) -> Self {
        let arch = ArchPerfmon::decode(inputs.leaf_0a);
        let caps_ok = inputs.pdcm && inputs.perf_capabilities.is_some();
        let mut layout = PmuLayout::from_cpuid(&arch, caps_ok, inputs.perf_capabilities.unwrap_or(0));
        let mut gp_bitmap = (1u32 << arch.gp_counters.min(31)) - 1;
        let mut has_leaf_23 = false;
        // Sub-leaf 0 EAX: bitmap of valid sub-leaves; sub-leaf 1 (bit 1):
        // EAX = GP counter bitmap, EBX = fixed counter bitmap.
        if let Some([sub0, sub1]) = inputs.leaf_23 {
            if sub0.eax & (1 << 1) != 0 {
                has_leaf_23 = true;
                gp_bitmap = sub1.eax;
                layout.fixed = FixedCounterSet(sub1.ebx & FixedCounterSet::first(MAX_FIXED as u32).0);
            }
        }
        // perfvisor addresses GP counters 0..n: a hole ends the usable run.
        layout.gp_counters = (gp_bitmap.trailing_ones() as u8).min(MAX_GP as u8);
        Self {
            arch,
            layout,
            gp_bitmap,
            perf_capabilities_faulted: inputs.pdcm && inputs.perf_capabilities.is_none(),
            has_leaf_23,
        }
    }

    pub fn perf_capabilities(&self) -> Option<PerfCapabilities> {
        self.layout.pdcm.then_some(self.layout.perf_capabilities)
    }

    /// Reads the PMU MSRs CPUID promises (GLOBAL_CTRL/STATUS from v2, GP
    /// counter and selector 0, fixed counter 0 when present). Returns the
    /// first that raised #GP: a CPU (or emulator, like Bochs without an
    /// `msrs=` file) that advertises a PMU it does not have.
    pub fn first_faulting_msr(&self, hw: &mut impl PmuHardware) -> Option<u32> {
        let l = &self.layout;
        let mut probes = [0u32; 6];
        let mut n = 0;
        let mut push = |msr| {
            probes[n] = msr;
            n += 1;
        };
        if l.version >= 1 && l.gp_counters > 0 {
            push(IA32_PMC0);
            push(IA32_PERFEVTSEL0);
        }
        if l.version >= 2 {
            push(IA32_PERF_GLOBAL_CTRL);
            push(IA32_PERF_GLOBAL_STATUS);
            if let Some(i) = l.fixed.iter().next() {
                push(IA32_FIXED_CTR0 + i);
            }
        }
        probes[..n].iter().copied().find(|&msr| hw.rdmsr(msr).is_err())
    }
}

impl HostPmu {
    /// Puts the PMU in the parked state the engine assumes between contexts
    /// (`vpmu` module docs): GLOBAL_CTRL 0 first, so nothing counts and no
    /// selector is written while counters are enabled (the firmware may have
    /// left GLOBAL_CTRL at its reset value, every GP counter enabled); then
    /// FIXED_CTR_CTRL, every selector and counter the host has (every bit
    /// of its GP bitmap, including those after a hole, and every fixed
    /// counter), PERF_METRICS and GLOBAL_STATUS. Carries on past a #GP and
    /// returns the first.
    pub fn park(&self, hw: &mut impl PmuHardware) -> Result<(), GpFault> {
        use crate::msr::{IA32_FIXED_CTR_CTRL, IA32_PERF_GLOBAL_STATUS_RESET, IA32_PERF_METRICS};
        let l = &self.layout;
        let mut result = Ok(());
        let mut note = |r: Result<(), GpFault>| {
            if result.is_ok() {
                result = r;
            }
        };
        if l.version >= 2 {
            note(hw.wrmsr(IA32_PERF_GLOBAL_CTRL, 0));
            note(hw.wrmsr(IA32_FIXED_CTR_CTRL, 0));
        }
        if l.version >= 1 {
            // IA32_PERFEVTSELn/IA32_PMCn have architectural addresses for n < 8.
            for i in (0..MAX_GP as u32).filter(|i| self.gp_bitmap & (1 << i) != 0) {
                note(hw.wrmsr(IA32_PERFEVTSEL0 + i, 0));
                note(hw.wrmsr(IA32_PMC0 + i, 0));
            }
        }
        if l.version >= 2 {
            for i in l.fixed.iter() {
                note(hw.wrmsr(IA32_FIXED_CTR0 + i, 0));
            }
            // After fixed counter 3 (REFERENCE.md §4).
            if l.perf_metrics() {
                note(hw.wrmsr(IA32_PERF_METRICS, 0));
            }
            match hw.rdmsr(IA32_PERF_GLOBAL_STATUS) {
                Ok(0) => {}
                Ok(status) => note(hw.wrmsr(IA32_PERF_GLOBAL_STATUS_RESET, status)),
                Err(e) => note(Err(e)),
            }
        }
        result
    }

    /// Whether IA32_PERF_GLOBAL_STATUS_SET and _RESET act on GLOBAL_STATUS
    /// as v4 defines (SDM vol. 3B §20.2.4): set bit 0, see it, clear it, see
    /// it gone. An emulator whose PMU MSRs are plain registers (Bochs with an
    /// `msrs=` file) fails this, and mediated mode could not restore status
    /// there. Call on parked hardware (nothing counting) of a v4+ host.
    pub fn status_set_works(&self, hw: &mut impl PmuHardware) -> bool {
        use crate::msr::{IA32_PERF_GLOBAL_STATUS_RESET, IA32_PERF_GLOBAL_STATUS_SET};
        if self.layout.version < 4 || self.layout.gp_counters == 0 {
            return false;
        }
        let set = hw.wrmsr(IA32_PERF_GLOBAL_STATUS_SET, 1).is_ok();
        let seen = hw.rdmsr(IA32_PERF_GLOBAL_STATUS).map(|s| s & 1 == 1);
        let reset = hw.wrmsr(IA32_PERF_GLOBAL_STATUS_RESET, 1).is_ok();
        let gone = hw.rdmsr(IA32_PERF_GLOBAL_STATUS).map(|s| s & 1 == 0);
        set && reset && seen == Ok(true) && gone == Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(eax: u32, ecx: u32, edx: u32, caps: Option<u64>) -> HostPmuInputs {
        HostPmuInputs { leaf_0a: CpuidRegs::new(eax, 0, ecx, edx), pdcm: true, perf_capabilities: caps, leaf_23: None }
    }

    /// Skylake-SP/X (family 6 model 0x55): CPUID.0AH as Bochs'
    /// `corei7_skylake_x` (an i7-7800X) reports it in perfvisor's boot
    /// report: v4, 4 GP x 48, 3 fixed x 48. PERF_CAPABILITIES: LBR format 3,
    /// PEBS format 3, FW_WRITE — a Skylake-like value, not read off hardware.
    #[test]
    fn skylake_sp_v4() {
        let h = HostPmu::discover(&inputs(0x0730_0404, 0, 0x0603, Some(0x2303)));
        assert_eq!(h.layout.version, 4);
        assert_eq!(h.layout.gp_counters, 4);
        assert_eq!(h.layout.fixed, FixedCounterSet(0x7));
        assert!(h.layout.fw_write());
        assert!(!h.layout.perf_metrics());
    }

    /// Ice Lake (v5, 8 GP, fixed ECX=0xf, EDX 4 x 48 — as Bochs'
    /// `corei7_icelake_u`/`tigerlake` report it), with PERF_CAPABILITIES
    /// carrying PERF_METRICS (bit 15) and FW_WRITE as Ice Lake introduced them.
    #[test]
    fn ice_lake_v5_with_perf_metrics() {
        let h = HostPmu::discover(&inputs(0x0830_0805, 0xf, 0x8604, Some(0xf4c5)));
        assert_eq!((h.layout.version, h.layout.gp_counters), (5, 8));
        assert_eq!(h.layout.fixed, FixedCounterSet(0xf));
        assert!(h.layout.perf_metrics());
        assert!(h.layout.anythread_deprecated);
    }

    /// A Sapphire Rapids-like host that enumerates leaf 23H: sub-leaf 1
    /// says GP 0xff, fixed 0xf (fixed counter 3 = TOPDOWN.SLOTS). Values
    /// built from the SDM's field layout, not read off hardware.
    #[test]
    fn sapphire_rapids_with_leaf_23() {
        let mut i = inputs(0x0830_0805, 0xf, 0x8604, Some(0x1f4c5));
        i.leaf_23 = Some([CpuidRegs::new(0b11, 0, 0, 0), CpuidRegs::new(0xff, 0xf, 0, 0)]);
        let h = HostPmu::discover(&i);
        assert!(h.has_leaf_23);
        assert_eq!(h.gp_bitmap, 0xff);
        assert_eq!(h.layout.fixed, FixedCounterSet(0xf));
    }

    /// A fixed-counter set with a hole (FC0-2, FC4-6; no FC3): the
    /// Clearwater Forest layout described in seed 002 (ECX = 0x77, EDX[4:0] = 3).
    #[test]
    fn fixed_set_with_a_hole() {
        let h = HostPmu::discover(&inputs(0x0830_0805, 0x77, 0x0603, Some(0x2000)));
        assert_eq!(h.layout.fixed, FixedCounterSet(0x77));
        assert!(!h.layout.perf_metrics(), "PERF_METRICS needs FC3");
    }

    #[test]
    fn faulting_perf_capabilities_read_means_none() {
        let h = HostPmu::discover(&inputs(0x0730_0404, 0, 0x0603, None));
        assert!(h.perf_capabilities_faulted);
        assert_eq!(h.perf_capabilities(), None);
        assert!(!h.layout.fw_write());
    }

    #[test]
    fn status_set_probe_on_a_real_pmu_and_on_plain_registers() {
        use crate::model::ModelPmu;
        let h = HostPmu::discover(&inputs(0x0730_0404, 0, 0x0603, Some(0x2000)));
        let mut real = ModelPmu::new(h.layout);
        assert!(h.status_set_works(&mut real));
        assert_eq!(real.regs.global_status, 0, "the probe leaves status clear");
        /// MSRs that only store what is written (Bochs' `msrs=` registers).
        struct Plain([u64; 0x400]);
        impl PmuHardware for Plain {
            fn rdmsr(&mut self, msr: u32) -> Result<u64, GpFault> {
                self.0.get(msr as usize).copied().ok_or(GpFault)
            }
            fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault> {
                *self.0.get_mut(msr as usize).ok_or(GpFault)? = value;
                Ok(())
            }
            fn rdpmc(&mut self, _: u32) -> Result<u64, GpFault> {
                Ok(0)
            }
            fn debugctl(&mut self) -> Result<u64, GpFault> {
                Ok(0)
            }
            fn set_debugctl(&mut self, _: u64) -> Result<(), GpFault> {
                Ok(())
            }
        }
        assert!(!h.status_set_works(&mut Plain([0; 0x400])));
    }

    /// Firmware left the PMU running: GLOBAL_CTRL at its reset value (every
    /// GP counter enabled), selectors counting, counters, FIXED_CTR_CTRL,
    /// PERF_METRICS and status set; leaf 23H puts a hole at GP counter 2.
    /// Parking clears GLOBAL_CTRL before any selector write and zeroes
    /// every register, GP counter 3 after the hole included.
    #[test]
    fn park_clears_global_ctrl_first_and_every_counter_the_host_has() {
        use crate::layout::evtsel;
        use crate::model::{ModelPmu, PmuRegisters};
        use crate::msr::{IA32_A_PMC0, IA32_FIXED_CTR_CTRL, IA32_PERF_GLOBAL_STATUS_SET, IA32_PERF_METRICS};
        let leaf_0a = CpuidRegs::new(0x0830_0405, 0, 0xf, 0x8604);
        let mut i = inputs(leaf_0a.eax, leaf_0a.ecx, leaf_0a.edx, Some(0xa000));
        i.leaf_23 = Some([CpuidRegs::new(0b10, 0, 0, 0), CpuidRegs::new(0b1011, 0xf, 0, 0)]);
        let h = HostPmu::discover(&i);
        assert_eq!(h.layout.gp_counters, 2, "the engine's counters end at the hole");
        let mut hw = ModelPmu::from_cpuid(leaf_0a, true, 0xa000);
        for n in [0u32, 1, 3] {
            hw.wrmsr(IA32_PERFEVTSEL0 + n, 0xc0 | evtsel::EN | evtsel::OS | evtsel::USR | evtsel::INT).unwrap();
            hw.wrmsr(IA32_A_PMC0 + n, 1000 + u64::from(n)).unwrap();
        }
        hw.wrmsr(IA32_FIXED_CTR_CTRL, 0xbbbb).unwrap();
        for n in 0..4 {
            hw.wrmsr(IA32_FIXED_CTR0 + n, 7).unwrap();
        }
        hw.wrmsr(IA32_PERF_METRICS, 0x0102_0304).unwrap();
        hw.wrmsr(IA32_PERF_GLOBAL_STATUS_SET, 0b1001).unwrap();
        assert_ne!(hw.regs.global_ctrl, 0, "reset value: GP counters enabled");
        hw.control_writes_while_enabled = 0;
        assert_eq!(h.park(&mut hw), Ok(()));
        assert_eq!(hw.control_writes_while_enabled, 0, "a selector was written while GLOBAL_CTRL != 0");
        assert_eq!(hw.regs, PmuRegisters::default(), "parked: every PMU register 0");
    }

    #[test]
    fn gp_bitmap_hole_ends_the_usable_counters() {
        let mut i = inputs(0x0830_0805, 0xf, 0x8604, Some(0x2000));
        i.leaf_23 = Some([CpuidRegs::new(0b10, 0, 0, 0), CpuidRegs::new(0b1011, 0xf, 0, 0)]);
        assert_eq!(HostPmu::discover(&i).layout.gp_counters, 2);
    }
}
