//! Linux on the counting Bochs: a stock Debian kernel, an initramfs of
//! busybox and our static test client, and the bundle the native boot
//! kernel (tests/linux-native) loads. `cargo xtask linux-native` boots it by
//! hand; the `bochs-linux-native-*` cases (tests/runner/src/linux_cases.rs)
//! run it in `cargo xtask test`.
//!
//! Everything downloaded or derived is cached in
//! `$PERFVISOR_CACHE/linux/` (default `~/.cache/perfvisor/linux/`).

use crate::{run_checked, workspace_root, Fallible, Options};
use perfvisor_platform::linux::{SetupHeader, Vmlinux};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The metapackage whose dependency names the current stock kernel.
const KERNEL_METAPACKAGE: &str = "linux-image-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";

/// The command line the tests boot with. `nosmp quiet cryptomgr.notests=1
/// nmi_watchdog=0` make the boot fastest in Bochs (REFERENCE.md §6: the
/// crypto self-tests alone cost ~0.7 G instructions); `mce=off` spares the
/// machine-check MSRs; `panic=-1 reboot=t` turn a panic into an immediate
/// triple fault, which ends the Bochs run (`reset_on_triple_fault=0`)
/// instead of waiting for the time limit. `printk.time=0 printk.devkmsg=on`:
/// the initramfs prints its lines through /dev/kmsg, unprefixed and not
/// rate-limited (tests/linux-client/src/main.rs says why).
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0,115200 nosmp quiet cryptomgr.notests=1 nmi_watchdog=0 panic=-1 reboot=t mce=off printk.time=0 printk.devkmsg=on";

/// What a Linux guest of perfvisor adds to [`DEFAULT_CMDLINE`]
/// (hypervisor/src/linux.rs): `hpet=disable` and `pci=off`, since perfvisor
/// maps neither the HPET nor any PCI MMIO and refuses PCI configuration
/// (the guest gets no device). `nosmp` (in the default line) also keeps
/// Linux off the I/O APIC.
pub const GUEST_CMDLINE_EXTRA: &str = "hpet=disable pci=off";

/// The stock kernel and test initramfs with the guest's command line.
pub fn guest_spec() -> LinuxSpec {
    LinuxSpec { append: Some(format!("{DEFAULT_CMDLINE} {GUEST_CMDLINE_EXTRA}")), ..LinuxSpec::default() }
}

/// The Bochs `msrs=` file with what Linux reads before it can take a #GP
/// (IA32_MISC_ENABLE) and the machine-check MSRs.
pub const MSRS_FILE: &str = "tests/bochs/linux.msrs";

/// What to boot: the kernel (bzImage or vmlinux), initrd and command line.
#[derive(Clone, Debug, Default, Hash)]
pub struct LinuxSpec {
    /// None: the stock Debian kernel (fetched and cached).
    pub kernel: Option<PathBuf>,
    /// None: the test initramfs built here.
    pub initrd: Option<PathBuf>,
    /// None: [`DEFAULT_CMDLINE`].
    pub append: Option<String>,
}

fn linux_cache() -> Fallible<PathBuf> {
    let dir = crate::bochs_build::cache_root().join("linux");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

fn progress(what: &str) {
    eprintln!("xtask: linux: {what}");
}

/// `apt-cache depends` of the metapackage: the versioned kernel package.
fn current_kernel_package() -> Option<String> {
    let out = Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_string)
}

/// `apt-get download PACKAGE` into a scratch directory, then `dpkg-deb -x`;
/// returns the extraction directory.
fn download_and_extract(package: &str, scratch: &Path) -> Fallible<PathBuf> {
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    progress(&format!("apt-get download {package}"));
    run_checked(Command::new("apt-get").args(["download", "-q", package]).current_dir(scratch), "apt-get download")?;
    let deb = std::fs::read_dir(scratch)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or(format!("apt-get download {package} left no .deb in {}", scratch.display()))?;
    let root = scratch.join("root");
    progress(&format!("dpkg-deb -x {}", deb.file_name().unwrap_or_default().to_string_lossy()));
    run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root), "dpkg-deb -x")?;
    Ok(root)
}

/// Makes sure apt knows the package lists (`apt-get update` once, as root).
fn apt_lists_ready(package_known: impl Fn() -> bool) -> Fallible<()> {
    if package_known() {
        return Ok(());
    }
    if !crate::setup::is_root() {
        return Err("apt does not know the Debian kernel packages; run `sudo apt-get update` and try again".into());
    }
    progress("apt-get update (the package lists are missing)");
    run_checked(Command::new("apt-get").args(["update", "-q"]), "apt-get update")?;
    if package_known() {
        Ok(())
    } else {
        Err(format!("apt-get knows no {KERNEL_METAPACKAGE}: is a Debian archive configured?"))
    }
}

/// The stock Debian kernel's bzImage (`vmlinuz`), downloaded once.
pub fn stock_kernel() -> Fallible<PathBuf> {
    let cache = linux_cache()?;
    let package = match current_kernel_package() {
        Some(p) => p,
        None => {
            // Offline with a cached kernel: use the newest one.
            let mut cached: Vec<PathBuf> = std::fs::read_dir(&cache)
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok().map(|e| e.path().join("vmlinuz")))
                .filter(|p| p.is_file())
                .collect();
            cached.sort();
            if let Some(newest) = cached.pop() {
                return Ok(newest);
            }
            apt_lists_ready(|| current_kernel_package().is_some())?;
            current_kernel_package().ok_or("apt-cache names no kernel package")?
        }
    };
    let vmlinuz = cache.join(&package).join("vmlinuz");
    if vmlinuz.is_file() {
        return Ok(vmlinuz);
    }
    let started = Instant::now();
    let root = download_and_extract(&package, &cache.join("download"))?;
    let boot = root.join("boot");
    let found = std::fs::read_dir(&boot)
        .map_err(|e| format!("{package} has no /boot: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .ok_or(format!("{package} has no /boot/vmlinuz-*"))?;
    std::fs::create_dir_all(vmlinuz.parent().expect("a file has a parent")).map_err(|e| e.to_string())?;
    std::fs::copy(&found, &vmlinuz).map_err(|e| format!("copying {}: {e}", found.display()))?;
    let _ = std::fs::remove_dir_all(cache.join("download"));
    progress(&format!("{package}: {} in {:.1} s", vmlinuz.display(), started.elapsed().as_secs_f64()));
    Ok(vmlinuz)
}

/// The vmlinux ELF inside a bzImage: its xz payload decompressed (cached
/// beside the bzImage). The x86 BCJ filter the kernel's xz uses needs a
/// full liblzma (xz2).
pub fn extract_vmlinux(bzimage: &Path) -> Fallible<Vec<u8>> {
    let image = std::fs::read(bzimage).map_err(|e| format!("reading {}: {e}", bzimage.display()))?;
    let header = SetupHeader::parse(&image).map_err(|e| format!("{}: {e}", bzimage.display()))?;
    let payload = header.payload(&image).map_err(|e| format!("{}: {e}", bzimage.display()))?;
    if !payload.starts_with(b"\xfd7zXZ\0") {
        return Err(format!(
            "{}: the payload is not xz-compressed (starts {:02x?}); pass a vmlinux with --kernel instead",
            bzimage.display(),
            &payload[..payload.len().min(6)]
        ));
    }
    let started = Instant::now();
    // The payload is one xz stream followed by the kernel's 4-byte size
    // trailer, so decode the one stream and stop at its end.
    let mut stream = xz2::stream::Stream::new_stream_decoder(u64::MAX, 0).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(payload.len() * 8);
    let mut input = payload;
    loop {
        if out.capacity() == out.len() {
            out.reserve(out.len());
        }
        let before = stream.total_in();
        let status = stream
            .process_vec(input, &mut out, xz2::stream::Action::Run)
            .map_err(|e| format!("xz payload of {}: {e}", bzimage.display()))?;
        input = &input[(stream.total_in() - before) as usize..];
        if status == xz2::stream::Status::StreamEnd {
            break;
        }
        if input.is_empty() && out.capacity() > out.len() {
            return Err(format!("xz payload of {}: truncated", bzimage.display()));
        }
    }
    // The payload is vmlinux.bin plus, with KASLR, its relocation table
    // appended: the ELF is the prefix Vmlinux::parse accepts.
    Vmlinux::parse(&out).map_err(|e| format!("the vmlinux inside {}: {e}", bzimage.display()))?;
    progress(&format!(
        "vmlinux extracted from {} ({} MB) in {:.1} s",
        bzimage.display(),
        out.len() >> 20,
        started.elapsed().as_secs_f64()
    ));
    Ok(out)
}

/// Debian's static busybox, downloaded once.
fn busybox() -> Fallible<PathBuf> {
    let cache = linux_cache()?;
    let bin = cache.join("busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    // Prefer the installed binary when it is the static package's.
    let installed = Path::new("/bin/busybox");
    let root = download_and_extract(BUSYBOX_PACKAGE, &cache.join("download")).or_else(|e| {
        if installed.is_file() {
            Ok(PathBuf::from("/"))
        } else {
            Err(e)
        }
    })?;
    let found = root.join("bin/busybox");
    std::fs::copy(&found, &bin).map_err(|e| format!("copying {}: {e}", found.display()))?;
    let _ = std::fs::remove_dir_all(cache.join("download"));
    Ok(bin)
}

/// Builds tests/linux-client as a static x86-64 Linux executable.
fn build_client() -> Fallible<PathBuf> {
    let target = "x86_64-unknown-linux-gnu";
    run_checked(
        Command::new("cargo")
            .args(["build", "--release", "--quiet", "--package", "perfvisor-linux-client", "--target", target])
            .env(
                format!("CARGO_TARGET_{}_RUSTFLAGS", target.to_uppercase().replace('-', "_")),
                "-C target-feature=+crt-static",
            )
            // Small in the initramfs: no debug info, no symbols.
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
            .current_dir(workspace_root()),
        "cargo build (Linux test client)",
    )?;
    Ok(workspace_root().join("target").join(target).join("release").join("perfvisor-linux-client"))
}

/// The `/init` of the test initramfs: mount the pseudo file systems, then
/// the client prints the PMU lines, runs the checks and ends the run.
const INIT: &str = "#!/bin/sh
# perfvisor's Linux test initramfs (xtask/src/linux.rs).
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo \"<2>init: Linux $(/bin/busybox uname -r) up; running the PMU checks\" > /dev/kmsg
export HOME=/tmp PATH=/usr/bin:/bin
exec /bin/perfvisor-linux-client
";

/// Debian's perf tool, which the client runs as its `linux_perf_*`
/// checks: `/usr/bin/perf` from `linux-perf` (installed with apt-get when
/// missing, as Bochs' build dependencies are) and every shared library it
/// loads, where `ldd` finds them on this Debian host. Returns (path in the
/// initramfs, bytes).
fn perf_tool() -> Fallible<Vec<(String, Vec<u8>)>> {
    const PERF: &str = "/usr/bin/perf";
    if !Path::new(PERF).exists() {
        crate::bochs_build::install_packages(&["linux-perf"], "the Linux test initramfs's perf tool")?;
    }
    let out = Command::new("ldd").arg(PERF).output().map_err(|e| format!("running ldd {PERF}: {e}"))?;
    if !out.status.success() {
        return Err(format!("ldd {PERF} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let mut files = vec![PERF.to_string()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `libx.so.1 => /lib/.../libx.so.1 (0x...)`, `/lib64/ld-linux-x86-64.so.2 (0x...)`, `linux-vdso.so.1 (0x...)`.
        let path = match line.split_once("=>") {
            Some((name, _)) if line.contains("not found") => {
                return Err(format!("ldd {PERF}: {} not found on this host", name.trim()));
            }
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(path) = path {
            files.push(path.to_string());
        }
    }
    files
        .into_iter()
        .map(|path| {
            // Symlinks followed: the library's bytes under the name the loader asks for.
            let bytes = std::fs::read(&path).map_err(|e| format!("reading {path}: {e}"))?;
            Ok((path.trim_start_matches('/').to_string(), bytes))
        })
        .collect()
}

/// Every directory above `path` (`a/b/c` -> `a`, `a/b`).
fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// The test initramfs (newc cpio): busybox, the client, Debian's perf tool
/// with its libraries, /init, /dev/console.
pub fn build_initramfs() -> Fallible<Vec<u8>> {
    let busybox = std::fs::read(busybox()?).map_err(|e| format!("reading busybox: {e}"))?;
    let client = build_client()?;
    let client = std::fs::read(&client).map_err(|e| format!("reading {}: {e}", client.display()))?;
    let perf = perf_tool()?;
    progress(&format!(
        "initramfs: busybox {} KB, client {} KB, perf and {} libraries {} KB",
        busybox.len() >> 10,
        client.len() >> 10,
        perf.len() - 1,
        perf.iter().map(|(_, b)| b.len()).sum::<usize>() >> 10
    ));
    use cpio::newc::Builder;
    const DIR: u32 = 0o040_755;
    const EXE: u32 = 0o100_755;
    const LINK: u32 = 0o120_777;
    const CHR: u32 = 0o020_600;
    let mut entries: Vec<(Builder, &[u8])> = vec![
        (Builder::new("bin").mode(DIR), b""),
        (Builder::new("dev").mode(DIR), b""),
        (Builder::new("dev/console").mode(CHR).rdev_major(5).rdev_minor(1), b""),
        (Builder::new("proc").mode(DIR), b""),
        (Builder::new("sys").mode(DIR), b""),
        (Builder::new("tmp").mode(DIR), b""),
        (Builder::new("bin/busybox").mode(EXE), &busybox),
        (Builder::new("bin/sh").mode(LINK), b"busybox"),
        (Builder::new("bin/perfvisor-linux-client").mode(EXE), &client),
        (Builder::new("init").mode(EXE), INIT.as_bytes()),
    ];
    // The kernel's unpacker makes no missing parent directory: each first.
    let mut dirs: Vec<&str> = perf.iter().flat_map(|(path, _)| parents(path)).filter(|d| *d != "bin").collect();
    dirs.sort();
    dirs.dedup();
    entries.extend(dirs.into_iter().map(|d| (Builder::new(d).mode(DIR), &b""[..])));
    entries.extend(perf.iter().map(|(path, bytes)| (Builder::new(path).mode(EXE), bytes.as_slice())));
    let mut out = Vec::new();
    for (ino, (builder, bytes)) in (1..).zip(entries) {
        let mut w = builder.ino(ino).nlink(1).write(&mut out, bytes.len() as u32);
        std::io::Write::write_all(&mut w, bytes).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    cpio::newc::trailer(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The ramdisk bundle tests/linux-native reads (its doc comment lists the parts).
pub fn bundle(spec: &LinuxSpec) -> Fallible<Vec<u8>> {
    Ok(write_bundle(&bundle_parts(spec)?))
}

/// A bundle of `parts` (platform/src/bundle.rs's format).
pub fn write_bundle(parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut header = String::from("#perfvisor-bundle v1\n");
    for (name, bytes) in parts {
        header.push_str(&format!("{name} {}\n", bytes.len()));
    }
    header.push('\n');
    let mut out = header.into_bytes();
    for (_, bytes) in parts {
        out.extend_from_slice(bytes);
    }
    out
}

/// The Linux parts of a bundle (kernel, initrd, command line): what
/// tests/linux-native reads, and perfvisor for a Linux guest
/// (hypervisor/src/linux.rs) next to its config and nonce.
pub fn bundle_parts(spec: &LinuxSpec) -> Fallible<Vec<(&'static str, Vec<u8>)>> {
    let kernel = match &spec.kernel {
        Some(k) => k.clone(),
        None => stock_kernel()?,
    };
    let bytes = std::fs::read(&kernel).map_err(|e| format!("reading {}: {e}", kernel.display()))?;
    let mut parts: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let started = Instant::now();
    let elf = if bytes.starts_with(b"\x7fELF") {
        Some(bytes)
    } else {
        let header = SetupHeader::parse(&bytes).map_err(|e| format!("{}: {e}", kernel.display()))?;
        let format = payload_format(header.payload(&bytes).map_err(|e| format!("{}: {e}", kernel.display()))?);
        let cached = kernel.with_file_name("vmlinux");
        if spec.kernel.is_none() && cached.is_file() {
            parts.push(("setup", bytes[..header.end].to_vec()));
            Some(std::fs::read(&cached).map_err(|e| e.to_string())?)
        } else if format == "xz" {
            parts.push(("setup", bytes[..header.end].to_vec()));
            let elf = extract_vmlinux(&kernel)?;
            if spec.kernel.is_none() {
                std::fs::write(&cached, &elf).map_err(|e| format!("writing {}: {e}", cached.display()))?;
            }
            Some(elf)
        } else {
            // The real-hardware path: the kernel decompresses itself.
            progress(&format!(
                "{}: a bzImage with a {format} payload (only xz is extracted here): shipped as is; it \
                 decompresses itself in the guest",
                kernel.display()
            ));
            parts.push(("bzimage", bytes));
            None
        }
    };
    let kernel_size = match &elf {
        Some(elf) => push_flat_vmlinux(&mut parts, elf, &kernel)?,
        None => parts[0].1.len(),
    };
    let kernel_lz4 = parts.last().map_or(0, |p| p.1.len());
    let initrd = match &spec.initrd {
        Some(path) => std::fs::read(path).map_err(|e| format!("reading initrd {}: {e}", path.display()))?,
        None => build_initramfs()?,
    };
    parts.push(("initrd.lz4", lz4_hc(&initrd)?));
    parts.push(("cmdline", spec.append.as_deref().unwrap_or(DEFAULT_CMDLINE).as_bytes().to_vec()));
    progress(&format!(
        "bundle: kernel {} MB -> {} MB shipped, initrd {} KB -> {} KB lz4 ({:.1} s)",
        kernel_size >> 20,
        kernel_lz4 >> 20,
        initrd.len() >> 10,
        parts[parts.len() - 2].1.len() >> 10,
        started.elapsed().as_secs_f64()
    ));
    Ok(parts)
}

/// The vmlinux as the loaders take it: its ELF and program headers, and
/// its PT_LOAD segments laid out flat (trailing zeros cut), LZ4'd.
/// Returns the flat size.
fn push_flat_vmlinux(parts: &mut Vec<(&'static str, Vec<u8>)>, elf: &[u8], kernel: &Path) -> Fallible<usize> {
    let vmlinux = Vmlinux::parse(elf).map_err(|e| format!("{}: {e}", kernel.display()))?;
    let mut flat = vec![0u8; vmlinux.mem_size() as usize];
    vmlinux.copy_into(elf, &mut flat).map_err(|e| e.to_string())?;
    let used = flat.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    flat.truncate(used);
    let phoff = u64::from_le_bytes(elf[32..40].try_into().expect("8 bytes")) as usize;
    let phnum = usize::from(u16::from_le_bytes([elf[56], elf[57]]));
    let headers_end = (phoff + 56 * phnum).max(64);
    parts.push(("vmlinux-headers", elf[..headers_end.min(elf.len())].to_vec()));
    parts.push(("vmlinux-flat.lz4", lz4_hc(&flat)?));
    Ok(flat.len())
}

/// A bzImage payload's compression, by its magic bytes (the kernel's
/// `CONFIG_KERNEL_*` choices).
fn payload_format(payload: &[u8]) -> &'static str {
    const MAGICS: [(&[u8], &str); 7] = [
        (b"\xfd7zXZ\0", "xz"),
        (b"\x1f\x8b", "gzip"),
        (b"\x02\x21\x4c\x18", "lz4"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"BZh", "bzip2"),
        (b"\x89LZO", "lzo"),
        (b"\x5d\x00", "lzma"),
    ];
    MAGICS.iter().find(|(magic, _)| payload.starts_with(magic)).map_or("unknown", |&(_, name)| name)
}

/// An LZ4 block with its length prepended, as the native kernel's lz4_flex
/// reads it: liblz4's high-compression mode (the BIOS bootloader reads the
/// ramdisk at ~2.2 s/MB in Bochs; level 9 makes Debian's kernel 13.8 MB
/// instead of lz4_flex's 16.6 MB), checked by decoding it with lz4_flex.
fn lz4_hc(data: &[u8]) -> Fallible<Vec<u8>> {
    let packed = lz4::block::compress(data, Some(lz4::block::CompressionMode::HIGHCOMPRESSION(9)), true)
        .map_err(|e| format!("lz4: {e}"))?;
    match lz4_flex::decompress_size_prepended(&packed) {
        Ok(back) if back == data => Ok(packed),
        _ => Err("lz4: liblz4's block does not decode with lz4_flex to the same bytes".into()),
    }
}

pub const HELP: &str = "\
cargo xtask linux-native [--cpu MODEL] [--kernel FILE] [--initrd FILE] [--append TEXT]
                         [BOCHS OPTIONS] [--timeout SECS]

Boots a Linux kernel natively (no perfvisor) in Bochs, through tests/linux-native,
and streams its console. Defaults: the stock Debian kernel (apt-get download of what
linux-image-amd64 depends on, cached in ~/.cache/perfvisor/linux/ or $PERFVISOR_CACHE),
the test initramfs (busybox-static + tests/linux-client, whose /init runs the
LINUXTEST checks and ends the run with a verdict), and the command line
  console=ttyS0,115200 nosmp quiet cryptomgr.notests=1 nmi_watchdog=0 panic=-1 reboot=t mce=off
  printk.time=0 printk.devkmsg=on
--kernel takes a bzImage (its vmlinux is extracted on the host) or a vmlinux ELF.
MODEL: a Bochs CPU model (default tigerlake). Bochs gets tests/bochs/linux.msrs
(IA32_MISC_ENABLE and the machine-check MSRs) unless --msrs names another file.";

/// `cargo xtask linux-native`.
pub fn linux_native(args: &[String]) -> Fallible<bool> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        return Ok(true);
    }
    let mut args = args.to_vec();
    if !args.iter().any(|a| a == "--msrs") {
        args.extend(["--msrs".to_string(), workspace_root().join(MSRS_FILE).display().to_string()]);
    }
    let mut o = Options::new(&args);
    let cpu = o.value(&["--cpu"])?;
    let spec = LinuxSpec {
        kernel: o.value(&["--kernel"])?.map(PathBuf::from),
        initrd: o.value(&["--initrd"])?.map(PathBuf::from),
        append: o.value(&["--append"])?,
    };
    let timeout = match o.value(&["--timeout"])? {
        Some(s) => s.parse().map_err(|_| format!("--timeout takes whole seconds, not {s:?}"))?,
        None => 300,
    };
    let bochs_options = crate::commands::BochsOptions::parse(&mut o)?;
    o.finish()?;
    crate::setup::ensure_emulators()?;
    let emulator = bochs_options.emulator(cpu)?;
    let builder = crate::images::Builder::for_linux_native()?;
    let image = builder.linux_native_image(perfvisor_runner::emulator::Firmware::Bios, &spec)?;
    crate::commands::boot_interactive(
        emulator,
        perfvisor_runner::emulator::Firmware::Bios,
        image,
        std::time::Duration::from_secs(timeout),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::payload_format;

    #[test]
    fn payload_formats_by_magic() {
        assert_eq!(payload_format(b"\xfd7zXZ\0rest"), "xz");
        assert_eq!(payload_format(b"\x02\x21\x4c\x18rest"), "lz4");
        assert_eq!(payload_format(b"\x1f\x8b\x08"), "gzip");
        assert_eq!(payload_format(b"\x28\xb5\x2f\xfd"), "zstd");
        assert_eq!(payload_format(b"ELF?"), "unknown");
        assert_eq!(payload_format(b""), "unknown");
    }
}
