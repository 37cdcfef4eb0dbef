//! `cargo xtask bench boot`: wall-clock seconds from starting the emulator
//! to the hypervisor's first console line and to VMX root mode. A benchmark,
//! not a test: it prints figures and asserts nothing about them.

use crate::images::{build_dir, Builder};
use crate::{setup, Fallible, Options};
use perfvisor_runner::boot::{boot, BootSpec};
use perfvisor_runner::cases::GuestImage;
use perfvisor_runner::emulator::{Emulator, Firmware};
use std::time::Duration;

const FIRST_LINE: &str = "hypervisor starting";
const VMX_ROOT: &str = "vmx: entered VMX root mode";

pub fn bench(args: &[String]) -> Fallible<bool> {
    let Some((what, rest)) = args.split_first() else {
        return Err("bench needs a benchmark name: boot or pmu-switch".into());
    };
    match what.as_str() {
        "boot" => boot_bench(rest),
        "pmu-switch" => {
            Options::new(rest).finish()?;
            Ok(crate::bench_pmu::pmu_switch())
        }
        other => Err(format!(
            "unknown benchmark {other:?} (available: boot, pmu-switch)"
        )),
    }
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

fn boot_bench(args: &[String]) -> Fallible<bool> {
    let mut o = Options::new(args);
    let runs: usize = match o.value(&["--runs"])? {
        None => 3,
        Some(r) => r
            .parse()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or(format!("--runs takes a positive number, not {r:?}"))?,
    };
    o.finish()?;
    setup::ensure_emulators()?;
    let builder = Builder::new()?;
    let bochs = Emulator::Bochs {
        model: "corei7_skylake_x".into(),
        msrs: None,
    };
    let setups = [
        (
            "Bochs BIOS (corei7_skylake_x)",
            bochs.clone(),
            Firmware::Bios,
        ),
        ("Bochs UEFI (corei7_skylake_x, OVMF)", bochs, Firmware::Uefi),
        (
            "QEMU TCG BIOS",
            Emulator::Qemu {
                kvm: false,
                cpu: None,
            },
            Firmware::Bios,
        ),
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
            cell(
                root,
                if matches!(emulator, Emulator::Qemu { .. }) {
                    "n/a (no VMX)"
                } else {
                    "never"
                }
            )
        );
    }
    Ok(true)
}
