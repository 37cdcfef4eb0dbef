//! The two Linux runs `cargo xtask linux-report` and `cargo xtask bench
//! linux` compare: the stock kernel with the LINUXTEST initramfs booted
//! natively and as perfvisor's guest on one Bochs model. They are the
//! runner's own cases (`bochs-linux-native-*`, `bochs-linux-guest-*` in
//! tests/runner/src/linux_cases.rs), booted one after the other (one Bochs
//! at a time) into build/runs/<case>/ as `cargo xtask test` does, or, with
//! `--from-runs`, the serial logs an earlier run left there.

use crate::commands::{BochsOptions, DEFAULT_BOCHS_MODEL};
use crate::images::{build_dir, Builder};
use crate::{setup, Fallible, Options};
use perfvisor_runner::cases::{self, Case, GuestImage, LinuxDefect, Outcome};
use perfvisor_runner::emulator::Emulator;
use perfvisor_runner::linux_cases;
use std::path::{Path, PathBuf};

/// One run's console: its case, its run directory and serial log.
pub struct Run {
    pub case: &'static str,
    pub dir: PathBuf,
    pub serial: String,
}

impl Run {
    pub fn log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
}

/// The native run and the guest run of one Bochs model.
pub struct LinuxRuns {
    pub model: String,
    pub native: Run,
    pub guest: Run,
}

/// The Bochs model a case runs on.
fn model_of(case: &Case) -> Option<&str> {
    match &case.emulator {
        Emulator::Bochs { model, .. } => Some(model),
        Emulator::Qemu { .. } => None,
    }
}

/// The runner's native and guest Linux cases for `model` (the guest case
/// without a defect: the one that runs the LINUXTEST checks).
pub fn cases_for(model: &str) -> Fallible<[Case; 2]> {
    let all = linux_cases::all();
    let pick = |guest: GuestImage| all.iter().find(|c| c.guest == guest && model_of(c) == Some(model)).cloned();
    match (pick(GuestImage::LinuxNative), pick(GuestImage::LinuxGuest(LinuxDefect::None))) {
        (Some(native), Some(guest)) => Ok([native, guest]),
        _ => {
            let mut models: Vec<&str> = Vec::new();
            for m in all.iter().filter_map(model_of) {
                if !models.contains(&m) {
                    models.push(m);
                }
            }
            Err(format!(
                "no native and guest Linux cases for --cpu {model:?} (tests/runner/src/linux_cases.rs has {models:?})"
            ))
        }
    }
}

/// `--cpu MODEL [BOCHS OPTIONS] [--from-runs]`: boots the two cases (or
/// reads their logs) and returns both consoles.
pub fn obtain(args: &[String]) -> Fallible<LinuxRuns> {
    let mut o = Options::new(args);
    let model = o.value(&["--cpu"])?.unwrap_or_else(|| DEFAULT_BOCHS_MODEL.into());
    let from_runs = o.flag("--from-runs");
    let bochs_given = args.iter().any(|a| matches!(a.as_str(), "--bochs" | "--pmu" | "--msrs"));
    let explicit_msrs = args.iter().any(|a| a == "--msrs");
    let bochs = BochsOptions::parse(&mut o)?;
    o.finish()?;
    let cases = cases_for(&model)?;
    let run_root = build_dir().join("runs");
    if from_runs && bochs_given {
        return Err("--from-runs reads the logs of earlier runs: BOCHS OPTIONS apply only to a boot".into());
    }
    if !from_runs {
        boot_cases(&cases, &model, &bochs, explicit_msrs, &run_root)?;
    }
    let [native, guest] = cases;
    Ok(LinuxRuns {
        model,
        native: read_run(&native, &run_root, from_runs)?,
        guest: read_run(&guest, &run_root, from_runs)?,
    })
}

/// Boots `cases` one after the other (the machine runs one Bochs per core at
/// most, and others may be running theirs) with the BOCHS OPTIONS applied:
/// `--pmu` replaces the case's PMU, `--msrs` its msrs file (otherwise the
/// case keeps its own: the native boot needs tests/bochs/linux.msrs).
fn boot_cases(
    cases: &[Case; 2],
    model: &str,
    bochs: &BochsOptions,
    explicit_msrs: bool,
    run_root: &Path,
) -> Fallible<()> {
    setup::ensure_emulators()?;
    let chosen = bochs.emulator(Some(model.to_string()))?;
    let builder = Builder::new()?;
    for case in cases {
        let mut case = case.clone();
        if let (Emulator::Bochs { pmu, msrs, .. }, Emulator::Bochs { pmu: want_pmu, msrs: want_msrs, .. }) =
            (&mut case.emulator, &chosen)
        {
            *pmu = *want_pmu;
            if explicit_msrs || msrs.is_none() {
                msrs.clone_from(want_msrs);
            }
        }
        let image = builder.image(case.firmware, case.config, case.guest)?;
        eprintln!(
            "xtask: booting {} in {} (minutes; files in {})",
            case.name,
            case.emulator,
            run_root.join(case.name).display()
        );
        let results = cases::run_case(&case, &image, run_root, &Err("not probed".into()));
        if let Some(r) = results.first() {
            // The case's own verdict; the report below says what differs.
            let outcome = match &r.outcome {
                Outcome::Fail(why) => Outcome::Fail(why.lines().next().unwrap_or_default().to_string()),
                other => other.clone(),
            };
            println!("{}", perfvisor_runner::summary::case_line(&r.name, &outcome, Some(r.elapsed.as_secs_f64())));
        }
    }
    Ok(())
}

fn read_run(case: &Case, run_root: &Path, from_runs: bool) -> Fallible<Run> {
    let dir = run_root.join(case.name);
    let log = dir.join("serial.log");
    let serial = std::fs::read_to_string(&log).map_err(|e| {
        let hint = if from_runs {
            format!(
                " (boot it first: the same command without --from-runs, or `cargo xtask test --filter {}`)",
                case.name
            )
        } else {
            String::new()
        };
        format!("{}: {e}{hint}", log.display())
    })?;
    Ok(Run { case: case.name, dir, serial })
}

/// The most bytes of one `guest: ` console line (`Com1::LINE` in
/// hypervisor/src/guard.rs): perfvisor prints a longer guest line in parts.
pub const GUEST_LINE: usize = 100;

/// What the Linux guest printed, from perfvisor's console: its `guest: `
/// lines without the prefix, with the parts of a line perfvisor split at
/// [`GUEST_LINE`] bytes joined again (perfvisor's own lines between two
/// parts skipped). A guest line of exactly [`GUEST_LINE`] bytes cannot be
/// told from a split one and is joined to the next.
pub fn guest_console(serial: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut continues = false;
    for part in serial.lines().filter_map(|l| l.strip_prefix("guest: ")) {
        let part = part.trim_end_matches('\r');
        match lines.last_mut() {
            Some(last) if continues => last.push_str(part),
            _ => lines.push(part.to_string()),
        }
        continues = part.len() == GUEST_LINE;
    }
    lines
}

/// Linux's console lines in a run: the whole console natively, the
/// guest's lines ([`guest_console`]) under perfvisor.
pub fn linux_console(serial: &str, under_perfvisor: bool) -> Vec<String> {
    if under_perfvisor {
        guest_console(serial)
    } else {
        serial.lines().map(|l| l.trim_end_matches('\r').to_string()).collect()
    }
}

/// The LINUXTEST results among Linux's console lines, parsed as the runner
/// parses them (`perfvisor_runner::cases::guest_tests`).
pub fn linux_checks(console: &[String]) -> Vec<(String, Outcome)> {
    let text: Vec<&str> = console.iter().map(String::as_str).filter(|l| l.starts_with("LINUXTEST ")).collect();
    cases::guest_tests(&text.join("\n"), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_lines_split_by_perfvisor_are_joined() {
        let long = "x".repeat(GUEST_LINE);
        let serial = format!(
            "INFO  guest: starting Linux at 0x2000000\r\nguest: short\r\nguest: {long}\r\nWARN  guard: refused\r\n\
             guest: tail\r\nguest: next\r\nTEST forged ... ok\r\n"
        );
        assert_eq!(guest_console(&serial), ["short".to_string(), format!("{long}tail"), "next".to_string()]);
        assert_eq!(linux_console("a\r\nb\n", false), ["a", "b"]);
    }

    #[test]
    fn checks_come_only_from_linuxtest_lines() {
        let console: Vec<String> = [
            "TEST forged ... ok",
            "LINUXTEST linux_a ... ok",
            "LINUXTEST linux_b ... FAILED (off by 1)",
            "LINUXTESTS DONE 2 run, 1 failed",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            linux_checks(&console),
            [("linux_a".to_string(), Outcome::Pass), ("linux_b".to_string(), Outcome::Fail("off by 1".into()))]
        );
    }

    #[test]
    fn the_runners_cases_exist_for_both_models() {
        for model in ["tigerlake", "corei7_skylake_x"] {
            let [native, guest] = cases_for(model).unwrap();
            assert_eq!(native.guest, GuestImage::LinuxNative);
            assert_eq!(guest.guest, GuestImage::LinuxGuest(LinuxDefect::None));
        }
        let err = cases_for("pentium").err().unwrap();
        assert!(err.contains("tigerlake"), "{err}");
    }
}
