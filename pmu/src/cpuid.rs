//! CPUID leaf 0AH, "Architectural Performance Monitoring" (SDM vol. 2A, CPUID;
//! vol. 3B §20.2.1–20.2.5).
//!
//! raw-cpuid decodes EAX/EBX/EDX of this leaf but ignores ECX, the v5
//! fixed-counter bitmap, so the whole leaf is decoded here.

use core::fmt;

/// The four registers a CPUID leaf returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidRegs {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

impl CpuidRegs {
    pub const fn new(eax: u32, ebx: u32, ecx: u32, edx: u32) -> Self {
        Self { eax, ebx, ecx, edx }
    }
}

/// The highest fixed-counter index perfvisor tracks. CPUID.0AH.ECX has 32
/// bits, but the GLOBAL_CTRL/STATUS layout puts fixed counter i at bit 32+i
/// and bit 48 is PERF_METRICS, so at most 16 fixed counters are addressable.
pub const MAX_FIXED_COUNTERS: u32 = 16;

/// A set of fixed counters (bit i = fixed counter i), possibly with holes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FixedCounterSet(pub u32);

impl FixedCounterSet {
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Fixed counters 0..n.
    pub const fn first(n: u32) -> Self {
        if n >= 32 {
            Self(u32::MAX)
        } else {
            Self((1u32 << n) - 1)
        }
    }

    pub const fn contains(self, index: u32) -> bool {
        index < 32 && self.0 & (1 << index) != 0
    }

    pub const fn count(self) -> u32 {
        self.0.count_ones()
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// One past the highest present counter (0 when empty).
    pub const fn end(self) -> u32 {
        32 - self.0.leading_zeros()
    }

    /// Whether the set is 0..n with no hole.
    pub const fn is_contiguous(self) -> bool {
        self.0 & self.0.wrapping_add(1) == 0
    }

    pub fn iter(self) -> impl Iterator<Item = u32> {
        (0..32).filter(move |&i| self.contains(i))
    }
}

impl fmt::Debug for FixedCounterSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Printed as `{0,1,2}`: the form the serial report and the tests use.
impl fmt::Display for FixedCounterSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (n, i) in self.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{i}")?;
        }
        f.write_str("}")
    }
}

/// Names of the architectural events by their CPUID.0AH.EBX bit
/// (SDM vol. 3B, Table 20-1 "UMask and Event Select Encodings for
/// Pre-Defined Architectural Performance Events").
pub const ARCH_EVENT_NAMES: [&str; 8] = [
    "core-cycles",
    "instructions-retired",
    "reference-cycles",
    "llc-references",
    "llc-misses",
    "branch-instructions-retired",
    "branch-misses-retired",
    "topdown-slots",
];

/// Decoded CPUID.0AH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchPerfmon {
    /// EAX[7:0]. 0 means no architectural PMU.
    pub version: u8,
    /// EAX[15:8].
    pub gp_counters: u8,
    /// EAX[23:16].
    pub gp_width: u8,
    /// EAX[31:24]: how many EBX bits are meaningful.
    pub event_vector_len: u8,
    /// EBX: bit i set = architectural event i is NOT available.
    pub events_unavailable: u32,
    /// The fixed counters that exist.
    pub fixed: FixedCounterSet,
    /// EDX[12:5]. Meaningful only when some fixed counter exists.
    pub fixed_width: u8,
    /// EDX[4:0]: the contiguous fixed counters 0..n.
    pub fixed_contiguous: u8,
    /// EDX[15] (v5): AnyThread is deprecated.
    pub anythread_deprecated: bool,
    /// The raw registers, kept for reports.
    pub raw: CpuidRegs,
}

impl ArchPerfmon {
    /// Decodes CPUID.0AH.
    ///
    /// The fixed-counter set follows SDM vol. 2A (CPUID leaf 0AH, ECX):
    /// "Fixed-function performance counter 'i' is supported if ECX[i] ||
    /// (EDX[4:0] > i)". ECX is the supported-fixed-counters bitmap from
    /// version 5 on and reserved before, so it is ignored below v5 (as KVM
    /// does); version 1 has no fixed counters at all (EDX is reserved).
    pub fn decode(leaf: CpuidRegs) -> Self {
        let version = (leaf.eax & 0xff) as u8;
        let fixed_contiguous = (leaf.edx & 0x1f) as u8;
        let fixed = if version < 2 {
            FixedCounterSet::empty()
        } else {
            let bitmap = if version >= 5 { leaf.ecx } else { 0 };
            FixedCounterSet(
                (bitmap | FixedCounterSet::first(u32::from(fixed_contiguous)).0)
                    & FixedCounterSet::first(MAX_FIXED_COUNTERS).0,
            )
        };
        Self {
            version,
            gp_counters: ((leaf.eax >> 8) & 0xff) as u8,
            gp_width: ((leaf.eax >> 16) & 0xff) as u8,
            event_vector_len: (leaf.eax >> 24) as u8,
            events_unavailable: leaf.ebx,
            fixed,
            fixed_width: if version < 2 { 0 } else { ((leaf.edx >> 5) & 0xff) as u8 },
            fixed_contiguous: if version < 2 { 0 } else { fixed_contiguous },
            anythread_deprecated: version >= 2 && leaf.edx & (1 << 15) != 0,
            raw: leaf,
        }
    }

    /// Whether an architectural PMU exists at all.
    pub fn present(&self) -> bool {
        self.version > 0
    }

    /// Whether architectural event `index` is available: its EBX bit is
    /// clear and it lies inside the event vector (an EBX bit beyond
    /// EAX[31:24] says nothing, so such an event is not available).
    pub fn event_available(&self, index: u32) -> bool {
        index < u32::from(self.event_vector_len) && index < 32 && self.events_unavailable & (1 << index) == 0
    }

    /// The available events as a bitmap (bit i = event i available).
    pub fn available_events(&self) -> u32 {
        (0..u32::from(self.event_vector_len).min(32))
            .filter(|&i| self.event_available(i))
            .fold(0, |acc, i| acc | (1 << i))
    }

    /// Mask of the GP-counter bits in GLOBAL_CTRL/STATUS.
    pub fn gp_mask(&self) -> u64 {
        if self.gp_counters >= 32 {
            u32::MAX as u64
        } else {
            (1u64 << self.gp_counters) - 1
        }
    }

    /// Mask of the fixed-counter bits (32+i) in GLOBAL_CTRL/STATUS.
    pub fn fixed_mask(&self) -> u64 {
        u64::from(self.fixed.0) << 32
    }
}

/// One line, as the serial report prints it:
/// `version 5, 8 GP counters x 48 bits, fixed counters {0,1,2,3} x 48 bits, events 0xff/8`.
impl fmt::Display for ArchPerfmon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.present() {
            return f.write_str("no architectural PMU (CPUID.0AH.EAX[7:0] = 0)");
        }
        write!(
            f,
            "version {}, {} GP counters x {} bits, fixed counters {} x {} bits, \
             available events {:#x} of {}",
            self.version,
            self.gp_counters,
            self.gp_width,
            self.fixed,
            self.fixed_width,
            self.available_events(),
            self.event_vector_len
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPUID.0AH as perfvisor's boot report printed it in Bochs 2.7,
    /// `cpu: model=tigerlake`: v5, 8 GP x 48, ECX=0xF, 4 contiguous x 48.
    const BOCHS_TIGERLAKE: CpuidRegs = CpuidRegs::new(0x0830_0805, 0, 0xf, 0x8604);
    /// The same for `corei7_skylake_x`: v4, 4 GP x 48, 3 fixed x 48.
    const BOCHS_SKYLAKE_X: CpuidRegs = CpuidRegs::new(0x0730_0404, 0, 0, 0x0603);

    #[test]
    fn tigerlake_v5_eight_gp_four_fixed() {
        let p = ArchPerfmon::decode(BOCHS_TIGERLAKE);
        assert_eq!(p.version, 5);
        assert_eq!((p.gp_counters, p.gp_width), (8, 48));
        assert_eq!(p.fixed, FixedCounterSet(0xf));
        assert_eq!(p.fixed_width, 48);
        assert!(p.anythread_deprecated);
        assert_eq!(p.gp_mask(), 0xff);
        assert_eq!(p.fixed_mask(), 0xf << 32);
    }

    #[test]
    fn skylake_x_v4_four_gp_three_fixed() {
        let p = ArchPerfmon::decode(BOCHS_SKYLAKE_X);
        assert_eq!(p.version, 4);
        assert_eq!((p.gp_counters, p.gp_width), (4, 48));
        assert_eq!(p.fixed, FixedCounterSet(0x7));
        assert!(p.to_string().starts_with("version 4, 4 GP counters x 48 bits, fixed counters {0,1,2} x 48 bits"));
    }

    #[test]
    fn non_contiguous_fixed_set_from_ecx_and_edx() {
        // A Clearwater Forest-like layout: ECX = 0x77, EDX[4:0] = 3 (seed 002).
        let p = ArchPerfmon::decode(CpuidRegs::new(0x0830_0805, 0, 0x77, 0x0603));
        assert_eq!(p.fixed, FixedCounterSet(0x77));
        assert!(!p.fixed.contains(3));
        assert!(p.fixed.contains(6));
        assert!(!p.fixed.is_contiguous());
        assert_eq!(p.fixed.to_string(), "{0,1,2,4,5,6}");
        // The SDM rule is an OR: EDX alone can add counters ECX leaves out.
        let p = ArchPerfmon::decode(CpuidRegs::new(0x0830_0805, 0, 0x5, 0x0601));
        assert_eq!(p.fixed, FixedCounterSet(0x5));
        let p = ArchPerfmon::decode(CpuidRegs::new(0x0830_0805, 0, 0x4, 0x0602));
        assert_eq!(p.fixed, FixedCounterSet(0x7));
    }

    #[test]
    fn ecx_is_ignored_before_v5_and_v1_has_no_fixed_counters() {
        let p = ArchPerfmon::decode(CpuidRegs::new(0x0730_0404, 0, 0xf0, 0x0603));
        assert_eq!(p.fixed, FixedCounterSet(0x7));
        let p = ArchPerfmon::decode(CpuidRegs::new(0x0728_0201, 0, 0xf, 0x0603));
        assert!(p.fixed.is_empty());
        assert_eq!(p.fixed_width, 0);
    }

    #[test]
    fn event_vector_longer_than_eight_and_bits_beyond_it() {
        // 13 events, event 2 (ref cycles) and 12 unavailable.
        let p = ArchPerfmon::decode(CpuidRegs::new(0x0d30_0805, 0x1004, 0xf, 0x8604));
        assert!(p.event_available(11));
        assert!(!p.event_available(12));
        assert!(!p.event_available(2));
        assert!(!p.event_available(13), "beyond the vector length");
        assert_eq!(p.available_events(), 0x0ffb);
    }

    #[test]
    fn no_pmu() {
        let p = ArchPerfmon::decode(CpuidRegs::default());
        assert!(!p.present());
        assert_eq!(p.to_string(), "no architectural PMU (CPUID.0AH.EAX[7:0] = 0)");
    }

    #[test]
    fn fixed_set_helpers() {
        assert_eq!(FixedCounterSet::first(0), FixedCounterSet::empty());
        assert_eq!(FixedCounterSet::first(3).end(), 3);
        assert_eq!(FixedCounterSet(0x70).end(), 7);
        assert!(FixedCounterSet::first(4).is_contiguous());
        assert_eq!(FixedCounterSet::empty().to_string(), "{}");
    }
}
