//! `cargo xtask linux-report`: Linux's view of the PMU natively and as
//! perfvisor's guest on the same Bochs model, side by side: the `dmesg:`
//! lines the LINUXTEST client prints (the perf driver's lines, MSR access
//! errors, warnings) and each LINUXTEST check. Every difference must be
//! one of [`ALLOWED`], each with its reason; any other is UNEXPECTED and
//! fails the command. perfvisor's own console lines are not compared.

use crate::linux_runs::{self, LinuxRuns, Run};
use crate::side_by_side;
use crate::Fallible;
use perfvisor_runner::cases::Outcome;

/// A difference between the native and the guest run that is understood.
pub struct Allowed {
    pub name: &'static str,
    pub reason: &'static str,
    /// Whether this native line and guest line (`None`: none on that side)
    /// are this difference.
    pub matches: fn(Option<&str>, Option<&str>) -> bool,
}

/// The only differences allowed, found in the tigerlake and
/// corei7_skylake_x runs.
pub const ALLOWED: &[Allowed] = &[
    Allowed {
        name: "no LBRs under perfvisor",
        reason: "the driver line loses its `N-deep LBR, `: Linux's intel_pmu_init() probes the LBR MSRs \
                 (check_msr()) only under a hypervisor (CPUID.1:ECX[31], which perfvisor sets; natively it \
                 trusts its model table, though Bochs has no LBR MSRs), and perfvisor does not virtualise \
                 LBRs (the MSRs #GP, hypervisor/src/linux.rs; arch LBRs hidden, cpuid_cache.rs), so lbr_nr = 0",
        matches: lbr_dropped,
    },
    Allowed {
        name: "first failed unchecked RDMSR",
        reason: "Linux reports only its first failed unchecked RDMSR (pr_warn_once, ex_handler_msr in \
                 arch/x86/mm/extable.c); on both sides it is an MSR the Bochs model lacks, a #GP from the \
                 CPU model, not from perfvisor: natively on tigerlake 0xcf IA32_CORE_CAPABILITIES (read by \
                 Linux's split-lock detection setup, which the guest run does not reach: it runs under a \
                 hypervisor), else 0x19b IA32_THERM_INTERRUPT. Same code address on both sides; no PMU MSR",
        matches: first_rdmsr,
    },
];

/// The driver line's `N-deep LBR, ` (Linux's `pr_cont("%d-deep LBR, ")`).
const LBR: &str = "-deep LBR, ";

/// `line` without its `N-deep LBR, ` part; `None` if it has none.
fn without_lbr(line: &str) -> Option<String> {
    let at = line.find(LBR)?;
    let start = line[..at].rfind(' ').map_or(0, |i| i + 1);
    let digits = &line[start..at];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{}{}", &line[..start], &line[at + LBR.len()..]))
}

fn lbr_dropped(native: Option<&str>, guest: Option<&str>) -> bool {
    let (Some(native), Some(guest)) = (native, guest) else { return false };
    native.starts_with("Performance Events:") && without_lbr(native).is_some_and(|n| n == guest)
}

const RDMSR_ERROR: &str = "unchecked MSR access error: RDMSR from 0x";
/// (native, guest) first failed unchecked RDMSRs: MSRs the Bochs model
/// lacks on both sides (0xcf IA32_CORE_CAPABILITIES, 0x19b
/// IA32_THERM_INTERRUPT).
const FIRST_RDMSR_PAIRS: [(u32, u32); 1] = [(0xcf, 0x19b)];

/// The MSR and the rest (`at rIP: ...`) of an unchecked-RDMSR error line.
fn rdmsr_error(line: &str) -> Option<(u32, &str)> {
    let (hex, rest) = line.strip_prefix(RDMSR_ERROR)?.split_once(' ')?;
    Some((u32::from_str_radix(hex, 16).ok()?, rest))
}

fn first_rdmsr(native: Option<&str>, guest: Option<&str>) -> bool {
    match (native.and_then(rdmsr_error), guest.and_then(rdmsr_error)) {
        (Some((n, n_rest)), Some((g, g_rest))) => n_rest == g_rest && FIRST_RDMSR_PAIRS.contains(&(n, g)),
        _ => false,
    }
}

/// How a row of the comparison reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Same,
    Allowed(&'static str),
    Unexpected,
}

/// One row: the native line and the guest line (`None`: no line there).
#[derive(Debug, PartialEq, Eq)]
pub struct Row<'a> {
    pub native: Option<&'a str>,
    pub guest: Option<&'a str>,
    pub verdict: Verdict,
}

fn classify(native: Option<&str>, guest: Option<&str>) -> Verdict {
    if native.is_some() && native == guest {
        return Verdict::Same;
    }
    ALLOWED.iter().find(|a| (a.matches)(native, guest)).map_or(Verdict::Unexpected, |a| Verdict::Allowed(a.name))
}

/// The two runs' lines aligned: equal lines on one row (a longest common
/// subsequence), the lines between two equal ones paired in order.
pub fn align<'a>(native: &[&'a str], guest: &[&'a str]) -> Vec<Row<'a>> {
    let (n, m) = (native.len(), guest.len());
    // common[i][j]: the longest common subsequence of native[i..], guest[j..].
    let mut common = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i][j] =
                if native[i] == guest[j] { common[i + 1][j + 1] + 1 } else { common[i + 1][j].max(common[i][j + 1]) };
        }
    }
    let mut rows = Vec::new();
    let (mut gap_native, mut gap_guest): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
    let flush = |rows: &mut Vec<Row<'a>>, a: &mut Vec<&'a str>, b: &mut Vec<&'a str>| {
        for k in 0..a.len().max(b.len()) {
            let (native, guest) = (a.get(k).copied(), b.get(k).copied());
            rows.push(Row { native, guest, verdict: classify(native, guest) });
        }
        a.clear();
        b.clear();
    };
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && native[i] == guest[j] {
            flush(&mut rows, &mut gap_native, &mut gap_guest);
            rows.push(Row { native: Some(native[i]), guest: Some(guest[j]), verdict: Verdict::Same });
            i += 1;
            j += 1;
        } else if j == m || (i < n && common[i + 1][j] >= common[i][j + 1]) {
            gap_native.push(native[i]);
            i += 1;
        } else {
            gap_guest.push(guest[j]);
            j += 1;
        }
    }
    flush(&mut rows, &mut gap_native, &mut gap_guest);
    rows
}

/// The `dmesg: ` lines among Linux's console lines, without the prefix.
pub fn dmesg_lines(console: &[String]) -> Vec<&str> {
    console.iter().filter_map(|l| l.strip_prefix("dmesg: ")).collect()
}

/// `s` in at most `width` characters.
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(width.saturating_sub(3)).collect::<String>())
    }
}

const COLUMN: usize = 64;
const NO_LINE: &str = "(no line)";

fn mark(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Same => " ",
        Verdict::Allowed(_) => "~",
        Verdict::Unexpected => "!",
    }
}

/// The report of two runs' consoles and its count of UNEXPECTED differences.
pub fn report(model: &str, native: &Run, guest: &Run) -> (String, usize) {
    use std::fmt::Write;
    let native_console = linux_runs::linux_console(&native.serial, false);
    let guest_console = linux_runs::linux_console(&guest.serial, true);
    let dmesg = align(&dmesg_lines(&native_console), &dmesg_lines(&guest_console));
    let (native_checks, guest_checks) =
        (linux_runs::linux_checks(&native_console), linux_runs::linux_checks(&guest_console));
    // name, native outcome, guest outcome, verdict: no difference in a check is allowed.
    let checks: Vec<(&str, Option<&Outcome>, Option<&Outcome>, Verdict)> =
        side_by_side::rows(&native_checks, &guest_checks)
            .into_iter()
            .map(|(name, n, g)| (name, n, g, if n.is_some() && n == g { Verdict::Same } else { Verdict::Unexpected }))
            .collect();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "Linux on Bochs {model}: natively | as perfvisor's guest");
    let _ = writeln!(w, "  native: {} ({})", native.case, native.log().display());
    let _ = writeln!(w, "  guest:  {} ({})", guest.case, guest.log().display());
    let _ = writeln!(w);
    let _ = writeln!(w, "PMU dmesg lines ('=': the same line; '~' an allowed difference, '!' an UNEXPECTED one)");
    let _ = writeln!(w, "  {:<COLUMN$} | perfvisor guest", "native");
    for row in &dmesg {
        let guest = if row.verdict == Verdict::Same { "=" } else { row.guest.unwrap_or(NO_LINE) };
        let native = clip(row.native.unwrap_or(NO_LINE), COLUMN);
        let _ = writeln!(w, "{} {native:<COLUMN$} | {guest}", mark(row.verdict));
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "LINUXTEST checks ('=': the same result)");
    let _ = writeln!(w, "  {:<28} {:<34} perfvisor guest", "check", "native");
    for &(name, n, g, verdict) in &checks {
        let guest = if verdict == Verdict::Same { "=".to_string() } else { side_by_side::show(g) };
        let _ = writeln!(w, "{} {name:<28} {:<34} {guest}", mark(verdict), side_by_side::show(n));
    }
    if checks.is_empty() {
        let _ = writeln!(w, "  (neither run printed a LINUXTEST line)");
    }
    let _ = writeln!(w);
    // What differs: (what, verdict, native side, guest side).
    let differing: Vec<(&str, Verdict, String, String)> = dmesg
        .iter()
        .map(|r| ("dmesg", r.verdict, r.native.unwrap_or(NO_LINE).to_string(), r.guest.unwrap_or(NO_LINE).to_string()))
        .chain(checks.iter().map(|&(name, n, g, verdict)| {
            ("check", verdict, format!("{name} {}", side_by_side::show(n)), format!("{name} {}", side_by_side::show(g)))
        }))
        .filter(|d| d.1 != Verdict::Same)
        .collect();
    let unexpected = differing.iter().filter(|d| d.1 == Verdict::Unexpected).count();
    let _ = writeln!(
        w,
        "differences: {} ({} allowed, {unexpected} UNEXPECTED)",
        differing.len(),
        differing.len() - unexpected
    );
    for (what, verdict, native_side, guest_side) in &differing {
        let label = match verdict {
            Verdict::Allowed(name) => format!("allowed ({name})"),
            _ => "UNEXPECTED".to_string(),
        };
        let _ = writeln!(w, "  {what} {label}");
        let _ = writeln!(w, "    native: {native_side}");
        let _ = writeln!(w, "    guest:  {guest_side}");
    }
    let used: Vec<&Allowed> =
        ALLOWED.iter().filter(|a| differing.iter().any(|d| d.1 == Verdict::Allowed(a.name))).collect();
    if !used.is_empty() {
        let _ = writeln!(w);
        let _ = writeln!(w, "allowed differences seen, and why:");
        for a in used {
            w.push_str(&wrap(&format!("{}: {}", a.name, a.reason), "  ", "    "));
        }
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "{}",
        if unexpected == 0 {
            "linux-report: no unexpected difference".to_string()
        } else {
            format!("linux-report: {unexpected} UNEXPECTED difference(s)")
        }
    );
    (out, unexpected)
}

/// The help text, with the table of allowed differences.
pub fn help() -> String {
    let mut text = String::from(
        "\
cargo xtask linux-report [--cpu MODEL] [BOCHS OPTIONS] [--from-runs]

Boots the stock Debian kernel with the LINUXTEST initramfs natively and as perfvisor's
guest on Bochs MODEL (default tigerlake; also corei7_skylake_x), one after the other:
the runner's cases bochs-linux-native-* and bochs-linux-guest-*
(tests/runner/src/linux_cases.rs), files in build/runs/<case>/. --from-runs boots nothing
and reads build/runs/<case>/serial.log of an earlier run (`cargo xtask test` leaves them).
Prints Linux's PMU `dmesg:` lines and each LINUXTEST check side by side (native | guest;
perfvisor's own console lines are not compared), then every difference. Allowed are only:
",
    );
    for a in ALLOWED {
        text.push_str(&wrap(&format!("- {}: {}", a.name, a.reason), "  ", "    "));
    }
    text.push_str(
        "Any other difference is UNEXPECTED.

BOCHS OPTIONS (only when booting): --bochs PATH, --pmu counting|counting-save|stock (replaces
the cases' counting PMU), --msrs FILE (replaces the cases' msrs file); see `cargo xtask help`.
Exit codes: 0 no unexpected difference, 1 an UNEXPECTED difference, 2 usage or setup error.",
    );
    text
}

/// `text` in lines of at most 96 columns, the first indented by `first`,
/// the others by `rest`.
fn wrap(text: &str, first: &str, rest: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 96 && !line.trim().is_empty() {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_string();
        } else if !line.trim().is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// `cargo xtask linux-report`.
pub fn linux_report(args: &[String]) -> Fallible<bool> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", help());
        return Ok(true);
    }
    let LinuxRuns { model, native, guest } = linux_runs::obtain(args)?;
    let (text, unexpected) = report(&model, &native, &guest);
    print!("{text}");
    Ok(unexpected == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The tigerlake runs' lines that matter (build/runs/bochs-linux-*-tigerlake),
    /// the guest's as perfvisor prints them: prefixed and split at 100 bytes.
    const NATIVE: &str = "\
linux-native: booting Linux natively (no hypervisor)\r
init: Linux 6.1.0-56-amd64 up; running the PMU checks\r
dmesg: unchecked MSR access error: RDMSR from 0xcf at rIP: 0xffffffff8107e7c3 (native_read_msr+0x3/0x30)\r
dmesg: unchecked MSR access error: WRMSR to 0x19b (tried to write 0x0000000000000003) at rIP: 0xffffffff8107e914 (native_write_msr+0x4/0x20)\r
dmesg: Performance Events: Icelake events, AnyThread deprecated, 32-deep LBR, full-width counters, Intel PMU driver.\r
dmesg: ... version: 5\r
dmesg: ... generic registers: 8\r
LINUXTEST linux_pmu_driver ... ok\r
LINUXTEST linux_instructions_exact ... ok\r
LINUXTESTS DONE 2 run, 0 failed\r
perfvisor: verdict PASS\r
";
    const GUEST: &str = "\
INFO  guest: starting Linux at 0x2000000\r
guest: init: Linux 6.1.0-56-amd64 up; running the PMU checks\r
guest: dmesg: unchecked MSR access error: RDMSR from 0x19b at rIP: 0xffffffff8107e7c3 (native_read_msr+0x3/\r
guest: 0x30)\r
guest: dmesg: unchecked MSR access error: WRMSR to 0x19b (tried to write 0x0000000000000003) at rIP: 0xffff\r
guest: ffff8107e914 (native_write_msr+0x4/0x20)\r
guest: dmesg: Performance Events: Icelake events, AnyThread deprecated, full-width counters, Intel PMU driv\r
guest: er.\r
guest: dmesg: ... version: 5\r
guest: dmesg: ... generic registers: 8\r
guest: LINUXTEST linux_pmu_driver ... ok\r
guest: LINUXTEST linux_instructions_exact ... ok\r
guest: LINUXTESTS DONE 2 run, 0 failed\r
INFO  exits: 25949 VM exits in all\r
";

    fn run(serial: &str) -> Run {
        Run { case: "case", dir: PathBuf::from("build/runs/case"), serial: serial.to_string() }
    }

    #[test]
    fn the_real_differences_are_allowed() {
        let (text, unexpected) = report("tigerlake", &run(NATIVE), &run(GUEST));
        assert_eq!(unexpected, 0, "{text}");
        assert!(text.contains("differences: 2 (2 allowed, 0 UNEXPECTED)"), "{text}");
        assert!(text.contains("allowed (no LBRs under perfvisor)"), "{text}");
        assert!(text.contains("allowed (first failed unchecked RDMSR)"), "{text}");
        assert!(text.contains("linux_instructions_exact"), "{text}");
    }

    #[test]
    fn other_differences_are_unexpected() {
        // A PMU MSR failing, a counter missing and a failed check.
        let guest = GUEST
            .replace("RDMSR from 0x19b", "RDMSR from 0x38f")
            .replace("guest: dmesg: ... generic registers: 8\r\n", "")
            .replace("linux_instructions_exact ... ok", "linux_instructions_exact ... FAILED (off by 3)");
        let (text, unexpected) = report("tigerlake", &run(NATIVE), &run(&guest));
        assert_eq!(unexpected, 3, "{text}");
        assert!(text.contains("FAILED (off by 3)"), "{text}");
        assert!(text.contains("guest:  (no line)"), "{text}");
        // A guest that printed nothing: every line and check differs.
        let (_, unexpected) = report("tigerlake", &run(NATIVE), &run("INFO  guest: starting Linux\r\n"));
        assert_eq!(unexpected, 7);
    }

    #[test]
    fn rules_are_precise() {
        let native = "Performance Events: Skylake events, 32-deep LBR, full-width counters, Intel PMU driver.";
        assert!(lbr_dropped(
            Some(native),
            Some("Performance Events: Skylake events, full-width counters, Intel PMU driver.")
        ));
        assert!(!lbr_dropped(Some(native), Some("Performance Events: Skylake events, Intel PMU driver.")));
        assert!(!lbr_dropped(Some(native), None));
        let rd = |msr: &str| format!("unchecked MSR access error: RDMSR from {msr} at rIP: 0xffffffff8107e7c3 (x)");
        assert!(first_rdmsr(Some(&rd("0xcf")), Some(&rd("0x19b"))));
        assert!(!first_rdmsr(Some(&rd("0xcf")), Some(&rd("0xc1"))), "a PMU counter");
        assert!(!first_rdmsr(Some(&rd("0x19b")), Some(&rd("0xcf"))), "the other way round");
        assert!(!first_rdmsr(Some(&rd("0xcf")), Some(&rd("0x10a"))), "an MSR perfvisor refuses");
        assert!(!first_rdmsr(Some(&rd("0xcf")), Some(&rd("0x19b").replace("e7c3", "e7c4"))));
    }

    #[test]
    fn alignment_pairs_lines_between_equal_ones() {
        let rows = align(&["a", "x", "b", "c"], &["a", "y", "b", "d", "e"]);
        let pairs: Vec<(Option<&str>, Option<&str>)> = rows.iter().map(|r| (r.native, r.guest)).collect();
        assert_eq!(
            pairs,
            [
                (Some("a"), Some("a")),
                (Some("x"), Some("y")),
                (Some("b"), Some("b")),
                (Some("c"), Some("d")),
                (None, Some("e"))
            ]
        );
        assert_eq!(rows[0].verdict, Verdict::Same);
        assert_eq!(rows[4].verdict, Verdict::Unexpected);
    }

    #[test]
    fn help_lists_every_allowed_difference() {
        let text = help();
        for a in ALLOWED {
            assert!(text.contains(a.name), "{text}");
            // The reason, wrapped: every word of it, in order.
            let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains(a.reason), "{text}");
        }
    }
}
