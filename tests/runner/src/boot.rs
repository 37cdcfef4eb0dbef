//! One boot: copy the image, start the emulator, follow the serial console,
//! stop at exit or timeout, and read the verdict.

use crate::emulator::{Emulator, Firmware, SERIAL_LOG};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What to boot and how.
#[derive(Clone, Debug)]
pub struct BootSpec {
    pub emulator: Emulator,
    pub firmware: Firmware,
    pub image: PathBuf,
    /// Where this run's files go (created, emptied first).
    pub run_dir: PathBuf,
    pub timeout: Duration,
    /// Copy the console to stdout as it arrives.
    pub echo: bool,
    /// Start QEMU's gdbstub and wait for gdb.
    pub gdb: bool,
    /// Serial substrings whose first appearance is timed (benchmarks).
    pub watch: Vec<String>,
}

/// The kernel's verdict line prefix (hypervisor/src/verdict.rs).
pub const VERDICT_PASS_LINE: &str = "perfvisor: verdict PASS";
pub const VERDICT_FAIL_LINE: &str = "perfvisor: verdict FAIL";

/// The nonce placeholder image builders put in perfvisor's ramdisk bundle
/// (hypervisor/src/config.rs). [`boot`] replaces it in its per-run copy of
/// the disk with a fresh nonce and then accepts only verdict lines that
/// carry it: `perfvisor: verdict PASS [nonce]`. The guest cannot know the
/// nonce, so it cannot forge the verdict. Images without the placeholder
/// (kernels other than perfvisor) are judged on the plain lines.
pub const NONCE_SLOT: &[u8; 32] = b"PERFVISOR-NONCE-SLOT-UNPATCHED!!";

/// 32 lowercase hex digits from the OS's randomness (std's hash keys).
fn fresh_nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.finish()
    };
    format!("{:016x}{:016x}", word(1), word(2))
}

/// Puts a fresh nonce into the disk copy's placeholder. `Ok(None)`: the
/// image has none; `Err`: it has more than one (which one would perfvisor read?).
fn patch_nonce(disk: &Path) -> Result<Option<String>, String> {
    let mut bytes = fs::read(disk).map_err(|e| format!("reading {}: {e}", disk.display()))?;
    let found: Vec<usize> =
        bytes.windows(NONCE_SLOT.len()).enumerate().filter(|(_, w)| w == NONCE_SLOT).map(|(i, _)| i).collect();
    match found[..] {
        [] => Ok(None),
        [at] => {
            let nonce = fresh_nonce();
            bytes[at..at + NONCE_SLOT.len()].copy_from_slice(nonce.as_bytes());
            fs::write(disk, &bytes).map_err(|e| format!("writing {}: {e}", disk.display()))?;
            Ok(Some(nonce))
        }
        _ => Err(format!("{} holds the nonce placeholder {} times", disk.display(), found.len())),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Exit code and console agree on pass.
    Pass,
    /// Exit code and console agree on fail; the kernel's reason.
    Fail(String),
    /// No exit within the time limit.
    Timeout,
    /// Anything else: an emulator error, a verdict line contradicting the
    /// exit code, an exit without a verdict line (e.g. a triple fault).
    Broken(String),
}

#[derive(Debug)]
pub struct BootOutcome {
    pub verdict: Verdict,
    pub exit_code: Option<i32>,
    pub serial: String,
    pub elapsed: Duration,
    /// For each `BootSpec::watch` needle: when it first appeared.
    pub seen_at: Vec<Option<Duration>>,
    pub run_dir: PathBuf,
}

impl BootOutcome {
    /// The last `n` console lines, for failure reports.
    pub fn serial_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.serial.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Boots once. `Err` only for setup failures (files, spawning).
pub fn boot(spec: &BootSpec) -> Result<BootOutcome, String> {
    let dir = &spec.run_dir;
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("cleaning {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // A per-run copy: Bochs locks its image (a killed run leaves IMG.lock)
    // and QEMU takes a write lock, so runs never share one.
    let disk = dir.join("disk.img");
    fs::copy(&spec.image, &disk).map_err(|e| format!("copying image {}: {e}", spec.image.display()))?;
    let nonce = patch_nonce(&disk)?;
    let serial_path = dir.join(SERIAL_LOG);
    fs::write(&serial_path, b"").map_err(|e| format!("creating {}: {e}", serial_path.display()))?;

    let mut cmd = spec
        .emulator
        .command(spec.firmware, &disk, dir, spec.gdb)
        .map_err(|e| format!("preparing {}: {e}", spec.emulator))?;
    let out = fs::File::create(dir.join("emulator.out")).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);

    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("starting {} ({:?}): {e}", spec.emulator, cmd.get_program()))?;
    let mut follower = SerialFollower::new(&serial_path, spec.echo, &spec.watch);
    let status = loop {
        follower.poll(start.elapsed());
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if !spec.gdb && start.elapsed() > spec.timeout {
            // SIGKILL: Bochs can ignore SIGTERM and keep spinning.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    follower.poll(elapsed);
    let serial = follower.text();
    let exit_code = status.and_then(|s| s.code());
    let verdict = match status {
        None => Verdict::Timeout,
        Some(_) => judge(&spec.emulator, exit_code, &serial, nonce.as_deref(), dir),
    };
    Ok(BootOutcome { verdict, exit_code, serial, elapsed, seen_at: follower.seen_at, run_dir: dir.clone() })
}

/// Combines the exit code with the console: both must say the same thing,
/// and with a `nonce` only verdict lines that carry it count.
fn judge(emulator: &Emulator, code: Option<i32>, serial: &str, nonce: Option<&str>, dir: &Path) -> Verdict {
    let codes = emulator.verdict_codes();
    let tag = nonce.map_or(String::new(), |n| format!(" [{n}]"));
    let (pass_want, fail_want) = (format!("{VERDICT_PASS_LINE}{tag}"), format!("{VERDICT_FAIL_LINE}{tag}"));
    let pass_line = serial.lines().any(|l| l.trim_end() == pass_want);
    let fail_line = serial
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(&fail_want).filter(|r| r.is_empty() || r.starts_with(' ')));
    match (code, pass_line, fail_line) {
        (Some(c), true, None) if c == codes.pass => Verdict::Pass,
        (Some(c), false, Some(reason)) if c == codes.fail => {
            // One pair of parentheses: reasons may end in their own.
            Verdict::Fail(
                reason.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).unwrap_or(reason.trim()).to_string(),
            )
        }
        (code, pass, fail) => Verdict::Broken(format!(
            "{emulator} exited with {} but the console {} (emulator output: {})",
            code.map_or("a signal".to_string(), |c| format!("code {c}")),
            match (pass, fail) {
                (true, None) => "says PASS".to_string(),
                (false, Some(r)) => format!("says FAIL{r}"),
                (true, Some(_)) => "says both PASS and FAIL".to_string(),
                (false, None) if nonce.is_some() => "has no verdict line with this run's nonce".to_string(),
                (false, None) => "has no verdict line".to_string(),
            },
            dir.join("emulator.out").display()
        )),
    }
}

/// Reads the console file as it grows.
struct SerialFollower<'a> {
    path: &'a Path,
    bytes: Vec<u8>,
    echo: bool,
    watch: &'a [String],
    seen_at: Vec<Option<Duration>>,
}

impl<'a> SerialFollower<'a> {
    fn new(path: &'a Path, echo: bool, watch: &'a [String]) -> Self {
        Self { path, bytes: Vec::new(), echo, watch, seen_at: vec![None; watch.len()] }
    }

    fn poll(&mut self, now: Duration) {
        let Ok(mut file) = fs::File::open(self.path) else {
            return;
        };
        let mut fresh = Vec::new();
        use std::io::Seek;
        if file.seek(std::io::SeekFrom::Start(self.bytes.len() as u64)).is_err()
            || file.read_to_end(&mut fresh).is_err()
            || fresh.is_empty()
        {
            return;
        }
        if self.echo {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&fresh);
            let _ = stdout.flush();
        }
        self.bytes.extend_from_slice(&fresh);
        if self.seen_at.iter().any(Option::is_none) {
            let text = String::from_utf8_lossy(&self.bytes);
            for (needle, seen) in self.watch.iter().zip(self.seen_at.iter_mut()) {
                if seen.is_none() && text.contains(needle.as_str()) {
                    *seen = Some(now);
                }
            }
        }
    }

    /// The console with CRs dropped (the kernel sends CRLF).
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).replace('\r', "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu() -> Emulator {
        Emulator::Qemu { kvm: false, cpu: None }
    }

    #[test]
    fn pass_needs_pass_code_and_pass_line() {
        let dir = Path::new("/tmp");
        assert_eq!(judge(&qemu(), Some(33), "x\nperfvisor: verdict PASS\n", None, dir), Verdict::Pass);
        assert!(matches!(judge(&qemu(), Some(33), "no verdict\n", None, dir), Verdict::Broken(_)));
        assert!(matches!(judge(&qemu(), Some(35), "perfvisor: verdict PASS\n", None, dir), Verdict::Broken(_)));
    }

    #[test]
    fn fail_reason_is_extracted() {
        let bochs = Emulator::Bochs {
            model: "tigerlake".into(),
            pmu: crate::emulator::BochsPmu::Counting,
            msrs: None,
            cpus: 1,
        };
        let v = judge(&bochs, Some(1), "perfvisor: verdict FAIL (no VMX)\n", None, Path::new("/tmp"));
        assert_eq!(v, Verdict::Fail("no VMX".into()));
        // Bochs exits 1 for its own panics too: without the line it is no verdict.
        assert!(matches!(judge(&bochs, Some(1), "", None, Path::new("/tmp")), Verdict::Broken(_)));
    }

    #[test]
    fn with_a_nonce_only_lines_carrying_it_count() {
        let (dir, n) = (Path::new("/tmp"), Some("0123456789abcdef0123456789abcdef"));
        let good = "perfvisor: verdict PASS [0123456789abcdef0123456789abcdef]\n";
        assert_eq!(judge(&qemu(), Some(33), good, n, dir), Verdict::Pass);
        // A forged line (no nonce, a wrong one, or the guest's prefixed copy) with the pass exit code.
        for forged in [
            "perfvisor: verdict PASS\n",
            "perfvisor: verdict PASS [00000000000000000000000000000000]\n",
            "guest: perfvisor: verdict PASS [0123456789abcdef0123456789abcdef]\n",
        ] {
            let v = judge(&qemu(), Some(33), forged, n, dir);
            assert!(matches!(&v, Verdict::Broken(m) if m.contains("no verdict line with this run's nonce")), "{v:?}");
        }
        let fail = "perfvisor: verdict FAIL [0123456789abcdef0123456789abcdef] (guest stopped: hang watchdog)\n";
        assert_eq!(judge(&qemu(), Some(35), fail, n, dir), Verdict::Fail("guest stopped: hang watchdog".into()));
        let nested = "perfvisor: verdict FAIL [0123456789abcdef0123456789abcdef] (guest stopped: reset (port 0xcf9))\n";
        assert_eq!(judge(&qemu(), Some(35), nested, n, dir), Verdict::Fail("guest stopped: reset (port 0xcf9)".into()));
    }

    #[test]
    fn nonce_is_patched_once() {
        let dir = std::env::temp_dir().join(format!("perfvisor-nonce-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("disk.img");
        let mut image = vec![0u8; 100];
        image.extend_from_slice(NONCE_SLOT);
        image.extend_from_slice(&[1; 50]);
        fs::write(&disk, &image).unwrap();
        let nonce = patch_nonce(&disk).unwrap().expect("a nonce");
        assert_eq!(nonce.len(), 32);
        assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let patched = fs::read(&disk).unwrap();
        assert_eq!(&patched[100..132], nonce.as_bytes());
        assert_eq!(patch_nonce(&disk).unwrap(), None, "no placeholder left");
        image.extend_from_slice(NONCE_SLOT);
        image.extend_from_slice(NONCE_SLOT);
        fs::write(&disk, &image).unwrap();
        assert!(patch_nonce(&disk).is_err(), "three placeholders");
        let other = patch_nonce(&disk);
        assert!(other.is_err());
        fs::remove_dir_all(&dir).unwrap();
        assert_ne!(fresh_nonce(), fresh_nonce());
    }
}
