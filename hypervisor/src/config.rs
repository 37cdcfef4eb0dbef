//! The boot config: an optional text file passed as the bootloader ramdisk.
//!
//! ```text
//! # comment
//! log=debug          # error | warn | info | debug | trace
//! selftest=panic     # none | panic | exception: end in a deliberate failure
//! ```
//!
//! A malformed config is reported line by line and ends the run with a fail
//! verdict: a hypervisor that silently ignores its configuration would
//! mislead whoever reads the console.

use log::LevelFilter;

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
    };

    /// Parses the config text; the first bad line is an error.
    pub fn parse(text: &str) -> Result<Self, ConfigError<'_>> {
        let mut config = Self::DEFAULT;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let error = |problem| ConfigError {
                line: index + 1,
                text: raw,
                problem,
            };
            let (key, value) = line.split_once('=').ok_or(error("expected key=value"))?;
            match (key.trim(), value.trim()) {
                ("log", level) => {
                    config.log_level = Some(level.parse().map_err(|_| {
                        error("log must be one of off, error, warn, info, debug, trace")
                    })?)
                }
                ("selftest", "none") => config.selftest = SelfTest::None,
                ("selftest", "panic") => config.selftest = SelfTest::Panic,
                ("selftest", "exception") => config.selftest = SelfTest::Exception,
                ("selftest", _) => return Err(error("selftest must be none, panic or exception")),
                _ => return Err(error("unknown key (known: log, selftest)")),
            }
        }
        Ok(config)
    }
}
