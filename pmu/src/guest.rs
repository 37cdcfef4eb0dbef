//! The guest's PMU: derived from the host's, narrowed (never widened) by
//! configuration, and presented through CPUID.0AH / 23H and
//! IA32_PERF_CAPABILITIES.
//!
//! Version policy: a v5 host gives a v5 guest, v4 a v4 guest, v2/v3 hosts a
//! v2/v3 guest (mediated mode needs v4's STATUS_SET; below it GLOBAL_STATUS
//! is emulated). Counter widths always equal the host's: the guest's
//! counters are the hardware's.

use crate::cpuid::{CpuidRegs, FixedCounterSet};
use crate::host::HostPmu;
use crate::layout::PmuLayout;
use crate::PerfCapabilities;
use core::fmt;

/// Narrowing overrides; `None` = as the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestPmuRequest {
    /// 0 = no PMU for the guest.
    pub version: Option<u8>,
    pub gp_counters: Option<u8>,
    pub fixed: Option<FixedCounterSet>,
    /// Architectural events offered (bit i = event i available).
    pub events: Option<u32>,
    pub perf_capabilities: Option<PerfCapabilities>,
}

/// A request the host cannot satisfy, in words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestConfigError {
    VersionAboveHost {
        requested: u8,
        host: u8,
    },
    /// Version 1 exists architecturally, but perfvisor needs GLOBAL_CTRL (v2+).
    VersionOneUnsupported,
    MoreGpThanHost {
        requested: u8,
        host: u8,
    },
    FixedNotOnHost {
        requested: FixedCounterSet,
        host: FixedCounterSet,
    },
    /// Below v5 the fixed counters are enumerated as a count, so they must be 0..n.
    FixedHoleNeedsV5 {
        requested: FixedCounterSet,
        version: u8,
    },
    EventsNotOnHost {
        missing: u32,
    },
    CapabilitiesNotOnHost {
        missing: u64,
    },
}

impl fmt::Display for GuestConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VersionAboveHost { requested, host } => {
                write!(f, "guest PMU version {requested} requested but the host has version {host}")
            }
            Self::VersionOneUnsupported => f.write_str("guest PMU version 1 is not supported (use 0 for none, or 2..5)"),
            Self::MoreGpThanHost { requested, host } => {
                write!(f, "{requested} GP counters requested but the host has {host}")
            }
            Self::FixedNotOnHost { requested, host } => {
                write!(f, "fixed counters {requested} requested but the host has {host}")
            }
            Self::FixedHoleNeedsV5 { requested, version } => write!(
                f,
                "fixed counters {requested} have a hole, which CPUID.0AH can only describe from version 5 (guest version {version})"
            ),
            Self::EventsNotOnHost { missing } => write!(f, "architectural events {missing:#x} requested but not on the host"),
            Self::CapabilitiesNotOnHost { missing } => {
                write!(f, "PERF_CAPABILITIES bits {missing:#x} requested but not offered to guests by this host")
            }
        }
    }
}

/// What the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPmu {
    pub layout: PmuLayout,
    /// Bit i = architectural event i available.
    pub events: u32,
    pub event_vector_len: u8,
    /// Expose leaf 23H (the host has it and the guest is v5).
    pub leaf_23: bool,
}

/// PERF_CAPABILITIES bits a guest may see: FW_WRITE (its counters are the
/// hardware's) and PERF_METRICS (with fixed counter 3). LBR and PEBS
/// formats are not virtualized.
const GUEST_CAPABILITIES: PerfCapabilities = PerfCapabilities::FW_WRITE.union(PerfCapabilities::PERF_METRICS);

impl GuestPmu {
    /// No PMU: CPUID.0AH reads 0, every PMU MSR #GPs.
    pub fn none(host: &HostPmu) -> Self {
        let mut layout = host.layout;
        layout.version = 0;
        layout.gp_counters = 0;
        layout.fixed = FixedCounterSet::empty();
        layout.pdcm = false;
        layout.perf_capabilities = PerfCapabilities::empty();
        Self { layout, events: 0, event_vector_len: 0, leaf_23: false }
    }

    pub fn derive(host: &HostPmu, req: &GuestPmuRequest) -> Result<Self, GuestConfigError> {
        let h = &host.layout;
        let version = match req.version {
            Some(0) => return Ok(Self::none(host)),
            Some(1) => return Err(GuestConfigError::VersionOneUnsupported),
            Some(v) if v > h.version => {
                return Err(GuestConfigError::VersionAboveHost { requested: v, host: h.version })
            }
            Some(v) => v,
            // Beyond v5 nothing is known to perfvisor; v1 hosts get no guest PMU.
            None if h.version < 2 => return Ok(Self::none(host)),
            None => h.version.min(5),
        };
        let gp_counters = match req.gp_counters {
            Some(n) if n > h.gp_counters => {
                return Err(GuestConfigError::MoreGpThanHost { requested: n, host: h.gp_counters })
            }
            Some(n) => n,
            None => h.gp_counters,
        };
        let fixed = match req.fixed {
            Some(set) if set.0 & !h.fixed.0 != 0 => {
                return Err(GuestConfigError::FixedNotOnHost { requested: set, host: h.fixed })
            }
            Some(set) if version < 5 && !set.is_contiguous() => {
                return Err(GuestConfigError::FixedHoleNeedsV5 { requested: set, version })
            }
            Some(set) => set,
            // Below v5 only the contiguous prefix of the host's set is describable.
            None if version < 5 => FixedCounterSet::first(h.fixed.0.trailing_ones()),
            None => h.fixed,
        };
        let host_events = host.arch.available_events();
        let events = match req.events {
            Some(e) if e & !host_events != 0 => {
                return Err(GuestConfigError::EventsNotOnHost { missing: e & !host_events })
            }
            Some(e) => e,
            None => host_events,
        };
        let mut offered = if h.pdcm { h.perf_capabilities & GUEST_CAPABILITIES } else { PerfCapabilities::empty() };
        // IA32_PERF_METRICS is derived from fixed counter 3 (TOPDOWN.SLOTS):
        // a guest without FC3 is not offered it.
        if !fixed.contains(3) {
            offered.remove(PerfCapabilities::PERF_METRICS);
        }
        let caps = match req.perf_capabilities {
            Some(c) if !offered.contains(c) => {
                return Err(GuestConfigError::CapabilitiesNotOnHost { missing: (c & !offered).bits() })
            }
            Some(c) => c,
            None => offered,
        };
        let layout = PmuLayout {
            version,
            gp_counters,
            gp_width: h.gp_width,
            fixed,
            fixed_width: h.fixed_width,
            anythread_deprecated: h.anythread_deprecated || version >= 5,
            pdcm: h.pdcm,
            perf_capabilities: caps,
        };
        Ok(Self {
            layout,
            events,
            event_vector_len: host.arch.event_vector_len,
            leaf_23: host.has_leaf_23 && version >= 5,
        })
    }

    /// The guest's CPUID.0AH (SDM vol. 2A, CPUID leaf 0AH).
    pub fn cpuid_0a(&self) -> CpuidRegs {
        let l = &self.layout;
        if l.version == 0 {
            return CpuidRegs::default();
        }
        let len = self.event_vector_len;
        let vector_mask = if len >= 32 { u32::MAX } else { (1u32 << len) - 1 };
        let eax =
            u32::from(l.version) | u32::from(l.gp_counters) << 8 | u32::from(l.gp_width) << 16 | u32::from(len) << 24;
        let ebx = !self.events & vector_mask;
        // EDX[4:0]: the contiguous fixed counters from 0; ECX (v5): all of them.
        let contiguous = l.fixed.0.trailing_ones();
        let ecx = if l.version >= 5 { l.fixed.0 } else { 0 };
        let edx = contiguous
            | if l.fixed.is_empty() { 0 } else { u32::from(l.fixed_width) << 5 }
            | if l.anythread_deprecated { 1 << 15 } else { 0 };
        CpuidRegs::new(eax, ebx, ecx, edx)
    }

    /// The guest's leaf 23H: sub-leaf 0 says only sub-leaf 1 is valid;
    /// sub-leaf 1 gives the GP and fixed counter bitmaps.
    pub fn cpuid_23(&self, subleaf: u32) -> CpuidRegs {
        match (self.leaf_23, subleaf) {
            (true, 0) => CpuidRegs::new(1 << 1, 0, 0, 0),
            (true, 1) => CpuidRegs::new((1u32 << self.layout.gp_counters) - 1, self.layout.fixed.0, 0, 0),
            _ => CpuidRegs::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuid::ArchPerfmon;
    use crate::host::HostPmuInputs;

    fn host(eax: u32, ecx: u32, edx: u32, caps: u64) -> HostPmu {
        HostPmu::discover(&HostPmuInputs {
            leaf_0a: CpuidRegs::new(eax, 0, ecx, edx),
            pdcm: true,
            perf_capabilities: Some(caps),
            leaf_23: None,
        })
    }

    fn tigerlake() -> HostPmu {
        host(0x0830_0805, 0xf, 0x8604, 0xf4c5)
    }

    #[test]
    fn v5_host_gives_a_v5_guest_whose_cpuid_decodes_back() {
        let g = GuestPmu::derive(&tigerlake(), &GuestPmuRequest::default()).unwrap();
        let leaf = g.cpuid_0a();
        assert_eq!(leaf, CpuidRegs::new(0x0830_0805, 0, 0xf, 0x8604));
        let back = ArchPerfmon::decode(leaf);
        assert_eq!((back.version, back.gp_counters, back.fixed), (5, 8, FixedCounterSet(0xf)));
        assert_eq!(g.layout.perf_capabilities, PerfCapabilities::FW_WRITE | PerfCapabilities::PERF_METRICS);
    }

    #[test]
    fn v4_host_gives_v4_and_v3_host_v3() {
        let g = GuestPmu::derive(&host(0x0730_0404, 0, 0x0603, 0x2000), &GuestPmuRequest::default()).unwrap();
        assert_eq!(g.cpuid_0a(), CpuidRegs::new(0x0730_0404, 0, 0, 0x0603));
        let g = GuestPmu::derive(&host(0x0730_0403, 0, 0x0603, 0x2000), &GuestPmuRequest::default()).unwrap();
        assert_eq!(g.layout.version, 3);
    }

    #[test]
    fn narrowing_is_allowed_widening_is_an_error() {
        let h = tigerlake();
        let req = GuestPmuRequest { version: Some(4), gp_counters: Some(2), ..Default::default() };
        let g = GuestPmu::derive(&h, &req).unwrap();
        assert_eq!(g.cpuid_0a().eax, 0x0830_0204);
        assert_eq!(g.cpuid_0a().ecx, 0, "no fixed bitmap below v5");
        let too_many = GuestPmuRequest { gp_counters: Some(9), ..Default::default() };
        assert_eq!(
            GuestPmu::derive(&h, &too_many).unwrap_err().to_string(),
            "9 GP counters requested but the host has 8"
        );
        let v6 = GuestPmuRequest { version: Some(6), ..Default::default() };
        assert!(matches!(GuestPmu::derive(&h, &v6), Err(GuestConfigError::VersionAboveHost { .. })));
    }

    #[test]
    fn fixed_holes_need_v5() {
        let h = tigerlake();
        let hole = GuestPmuRequest { fixed: Some(FixedCounterSet(0b101)), ..Default::default() };
        let g = GuestPmu::derive(&h, &hole).unwrap();
        assert_eq!((g.cpuid_0a().ecx, g.cpuid_0a().edx & 0x1f), (0b101, 1));
        let v4_hole = GuestPmuRequest { version: Some(4), ..hole };
        assert!(matches!(GuestPmu::derive(&h, &v4_hole), Err(GuestConfigError::FixedHoleNeedsV5 { .. })));
        // A host with a hole gives a v4 guest only the contiguous prefix.
        let cwf = host(0x0830_0805, 0x77, 0x0603, 0x2000);
        let g = GuestPmu::derive(&cwf, &GuestPmuRequest { version: Some(4), ..Default::default() }).unwrap();
        assert_eq!(g.layout.fixed, FixedCounterSet(0x7));
    }

    #[test]
    fn off_means_all_zero_cpuid() {
        let g = GuestPmu::derive(&tigerlake(), &GuestPmuRequest { version: Some(0), ..Default::default() }).unwrap();
        assert_eq!(g.cpuid_0a(), CpuidRegs::default());
        assert!(!g.layout.pdcm);
    }

    #[test]
    fn events_and_capabilities_only_narrow() {
        let h = tigerlake();
        let g = GuestPmu::derive(&h, &GuestPmuRequest { events: Some(0b11), ..Default::default() }).unwrap();
        assert_eq!(g.cpuid_0a().ebx, 0xfc, "events 2..7 marked unavailable");
        let lbr = GuestPmuRequest { perf_capabilities: Some(PerfCapabilities::PEBS_TRAP), ..Default::default() };
        assert!(matches!(GuestPmu::derive(&h, &lbr), Err(GuestConfigError::CapabilitiesNotOnHost { .. })));
    }

    #[test]
    fn perf_metrics_only_with_fixed_counter_3() {
        let h = tigerlake();
        let no_fc3 = GuestPmuRequest { fixed: Some(FixedCounterSet(0x7)), ..Default::default() };
        let g = GuestPmu::derive(&h, &no_fc3).unwrap();
        assert_eq!(g.layout.perf_capabilities, PerfCapabilities::FW_WRITE);
        let asked = GuestPmuRequest { perf_capabilities: Some(PerfCapabilities::PERF_METRICS), ..no_fc3 };
        assert!(matches!(GuestPmu::derive(&h, &asked), Err(GuestConfigError::CapabilitiesNotOnHost { .. })));
    }
}
