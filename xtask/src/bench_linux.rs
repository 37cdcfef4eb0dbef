//! `cargo xtask bench linux`: Linux's boot to /init as perfvisor's guest
//! against natively, on the same Bochs model, and perfvisor's VM exits by
//! reason in each phase of the LINUXTEST client's run. A benchmark, not a
//! test: it prints figures and asserts nothing about them.
//!
//! The runs are the runner's Linux cases (`crate::linux_runs`); the figures
//! come from their consoles:
//! - the kernel's entry: `linux-native: ... entering Linux at 0x... (TSC N)`
//!   natively, `INFO  guest: starting Linux at 0x... (TSC N)` from perfvisor;
//! - the client (tests/linux-client; `guest: `-prefixed under perfvisor):
//!   `client: /init reached at TSC N`, `client: phase NAME: TSC T ticks`
//!   per phase, `client: phase perf-record: N PMIs`;
//! - perfvisor, at each phase mark: `INFO  exits: phase NAME: N VM exits`
//!   and `INFO  exits: phase NAME: <count> <reason>` lines; at the end
//!   `INFO  exits: N VM exits in all` and its `INFO  exits: <count> <reason>`
//!   table.
//!
//! Bochs' TSC counts emulated instructions (and halted time): [`UNIT`].

use crate::linux_runs::{self, LinuxRuns, Run};
use crate::Fallible;

/// The client's phases in order (`PHASES` in hypervisor/src/linux.rs, whose
/// marks end them): the boot to /init, one second of idle sleep, a counting
/// (`perf stat`-like) run, a sampling (`perf record`-like) run.
pub const PHASES: [&str; 4] = ["boot", "idle", "perf-stat", "perf-record"];

/// The exit reason of the guest's port accesses: its console (emulated
/// COM1) and the ports perfvisor refuses.
const CONSOLE_EXITS: &str = "I/O instruction";

/// The bochsrc's `ips=` unless the run's bochsrc says otherwise
/// (tests/runner/src/emulator.rs writes it).
pub const DEFAULT_IPS: u64 = 50_000_000;

/// What a tick is, checked in the vendored Bochs 2.7 source
/// (tests/bochs/vendor/bochs-2.7.tar.xz).
pub const UNIT: &str = "\
unit: Bochs TSC ticks. RDTSC returns Bochs' system tick count (cpu/proc_ctrl.cc: get_TSC() =
bx_pc_system.time_ticks() + tsc_adjust; perfvisor sets no TSC offset), which advances one tick per
emulated instruction (cpu/cpu.cc, BX_SYNC_TIME_IF_SINGLE_PROCESSOR) and 10 per pass of the halted
CPU's wait loop (cpu/event.cc): ticks are instructions plus halted time. Emulated seconds = ticks / ips
(pc_system.cc: time_usec() = ticks / (ips / 1e6)); the bochsrc has ips=50000000, clock: sync=none.";

/// One phase as the client reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    pub ticks: u64,
    /// Samples (PMIs) the phase took, where the client says.
    pub pmis: Option<u64>,
}

/// One run's boot and phases, in TSC ticks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    pub entry_tsc: u64,
    pub init_tsc: u64,
    /// In [`PHASES`] order.
    pub phases: Vec<Phase>,
}

impl Timeline {
    /// Ticks from the kernel's entry to /init.
    pub fn to_init(&self) -> u64 {
        self.init_tsc.saturating_sub(self.entry_tsc)
    }

    fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }
}

/// VM exits: the total and the count of each reason, in the order printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exits {
    pub total: u64,
    pub by_reason: Vec<(String, u64)>,
}

impl Exits {
    fn of(&self, reason: &str) -> u64 {
        self.by_reason.iter().find(|(r, _)| r == reason).map_or(0, |&(_, n)| n)
    }
}

/// perfvisor's exit counts: per phase (in [`PHASES`] order) and in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitReport {
    pub phases: Vec<(String, Exits)>,
    pub all: Exits,
}

/// A whole-number field.
fn number(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// N in `... (TSC N)`.
fn tsc_in_parens(line: &str) -> Option<u64> {
    number(line.split_once("(TSC ")?.1.split_once(')')?.0)
}

/// The lines of a console, without carriage returns.
fn lines(serial: &str) -> impl Iterator<Item = &str> {
    serial.lines().map(|l| l.trim_end_matches('\r'))
}

/// The client's lines (`/init reached`, phases) from Linux's console lines;
/// `prefix` names them in errors (`guest: ` under perfvisor).
fn client_timeline(
    console: &[String],
    entry: Option<u64>,
    entry_line: &str,
    prefix: &str,
) -> Result<Timeline, Vec<String>> {
    let mut missing = Vec::new();
    if entry.is_none() {
        missing.push(entry_line.to_string());
    }
    let init = console.iter().find_map(|l| number(l.strip_prefix("client: /init reached at TSC ")?));
    if init.is_none() {
        missing.push(format!("`{prefix}client: /init reached at TSC N`"));
    }
    let mut phases = Vec::new();
    for name in PHASES {
        let mut phase = Phase { name: name.to_string(), ..Phase::default() };
        let mut ticks = None;
        for l in console {
            let Some(what) = l.strip_prefix("client: phase ").and_then(|r| r.strip_prefix(name)?.strip_prefix(": "))
            else {
                continue;
            };
            if let Some(t) = what.strip_prefix("TSC ").and_then(|t| number(t.strip_suffix(" ticks")?)) {
                ticks = Some(t);
            } else if let Some(n) = what.strip_suffix(" PMIs").and_then(number) {
                phase.pmis = Some(n);
            }
        }
        match ticks {
            Some(t) => phase.ticks = t,
            None => missing.push(format!("`{prefix}client: phase {name}: TSC T ticks`")),
        }
        phases.push(phase);
    }
    match (entry, init) {
        (Some(entry_tsc), Some(init_tsc)) if missing.is_empty() => Ok(Timeline { entry_tsc, init_tsc, phases }),
        _ => Err(missing),
    }
}

/// The native run's timeline; `Err`: the lines it lacks.
pub fn parse_native(serial: &str) -> Result<Timeline, Vec<String>> {
    let entry = lines(serial)
        .filter(|l| l.starts_with("linux-native: ") && l.contains("entering Linux at"))
        .find_map(tsc_in_parens);
    let console = linux_runs::linux_console(serial, false);
    client_timeline(&console, entry, "`linux-native: ... entering Linux at ... (TSC N)`", "")
}

/// The guest run's timeline and perfvisor's exit counts; `Err`: the lines
/// it lacks.
pub fn parse_guest(serial: &str) -> Result<(Timeline, ExitReport), Vec<String>> {
    let entry = lines(serial).filter(|l| l.starts_with("INFO  guest: starting Linux at")).find_map(tsc_in_parens);
    let console = linux_runs::linux_console(serial, true);
    let timeline = client_timeline(&console, entry, "`INFO  guest: starting Linux at ... (TSC N)`", "guest: ");
    let exits = parse_exits(serial);
    match (timeline, exits) {
        (Ok(t), Ok(e)) => Ok((t, e)),
        (t, e) => Err(t.err().into_iter().chain(e.err()).flatten().collect()),
    }
}

/// perfvisor's `INFO  exits: ...` lines; `Err`: the lines it lacks.
pub fn parse_exits(serial: &str) -> Result<ExitReport, Vec<String>> {
    // Each phase, its `N VM exits` header (if seen) and its reasons.
    let mut phases: Vec<(String, Option<u64>, Exits)> =
        PHASES.iter().map(|p| (p.to_string(), None, Exits::default())).collect();
    let mut all_total = None;
    let mut all_reasons = Vec::new();
    for rest in lines(serial).filter_map(|l| l.strip_prefix("INFO  exits: ")) {
        if let Some(phase_line) = rest.strip_prefix("phase ") {
            let Some((name, what)) = phase_line.split_once(": ") else { continue };
            let Some((count, words)) = what.split_once(' ') else { continue };
            let (Some(count), Some(phase)) = (number(count), phases.iter_mut().find(|p| p.0 == name)) else {
                continue;
            };
            if words == "VM exits" {
                phase.1 = Some(count);
            } else {
                phase.2.by_reason.push((words.to_string(), count));
            }
        } else if let Some(total) = rest.strip_suffix(" VM exits in all") {
            all_total = number(total);
        } else if all_total.is_some() {
            if let Some((count, reason)) = rest.trim_start().split_once(' ') {
                if let Some(count) = number(count) {
                    all_reasons.push((reason.trim().to_string(), count));
                }
            }
        }
    }
    let mut missing: Vec<String> =
        phases.iter().filter(|p| p.1.is_none()).map(|p| format!("`INFO  exits: phase {}: N VM exits`", p.0)).collect();
    if all_total.is_none() {
        missing.push("`INFO  exits: N VM exits in all`".to_string());
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(ExitReport {
        phases: phases
            .into_iter()
            .map(|(name, total, exits)| (name, Exits { total: total.unwrap_or(0), ..exits }))
            .collect(),
        all: Exits { total: all_total.unwrap_or(0), by_reason: all_reasons },
    })
}

/// `ips=` of a bochsrc's `cpu:` line.
pub fn bochsrc_ips(bochsrc: &str) -> Option<u64> {
    let cpu = bochsrc.lines().find(|l| l.trim_start().starts_with("cpu:"))?;
    let value = cpu.split(',').find_map(|field| field.trim().strip_prefix("ips="))?;
    number(value).filter(|&n| n > 0)
}

fn seconds(ticks: u64, ips: u64) -> f64 {
    ticks as f64 / ips as f64
}

fn ratio(guest: u64, native: u64) -> String {
    if native == 0 {
        "n/a".to_string()
    } else {
        format!("{:.3}x", guest as f64 / native as f64)
    }
}

/// The benchmark's text. `ips`: each run's instructions per emulated second.
pub fn render(model: &str, native: &Timeline, guest: &Timeline, exits: &ExitReport, ips: (u64, u64)) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let w = &mut out;
    let _ =
        writeln!(w, "bench linux on Bochs {model}: Linux natively vs as perfvisor's guest (figures, not assertions)");
    let _ = writeln!(w, "{UNIT}");
    if ips.0 != ips.1 {
        let _ = writeln!(w, "note: the runs' bochsrc differ: ips={} natively, ips={} as the guest", ips.0, ips.1);
    }
    let _ = writeln!(w);
    let (n, g) = (native.to_init(), guest.to_init());
    let _ = writeln!(w, "boot: kernel entry to /init");
    let _ = writeln!(w, "  {:<16} {:>15} {:>12}", "", "ticks", "emulated s");
    let _ = writeln!(w, "  {:<16} {n:>15} {:>12.3}", "native", seconds(n, ips.0));
    let _ = writeln!(w, "  {:<16} {g:>15} {:>12.3}", "perfvisor guest", seconds(g, ips.1));
    let within = n > 0 && (g as f64) <= 1.05 * n as f64;
    let _ = writeln!(w, "  guest/native {} (target <= 1.05x: {})", ratio(g, n), if within { "within" } else { "OVER" });
    let _ = writeln!(w);
    let _ = writeln!(w, "phases, as the client reports them (ticks; emulated s); `boot` counts from TSC 0 (power-on:");
    let _ = writeln!(w, "firmware, bootloader, the native loader or perfvisor, then Linux) to /init");
    let _ = writeln!(
        w,
        "  {:<12} {:>15} {:>10} {:>15} {:>10} {:>13}",
        "phase", "native", "s", "guest", "s", "guest/native"
    );
    for name in PHASES {
        let (Some(a), Some(b)) = (native.phase(name), guest.phase(name)) else { continue };
        let pmis = match (a.pmis, b.pmis) {
            (None, None) => String::new(),
            (x, y) => format!(
                "  PMIs: native {}, guest {}",
                x.map_or("?".into(), |v| v.to_string()),
                y.map_or("?".into(), |v| v.to_string())
            ),
        };
        let _ = writeln!(
            w,
            "  {name:<12} {:>15} {:>10.3} {:>15} {:>10.3} {:>13}{pmis}",
            a.ticks,
            seconds(a.ticks, ips.0),
            b.ticks,
            seconds(b.ticks, ips.1),
            ratio(b.ticks, a.ticks)
        );
    }
    let _ = writeln!(w);
    // Reasons in the order of the closing table, then any only a phase has.
    let mut reasons: Vec<&str> = exits.all.by_reason.iter().map(|(r, _)| r.as_str()).collect();
    for (_, e) in &exits.phases {
        for (r, _) in &e.by_reason {
            if !reasons.contains(&r.as_str()) {
                reasons.push(r);
            }
        }
    }
    let _ = writeln!(w, "VM exits per phase (perfvisor's counts; `after`: after the last phase mark)");
    let mut header = format!("  {:<24}", "reason");
    for (name, _) in &exits.phases {
        header.push_str(&format!(" {name:>11}"));
    }
    let _ = writeln!(w, "{header} {:>11} {:>11}", "after", "all");
    let phase_sum =
        |reason: Option<&str>| -> u64 { exits.phases.iter().map(|(_, e)| reason.map_or(e.total, |r| e.of(r))).sum() };
    for reason in reasons.iter().map(|r| Some(*r)).chain([None]) {
        let mut row = format!("  {:<24}", reason.unwrap_or("total"));
        for (_, e) in &exits.phases {
            row.push_str(&format!(" {:>11}", reason.map_or(e.total, |r| e.of(r))));
        }
        let all = reason.map_or(exits.all.total, |r| exits.all.of(r));
        let _ = writeln!(w, "{row} {:>11} {all:>11}", all.saturating_sub(phase_sum(reason)));
    }
    let _ = writeln!(w);
    let phase_exits = |name: &str| exits.phases.iter().find(|(p, _)| p == name).map(|(_, e)| e);
    let io = |e: &Exits| e.of(CONSOLE_EXITS);
    let _ = writeln!(
        w,
        "(`{CONSOLE_EXITS}` exits: the guest's console, COM1 being emulated with an exit per port access, and refused ports)"
    );
    match (guest.phase("idle").map(|p| p.ticks).filter(|&t| t > 0), phase_exits("idle")) {
        (Some(t), Some(e)) => {
            let s = seconds(t, ips.1);
            let _ = writeln!(
                w,
                "idle: {} VM exits in {t} ticks = {s:.3} emulated s: {:.2} VM exits per idle second ({:.2} without I/O)",
                e.total,
                e.total as f64 / s,
                e.total.saturating_sub(io(e)) as f64 / s
            );
            let _ = writeln!(
                w,
                "      the client sleeps 1 s by Linux's clock, which runs on the TSC at the rate CPUID.15H/16H \
                 give (so ~{:.0} M ticks per Linux second here), not at ips: {} VM exits per second of the guest's time",
                t as f64 / 1e6,
                e.total
            );
        }
        _ => {
            let _ = writeln!(w, "idle: the guest's idle phase lasted 0 ticks: no rate");
        }
    }
    match (guest.phase("perf-record").and_then(|p| p.pmis), phase_exits("perf-record")) {
        (Some(pmis), Some(e)) if pmis > 0 => {
            let _ = writeln!(
                w,
                "perf-record: {} VM exits for {pmis} PMIs = {:.2} VM exits per PMI ({:.2} without I/O)",
                e.total,
                e.total as f64 / pmis as f64,
                e.total.saturating_sub(io(e)) as f64 / pmis as f64
            );
        }
        (Some(_), _) => {
            let _ = writeln!(w, "perf-record: the guest took 0 PMIs: no rate");
        }
        (None, _) => {
            let _ = writeln!(w, "perf-record: no `guest: client: phase perf-record: N PMIs` line: no rate per PMI");
        }
    }
    out
}

/// `Err` naming the lines `run` lacks.
fn lacking(label: &str, run: &Run, missing: &[String]) -> String {
    format!("the {label} run's console ({}) has no line {}", run.log().display(), missing.join(", no line "))
}

fn run_ips(run: &Run) -> u64 {
    std::fs::read_to_string(run.dir.join("bochsrc")).ok().as_deref().and_then(bochsrc_ips).unwrap_or(DEFAULT_IPS)
}

/// `cargo xtask bench linux`.
pub fn bench_linux(args: &[String]) -> Fallible<bool> {
    let LinuxRuns { model, native, guest } = linux_runs::obtain(args)?;
    let native_figures = parse_native(&native.serial);
    let guest_figures = parse_guest(&guest.serial);
    match (native_figures, guest_figures) {
        (Ok(n), Ok((g, exits))) => {
            print!("{}", render(&model, &n, &g, &exits, (run_ips(&native), run_ips(&guest))));
            Ok(true)
        }
        (n, g) => {
            let mut errors = Vec::new();
            if let Err(missing) = n {
                errors.push(lacking("native", &native, &missing));
            }
            if let Err(missing) = g {
                errors.push(lacking("guest", &guest, &missing));
            }
            Err(errors.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NATIVE: &str = "\
linux-native: booting Linux natively (no hypervisor)\r
linux-native: loaded in 162 M TSC ticks (bundle parsing 0 M); entering Linux at 0x2000000 with rsi = 0x100000 (TSC 1000000000)\r
init: Linux 6.1.0-56-amd64 up; running the PMU checks\r
client: /init reached at TSC 1500000000\r
client: phase boot: TSC 1500000000 ticks\r
client: phase idle: TSC 50000000 ticks\r
client: phase perf-stat: TSC 20000000 ticks\r
client: phase perf-record: TSC 30000000 ticks\r
client: phase perf-record: 40 PMIs\r
LINUXTEST linux_pmu_driver ... ok\r
";

    const GUEST: &str = "\
INFO  guest: starting Linux at 0x2000000 (TSC 2000000000)\r
guest: client: /init reached at TSC 2525000000\r
guest: client: phase boot: TSC 2525000000 ticks\r
INFO  exits: phase boot: 1200 VM exits\r
INFO  exits: phase boot: 1000 I/O instruction\r
INFO  exits: phase boot: 200 CPUID\r
guest: client: phase idle: TSC 100000000 ticks\r
INFO  exits: phase idle: 300 VM exits\r
INFO  exits: phase idle: 300 I/O instruction\r
guest: client: phase perf-stat: TSC 21000000 ticks\r
INFO  exits: phase perf-stat: 10 VM exits\r
INFO  exits: phase perf-stat: 10 WRMSR\r
guest: client: phase perf-record: TSC 33000000 ticks\r
guest: client: phase perf-record: 40 PMIs\r
INFO  exits: phase perf-record: 80 VM exits\r
INFO  exits: phase perf-record: 60 WRMSR\r
INFO  exits: phase perf-record: 20 NMI\r
INFO  exits: 1600 VM exits in all\r
INFO  exits:      200 CPUID\r
INFO  exits:     1310 I/O instruction\r
INFO  exits:       70 WRMSR\r
INFO  exits:       20 NMI\r
INFO  guest: exited with status 0\r
";

    #[test]
    fn figures_from_the_consoles() {
        let native = parse_native(NATIVE).unwrap();
        assert_eq!(native.to_init(), 500_000_000);
        assert_eq!(native.phases[3], Phase { name: "perf-record".into(), ticks: 30_000_000, pmis: Some(40) });
        let (guest, exits) = parse_guest(GUEST).unwrap();
        assert_eq!(guest.to_init(), 525_000_000);
        assert_eq!(
            exits.phases[0].1,
            Exits { total: 1200, by_reason: vec![("I/O instruction".into(), 1000), ("CPUID".into(), 200)] }
        );
        assert_eq!(exits.all.total, 1600);
        assert_eq!(exits.all.of("I/O instruction"), 1310);
        let text = render("tigerlake", &native, &guest, &exits, (DEFAULT_IPS, DEFAULT_IPS));
        assert!(text.contains("guest/native 1.050x (target <= 1.05x: within)"), "{text}");
        assert!(text.contains("300 VM exits in 100000000 ticks = 2.000 emulated s: 150.00 VM exits per idle second (0.00 without I/O)"), "{text}");
        assert!(text.contains("80 VM exits for 40 PMIs = 2.00 VM exits per PMI (2.00 without I/O)"), "{text}");
        // I/O: 1000 + 300 in phases, 1310 in all: 10 after the last mark.
        let io = text.lines().find(|l| l.trim_start().starts_with("I/O instruction")).unwrap();
        assert_eq!(
            io.split_whitespace().skip(2).collect::<Vec<_>>(),
            ["1000", "300", "0", "0", "10", "1310"],
            "{text}"
        );
        assert!(text.contains("unit: Bochs TSC ticks"));
    }

    #[test]
    fn split_guest_lines_and_the_entry_line_variants() {
        // The native entry line without `with rsi`.
        let native = NATIVE.replace(" with rsi = 0x100000", "");
        assert_eq!(parse_native(&native).unwrap().entry_tsc, 1_000_000_000);
        let prefix = "x".repeat(crate::linux_runs::GUEST_LINE);
        let guest =
            GUEST.replace("guest: client: /init reached", &format!("guest: {prefix}\r\nguest: client: /init reached"));
        // A guest line of exactly 100 bytes reads as split: it swallows the
        // next one, so /init is then missing, and said so.
        let err = parse_guest(&guest).unwrap_err();
        assert_eq!(err, ["`guest: client: /init reached at TSC N`"]);
    }

    #[test]
    fn missing_lines_are_named_not_panicked_on() {
        let err = parse_native("linux-native: booting Linux natively\r\n").unwrap_err();
        assert_eq!(err[0], "`linux-native: ... entering Linux at ... (TSC N)`");
        assert!(err.contains(&"`client: /init reached at TSC N`".to_string()));
        assert!(err.contains(&"`client: phase perf-record: TSC T ticks`".to_string()));
        let no_idle =
            GUEST.replace("INFO  exits: phase idle: 300 VM exits\r\n", "").replace("(TSC 2000000000)", "(TSC x)");
        let err = parse_guest(&no_idle).unwrap_err();
        assert_eq!(err, ["`INFO  guest: starting Linux at ... (TSC N)`", "`INFO  exits: phase idle: N VM exits`"]);
        let err = parse_guest("").unwrap_err();
        assert!(err.contains(&"`INFO  exits: N VM exits in all`".to_string()), "{err:?}");
        let run = Run { case: "c", dir: "build/runs/c".into(), serial: String::new() };
        let text = lacking("guest", &run, &err);
        assert!(
            text.starts_with("the guest run's console (build/runs/c/serial.log) has no line `INFO  guest"),
            "{text}"
        );
        // Today's logs, before the new lines: an error, not a panic.
        assert!(
            parse_guest("INFO  guest: starting Linux at 0x2000000\r\nINFO  exits: 25949 VM exits in all\r\n").is_err()
        );
    }

    #[test]
    fn ips_from_the_bochsrc() {
        let rc = "megs: 256\ncpu: model=tigerlake, count=1, ips=50000000, reset_on_triple_fault=0\nclock: sync=none\n";
        assert_eq!(bochsrc_ips(rc), Some(50_000_000));
        assert_eq!(bochsrc_ips("cpu: model=tigerlake\n"), None);
        assert_eq!(bochsrc_ips("cpu: ips=0\n"), None);
    }
}
