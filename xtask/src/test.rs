//! `cargo xtask test`: the host unit tests of the library crates, then the
//! end-to-end boots, each reported as its own case.

use crate::images::{build_dir, Builder};
use crate::{setup, workspace_root, Fallible, Options};
use perfvisor_runner::cases::{self, CaseResult, GuestImage, Needs, Outcome};
use perfvisor_runner::emulator::Firmware;
use perfvisor_runner::kvm;
use perfvisor_runner::summary::{case_line, Tally};
use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;

pub fn test(args: &[String]) -> Fallible<bool> {
    let mut o = Options::new(args);
    let filter = o.value(&["--filter"])?;
    let no_host = o.flag("--no-host");
    let bochs = o.value(&["--bochs"])?;
    let jobs = match o.value(&["--jobs"])? {
        None => std::thread::available_parallelism().map_or(2, |n| n.get()).min(2),
        Some(j) => j.parse().map_err(|_| format!("--jobs takes a number, not {j:?}"))?,
    };
    o.finish()?;
    setup::ensure_emulators()?;

    let tally = Mutex::new(Tally::default());
    let record = |name: &str, outcome: &Outcome, seconds: Option<f64>| {
        println!("{}", case_line(name, outcome, seconds));
        tally.lock().unwrap().add(outcome);
    };

    if !no_host {
        for (name, outcome) in host_tests()? {
            if filter.as_deref().is_none_or(|f| name.contains(f)) {
                record(&name, &outcome, None);
            }
        }
    }

    let cases: Vec<_> =
        cases::all().into_iter().filter(|c| filter.as_deref().is_none_or(|f| c.name.contains(f))).collect();
    if !cases.is_empty() {
        if cases.iter().any(|c| matches!(c.emulator, perfvisor_runner::emulator::Emulator::Bochs { .. })) {
            crate::bochs_build::resolve(bochs)?;
        }
        // Only Linux-native cases (e.g. --filter linux): perfvisor itself is not needed.
        let builder = if cases.iter().all(|c| c.guest == GuestImage::LinuxNative) {
            Builder::for_linux_native()?
        } else {
            Builder::new()?
        };
        let mut images = HashMap::new();
        for key in cases::images_needed(&cases) {
            images.insert(key, builder.image(key.0, key.1, key.2)?);
        }
        let run_root = build_dir().join("runs");
        let kvm = if cases.iter().any(|c| c.needs == Needs::NestedKvm) {
            let key = (Firmware::Bios, None, GuestImage::TestKernel);
            let image = match images.get(&key) {
                Some(i) => i.clone(),
                None => builder.image(key.0, key.1, key.2)?,
            };
            kvm::probe(&image, &run_root.join("kvm-probe"))
        } else {
            Err("not probed".into())
        };
        println!("e2e: {} cases on {jobs} parallel jobs; run files in {}", cases.len(), run_root.display());
        let report = |r: &CaseResult| record(&format!("e2e/{}", r.name), &r.outcome, Some(r.elapsed.as_secs_f64()));
        cases::run_all(&cases, &images, &run_root, &kvm, jobs, &report);
    }

    let tally = tally.into_inner().unwrap();
    println!("{}", tally.closing_line());
    Ok(tally.failed == 0)
}

/// Runs `cargo test` over the host crates (the workspace's default members)
/// and turns every `test NAME ... ok|FAILED|ignored` line into a case.
fn host_tests() -> Fallible<Vec<(String, Outcome)>> {
    eprintln!("xtask: cargo test (host crates)");
    // One pipe for both streams keeps `Running <crate>` (stderr) in order
    // with the `test ...` lines (stdout) that follow it.
    let (mut reader, writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut child = Command::new("cargo")
        .args(["test", "--no-fail-fast", "--color", "never"])
        .current_dir(workspace_root())
        .stdout(writer.try_clone().map_err(|e| format!("pipe: {e}"))?)
        .stderr(writer)
        .spawn()
        .map_err(|e| format!("cargo test: {e}"))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut reader, &mut text).map_err(|e| format!("reading cargo test output: {e}"))?;
    let status = child.wait().map_err(|e| format!("cargo test: {e}"))?;
    let log = build_dir().join("host-tests.log");
    std::fs::create_dir_all(build_dir()).map_err(|e| e.to_string())?;
    std::fs::write(&log, &text).map_err(|e| e.to_string())?;

    let mut results = parse_test_output(&text);
    let any_failed = results.iter().any(|(_, o)| matches!(o, Outcome::Fail(_)));
    if !status.success() && !any_failed {
        // Nothing failed by name: the build itself broke.
        let tail: Vec<&str> = text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        results.push((
            "host/cargo-test".into(),
            Outcome::Fail(format!("cargo test exited with {} (log: {})\n{}", status, log.display(), tail.join("\n"))),
        ));
    }
    Ok(results)
}

/// Parses libtest output; the crate comes from the preceding `Running` line.
fn parse_test_output(text: &str) -> Vec<(String, Outcome)> {
    let mut krate = String::from("unknown");
    let mut results = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Running ") {
            // `Running unittests src/lib.rs (target/debug/deps/pmu-0123abcd)`
            if let Some(bin) = rest.rsplit('/').next() {
                let bin = bin.trim_end_matches(')');
                krate = bin.rsplit_once('-').map_or(bin, |(name, _hash)| name).to_string();
            }
        } else if let Some(rest) = line.strip_prefix("Doc-tests ") {
            krate = format!("{}-doc", rest.trim());
        } else if let Some(rest) = line.strip_prefix("test ") {
            let Some((name, status)) = rest.rsplit_once(" ... ") else {
                continue;
            };
            let outcome = match status.trim() {
                "ok" => Outcome::Pass,
                "FAILED" => Outcome::Fail("see build/host-tests.log".into()),
                s if s.starts_with("ignored") => {
                    Outcome::Skip(format!("#[ignore]d {}", s.trim_start_matches("ignored").trim_start_matches(", ")))
                }
                _ => continue,
            };
            results.push((format!("host/{krate}/{name}"), outcome));
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_lines_with_their_crate() {
        let out = "     Running unittests src/lib.rs (target/debug/deps/pmu-0123abcd)\n\
                   running 2 tests\n\
                   test cpuid::tests::a ... ok\n\
                   test cpuid::tests::b ... FAILED\n\
                   \x20    Running unittests src/lib.rs (target/debug/deps/perfvisor_runner-99)\n\
                   test x ... ignored, slow\n";
        let r = parse_test_output(out);
        assert_eq!(r[0], ("host/pmu/cpuid::tests::a".into(), Outcome::Pass));
        assert!(matches!(&r[1], (n, Outcome::Fail(_)) if n == "host/pmu/cpuid::tests::b"));
        assert!(matches!(&r[2], (n, Outcome::Skip(_)) if n == "host/perfvisor_runner/x"));
    }
}
