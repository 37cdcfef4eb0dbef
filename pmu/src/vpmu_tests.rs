//! Unit tests of the engine: the policy table, the event filter, software
//! accounting, and the cost of switching.

use crate::events::{ArchEvent, Ring};
use crate::hw::{GpFault, PmuHardware, RDPMC_FIXED};
use crate::layout::{evtsel, status};
use crate::model::{InstructionCounts, ModelPmu};
use crate::model_tests::{layout, v4, v5};
use crate::msr::*;
use crate::vpmu::{Access, EventFilter, Mode, VirtualPmu};
use crate::FixedCounterSet;

fn parked(host: crate::PmuLayout) -> ModelPmu {
    let mut hw = ModelPmu::new(host);
    hw.vmcs_swap_global_ctrl(0);
    hw
}

fn access(v: &VirtualPmu, msr: u32) -> (Access, Access) {
    let p = v.policy(msr);
    (p.read, p.write)
}

const PASS: (Access, Access) = (Access::PassThrough, Access::PassThrough);
const INTERCEPT: (Access, Access) = (Access::Intercept, Access::Intercept);
const LAZY: (Access, Access) = (Access::PassThrough, Access::Intercept);

#[test]
fn mediated_policy_with_the_hosts_counters() {
    let mut hw = parked(v5());
    let mut v = VirtualPmu::new(v5(), v5(), Mode::Mediated);
    v.load(&mut hw).unwrap();
    assert_eq!(access(&v, IA32_PMC0), LAZY, "unused counter: first write loads it");
    assert_eq!(access(&v, IA32_FIXED_CTR0 + 3), LAZY);
    v.write(&mut hw, IA32_PERFEVTSEL0, 0xc0 | evtsel::EN | evtsel::USR).unwrap();
    assert_eq!(access(&v, IA32_PMC0), PASS, "loaded counter passes through");
    assert_eq!(access(&v, IA32_A_PMC0), PASS);
    for msr in [IA32_PERF_GLOBAL_CTRL, IA32_PERF_GLOBAL_STATUS, IA32_PERF_GLOBAL_STATUS_RESET] {
        assert_eq!(access(&v, msr), PASS, "{msr:#x}");
    }
    for msr in [
        IA32_PERFEVTSEL0,
        IA32_FIXED_CTR_CTRL,
        IA32_PERF_GLOBAL_STATUS_SET,
        IA32_PERF_GLOBAL_INUSE,
        IA32_PERF_CAPABILITIES,
    ] {
        assert_eq!(access(&v, msr), INTERCEPT, "{msr:#x}");
    }
    // Every decision carries its reason.
    assert!(v.policies().all(|p| !p.reason.is_empty()));
    assert!(!v.rdpmc_exiting());
}

#[test]
fn a_narrowed_guest_never_gets_a_host_counter() {
    let guest = crate::PmuLayout { gp_counters: 2, fixed: FixedCounterSet(0x3), ..v5() };
    let v = VirtualPmu::new(guest, v5(), Mode::Mediated);
    for msr in [IA32_PMC0 + 2, IA32_A_PMC0 + 7, IA32_PERFEVTSEL0 + 2, IA32_FIXED_CTR0 + 2, IA32_FIXED_CTR0 + 3] {
        assert_eq!(access(&v, msr), INTERCEPT, "{msr:#x} is the host's, not the guest's");
    }
    assert_eq!(access(&v, IA32_PERF_GLOBAL_CTRL), INTERCEPT, "reserved bits must #GP");
    assert_eq!(access(&v, IA32_PERF_GLOBAL_STATUS), INTERCEPT);
    assert!(v.rdpmc_exiting(), "RDPMC would read host counters");
}

#[test]
fn fallback_and_off_policies() {
    let v3 = layout(3, 4, 0x7, true);
    let v = VirtualPmu::new(v3, v3, Mode::Fallback);
    assert_eq!(access(&v, IA32_PERF_GLOBAL_STATUS), INTERCEPT, "status emulated before v4");
    assert_eq!(access(&v, IA32_PERF_GLOBAL_STATUS_RESET), INTERCEPT);
    assert_eq!(access(&v, IA32_PERF_GLOBAL_CTRL), PASS);
    assert_eq!(access(&v, IA32_PERF_GLOBAL_STATUS_SET), INTERCEPT, "absent below v4");
    let off = VirtualPmu::new(v5(), v5(), Mode::Off);
    assert!(off.policies().all(|p| (p.read, p.write) == INTERCEPT));
    let mut hw = parked(v5());
    let mut off = off;
    off.load(&mut hw).unwrap();
    assert!(off.read(&mut hw, IA32_PMC0).is_err());
    assert!(off.write(&mut hw, IA32_PERF_GLOBAL_CTRL, 0).is_err());
}

#[test]
fn event_filter_applies_to_hardware_and_the_guest_reads_its_own_value() {
    let mut hw = parked(v4());
    let mut v = VirtualPmu::new(v4(), v4(), Mode::Mediated);
    v.set_filter(EventFilter { events: [(0xc0, 0x00); 8], len: 1, allow_list: false, fixed_allowed: 0b110 });
    v.load(&mut hw).unwrap();
    let sel = 0xc0 | evtsel::EN | evtsel::USR;
    v.write(&mut hw, IA32_PERFEVTSEL0, sel).unwrap();
    assert_eq!(v.read(&mut hw, IA32_PERFEVTSEL0), Ok(sel), "guest reads what it wrote");
    assert_eq!(hw.rdmsr(IA32_PERFEVTSEL0), Ok(sel & !evtsel::EN), "hardware: EN cleared");
    v.write(&mut hw, IA32_FIXED_CTR_CTRL, 0x333).unwrap();
    assert_eq!(v.read(&mut hw, IA32_FIXED_CTR_CTRL), Ok(0x333));
    assert_eq!(hw.rdmsr(IA32_FIXED_CTR_CTRL), Ok(0x330), "FC0 denied");
    // A denied event does not count in software either.
    v.global_ctrl = 0xf;
    assert_eq!(v.account_retired(&mut hw, ArchEvent::InstructionsRetired, 1, Ring::User), Ok(0));
    assert_eq!(hw.rdmsr(IA32_PMC0), Ok(0));
}

#[test]
fn emulated_instructions_are_counted_exactly_and_overflow_raises_a_pmi() {
    let mut hw = parked(v4());
    let mut v = VirtualPmu::new(v4(), v4(), Mode::Mediated);
    v.load(&mut hw).unwrap();
    v.write(&mut hw, IA32_PERFEVTSEL0, 0xc0 | evtsel::EN | evtsel::USR | evtsel::INT).unwrap();
    v.write(&mut hw, IA32_PERFEVTSEL0 + 1, 0xc4 | evtsel::EN | evtsel::USR).unwrap(); // branches
    v.write(&mut hw, IA32_PERFEVTSEL0 + 2, 0xc0 | evtsel::EN | evtsel::OS).unwrap(); // kernel only
    v.write(&mut hw, IA32_FIXED_CTR_CTRL, 0x2).unwrap(); // FC0, user
    v.global_ctrl = 0x7_0000_000f;
    v.write(&mut hw, IA32_A_PMC0, (1 << 48) - 2).unwrap();
    assert_eq!(v.account_retired(&mut hw, ArchEvent::InstructionsRetired, 1, Ring::User), Ok(0));
    assert_eq!(v.account_retired(&mut hw, ArchEvent::InstructionsRetired, 1, Ring::User), Ok(1), "wrapped with INT");
    assert_eq!(hw.rdpmc(0), Ok(0));
    assert_eq!(hw.rdpmc(1), Ok(0), "branches did not retire");
    assert_eq!(hw.rdpmc(2), Ok(0), "ring 3 only");
    assert_eq!(hw.rdpmc(crate::hw::RDPMC_FIXED), Ok(2));
    assert_eq!(hw.rdmsr(IA32_PERF_GLOBAL_STATUS), Ok(1), "overflow bit through STATUS_SET");
    // Counters disabled in GLOBAL_CTRL cost nothing.
    v.global_ctrl = 0;
    let before = hw.counts;
    assert_eq!(v.account_retired(&mut hw, ArchEvent::InstructionsRetired, 1, Ring::User), Ok(0));
    assert_eq!(hw.counts, before);
}

#[test]
fn an_idle_guest_costs_nothing_to_switch_and_a_round_trip_costs_nothing() {
    let mut hw = parked(v5());
    let mut v = VirtualPmu::new(v5(), v5(), Mode::Mediated);
    for _ in 0..3 {
        v.load(&mut hw).unwrap();
        let guest = hw.vmcs_swap_global_ctrl(v.global_ctrl);
        assert_eq!(guest, 0);
        v.on_vm_exit(hw.vmcs_swap_global_ctrl(0));
        v.put(&mut hw).unwrap();
    }
    assert_eq!(hw.counts, InstructionCounts::default());
}

#[test]
fn status_is_restored_with_status_set_and_cleared_at_put() {
    let mut hw = parked(v4());
    let mut v = VirtualPmu::new(v4(), v4(), Mode::Mediated);
    v.load(&mut hw).unwrap();
    v.write(&mut hw, IA32_PERF_GLOBAL_STATUS_SET, 0b10 | 1 << 59).unwrap();
    v.put(&mut hw).unwrap();
    assert_eq!(hw.rdmsr(IA32_PERF_GLOBAL_STATUS), Ok(0), "parked");
    v.load(&mut hw).unwrap();
    assert_eq!(hw.rdmsr(IA32_PERF_GLOBAL_STATUS), Ok(0b10 | 1 << 59), "restored");
}

#[test]
fn the_msr_bitmap_equals_the_policy_table_for_every_host_model() {
    use vmx::msr_bitmap::MsrBitmap;
    for (host, mode) in [
        (v4(), Mode::Mediated),
        (v5(), Mode::Mediated),
        (v5(), Mode::Fallback),
        (layout(3, 4, 0x7, false), Mode::Fallback),
        (v5(), Mode::Off),
    ] {
        let mut hw = parked(host);
        let mut v = VirtualPmu::new(host, host, mode);
        v.load(&mut hw).unwrap();
        if mode != Mode::Off {
            v.write(&mut hw, IA32_PERFEVTSEL0, 0xc0 | evtsel::EN).unwrap(); // loads counter 0
        }
        let mut bitmap = MsrBitmap::intercept_all();
        v.install_msr_bitmap(&mut bitmap);
        for p in v.policies() {
            assert_eq!(bitmap.read_exits(p.msr), p.read == Access::Intercept, "{mode:?} read {:#x}", p.msr);
            assert_eq!(bitmap.write_exits(p.msr), p.write == Access::Intercept, "{mode:?} write {:#x}", p.msr);
        }
        // Neighbours of the PMU MSRs keep exiting.
        for msr in [0xc0, 0x185, 0x393, 0x4c0] {
            assert!(bitmap.read_exits(msr) && bitmap.write_exits(msr));
        }
    }
}

#[test]
fn may_count_is_the_cheap_precheck_of_accounting() {
    let mut hw = parked(v4());
    let mut v = VirtualPmu::new(v4(), v4(), Mode::Mediated);
    v.load(&mut hw).unwrap();
    assert!(!v.may_count(ArchEvent::InstructionsRetired));
    v.write(&mut hw, IA32_FIXED_CTR_CTRL, 0x1).unwrap();
    assert!(v.may_count(ArchEvent::InstructionsRetired), "FC0 counts instructions");
    assert!(!v.may_count(ArchEvent::BranchInstructionsRetired));
}

/// The model behind a wrapper that records every PMU instruction and can
/// make one MSR fault.
struct Recorder {
    pmu: ModelPmu,
    log: Vec<(&'static str, u32)>,
    fault_on: Option<u32>,
}

impl Recorder {
    fn new(host: crate::PmuLayout) -> Self {
        Self { pmu: parked(host), log: Vec::new(), fault_on: None }
    }
}

impl PmuHardware for Recorder {
    fn rdmsr(&mut self, msr: u32) -> Result<u64, GpFault> {
        self.log.push(("rdmsr", msr));
        if self.fault_on == Some(msr) {
            return Err(GpFault);
        }
        self.pmu.rdmsr(msr)
    }
    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault> {
        self.log.push(("wrmsr", msr));
        if self.fault_on == Some(msr) {
            return Err(GpFault);
        }
        self.pmu.wrmsr(msr, value)
    }
    fn rdpmc(&mut self, index: u32) -> Result<u64, GpFault> {
        let msr = if index & RDPMC_FIXED != 0 { IA32_FIXED_CTR0 + (index & !RDPMC_FIXED) } else { IA32_PMC0 + index };
        self.log.push(("rdpmc", msr));
        if self.fault_on == Some(msr) {
            return Err(GpFault);
        }
        self.pmu.rdpmc(index)
    }
    fn debugctl(&mut self) -> Result<u64, GpFault> {
        self.pmu.debugctl()
    }
    fn set_debugctl(&mut self, value: u64) -> Result<(), GpFault> {
        self.pmu.set_debugctl(value)
    }
}

/// v5, 8 GP, FC0-3, full-width writes and PERF_METRICS (Ice Lake on).
fn v5_perf_metrics() -> crate::PmuLayout {
    crate::PmuLayout {
        perf_capabilities: crate::PerfCapabilities::FW_WRITE | crate::PerfCapabilities::PERF_METRICS,
        ..v5()
    }
}

#[test]
fn perf_metrics_is_saved_before_fixed_counter_3_and_restored_right_after_it() {
    let l = v5_perf_metrics();
    let mut hw = Recorder::new(l);
    let mut v = VirtualPmu::new(l, l, Mode::Mediated);
    v.load(&mut hw).unwrap();
    assert_eq!(v.policy(IA32_PERF_METRICS).write, Access::PassThrough);
    // The guest writes FC3 (intercepted: loads it) and PERF_METRICS (passed through).
    v.write(&mut hw, IA32_FIXED_CTR0 + 3, 500).unwrap();
    hw.pmu.wrmsr(IA32_PERF_METRICS, 0x1122_3344).unwrap();
    hw.log.clear();
    v.put(&mut hw).unwrap();
    assert_eq!(hw.pmu.regs.perf_metrics, 0, "parked");
    let at = |log: &[(&str, u32)], op, msr| log.iter().position(|&e| e == (op, msr)).expect("in the log");
    assert!(
        at(&hw.log, "rdmsr", IA32_PERF_METRICS) < at(&hw.log, "wrmsr", IA32_FIXED_CTR0 + 3),
        "PERF_METRICS saved before FC3 is touched: {:?}",
        hw.log
    );
    hw.log.clear();
    v.load(&mut hw).unwrap();
    let fc3 = at(&hw.log, "wrmsr", IA32_FIXED_CTR0 + 3);
    assert_eq!(hw.log[fc3 + 1], ("wrmsr", IA32_PERF_METRICS), "restored right after FC3: {:?}", hw.log);
    assert_eq!((hw.pmu.regs.perf_metrics, hw.pmu.regs.fixed[3]), (0x1122_3344, 500));
}

#[test]
fn rdpmc_reads_perf_metrics_with_ecx_bit_29_only_where_the_guest_has_them() {
    let l = v5_perf_metrics();
    let mut hw = Recorder::new(l);
    let mut v = VirtualPmu::new(l, l, Mode::Mediated);
    v.load(&mut hw).unwrap();
    hw.pmu.wrmsr(IA32_PERF_METRICS, 0x0a0b_0c0d).unwrap();
    assert_eq!(v.rdpmc(&mut hw, crate::hw::RDPMC_METRICS), Ok(0x0a0b_0c0d));
    assert_eq!(v.rdpmc(&mut hw, crate::hw::RDPMC_METRICS | 1), Err(GpFault), "an index with bit 29");
    let mut hw = Recorder::new(v5());
    let mut v = VirtualPmu::new(v5(), v5(), Mode::Mediated);
    v.load(&mut hw).unwrap();
    assert_eq!(v.rdpmc(&mut hw, crate::hw::RDPMC_METRICS), Err(GpFault), "no PERF_METRICS: #GP");
}

#[test]
fn a_fault_during_load_parks_the_hardware_and_leaves_the_context_unloaded() {
    let mut hw = Recorder::new(v4());
    let mut v = VirtualPmu::new(v4(), v4(), Mode::Mediated);
    v.load(&mut hw).unwrap();
    v.write(&mut hw, IA32_PERFEVTSEL0, 0xc0 | evtsel::EN | evtsel::USR).unwrap();
    v.write(&mut hw, IA32_A_PMC0, 77).unwrap();
    v.write(&mut hw, IA32_FIXED_CTR0 + 1, 88).unwrap();
    v.write(&mut hw, IA32_PERF_GLOBAL_STATUS_SET, 0b1).unwrap();
    v.put(&mut hw).unwrap();
    hw.fault_on = Some(IA32_FIXED_CTR0 + 1);
    assert_eq!(v.load(&mut hw), Err(GpFault));
    assert!(!v.is_loaded(), "a failed load leaves the context unloaded");
    assert_eq!(hw.pmu.regs, crate::model::PmuRegisters::default(), "and the hardware parked");
    hw.fault_on = None;
    v.load(&mut hw).expect("loadable again, nothing lost");
    assert_eq!((hw.pmu.regs.pmc[0], hw.pmu.regs.fixed[1], hw.pmu.regs.global_status), (77, 88, 0b1));
    assert_eq!(hw.pmu.regs.evtsel[0], 0xc0 | evtsel::EN | evtsel::USR);
}

#[test]
fn a_fault_during_put_still_parks_what_it_can_and_unloads() {
    let mut hw = Recorder::new(v4());
    let mut v = VirtualPmu::new(v4(), v4(), Mode::Mediated);
    v.load(&mut hw).unwrap();
    v.write(&mut hw, IA32_PERFEVTSEL0, 0xc0 | evtsel::EN | evtsel::USR).unwrap();
    v.write(&mut hw, IA32_A_PMC0, 77).unwrap();
    v.write(&mut hw, IA32_FIXED_CTR0, 88).unwrap();
    hw.fault_on = Some(IA32_PMC0); // RDPMC of GP counter 0
    assert_eq!(v.put(&mut hw), Err(GpFault));
    assert!(!v.is_loaded());
    assert_eq!(hw.pmu.regs, crate::model::PmuRegisters::default(), "everything parked regardless");
    hw.fault_on = None;
    v.load(&mut hw).expect("no 'loaded twice': the engine stayed consistent");
    assert_eq!(hw.pmu.regs.fixed[0], 88);
}

#[test]
fn status_is_restored_against_the_hardware_value_and_only_with_settable_bits() {
    let mut hw = Recorder::new(v4());
    let mut v = VirtualPmu::new(v4(), v4(), Mode::Mediated);
    v.load(&mut hw).unwrap();
    v.write(&mut hw, IA32_PERF_GLOBAL_STATUS_SET, 0b01 | status::CTR_FRZ).unwrap();
    // The CPU set CondChgd, which STATUS_SET cannot set (it #GPs).
    hw.pmu.regs.global_status |= status::COND_CHGD;
    v.put(&mut hw).unwrap();
    assert_eq!(hw.pmu.regs.global_status, 0);
    // Something set a status bit while parked: the restore must not assume 0.
    hw.pmu.regs.global_status = 0b10;
    v.load(&mut hw).expect("no STATUS_SET of CondChgd");
    assert_eq!(hw.pmu.regs.global_status, 0b01 | status::CTR_FRZ, "toggled from the hardware's value");
}

#[test]
fn software_overflows_freeze_as_the_guests_debugctl_asks() {
    use crate::layout::debugctl;
    for version in [3u8, 4] {
        let l = layout(version, 4, 0x7, true);
        let mode = if version >= 4 { Mode::Mediated } else { Mode::Fallback };
        let mut hw = parked(l);
        let mut v = VirtualPmu::new(l, l, mode);
        v.load(&mut hw).unwrap();
        v.write(&mut hw, IA32_PERFEVTSEL0, 0xc0 | evtsel::EN | evtsel::USR | evtsel::INT).unwrap();
        v.write(&mut hw, IA32_A_PMC0, (1 << 48) - 1).unwrap();
        v.global_ctrl = 0xf;
        hw.set_debugctl(debugctl::FREEZE_PERFMON_ON_PMI | debugctl::FREEZE_LBRS_ON_PMI | debugctl::LBR).unwrap();
        assert_eq!(v.account_retired(&mut hw, ArchEvent::InstructionsRetired, 1, Ring::User), Ok(1));
        if version >= 4 {
            assert_eq!(hw.rdmsr(IA32_PERF_GLOBAL_STATUS), Ok(1 | status::CTR_FRZ | status::LBR_FRZ), "v4: streamlined");
            assert_eq!(v.account_retired(&mut hw, ArchEvent::InstructionsRetired, 1, Ring::User), Ok(0));
            assert_eq!(hw.rdpmc(0), Ok(0), "frozen by CTR_Frz");
        } else {
            assert_eq!(v.global_ctrl, 0, "v3: legacy freeze clears GLOBAL_CTRL");
            assert_eq!(hw.debugctl().unwrap() & debugctl::LBR, 0, "and DEBUGCTL.LBR");
            assert_eq!(v.read(&mut hw, IA32_PERF_GLOBAL_STATUS), Ok(1));
        }
    }
}

/// AnyThread (v3/v4) would count the other logical processor of the core:
/// the guest may write it and reads it back, but the hardware never sees it.
#[test]
fn any_thread_never_reaches_the_hardware() {
    use crate::layout::{evtsel, fixed_ctrl};
    let filter = EventFilter::NONE;
    let selector = evtsel::EN | evtsel::USR | evtsel::ANY_THREAD | 0x3c;
    assert_eq!(filter.hw_selector(selector), evtsel::EN | evtsel::USR | 0x3c);
    let field = fixed_ctrl::OS | fixed_ctrl::USR | fixed_ctrl::ANY_THREAD | fixed_ctrl::PMI;
    let both = field | field << 4;
    let own = field & !fixed_ctrl::ANY_THREAD;
    assert_eq!(filter.hw_fixed_ctrl(both), own | own << 4);
}
