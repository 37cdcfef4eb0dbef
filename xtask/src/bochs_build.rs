//! The test CPU: Bochs 2.7 built from the vendored source with our counting
//! PMU patch series (tests/bochs/patches, described in tests/bochs/PMU.md).
//!
//! The build is cached by a hash of the tarball, the patches and the
//! configure flags, in `$PERFVISOR_CACHE` (default `~/.cache/perfvisor`), so
//! it runs once per machine and again only when a patch changes. Every
//! Bochs run of xtask uses that binary unless `--bochs PATH` or
//! `PERFVISOR_BOCHS` names another (Debian's `/usr/bin/bochs` stays usable
//! for comparison, with `--pmu stock`).

use crate::setup::{is_root, which};
use crate::{run_checked, workspace_root, Fallible};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The vendored upstream tarball (see tests/bochs/vendor/README.md).
const TARBALL: &str = "tests/bochs/vendor/bochs-2.7.tar.xz";
/// Its SHA-256, as published with the upstream REL_2_7_FINAL release.
const TARBALL_SHA256: &str = "7f9310046cda1da7b533c9bcb7842e9c99b1d283f5497f5b738ec69a89078820";
const SOURCE_DIR: &str = "bochs-2.7";
const PATCHES: &str = "tests/bochs/patches";

/// A plugin-free Bochs with VMX, the `term` display and the debugger (its
/// command file ends a run at the pass verdict's magic breakpoint).
/// sb16/es1370 only because the runner's bochsrc names a dummy sound driver.
pub const CONFIGURE_FLAGS: &[&str] = &[
    "--disable-plugins",
    "--with-term",
    "--without-x11",
    "--without-sdl2",
    "--without-wx",
    "--without-rfb",
    "--disable-docbook",
    "--enable-x86-64",
    "--enable-cpu-level=6",
    "--enable-vmx=2",
    "--enable-svm",
    "--enable-avx",
    "--enable-evex",
    "--enable-cet",
    "--enable-smp",
    "--enable-pci",
    "--enable-cdrom",
    "--enable-a20-pin",
    "--enable-all-optimizations",
    "--enable-repeat-speedups",
    "--enable-memtype",
    "--enable-protection-keys",
    "--enable-fpu",
    "--enable-3dnow",
    "--enable-idle-hack",
    "--enable-debugger",
    "--enable-x86-debugger",
    "--enable-disasm",
    "--enable-instrumentation",
    "--enable-sb16",
    "--enable-es1370",
];

/// What building needs: (command or header that must exist, Debian package).
const BUILD_DEPS: &[(&str, &str)] = &[
    ("g++", "g++"),
    ("make", "make"),
    ("patch", "patch"),
    ("xz", "xz-utils"),
    ("/usr/include/ncurses.h", "libncurses-dev"),
    ("/usr/include/readline/readline.h", "libreadline-dev"),
];

/// The Bochs binary every Bochs run uses: `--bochs PATH`, else
/// `PERFVISOR_BOCHS`, else the cached counting build (built now if missing).
pub fn resolve(explicit: Option<String>) -> Fallible<PathBuf> {
    let chosen = explicit.or_else(|| std::env::var("PERFVISOR_BOCHS").ok().filter(|s| !s.is_empty()));
    let binary = match chosen {
        Some(path) => {
            let path = PathBuf::from(path);
            let found =
                if path.components().count() == 1 { which(&path.to_string_lossy()) } else { Some(path.clone()) };
            match found.filter(|p| p.is_file()) {
                Some(p) => {
                    eprintln!("xtask: using the Bochs binary {} (not the counting build)", p.display());
                    p
                }
                None => return Err(format!("Bochs binary {} does not exist", path.display())),
            }
        }
        None => ensure_built()?,
    };
    perfvisor_runner::emulator::set_bochs_binary(binary.clone());
    Ok(binary)
}

/// The cache directory for builds.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("PERFVISOR_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| workspace_root().join("build"));
    base.join("perfvisor")
}

/// The patch files, in the order they apply.
fn patch_files() -> Fallible<Vec<PathBuf>> {
    let dir = workspace_root().join(PATCHES);
    let mut patches: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    patches.sort();
    Ok(patches)
}

/// The cache key: tarball, patches (names and contents) and flags.
pub fn build_key() -> Fallible<String> {
    let mut h = Sha256::new();
    let tarball = workspace_root().join(TARBALL);
    let bytes = std::fs::read(&tarball).map_err(|e| format!("reading {}: {e}", tarball.display()))?;
    let digest = hex(&Sha256::digest(&bytes));
    if digest != TARBALL_SHA256 {
        return Err(format!(
            "{} has SHA-256 {digest}, expected {TARBALL_SHA256}: the vendored source is damaged",
            tarball.display()
        ));
    }
    h.update(digest.as_bytes());
    for patch in patch_files()? {
        h.update(patch.file_name().unwrap_or_default().as_encoded_bytes());
        h.update(std::fs::read(&patch).map_err(|e| format!("reading {}: {e}", patch.display()))?);
    }
    h.update(CONFIGURE_FLAGS.join(" ").as_bytes());
    Ok(hex(&h.finalize())[..16].to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cached build's directory and binary for the current key.
pub fn cached_binary() -> Fallible<PathBuf> {
    Ok(cache_root().join(format!("bochs-{}", build_key()?)).join("bin").join("bochs"))
}

/// Builds the counting Bochs unless the cache has it; returns its path.
pub fn ensure_built() -> Fallible<PathBuf> {
    let binary = cached_binary()?;
    if binary.is_file() {
        return Ok(binary);
    }
    let install_dir = binary.parent().and_then(Path::parent).expect("bin/bochs has two parents").to_path_buf();
    let started = Instant::now();
    eprintln!(
        "xtask: building the counting Bochs (vendored 2.7 + {} patches) into {}; this happens once per patch set and takes 3-6 minutes on 2 cores",
        patch_files()?.len(),
        install_dir.display()
    );
    ensure_build_deps()?;
    let work = cache_root().join(format!(
        "build-{}-{}",
        install_dir.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    let result = build_in(&work);
    match result {
        Ok(built) => {
            let bin = install_dir.join("bin");
            std::fs::create_dir_all(&bin).map_err(|e| format!("creating {}: {e}", bin.display()))?;
            // Copy then rename, so a concurrent xtask never sees half a binary.
            let partial = bin.join(format!(".bochs.{}", std::process::id()));
            std::fs::copy(&built, &partial).map_err(|e| format!("copying {}: {e}", built.display()))?;
            std::fs::rename(&partial, &binary).map_err(|e| format!("installing {}: {e}", binary.display()))?;
            let info = format!(
                "Bochs 2.7 + tests/bochs/patches ({} patches)\nkey {}\nconfigure {}\nbuilt in {:.0} s\n",
                patch_files()?.len(),
                build_key()?,
                CONFIGURE_FLAGS.join(" "),
                started.elapsed().as_secs_f64()
            );
            let _ = std::fs::write(install_dir.join("BUILD-INFO"), info);
            let _ = std::fs::remove_dir_all(&work);
            eprintln!("xtask: counting Bochs built in {:.0} s: {}", started.elapsed().as_secs_f64(), binary.display());
            Ok(binary)
        }
        Err(e) => Err(format!("{e}\n(the build directory {} is kept for inspection)", work.display())),
    }
}

/// Unpack, patch, configure, make; returns the built binary.
fn build_in(work: &Path) -> Fallible<PathBuf> {
    let log_path = work.join("build.log");
    eprintln!("xtask: Bochs [1/4] unpacking {TARBALL}");
    run_checked(
        Command::new("tar").arg("-xJf").arg(workspace_root().join(TARBALL)).arg("-C").arg(work),
        "unpacking the Bochs source",
    )?;
    let src = work.join(SOURCE_DIR);
    let patches = patch_files()?;
    eprintln!("xtask: Bochs [2/4] applying {} patches", patches.len());
    for patch in &patches {
        let out = Command::new("patch")
            .args(["-p1", "--forward", "--batch", "--quiet", "-i"])
            .arg(patch)
            .current_dir(&src)
            .output()
            .map_err(|e| format!("could not start patch: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "patch {} does not apply to Bochs 2.7:\n{}{}",
                patch.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    eprintln!("xtask: Bochs [3/4] configure (log: {})", log_path.display());
    let log = || std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| e.to_string());
    let status = Command::new("./configure")
        .args(CONFIGURE_FLAGS)
        .current_dir(&src)
        .stdout(log()?)
        .stderr(log()?)
        .status()
        .map_err(|e| format!("could not start configure: {e}"))?;
    if !status.success() {
        return Err(format!("Bochs' configure failed ({status}):\n{}", tail(&log_path, 30)));
    }
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let total = count_compiles(&src);
    eprintln!("xtask: Bochs [4/4] make -j{jobs}: {total} files to compile");
    let mut child = Command::new("make")
        .arg(format!("-j{jobs}"))
        .current_dir(&src)
        .stdout(Stdio::piped())
        .stderr(log()?)
        .spawn()
        .map_err(|e| format!("could not start make: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut out_log = log()?;
    let mut done = 0usize;
    let mut last_report = Instant::now();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        use std::io::Write;
        let _ = writeln!(out_log, "{line}");
        if is_compile(&line) {
            done += 1;
            if last_report.elapsed().as_secs() >= 20 || done == total {
                last_report = Instant::now();
                eprintln!("xtask: Bochs make: {done}/{total} files compiled");
            }
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("building Bochs failed ({status}):\n{}", tail(&log_path, 40)));
    }
    let built = src.join("bochs");
    if !built.is_file() {
        return Err(format!("make succeeded but {} is missing", built.display()));
    }
    Ok(built)
}

fn is_compile(line: &str) -> bool {
    (line.starts_with("g++") || line.starts_with("gcc") || line.starts_with("cc ")) && line.contains(" -c ")
}

/// How many compiler runs `make` will do (a dry run), for the progress line.
fn count_compiles(src: &Path) -> usize {
    Command::new("make")
        .arg("-n")
        .current_dir(src)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| is_compile(l)).count())
        .unwrap_or(0)
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Installs the compiler and libraries Bochs needs (as root), or says how.
fn ensure_build_deps() -> Fallible<()> {
    let missing: Vec<&str> = BUILD_DEPS
        .iter()
        .filter(|(what, _)| if what.starts_with('/') { !Path::new(what).exists() } else { which(what).is_none() })
        .map(|(_, package)| *package)
        .collect();
    install_packages(&missing, "building Bochs")
}

/// Installs Debian `packages` with apt-get (as root; else says how), for
/// `what` ("building Bochs").
pub fn install_packages(packages: &[&str], what: &str) -> Fallible<()> {
    let missing = packages;
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    if !is_root() {
        return Err(format!("{what} needs {}; install them with:\n    sudo sh -c '{command}'", missing.join(", ")));
    }
    eprintln!("xtask: installing what {what} needs: {command}");
    run_checked(Command::new("apt-get").arg("update").arg("-q"), "apt-get update")?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}
