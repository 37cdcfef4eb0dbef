//! `cargo xtask bench boot`: wall-clock seconds from starting the emulator
//! to the hypervisor's first console line and to VMX root mode. A benchmark,
//! not a test: it prints figures and asserts nothing about them.

use crate::images::{build_dir, Builder};
use crate::{setup, Fallible, Options};
use perfvisor_runner::boot::{boot, BootSpec};
use perfvisor_runner::cases::GuestImage;
use perfvisor_runner::emulator::{BochsPmu, Emulator, Firmware};
use std::time::Duration;

const FIRST_LINE: &str = "hypervisor starting";
const VMX_ROOT: &str = "vmx: entered VMX root mode";

pub fn bench(args: &[String]) -> Fallible<bool> {
    let Some((what, rest)) = args.split_first() else {
        return Err("bench needs a benchmark name: boot, exits, bochs, pmu-switch or linux".into());
    };
    match what.as_str() {
        "boot" => boot_bench(rest),
        "exits" => exits_bench(rest),
        "bochs" => bochs_bench(rest),
        "pmu-switch" => {
            Options::new(rest).finish()?;
            Ok(crate::bench_pmu::pmu_switch())
        }
        "linux" => crate::bench_linux::bench_linux(rest),
        other => Err(format!("unknown benchmark {other:?} (available: boot, exits, bochs, pmu-switch, linux)")),
    }
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 })
}

fn boot_bench(args: &[String]) -> Fallible<bool> {
    let mut o = Options::new(args);
    let runs: usize = match o.value(&["--runs"])? {
        None => 3,
        Some(r) => r.parse().ok().filter(|&n| n >= 1).ok_or(format!("--runs takes a positive number, not {r:?}"))?,
    };
    let bochs_binary = o.value(&["--bochs"])?;
    o.finish()?;
    setup::ensure_emulators()?;
    crate::bochs_build::resolve(bochs_binary)?;
    let builder = Builder::new()?;
    let bochs = Emulator::Bochs { model: "corei7_skylake_x".into(), pmu: BochsPmu::Counting, msrs: None, cpus: 1 };
    let setups = [
        ("Bochs BIOS (corei7_skylake_x)", bochs.clone(), Firmware::Bios),
        ("Bochs UEFI (corei7_skylake_x, OVMF)", bochs, Firmware::Uefi),
        ("QEMU TCG BIOS", Emulator::Qemu { kvm: false, cpu: None }, Firmware::Bios),
    ];
    println!("boot benchmark: median of {runs} runs, wall seconds from emulator start");
    println!("{:<38} {:>14} {:>14}", "setup", "first line", "VMX root");
    for (label, emulator, firmware) in setups {
        let image = builder.image(firmware, None, GuestImage::TestKernel)?;
        let (mut first, mut root) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let outcome = boot(&BootSpec {
                emulator: emulator.clone(),
                firmware,
                image: image.clone(),
                run_dir: build_dir().join("runs").join(format!("bench-boot-{i}")),
                timeout: Duration::from_secs(300),
                echo: false,
                gdb: false,
                watch: vec![FIRST_LINE.into(), VMX_ROOT.into()],
            })?;
            first.extend(outcome.seen_at[0].map(|d| d.as_secs_f64()));
            root.extend(outcome.seen_at[1].map(|d| d.as_secs_f64()));
        }
        let cell = |xs: Vec<f64>, none: &str| {
            let n = xs.len();
            median(xs).map_or(none.to_string(), |m| format!("{m:.2} s ({n}/{runs})"))
        };
        println!(
            "{:<38} {:>14} {:>14}",
            label,
            cell(first, "never"),
            cell(root, if matches!(emulator, Emulator::Qemu { .. }) { "n/a (no VMX)" } else { "never" })
        );
    }
    Ok(true)
}

/// `cargo xtask bench exits`: the guest measures, with RDTSC, 10,000 CPUID
/// exits, intercepted RDMSRs and VMCALLs minus a null loop, in Bochs, whose
/// TSC advances with emulated instructions: the figures are instructions
/// per exit, hypervisor and VM exit/entry included.
fn exits_bench(args: &[String]) -> Fallible<bool> {
    let mut o = Options::new(args);
    let model = o.value(&["--cpu"])?.unwrap_or_else(|| "tigerlake".into());
    let bochs_binary = o.value(&["--bochs"])?;
    o.finish()?;
    setup::ensure_emulators()?;
    crate::bochs_build::resolve(bochs_binary)?;
    let builder = Builder::new()?;
    // The same Bochs machine (with its counting PMU), the vPMU off and on.
    let mut columns = Vec::new();
    for (label, config) in [("vPMU off", "guest=bench\nvpmu=off\n"), ("vPMU on", "guest=bench\n")] {
        let image = builder.image(Firmware::Bios, Some(config), GuestImage::TestKernel)?;
        let outcome = boot(&BootSpec {
            emulator: Emulator::Bochs { model: model.clone(), pmu: BochsPmu::Counting, msrs: None, cpus: 1 },
            firmware: Firmware::Bios,
            image,
            run_dir: build_dir().join("runs").join(format!("bench-exits-{}", label.replace(' ', "-"))),
            timeout: Duration::from_secs(600),
            echo: false,
            gdb: false,
            watch: Vec::new(),
        })?;
        let mode = outcome.serial.lines().find_map(|l| l.split_once("pmu: vPMU mode ").map(|(_, m)| m.to_string()));
        columns.push((label, outcome, mode));
    }
    let figure = |serial: &str, name: &str| -> Option<u64> {
        serial.lines().find_map(|l| l.split_once(&format!("BENCH {name} "))?.1.trim().parse().ok())
    };
    let rows = [
        ("CPUID exit", "cpuid"),
        ("intercepted RDMSR exit (IA32_PAT)", "rdmsr-intercepted"),
        ("VMCALL (ABI version)", "vmcall"),
    ];
    for (label, outcome, _) in &columns {
        if rows.iter().any(|(_, key)| figure(&outcome.serial, key).is_none()) {
            return Err(format!(
                "{label}: the guest printed no BENCH figures (verdict {:?}); console in {}",
                outcome.verdict,
                outcome.run_dir.join("serial.log").display()
            ));
        }
    }
    println!("exit costs in Bochs {model}: emulated instructions per exit (guest RDTSC, 10,000 iterations, null loop subtracted)");
    for (label, _, mode) in &columns {
        println!("  {label}: mode {}", mode.as_deref().unwrap_or("?"));
    }
    println!("{:<40} {:>10} {:>10} {:>8}", "exit", "vPMU off", "vPMU on", "extra");
    for (label, key) in rows {
        let off = figure(&columns[0].1.serial, key).unwrap_or(0);
        let on = figure(&columns[1].1.serial, key).unwrap_or(0);
        println!("{label:<40} {off:>10} {on:>10} {:>8}", on as i64 - off as i64);
    }
    println!("targets: <= 150 hypervisor instructions per CPUID exit (the figure includes VM exit/entry);");
    println!("         <= 10 extra with the vPMU on");
    Ok(true)
}

/// `cargo xtask bench bochs`: the counting Bochs' speed with its PMU on
/// (`pmu=1`) relative to the same binary with it off, on one workload that
/// does not depend on the PMU (perfvisor with `vpmu=off` running the exit
/// benchmark guest), in CPU seconds of the Bochs process (steadier than
/// wall time on a shared machine); and how long the cached build took.
fn bochs_bench(args: &[String]) -> Fallible<bool> {
    let mut o = Options::new(args);
    let runs: usize = match o.value(&["--runs"])? {
        None => 7,
        Some(r) => r.parse().ok().filter(|&n| n >= 1).ok_or(format!("--runs takes a positive number, not {r:?}"))?,
    };
    let model = o.value(&["--cpu"])?.unwrap_or_else(|| "tigerlake".into());
    let bochs_binary = o.value(&["--bochs"])?;
    o.finish()?;
    setup::ensure_emulators()?;
    let binary = crate::bochs_build::resolve(bochs_binary)?;
    let builder = Builder::new()?;
    let image = builder.image(Firmware::Bios, Some("guest=bench\nvpmu=off\n"), GuestImage::TestKernel)?;
    let setups = [("PMU off (pmu=0)", BochsPmu::Stock), ("counting PMU (pmu=1)", BochsPmu::Counting)];
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    println!("bench bochs: {runs} runs of each, alternating; CPU seconds of the Bochs process per run");
    // Alternate the two, so drift in the machine's load hits both alike.
    for i in 0..runs {
        for (k, (label, pmu)) in setups.iter().enumerate() {
            let before = children_cpu_seconds();
            let outcome = boot(&BootSpec {
                emulator: Emulator::Bochs { model: model.clone(), pmu: *pmu, msrs: None, cpus: 1 },
                firmware: Firmware::Bios,
                image: image.clone(),
                run_dir: build_dir().join("runs").join(format!("bench-bochs-{}-{i}", pmu_tag(*pmu))),
                timeout: Duration::from_secs(600),
                echo: false,
                gdb: false,
                watch: Vec::new(),
            })?;
            if outcome.verdict != perfvisor_runner::boot::Verdict::Pass {
                return Err(format!(
                    "{label}: run {i} ended {:?}; files in {}",
                    outcome.verdict,
                    outcome.run_dir.display()
                ));
            }
            let cpu = children_cpu_seconds().zip(before).map(|(a, b)| a - b);
            times[k].push(cpu.unwrap_or(outcome.elapsed.as_secs_f64()));
        }
    }
    let mut medians = [0.0; 2];
    for (k, (label, _)) in setups.iter().enumerate() {
        medians[k] = median(times[k].clone()).unwrap_or(0.0);
        println!("{label:<24} median {:>6.2} s  runs {:.2?}", medians[k], times[k]);
    }
    println!(
        "speed of the counting PMU relative to PMU off: {:.3}x (target >= 0.95x)",
        medians[0] / medians[1].max(f64::MIN_POSITIVE)
    );
    let info = binary.parent().and_then(|bin| bin.parent()).map(|dir| dir.join("BUILD-INFO"));
    match info.and_then(|p| std::fs::read_to_string(p).ok()) {
        Some(text) => {
            let built = text.lines().find(|l| l.starts_with("built in")).unwrap_or("build time not recorded");
            println!("the cached build ({}): {built}", binary.display());
        }
        None => println!("{} is not a cached counting build: no build time recorded", binary.display()),
    }
    Ok(true)
}

/// User + system CPU seconds of this process's waited-for children
/// (/proc/self/stat fields 16 and 17, in clock ticks of 1/100 s on Linux).
fn children_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): cutime is field 16, cstime 17.
    let cutime: f64 = fields.get(16 - 3)?.parse().ok()?;
    let cstime: f64 = fields.get(17 - 3)?.parse().ok()?;
    Some((cutime + cstime) / 100.0)
}

fn pmu_tag(pmu: BochsPmu) -> &'static str {
    match pmu {
        BochsPmu::Stock => "pmu0",
        _ => "pmu1",
    }
}
