//! The ramdisk and the boot config.
//!
//! The bootloader ramdisk is either a boot config alone (text) or a bundle
//! of a config and a guest image:
//!
//! ```text
//! #perfvisor-bundle v1
//! config <bytes>
//! guest <bytes>
//! nonce 32
//! <empty line>
//! <config bytes><guest bytes><nonce bytes>
//! ```
//!
//! A Linux guest's bundle has, instead of `guest`, the parts
//! tests/linux-native reads (`crate::linux`): `setup`, `vmlinux-headers`,
//! `vmlinux-flat.lz4`, `vmlinux`, `bzimage`, `initrd`, `initrd.lz4`,
//! `cmdline`.
//!
//! The nonce is the test runner's secret for one run (it patches the
//! placeholder in its copy of the disk image): perfvisor copies it into
//! its own memory, zeroes it in the ramdisk, and prints it in the verdict
//! line, so a verdict the guest writes can never carry it.
//!
//! The boot config:
//!
//! ```text
//! # comment
//! log=debug          # error | warn | info | debug | trace
//! selftest=panic     # none | panic | exception: end in a deliberate failure
//! guest=suite        # suite | ept-violation | triple-fault | exit-status | bench | pmu-fuzz
//!                    # | hostile | hostile-icr | attack:<name> (perfvisor_abi::Attack::ALL)
//! vpmu=auto          # auto | mediated | fallback | off
//! vpmu_switch=auto   # auto | lists: switch GLOBAL_CTRL with MSR-load lists even where
//!                    # the VMCS load controls exist (so that path runs somewhere)
//! watchdog=10000     # milliseconds of guest time without progress before the
//!                    # guest is stopped (0: off)
//! ```
//!
//! A malformed config is reported line by line and ends the run with a fail
//! verdict: a hypervisor that silently ignores its configuration would
//! mislead whoever reads the console.

use log::LevelFilter;
use perfvisor_abi::Scenario;
use pmu::mode::ModeRequest;

const BUNDLE_MAGIC: &str = "#perfvisor-bundle v1\n";

/// The run's nonce: 32 lowercase hex digits.
pub type Nonce = [u8; 32];

/// The nonce part's meaning: the runner patches the image builder's
/// placeholder (`perfvisor_runner::boot::NONCE_SLOT`, which this kernel
/// must not contain, or the runner would find two) with 32 lowercase hex
/// digits; anything else means no nonce (an image booted by hand).
pub fn parse_nonce(part: &[u8]) -> Option<Nonce> {
    let nonce: Nonce = part.try_into().ok()?;
    nonce.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')).then_some(nonce)
}

/// The ramdisk's parts.
#[derive(Default)]
pub struct Ramdisk<'a> {
    pub config: Option<&'a [u8]>,
    pub guest: Option<&'a [u8]>,
    pub nonce: Option<&'a [u8]>,
    /// The bundle carries a Linux kernel (`crate::linux::PARTS`).
    pub linux: bool,
}

/// Splits the ramdisk into config and guest image; `Err` says what is malformed.
pub fn split_ramdisk(bytes: &[u8]) -> Result<Ramdisk<'_>, &'static str> {
    let Some(rest) = bytes.strip_prefix(BUNDLE_MAGIC.as_bytes()) else {
        return Ok(Ramdisk { config: Some(bytes), ..Ramdisk::default() });
    };
    let header_end = rest.windows(2).position(|w| w == b"\n\n").ok_or("bundle header has no terminating empty line")?;
    let header = core::str::from_utf8(&rest[..header_end]).map_err(|_| "bundle header is not text")?;
    let mut data = &rest[header_end + 2..];
    let mut parts = Ramdisk::default();
    for line in header.lines() {
        let (name, len) = line.split_once(' ').ok_or("bundle header line is not `name length`")?;
        let len: usize = len.trim().parse().map_err(|_| "bundle part length is not a number")?;
        if len > data.len() {
            return Err("bundle part is longer than the ramdisk");
        }
        let (part, rest) = data.split_at(len);
        data = rest;
        match name {
            "config" => parts.config = Some(part),
            "guest" => parts.guest = Some(part),
            "nonce" => parts.nonce = Some(part),
            linux if crate::linux::PARTS.contains(&linux) => parts.linux |= crate::linux::is_kernel_part(linux),
            _ => {
                return Err("unknown bundle part (known: config, guest, nonce, and a Linux guest's setup, \
                            vmlinux-headers, vmlinux-flat.lz4, vmlinux, bzimage, initrd, initrd.lz4, cmdline)")
            }
        }
    }
    Ok(parts)
}

/// A deliberate failure, to prove the failure paths and the runner's reading of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    None,
    /// `panic!()`: the panic handler's report and a fail verdict.
    Panic,
    /// `ud2`: the exception report and a fail verdict.
    Exception,
}

#[derive(Clone, Copy, Debug)]
pub struct BootConfig {
    pub log_level: Option<LevelFilter>,
    pub selftest: SelfTest,
    pub scenario: Scenario,
    pub vpmu: ModeRequest,
    pub vpmu_msr_lists: bool,
    /// Guest milliseconds without progress before the watchdog stops it (0: off).
    pub watchdog_ms: u32,
    /// The attack of `guest=attack:<name>` (`perfvisor_abi::Attack`), else 0.
    pub attack: u32,
}

/// What is wrong with a config line.
pub struct ConfigError<'a> {
    pub line: usize,
    pub text: &'a str,
    pub problem: &'static str,
}

impl BootConfig {
    pub const DEFAULT: Self = Self {
        log_level: None,
        selftest: SelfTest::None,
        scenario: Scenario::Suite,
        vpmu: ModeRequest::Auto,
        vpmu_msr_lists: false,
        watchdog_ms: 10_000,
        attack: 0,
    };

    /// Parses the config text; the first bad line is an error.
    pub fn parse(text: &str) -> Result<Self, ConfigError<'_>> {
        let mut config = Self::DEFAULT;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let error = |problem| ConfigError { line: index + 1, text: raw, problem };
            let (key, value) = line.split_once('=').ok_or(error("expected key=value"))?;
            match (key.trim(), value.trim()) {
                ("log", level) => {
                    config.log_level = Some(
                        level.parse().map_err(|_| error("log must be one of off, error, warn, info, debug, trace"))?,
                    )
                }
                ("selftest", "none") => config.selftest = SelfTest::None,
                ("selftest", "panic") => config.selftest = SelfTest::Panic,
                ("selftest", "exception") => config.selftest = SelfTest::Exception,
                ("selftest", _) => return Err(error("selftest must be none, panic or exception")),
                ("guest", s) => {
                    config.attack =
                        s.strip_prefix("attack:").and_then(perfvisor_abi::Attack::parse).map_or(0, |a| a as u32);
                    config.scenario = Scenario::parse(s).ok_or(error(
                        "guest must be suite, ept-violation, triple-fault, exit-status, bench, pmu-fuzz, hostile \
                         or attack:<name> (perfvisor_abi::Attack)",
                    ))?
                }
                ("vpmu", s) => {
                    config.vpmu = ModeRequest::parse(s).ok_or(error("vpmu must be auto, mediated, fallback or off"))?
                }
                ("vpmu_switch", "auto") => config.vpmu_msr_lists = false,
                ("vpmu_switch", "lists") => config.vpmu_msr_lists = true,
                ("vpmu_switch", _) => return Err(error("vpmu_switch must be auto or lists")),
                ("watchdog", ms) => {
                    config.watchdog_ms =
                        ms.parse().map_err(|_| error("watchdog must be a number of milliseconds (0: off)"))?
                }
                _ => return Err(error("unknown key (known: log, selftest, guest, vpmu, vpmu_switch, watchdog)")),
            }
        }
        Ok(config)
    }
}
