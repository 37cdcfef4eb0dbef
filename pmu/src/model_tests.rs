//! The model checked against the SDM's rules, one table row per rule.

use crate::hw::{GpFault, PmuHardware, RDPMC_FIXED};
use crate::layout::{debugctl, evtsel, fixed_ctrl, status, PmuLayout};
use crate::model::{ArchEvent, ModelPmu, Ring};
use crate::msr::*;

pub fn layout(version: u8, gp: u8, fixed: u32, fw_write: bool) -> PmuLayout {
    PmuLayout::typical(version, gp, fixed, fw_write)
}

/// Skylake-SP-like: v4, 4 GP, FC0-2, full-width writes.
pub fn v4() -> PmuLayout {
    layout(4, 4, 0x7, true)
}

/// Sapphire Rapids-like: v5, 8 GP, FC0-3, full-width writes.
pub fn v5() -> PmuLayout {
    layout(5, 8, 0xf, true)
}

/// One SDM rule: layout, MSR, value written, expected outcome, the rule.
type WriteRule = (PmuLayout, u32, u64, Result<(), GpFault>, &'static str);

const OK: Result<(), GpFault> = Ok(());
const GP: Result<(), GpFault> = Err(GpFault);

#[test]
fn write_rules_table() {
    // (layout, msr, value, expected) — each row one SDM rule.
    let rows: &[WriteRule] = &[
        (v4(), IA32_PMC0 + 3, 1, OK, "GP counter 3 exists on a 4-counter PMU"),
        (v4(), IA32_PMC0 + 4, 1, GP, "GP counter 4 does not"),
        (v4(), IA32_PERFEVTSEL0 + 4, 0, GP, "nor its selector"),
        (v4(), IA32_A_PMC0, 1 << 47, OK, "full-width write within 48 bits"),
        (v4(), IA32_A_PMC0, 1 << 48, GP, "full-width write beyond the width"),
        (layout(4, 4, 7, false), IA32_A_PMC0, 1, GP, "A_PMC needs FW_WRITE"),
        (v4(), IA32_PMC0, u64::MAX, OK, "legacy writes ignore bits 63:32"),
        (v4(), IA32_PERFEVTSEL0, 0xffff_ffff, OK, "v4: every low bit incl. AnyThread"),
        (v5(), IA32_PERFEVTSEL0, evtsel::ANY_THREAD, GP, "v5: AnyThread deprecated"),
        (v4(), IA32_PERFEVTSEL0, 1 << 32, GP, "selector bits 63:32 reserved"),
        (layout(2, 2, 3, false), IA32_PERFEVTSEL0, evtsel::ANY_THREAD, GP, "v2: no AnyThread"),
        (v4(), IA32_FIXED_CTR0 + 2, 5, OK, "fixed counter 2 exists"),
        (v4(), IA32_FIXED_CTR0 + 3, 5, GP, "fixed counter 3 does not on v4/FC0-2"),
        (layout(5, 8, 0x77, true), IA32_FIXED_CTR0 + 5, 1, OK, "non-contiguous set: FC5 exists"),
        (layout(5, 8, 0x77, true), IA32_FIXED_CTR0 + 3, 1, GP, "non-contiguous set: FC3 absent"),
        (v4(), IA32_FIXED_CTR_CTRL, 0xbbb, OK, "OS|USR|PMI for FC0-2"),
        (v4(), IA32_FIXED_CTR_CTRL, 0x4, OK, "v4: AnyThread allowed"),
        (v5(), IA32_FIXED_CTR_CTRL, 0x4, GP, "v5: AnyThread reserved"),
        (v4(), IA32_FIXED_CTR_CTRL, 0x1000, GP, "enabling absent FC3 in FIXED_CTR_CTRL"),
        (v4(), IA32_PERF_GLOBAL_CTRL, 0x7_0000_000f, OK, "all present counters"),
        (v4(), IA32_PERF_GLOBAL_CTRL, 1 << 35, GP, "enabling absent FC3 in GLOBAL_CTRL"),
        (v4(), IA32_PERF_GLOBAL_CTRL, 1 << 4, GP, "enabling absent GP4 in GLOBAL_CTRL"),
        (v4(), IA32_PERF_GLOBAL_STATUS, 0, GP, "GLOBAL_STATUS is read-only"),
        (
            v4(),
            IA32_PERF_GLOBAL_STATUS_RESET,
            status::COND_CHGD | status::CTR_FRZ | 1,
            OK,
            "v4 RESET clears all status bits",
        ),
        (layout(3, 4, 7, false), IA32_PERF_GLOBAL_STATUS_RESET, status::CTR_FRZ, GP, "v3 OVF_CTRL has no CTR_Frz"),
        (v4(), IA32_PERF_GLOBAL_STATUS_SET, status::LBR_FRZ | 1 << 33, OK, "v4 STATUS_SET"),
        (v4(), IA32_PERF_GLOBAL_STATUS_SET, status::COND_CHGD, GP, "CondChgd cannot be set"),
        (layout(3, 4, 7, false), IA32_PERF_GLOBAL_STATUS_SET, 1, GP, "no STATUS_SET before v4"),
        (v4(), IA32_PERF_GLOBAL_INUSE, 0, GP, "INUSE is read-only"),
        (v4(), IA32_PERF_CAPABILITIES, 0, GP, "PERF_CAPABILITIES is read-only"),
        (layout(1, 2, 0, false), IA32_PERF_GLOBAL_CTRL, 0, GP, "v1 has no GLOBAL_CTRL"),
        (v4(), IA32_PERF_METRICS, 0, GP, "PERF_METRICS needs the capability and FC3"),
        (v4(), 0x18e + 0x100, 0, GP, "not a PMU MSR"),
    ];
    for (l, msr, value, expected, rule) in rows {
        let mut pmu = ModelPmu::new(*l);
        assert_eq!(pmu.wrmsr(*msr, *value), *expected, "{rule}: wrmsr({msr:#x}, {value:#x})");
    }
}

#[test]
fn reset_values() {
    let mut pmu = ModelPmu::new(v5());
    assert_eq!(pmu.rdmsr(IA32_PERF_GLOBAL_CTRL), Ok(0xff), "GP enable bits set at reset");
    assert_eq!(pmu.rdmsr(IA32_PERF_GLOBAL_STATUS), Ok(0));
    assert_eq!(pmu.rdmsr(IA32_FIXED_CTR_CTRL), Ok(0));
}

#[test]
fn legacy_write_sign_extends_from_bit_31_full_width_does_not() {
    let mut pmu = ModelPmu::new(v4());
    pmu.wrmsr(IA32_PMC0, 0x8000_0000).unwrap();
    assert_eq!(pmu.rdmsr(IA32_PMC0), Ok(0xffff_8000_0000), "sign-extended, truncated to 48 bits");
    pmu.wrmsr(IA32_PMC0, 0x1234_7fff_ffff).unwrap();
    assert_eq!(pmu.rdmsr(IA32_PMC0), Ok(0x7fff_ffff), "only bits 31:0 written");
    pmu.wrmsr(IA32_A_PMC0, 0x8000_0000).unwrap();
    assert_eq!(pmu.rdmsr(IA32_A_PMC0), Ok(0x8000_0000));
    assert_eq!(pmu.rdmsr(IA32_PMC0), Ok(0x8000_0000), "PMC and A_PMC alias one counter");
}

#[test]
fn status_set_reset_and_inuse() {
    let mut pmu = ModelPmu::new(v4());
    pmu.wrmsr(IA32_PERF_GLOBAL_STATUS_SET, 0b101 | 1 << 33).unwrap();
    assert_eq!(pmu.rdmsr(IA32_PERF_GLOBAL_STATUS), Ok(0b101 | 1 << 33));
    pmu.wrmsr(IA32_PERF_GLOBAL_STATUS_RESET, 0b1).unwrap();
    assert_eq!(pmu.rdmsr(IA32_PERF_GLOBAL_STATUS), Ok(0b100 | 1 << 33));
    assert_eq!(pmu.rdmsr(IA32_PERF_GLOBAL_STATUS_SET), Ok(0), "write-only registers read 0");

    assert_eq!(pmu.rdmsr(IA32_PERF_GLOBAL_INUSE), Ok(0));
    pmu.wrmsr(IA32_PERFEVTSEL0 + 2, 0xc0).unwrap();
    pmu.wrmsr(IA32_FIXED_CTR_CTRL, fixed_ctrl::USR << 4).unwrap();
    assert_eq!(pmu.rdmsr(IA32_PERF_GLOBAL_INUSE), Ok(1 << 2 | 1 << 33));
    pmu.wrmsr(IA32_PERFEVTSEL0 + 1, evtsel::INT).unwrap();
    assert_eq!(pmu.rdmsr(IA32_PERF_GLOBAL_INUSE), Ok(1 << 2 | 1 << 33 | 1 << 63), "PMI bit; event 0 not in use");
}

fn count_instructions_on_gp0(pmu: &mut ModelPmu, extra: u64) {
    let sel = 0xc0 | evtsel::USR | evtsel::OS | evtsel::EN | extra;
    pmu.wrmsr(IA32_PERFEVTSEL0, sel).unwrap();
}

#[test]
fn counting_gated_by_global_ctrl_en_event_and_ring() {
    let mut pmu = ModelPmu::new(v4());
    count_instructions_on_gp0(&mut pmu, 0);
    pmu.tick(ArchEvent::InstructionsRetired, 10, Ring::User);
    pmu.tick(ArchEvent::BranchInstructionsRetired, 5, Ring::User);
    assert_eq!(pmu.rdmsr(IA32_PMC0), Ok(10));
    pmu.wrmsr(IA32_PERFEVTSEL0, 0xc0 | evtsel::OS | evtsel::EN).unwrap();
    pmu.tick(ArchEvent::InstructionsRetired, 7, Ring::User);
    assert_eq!(pmu.rdmsr(IA32_PMC0), Ok(10), "OS-only selector ignores ring 3");
    pmu.tick(ArchEvent::InstructionsRetired, 7, Ring::Kernel);
    assert_eq!(pmu.rdmsr(IA32_PMC0), Ok(17));
    pmu.wrmsr(IA32_PERF_GLOBAL_CTRL, 0).unwrap();
    pmu.tick(ArchEvent::InstructionsRetired, 7, Ring::Kernel);
    assert_eq!(pmu.rdmsr(IA32_PMC0), Ok(17), "frozen while GLOBAL_CTRL clears it");
}

#[test]
fn fixed_counters_count_their_events() {
    let mut pmu = ModelPmu::new(v5());
    pmu.wrmsr(IA32_FIXED_CTR_CTRL, 0x3333).unwrap();
    pmu.wrmsr(IA32_PERF_GLOBAL_CTRL, 0xf << 32).unwrap();
    for (event, n) in [
        (ArchEvent::InstructionsRetired, 1),
        (ArchEvent::CoreCycles, 2),
        (ArchEvent::ReferenceCycles, 3),
        (ArchEvent::TopdownSlots, 4),
    ] {
        pmu.tick(event, n, Ring::Kernel);
    }
    for i in 0..4 {
        assert_eq!(pmu.rdmsr(IA32_FIXED_CTR0 + i), Ok(u64::from(i) + 1));
        assert_eq!(pmu.rdpmc(RDPMC_FIXED | i), Ok(u64::from(i) + 1));
    }
    assert_eq!(pmu.rdpmc(RDPMC_FIXED | 4), Err(GpFault), "RDPMC of an absent counter");
    assert_eq!(pmu.rdpmc(8), Err(GpFault));
}

#[test]
fn overflow_sets_status_and_raises_a_pmi_only_with_int() {
    let mut pmu = ModelPmu::new(v4());
    count_instructions_on_gp0(&mut pmu, 0);
    pmu.wrmsr(IA32_A_PMC0, (1 << 48) - 2).unwrap();
    pmu.tick(ArchEvent::InstructionsRetired, 3, Ring::User);
    assert_eq!(pmu.rdmsr(IA32_PMC0), Ok(1), "wrapped");
    assert_eq!(pmu.rdmsr(IA32_PERF_GLOBAL_STATUS), Ok(1));
    assert_eq!(pmu.pmis, 0, "no INT, no PMI");

    count_instructions_on_gp0(&mut pmu, evtsel::INT);
    pmu.wrmsr(IA32_PMC0, 0xffff_ffff).unwrap(); // sign-extends: 2^48 - 1
    pmu.tick(ArchEvent::InstructionsRetired, 1, Ring::User);
    assert_eq!(pmu.pmis, 1);
    pmu.wrmsr(IA32_PERF_GLOBAL_STATUS_RESET, 1).unwrap();
    assert_eq!(pmu.rdmsr(IA32_PERF_GLOBAL_STATUS), Ok(0), "cleared through OVF_CTRL");
}

#[test]
fn freeze_on_pmi_streamlined_v4_and_legacy_v3() {
    for version in [3u8, 4] {
        let mut pmu = ModelPmu::new(layout(version, 4, 7, true));
        pmu.wrmsr(IA32_DEBUGCTL, debugctl::FREEZE_PERFMON_ON_PMI | debugctl::FREEZE_LBRS_ON_PMI | debugctl::LBR)
            .unwrap();
        count_instructions_on_gp0(&mut pmu, evtsel::INT);
        pmu.wrmsr(IA32_A_PMC0, (1 << 48) - 1).unwrap();
        pmu.tick(ArchEvent::InstructionsRetired, 1, Ring::User);
        pmu.tick(ArchEvent::InstructionsRetired, 5, Ring::User);
        assert_eq!(pmu.rdmsr(IA32_PMC0), Ok(0), "v{version}: frozen after the PMI");
        let st = pmu.rdmsr(IA32_PERF_GLOBAL_STATUS).unwrap();
        if version >= 4 {
            assert_eq!(st, 1 | status::CTR_FRZ | status::LBR_FRZ);
            assert_eq!(pmu.rdmsr(IA32_PERF_GLOBAL_CTRL), Ok(0xf), "v4 keeps GLOBAL_CTRL");
            pmu.wrmsr(IA32_PERF_GLOBAL_STATUS_RESET, status::CTR_FRZ).unwrap();
            pmu.tick(ArchEvent::InstructionsRetired, 5, Ring::User);
            assert_eq!(pmu.rdmsr(IA32_PMC0), Ok(5), "clearing CTR_Frz resumes counting");
        } else {
            assert_eq!(st, 1);
            assert_eq!(pmu.rdmsr(IA32_PERF_GLOBAL_CTRL), Ok(0), "legacy freeze clears GLOBAL_CTRL");
            assert_eq!(pmu.rdmsr(IA32_DEBUGCTL).unwrap() & debugctl::LBR, 0, "legacy LBR freeze");
        }
    }
}

#[test]
fn cmask_inv_edge_are_not_counted_by_the_model() {
    let mut pmu = ModelPmu::new(v4());
    count_instructions_on_gp0(&mut pmu, 1 << 24);
    pmu.tick(ArchEvent::InstructionsRetired, 3, Ring::User);
    assert_eq!(pmu.rdmsr(IA32_PMC0), Ok(0));
}

#[test]
fn instruction_counts_are_tallied() {
    let mut pmu = ModelPmu::new(v4());
    let _ = pmu.rdmsr(IA32_PMC0);
    let _ = pmu.wrmsr(IA32_PMC0, 0);
    let _ = pmu.rdpmc(0);
    let _ = pmu.rdpmc(99);
    assert_eq!((pmu.counts.rdmsr, pmu.counts.wrmsr, pmu.counts.rdpmc), (1, 1, 2));
}

/// The model reads its layout off the raw registers itself (SDM vol. 2A
/// CPUID leaf 0AH); the engine's derivation (`PmuLayout::from_cpuid`) must
/// agree wherever both are defined.
#[test]
fn the_model_derives_its_layout_from_raw_cpuid() {
    use crate::cpuid::{ArchPerfmon, CpuidRegs};
    use crate::model::ModelLayout;
    /// Raw CPUID.0AH, PDCM, PERF_CAPABILITIES; expected (version, GP
    /// counters, fixed set, AnyThread allowed, PERF_METRICS); the rule.
    type Row = (CpuidRegs, bool, u64, (u8, u8, u32, bool, bool), &'static str);
    let rows: &[Row] = &[
        (
            CpuidRegs::new(0x0830_0805, 0, 0xf, 0x8604),
            true,
            0xa000,
            (5, 8, 0xf, false, true),
            "tigerlake + PERF_METRICS",
        ),
        (CpuidRegs::new(0x0730_0404, 0, 0, 0x0603), true, 0x2000, (4, 4, 0x7, true, false), "skylake_x"),
        (CpuidRegs::new(0x0830_0805, 0, 0x77, 0x0603), true, 0x2000, (5, 8, 0x77, true, false), "hole, EDX[15] clear"),
        (CpuidRegs::new(0x0830_0805, 0, 0x4, 0x0602), true, 0, (5, 8, 0x7, true, false), "ECX[i] || EDX[4:0] > i"),
        (CpuidRegs::new(0x0730_0404, 0, 0xf0, 0x0603), true, 0, (4, 4, 0x7, true, false), "ECX reserved below v5"),
        (CpuidRegs::new(0x0730_0402, 0, 0, 0x0603), true, 0, (2, 4, 0x7, false, false), "no AnyThread on v2"),
        (CpuidRegs::new(0x0728_0201, 0, 0xf, 0x0603), true, 0, (1, 2, 0, false, false), "v1: no fixed counters"),
        (
            CpuidRegs::new(0x0830_0805, 0, 0xf, 0x8604),
            false,
            0xa000,
            (5, 8, 0xf, false, false),
            "no PDCM: no capabilities",
        ),
    ];
    for &(leaf, pdcm, caps, (version, gp, fixed, anythread, perf_metrics), what) in rows {
        let m = ModelLayout::from_cpuid(leaf, pdcm, caps);
        let has_pm = ModelPmu::from_cpuid(leaf, pdcm, caps).rdmsr(IA32_PERF_METRICS).is_ok();
        assert_eq!(
            (m.version, m.gp_counters, m.fixed, m.anythread, has_pm),
            (version, gp, fixed, anythread, perf_metrics),
            "{what}"
        );
        let e = PmuLayout::from_cpuid(&ArchPerfmon::decode(leaf), pdcm, caps);
        assert_eq!(
            (e.version, e.gp_counters, e.fixed.0, e.anythread_allowed(), e.perf_metrics()),
            (version, gp, fixed, anythread, perf_metrics),
            "engine: {what}"
        );
    }
}
