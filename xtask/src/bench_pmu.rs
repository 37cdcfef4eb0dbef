//! `cargo xtask bench pmu-switch`: PMU instructions per VM exit/entry round
//! trip and per context switch, counted by the SDM model. A benchmark, not a
//! test: it prints the table (and marks figures over the targets).

use pmu::events::Ring;
use pmu::layout::{evtsel, PmuLayout};
use pmu::model::{InstructionCounts, ModelPmu};
use pmu::msr::{IA32_A_PMC0, IA32_FIXED_CTR0, IA32_FIXED_CTR_CTRL, IA32_PERFEVTSEL0};
use pmu::vpmu::{Mode, VirtualPmu};

fn host(version: u8, gp: u8, fixed: u32) -> PmuLayout {
    PmuLayout::typical(version, gp, fixed, true)
}

fn delta(after: InstructionCounts, before: InstructionCounts) -> InstructionCounts {
    InstructionCounts {
        rdmsr: after.rdmsr - before.rdmsr,
        wrmsr: after.wrmsr - before.wrmsr,
        rdpmc: after.rdpmc - before.rdpmc,
    }
}

fn cell(c: InstructionCounts) -> String {
    format!("{}/{}/{}", c.rdmsr, c.rdpmc, c.wrmsr)
}

/// A guest with `k` GP and `f` fixed counters counting (and non-zero).
fn measure(layout: PmuLayout, k: u8, f: u32) -> (InstructionCounts, InstructionCounts, InstructionCounts) {
    let mut hw = ModelPmu::new(layout);
    hw.vmcs_swap_global_ctrl(0);
    let mut v = VirtualPmu::new(layout, layout, Mode::Mediated);
    v.load(&mut hw).expect("load");
    for i in 0..k {
        v.write(&mut hw, IA32_PERFEVTSEL0 + u32::from(i), 0xc0 | evtsel::EN | evtsel::USR | evtsel::OS).unwrap();
        v.write(&mut hw, IA32_A_PMC0 + u32::from(i), 1000).unwrap();
    }
    let mut ctrl = 0u64;
    for i in 0..f {
        ctrl |= 0x3 << (4 * i);
        v.write(&mut hw, IA32_FIXED_CTR0 + i, 1000).unwrap();
    }
    if f > 0 {
        v.write(&mut hw, IA32_FIXED_CTR_CTRL, ctrl).unwrap();
    }
    v.global_ctrl = ((1u64 << k) - 1) | (((1u64 << f) - 1) << 32);
    // Let the counters count so the put has something to save.
    hw.vmcs_swap_global_ctrl(v.global_ctrl);
    hw.tick(pmu::events::ArchEvent::InstructionsRetired, 10, Ring::User);

    let before = hw.counts;
    v.on_vm_exit(hw.vmcs_swap_global_ctrl(0));
    hw.vmcs_swap_global_ctrl(v.global_ctrl);
    let round_trip = delta(hw.counts, before);

    v.on_vm_exit(hw.vmcs_swap_global_ctrl(0));
    let before = hw.counts;
    v.put(&mut hw).expect("put");
    let put = delta(hw.counts, before);
    let before = hw.counts;
    v.load(&mut hw).expect("load");
    let load = delta(hw.counts, before);
    (round_trip, put, load)
}

pub fn pmu_switch() -> bool {
    println!("PMU instructions (RDMSR/RDPMC/WRMSR) executed by perfvisor's engine, counted by the SDM model");
    println!("(per switch = the guest's put, or its load; the other context idle, so it costs 0)");
    println!();
    println!(
        "{:<10} {:<30} {:>12} {:>12} {:>12} {:>16} {:>22}",
        "host", "guest load", "round trip", "put", "load", "target/switch", "KVM mediated/round trip"
    );
    let mut within = true;
    for (name, layout, kvm_worst) in [("v4 4+3", host(4, 4, 0x7), "n/a"), ("v5 8+4", host(5, 8, 0xf), "2/24/46")] {
        let all_gp = layout.gp_counters;
        let all_fixed = layout.fixed.count();
        for (label, k, f, kvm) in [
            ("idle", 0u8, 0u32, "0/0/~10"),
            ("perf stat: 3 fixed + 2 GP", 2, 3, "-"),
            ("every counter", all_gp, all_fixed, kvm_worst),
        ] {
            let (rt, put, load) = measure(layout, k, f);
            let target = InstructionCounts {
                rdmsr: 1,
                rdpmc: u64::from(k) + u64::from(f),
                wrmsr: 2 * u64::from(k) + u64::from(f) + 3,
            };
            let ok =
                |c: InstructionCounts| c.rdmsr <= target.rdmsr && c.rdpmc <= target.rdpmc && c.wrmsr <= target.wrmsr;
            let rt_ok = rt == InstructionCounts::default();
            within &= ok(put) && ok(load) && rt_ok;
            let mark = |c, good: bool| format!("{}{}", cell(c), if good { "" } else { " (over)" });
            println!(
                "{:<10} {:<30} {:>12} {:>12} {:>12} {:>16} {:>22}",
                name,
                label,
                mark(rt, rt_ok),
                mark(put, ok(put)),
                mark(load, ok(load)),
                format!("<= {}", cell(target)),
                kvm
            );
        }
    }
    println!();
    println!("KVM figures: REFERENCE.md §2 (KVM switches the PMU on most VM exits, so its cost is per round trip).");
    println!("Targets: 0 per round trip; per switch <= 1 RDMSR + (k+f) RDPMC + (2k+f+3) WRMSR.");
    println!("{}", if within { "all figures within the targets" } else { "SOME FIGURES ARE OVER THE TARGETS" });
    true
}
