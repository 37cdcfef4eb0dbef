//! Can this host run perfvisor under QEMU/KVM? Tested, not guessed: a
//! `/dev/kvm` may exist and still be unable to run a VMX guest (on the
//! project's machines it is a paravirtual KVM whose VMXON ends in
//! "emulation failure", REFERENCE.md §5).

use crate::boot::{boot, BootSpec, Verdict};
use crate::emulator::{Emulator, Firmware};
use std::path::Path;
use std::time::Duration;

/// `Ok` when QEMU/KVM boots perfvisor (the BIOS image `image`) into VMX
/// root mode; otherwise the reason, in one line.
pub fn probe(image: &Path, run_dir: &Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm cannot be opened read-write ({e})"))?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if !cpuinfo.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "vmx")) {
        return Err("this host's CPU shows no `vmx` flag in /proc/cpuinfo, so KVM cannot give a guest VT-x".into());
    }
    let spec = BootSpec {
        emulator: Emulator::Qemu { kvm: true, cpu: None },
        firmware: Firmware::Bios,
        image: image.to_path_buf(),
        run_dir: run_dir.to_path_buf(),
        timeout: Duration::from_secs(30),
        echo: false,
        gdb: false,
        watch: Vec::new(),
    };
    let outcome = boot(&spec)?;
    if outcome.verdict == Verdict::Pass && outcome.serial.contains("vmx: entered VMX root mode") {
        return Ok(());
    }
    let qemu_said = std::fs::read_to_string(run_dir.join("emulator.out")).unwrap_or_default();
    Err(format!(
        "a probe boot under QEMU/KVM did not reach VMX root mode ({:?}){}",
        outcome.verdict,
        qemu_said.lines().next().map(|l| format!("; QEMU said: {l}")).unwrap_or_default()
    ))
}
