//! Choosing how the guest's PMU runs: mediated, fallback or off — with the
//! reason, which the hypervisor logs.

use crate::host::HostPmu;
use crate::vpmu::Mode;
use core::fmt;

/// What the boot config asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeRequest {
    Auto,
    Mediated,
    Fallback,
    Off,
}

impl ModeRequest {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auto" => Self::Auto,
            "mediated" => Self::Mediated,
            "fallback" => Self::Fallback,
            "off" => Self::Off,
            _ => return None,
        })
    }
}

/// The VMX controls the switch relies on (SDM vol. 3C §25.7.1, §25.8.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxPmuControls {
    pub load_global_ctrl_on_entry: bool,
    pub load_global_ctrl_on_exit: bool,
    /// Without it, GLOBAL_CTRL round-trips through one MSR-list entry (VM-exit
    /// store and VM-entry load list).
    pub save_global_ctrl_on_exit: bool,
}

/// Why the PMU cannot be given to the guest at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoPmu {
    NoArchitecturalPmu,
    VersionOne,
    MsrFaults { msr: u32, version: u8 },
}

impl fmt::Display for NoPmu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoArchitecturalPmu => f.write_str("the CPU has no architectural PMU (CPUID.0AH.EAX[7:0] = 0)"),
            Self::VersionOne => f.write_str("the host PMU is version 1 (no IA32_PERF_GLOBAL_CTRL)"),
            Self::MsrFaults { msr, version } => write!(
                f,
                "CPUID.0AH advertises PMU version {version} but MSR {msr:#x} raises #GP (an emulator without PMU MSRs, e.g. Bochs without its msrs= file)"
            ),
        }
    }
}

/// The chosen mode and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeChoice {
    pub mode: Mode,
    pub reason: ModeReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeReason {
    Requested,
    HostV4,
    HostV2OrV3(u8),
    /// v4+ by CPUID, but STATUS_SET/RESET do not act on GLOBAL_STATUS.
    StatusSetIneffective(u8),
    /// Fallback asked for on a v4+ host that counts: a GLOBAL_STATUS kept in
    /// software could not freeze its counters (CTR_Frz) for a v4+ guest.
    FallbackCannotFreeze(u8),
    Unavailable(NoPmu),
}

impl fmt::Display for ModeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Requested => f.write_str("requested by the boot config"),
            Self::HostV4 => f.write_str("host PMU v4+: GLOBAL_STATUS is restored with IA32_PERF_GLOBAL_STATUS_SET"),
            Self::HostV2OrV3(v) => {
                write!(f, "host PMU v{v}: no IA32_PERF_GLOBAL_STATUS_SET, so GLOBAL_STATUS is emulated")
            }
            Self::FallbackCannotFreeze(v) => write!(
                f,
                "on this v{v} host a GLOBAL_STATUS kept in software could not freeze the counters (CTR_Frz); use mediated"
            ),
            Self::StatusSetIneffective(v) => write!(
                f,
                "host PMU v{v}, but IA32_PERF_GLOBAL_STATUS_SET/RESET do not act on GLOBAL_STATUS \
                 (an emulator's plain registers?), so GLOBAL_STATUS is emulated"
            ),
            Self::Unavailable(why) => write!(f, "{why}"),
        }
    }
}

/// A requested mode the host cannot run, naming what is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeError {
    pub requested: ModeRequest,
    pub missing: ModeReason,
    pub host_version: u8,
}

impl fmt::Display for ModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.requested, self.missing) {
            (ModeRequest::Mediated, ModeReason::HostV2OrV3(v)) => write!(
                f,
                "vpmu=mediated needs host PMU version 4 (IA32_PERF_GLOBAL_STATUS_SET); this host has version {v}"
            ),
            (ModeRequest::Mediated, ModeReason::StatusSetIneffective(v)) => write!(
                f,
                "vpmu=mediated needs a working IA32_PERF_GLOBAL_STATUS_SET; this v{v} host's has no effect on GLOBAL_STATUS"
            ),
            (r, why) => write!(f, "vpmu={r:?} cannot run here: {why}"),
        }
    }
}

/// Picks the mode. `faulting_msr`: the first PMU MSR that raised #GP when
/// probed ([`HostPmu::first_faulting_msr`]); `status_set_works`:
/// [`HostPmu::status_set_works`].
pub fn choose(
    host: &HostPmu,
    faulting_msr: Option<u32>,
    status_set_works: bool,
    request: ModeRequest,
) -> Result<ModeChoice, ModeError> {
    let version = host.layout.version;
    let unavailable = if version == 0 {
        Some(NoPmu::NoArchitecturalPmu)
    } else if version == 1 {
        Some(NoPmu::VersionOne)
    } else {
        faulting_msr.map(|msr| NoPmu::MsrFaults { msr, version })
    };
    let error = |missing| ModeError { requested: request, missing, host_version: version };
    match (request, unavailable) {
        (ModeRequest::Off, _) => Ok(ModeChoice { mode: Mode::Off, reason: ModeReason::Requested }),
        (ModeRequest::Auto, Some(why)) => Ok(ModeChoice { mode: Mode::Off, reason: ModeReason::Unavailable(why) }),
        (_, Some(why)) => Err(error(ModeReason::Unavailable(why))),
        (ModeRequest::Mediated, None) if version < 4 => Err(error(ModeReason::HostV2OrV3(version))),
        (ModeRequest::Mediated, None) if !status_set_works => Err(error(ModeReason::StatusSetIneffective(version))),
        (ModeRequest::Mediated, None) => Ok(ModeChoice { mode: Mode::Mediated, reason: ModeReason::Requested }),
        (ModeRequest::Fallback, None) if version >= 4 && status_set_works => {
            Err(error(ModeReason::FallbackCannotFreeze(version)))
        }
        (ModeRequest::Fallback, None) => Ok(ModeChoice { mode: Mode::Fallback, reason: ModeReason::Requested }),
        (ModeRequest::Auto, None) if version >= 4 && status_set_works => {
            Ok(ModeChoice { mode: Mode::Mediated, reason: ModeReason::HostV4 })
        }
        (ModeRequest::Auto, None) if version >= 4 => {
            Ok(ModeChoice { mode: Mode::Fallback, reason: ModeReason::StatusSetIneffective(version) })
        }
        (ModeRequest::Auto, None) => Ok(ModeChoice { mode: Mode::Fallback, reason: ModeReason::HostV2OrV3(version) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuid::CpuidRegs;
    use crate::host::HostPmuInputs;

    fn host(eax: u32) -> HostPmu {
        HostPmu::discover(&HostPmuInputs {
            leaf_0a: CpuidRegs::new(eax, 0, 0, 0x0603),
            pdcm: true,
            perf_capabilities: Some(0x2000),
            leaf_23: None,
        })
    }

    #[test]
    fn automatic_choice_and_reasons() {
        let c = choose(&host(0x0730_0404), None, true, ModeRequest::Auto).unwrap();
        assert_eq!(c.mode, Mode::Mediated);
        let c = choose(&host(0x0730_0403), None, false, ModeRequest::Auto).unwrap();
        assert_eq!((c.mode, c.reason), (Mode::Fallback, ModeReason::HostV2OrV3(3)));
        let c = choose(&host(0x0730_0404), Some(0x38f), true, ModeRequest::Auto).unwrap();
        assert_eq!(c.mode, Mode::Off);
        assert!(c.reason.to_string().contains("MSR 0x38f raises #GP"));
    }

    #[test]
    fn a_request_the_host_cannot_meet_is_an_error_naming_what_is_missing() {
        let e = choose(&host(0x0730_0403), None, false, ModeRequest::Mediated).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vpmu=mediated needs host PMU version 4 (IA32_PERF_GLOBAL_STATUS_SET); this host has version 3"
        );
        let e = choose(&host(0x0730_0404), Some(0x38f), true, ModeRequest::Fallback).unwrap_err();
        assert!(e.to_string().contains("raises #GP"));
        assert_eq!(choose(&host(0x0730_0404), None, true, ModeRequest::Off).unwrap().mode, Mode::Off);
        let c = choose(&host(0x0730_0404), None, false, ModeRequest::Auto).unwrap();
        assert_eq!((c.mode, c.reason), (Mode::Fallback, ModeReason::StatusSetIneffective(4)));
        assert!(choose(&host(0x0730_0404), None, false, ModeRequest::Mediated).is_err());
        let e = choose(&host(0x0730_0404), None, true, ModeRequest::Fallback).unwrap_err();
        assert!(e.to_string().contains("could not freeze the counters"));
        let c = choose(&host(0x0730_0404), None, false, ModeRequest::Fallback).unwrap();
        assert_eq!(c.mode, Mode::Fallback, "fallback is fine where STATUS_SET does nothing");
    }
}
