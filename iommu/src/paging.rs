//! DMA translation tables (Intel VT-d spec §3.4-3.6, §9.1, §9.3, §9.8):
//! one domain for every device — all 256 buses × 256 device/functions —
//! whose second-level tables map the given ranges (the guest's RAM and the
//! RMRRs) identity, read/write, and nothing else. A DMA anywhere else (the
//! hypervisor's memory, its tables, holes) faults in the remapping unit.
//!
//! Legacy-mode structures (RTADDR_REG.TTM = 00):
//!
//! - root table: 4 KiB, 256 entries of 128 bits, one per bus; bit 0 present,
//!   bits 63:12 the context-table pointer. Every bus points at the same
//!   context table.
//! - context table: 4 KiB, 256 entries of 128 bits, one per device/function;
//!   bit 0 present, bit 1 fault processing disable (0: faults are
//!   reported), bits 3:2 translation type (00: untranslated requests go
//!   through the second-level tables; no pass-through, no device-TLB),
//!   bits 63:12 the second-level table pointer; bits 66:64 address width
//!   (001: 39 bits, 3 levels; 010: 48 bits, 4 levels), bits 87:72 the
//!   domain ID.
//! - second-level tables: 512 entries of 64 bits, as in the EPT: bit 0
//!   read, bit 1 write, bit 7 page size (a 2-MiB or 1-GiB leaf, where the
//!   unit's CAP.SLLPS allows), bits 51:12 the address. Execute (bit 2),
//!   the memory-type bits and snoop/TM are left 0.
//!
//! Tables come from a [`FrameSource`] (the same pattern as the EPT builder
//! in `vmx`), so the builder and the hardware-like walk in
//! [`DmaDomain::translate`] run in host tests.

use crate::regs::Capability;
use core::fmt;
use core::ops::Range;

/// Where the translation tables come from.
pub trait FrameSource {
    /// A zeroed 4-KiB frame's physical address.
    fn allocate(&mut self) -> Option<u64>;
    /// The 512 entries of the table at physical address `phys`.
    fn table(&mut self, phys: u64) -> &mut [u64; 512];
}

const PAGE: u64 = 4096;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Second-level entry bits.
pub const SL_READ: u64 = 1 << 0;
pub const SL_WRITE: u64 = 1 << 1;
pub const SL_PAGE_SIZE: u64 = 1 << 7;
/// Root and context entry: present.
pub const PRESENT: u64 = 1;

/// The second-level walk's depth (the context entry's AW; CAP.SAGAW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Levels {
    /// 39-bit guest address width.
    Three,
    /// 48-bit guest address width.
    Four,
}

impl Levels {
    pub fn count(self) -> u8 {
        match self {
            Self::Three => 3,
            Self::Four => 4,
        }
    }

    /// Input address bits translated.
    pub fn width(self) -> u32 {
        12 + 9 * u32::from(self.count())
    }

    /// The context entry's AW field.
    pub fn aw(self) -> u64 {
        match self {
            Self::Three => 0b001,
            Self::Four => 0b010,
        }
    }
}

/// How the domain's tables are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    pub levels: Levels,
    /// 2-MiB leaves may be used (CAP.SLLPS bit 0).
    pub pages_2m: bool,
    /// 1-GiB leaves may be used (CAP.SLLPS bit 1).
    pub pages_1g: bool,
    /// The domain ID in every context entry (not 0: with CAP.CM set,
    /// domain 0 is reserved).
    pub domain_id: u16,
}

impl DomainConfig {
    /// The domain ID used.
    pub const DOMAIN: u16 = 1;

    /// The deepest walk the unit supports among 4 and 3 levels, and its
    /// large pages.
    pub fn from_capability(cap: Capability) -> Result<Self, PagingError> {
        let levels = if cap.supports_4_level() {
            Levels::Four
        } else if cap.supports_3_level() {
            Levels::Three
        } else {
            return Err(PagingError::NoSupportedWidth { sagaw: cap.sagaw() });
        };
        Ok(Self { levels, pages_2m: cap.pages_2m(), pages_1g: cap.pages_1g(), domain_id: Self::DOMAIN })
    }
}

/// Why the tables could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PagingError {
    OutOfFrames,
    /// A range not 4-KiB aligned at both ends, or empty.
    Misaligned(Range<u64>),
    /// A range ends above what the walk translates.
    BeyondAddressWidth {
        range: Range<u64>,
        width: u32,
    },
    /// A range to map overlaps memory that must stay unreachable (the
    /// hypervisor's).
    Forbidden {
        range: Range<u64>,
        forbidden: Range<u64>,
    },
    /// The unit supports neither a 3- nor a 4-level walk.
    NoSupportedWidth {
        sagaw: u8,
    },
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfFrames => f.write_str("out of frames for the DMA translation tables"),
            Self::Misaligned(r) => write!(f, "range {:#x}..{:#x} is empty or not 4-KiB aligned", r.start, r.end),
            Self::BeyondAddressWidth { range, width } => {
                write!(f, "range {:#x}..{:#x} ends above the {width}-bit DMA address width", range.start, range.end)
            }
            Self::Forbidden { range, forbidden } => write!(
                f,
                "range {:#x}..{:#x} overlaps protected memory {:#x}..{:#x}",
                range.start, range.end, forbidden.start, forbidden.end
            ),
            Self::NoSupportedWidth { sagaw } => {
                write!(f, "the unit supports neither 3- nor 4-level tables (CAP.SAGAW {sagaw:#07b})")
            }
        }
    }
}

/// Where the hardware-like walk stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    RootNotPresent {
        bus: u8,
    },
    ContextNotPresent {
        bus: u8,
        devfn: u8,
    },
    /// Translation type other than 00 (which would let requests through untranslated).
    TranslationType(u8),
    /// An AW value this builder never writes.
    AddressWidth(u8),
    /// Above the walk's input width.
    BeyondAddressWidth {
        width: u32,
    },
    /// A second-level entry with neither read nor write, at this level (1: 4-KiB table).
    NotMapped {
        level: u8,
    },
}

/// A translated DMA address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub phys: u64,
    pub read: bool,
    pub write: bool,
    pub page_size: u64,
    pub domain_id: u16,
}

fn page_size(level: u8) -> u64 {
    1 << (12 + 9 * (u32::from(level) - 1))
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// The root table, the shared context table and the domain's second-level tables.
#[derive(Clone, Debug)]
pub struct DmaDomain {
    root_table: u64,
    context_table: u64,
    second_level: u64,
    config: DomainConfig,
}

impl DmaDomain {
    /// Builds the tables: `guest_ram` and `rmrrs` mapped identity,
    /// read/write; every range checked against `forbidden` first.
    pub fn build(
        frames: &mut impl FrameSource,
        config: DomainConfig,
        guest_ram: &[Range<u64>],
        rmrrs: &[Range<u64>],
        forbidden: &[Range<u64>],
    ) -> Result<Self, PagingError> {
        let width = config.levels.width();
        for r in guest_ram.iter().chain(rmrrs) {
            if r.start >= r.end || !r.start.is_multiple_of(PAGE) || !r.end.is_multiple_of(PAGE) {
                return Err(PagingError::Misaligned(r.clone()));
            }
            if r.end > 1 << width {
                return Err(PagingError::BeyondAddressWidth { range: r.clone(), width });
            }
            if let Some(f) = forbidden.iter().find(|f| overlaps(r, f)) {
                return Err(PagingError::Forbidden { range: r.clone(), forbidden: f.clone() });
            }
        }
        let second_level = frames.allocate().ok_or(PagingError::OutOfFrames)?;
        let domain = Self { root_table: 0, context_table: 0, second_level, config };
        for r in guest_ram.iter().chain(rmrrs) {
            domain.map_level(frames, second_level, config.levels.count(), 0, r.start, r.end)?;
        }
        // Present bits last: context entries once the tables exist, root
        // entries once the context table is complete.
        let context_table = frames.allocate().ok_or(PagingError::OutOfFrames)?;
        let low = second_level | PRESENT; // TT = 00, FPD = 0
        let high = config.levels.aw() | u64::from(config.domain_id) << 8;
        let ctx = frames.table(context_table);
        for devfn in 0..256 {
            ctx[2 * devfn] = low;
            ctx[2 * devfn + 1] = high;
        }
        let root_table = frames.allocate().ok_or(PagingError::OutOfFrames)?;
        let root = frames.table(root_table);
        for bus in 0..256 {
            root[2 * bus] = context_table | PRESENT;
            root[2 * bus + 1] = 0;
        }
        Ok(Self { root_table, context_table, ..domain })
    }

    /// The root table's physical address (for RTADDR_REG, legacy mode).
    pub fn root_table(&self) -> u64 {
        self.root_table
    }

    /// The context table every bus shares.
    pub fn context_table(&self) -> u64 {
        self.context_table
    }

    /// The second-level tables' root.
    pub fn second_level(&self) -> u64 {
        self.second_level
    }

    pub fn config(&self) -> DomainConfig {
        self.config
    }

    fn map_level(
        &self,
        frames: &mut impl FrameSource,
        table: u64,
        level: u8,
        base: u64,
        start: u64,
        end: u64,
    ) -> Result<(), PagingError> {
        let size = page_size(level);
        let first = (start - base) / size;
        let last = (end - base).div_ceil(size).min(512);
        for index in first..last {
            let entry_base = base + index * size;
            let (lo, hi) = (start.max(entry_base), end.min(entry_base + size));
            let e = frames.table(table)[index as usize];
            let present = e & (SL_READ | SL_WRITE) != 0;
            if present && (level == 1 || e & SL_PAGE_SIZE != 0) {
                // Already mapped identity, read/write (every mapping here is).
                continue;
            }
            let whole = lo == entry_base && hi == entry_base + size;
            let leaf_ok = match level {
                1 => true,
                2 => self.config.pages_2m,
                3 => self.config.pages_1g,
                _ => false,
            };
            if whole && leaf_ok && !present {
                let ps = if level > 1 { SL_PAGE_SIZE } else { 0 };
                frames.table(table)[index as usize] = entry_base | SL_READ | SL_WRITE | ps;
                continue;
            }
            let next = if present {
                e & ADDR_MASK
            } else {
                let t = frames.allocate().ok_or(PagingError::OutOfFrames)?;
                frames.table(table)[index as usize] = t | SL_READ | SL_WRITE;
                t
            };
            self.map_level(frames, next, level - 1, entry_base, lo, hi)?;
        }
        Ok(())
    }

    /// Translates a DMA to `addr` from device `bus:devfn` as the remapping
    /// hardware would: root entry, context entry, second-level walk.
    pub fn translate(
        &self,
        frames: &mut impl FrameSource,
        bus: u8,
        devfn: u8,
        addr: u64,
    ) -> Result<Translation, Fault> {
        let root = frames.table(self.root_table)[2 * usize::from(bus)];
        if root & PRESENT == 0 {
            return Err(Fault::RootNotPresent { bus });
        }
        let ctx_table = frames.table(root & ADDR_MASK);
        let (low, high) = (ctx_table[2 * usize::from(devfn)], ctx_table[2 * usize::from(devfn) + 1]);
        if low & PRESENT == 0 {
            return Err(Fault::ContextNotPresent { bus, devfn });
        }
        let tt = ((low >> 2) & 3) as u8;
        if tt != 0 {
            return Err(Fault::TranslationType(tt));
        }
        let levels = match high & 7 {
            0b001 => Levels::Three,
            0b010 => Levels::Four,
            aw => return Err(Fault::AddressWidth(aw as u8)),
        };
        let domain_id = ((high >> 8) & 0xffff) as u16;
        if addr >> levels.width() != 0 {
            return Err(Fault::BeyondAddressWidth { width: levels.width() });
        }
        let mut table = low & ADDR_MASK;
        for level in (1..=levels.count()).rev() {
            let size = page_size(level);
            let e = frames.table(table)[((addr / size) % 512) as usize];
            if e & (SL_READ | SL_WRITE) == 0 {
                return Err(Fault::NotMapped { level });
            }
            if level == 1 || e & SL_PAGE_SIZE != 0 {
                return Ok(Translation {
                    phys: (e & ADDR_MASK & !(size - 1)) | (addr & (size - 1)),
                    read: e & SL_READ != 0,
                    write: e & SL_WRITE != 0,
                    page_size: size,
                    domain_id,
                });
            }
            table = e & ADDR_MASK;
        }
        unreachable!("level 1 entries are leaves")
    }
}

#[cfg(test)]
// One-range lists are meant (a single RAM range or RMRR), not `(a..b).collect()`.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Tables in a hash map keyed by a fake physical address (in the
    /// hypervisor's memory: below the guest's RAM in these tests).
    #[derive(Default)]
    pub(crate) struct Frames {
        pub tables: HashMap<u64, Box<[u64; 512]>>,
        next: u64,
    }

    pub(crate) const FRAMES_AT: u64 = 0x80_0000;

    impl FrameSource for Frames {
        fn allocate(&mut self) -> Option<u64> {
            let phys = FRAMES_AT + self.next;
            self.next += 4096;
            self.tables.insert(phys, Box::new([0; 512]));
            Some(phys)
        }
        fn table(&mut self, phys: u64) -> &mut [u64; 512] {
            self.tables.get_mut(&phys).expect("a table the builder allocated")
        }
    }

    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;

    fn config(levels: Levels, pages_2m: bool, pages_1g: bool) -> DomainConfig {
        DomainConfig { levels, pages_2m, pages_1g, domain_id: DomainConfig::DOMAIN }
    }

    /// perfvisor's layout: the hypervisor below 32 MiB, the guest's RAM
    /// above (with a hole below 4 GiB), an RMRR in reserved memory.
    const RAM: [Range<u64>; 2] = [32 * M..2 * G + 512 * M, 4 * G..6 * G + 4096];
    const RMRR: Range<u64> = 0xdf80_0000..0xdf81_0000;
    const HYPERVISOR: Range<u64> = 0x10_0000..32 * M;

    fn build(frames: &mut Frames, c: DomainConfig) -> DmaDomain {
        DmaDomain::build(frames, c, &RAM, &[RMRR], &[HYPERVISOR]).unwrap()
    }

    #[test]
    fn guest_ram_translates_identity_and_the_hypervisor_faults() {
        let mut f = Frames::default();
        let d = build(&mut f, config(Levels::Four, true, true));
        for (bus, devfn) in [(0, 0), (0, 0x0a), (3, 0xff), (255, 7)] {
            for addr in [32 * M, 32 * M + 0x1234, 2 * G + 512 * M - 1, 4 * G, 6 * G + 4095, RMRR.start + 8] {
                let t = d.translate(&mut f, bus, devfn, addr).unwrap();
                assert_eq!((t.phys, t.read, t.write, t.domain_id), (addr, true, true, 1), "{addr:#x}");
            }
            // The hypervisor's memory, its own tables, the first MiB, holes, MMIO.
            for addr in [
                HYPERVISOR.start,
                0x20_0000,
                32 * M - 1,
                FRAMES_AT,
                d.root_table(),
                d.context_table(),
                d.second_level(),
                0,
                0xb8000,
                2 * G + 512 * M,
                0xfee0_0000,
                6 * G + 4096,
                RMRR.end,
                (1 << 48) - 1,
            ] {
                assert!(d.translate(&mut f, bus, devfn, addr).is_err(), "{addr:#x} reachable by DMA");
            }
        }
        assert_eq!(d.translate(&mut f, 0, 0, 1 << 48), Err(Fault::BeyondAddressWidth { width: 48 }));
        assert_eq!(d.translate(&mut f, 0, 0, 0x20_0000), Err(Fault::NotMapped { level: 2 }));
    }

    #[test]
    fn every_bus_and_device_function_is_in_the_domain() {
        let mut f = Frames::default();
        let d = build(&mut f, config(Levels::Four, true, true));
        for bus in 0..=255 {
            for devfn in 0..=255 {
                assert_eq!(d.translate(&mut f, bus, devfn, 64 * M).map(|t| t.phys), Ok(64 * M));
                assert!(d.translate(&mut f, bus, devfn, 16 * M).is_err());
            }
        }
    }

    #[test]
    fn large_pages_where_aligned_and_allowed() {
        let mut f = Frames::default();
        let d = build(&mut f, config(Levels::Four, true, true));
        let size = |f: &mut Frames, a| d.translate(f, 0, 0, a).unwrap().page_size;
        assert_eq!(size(&mut f, 32 * M), 2 * M, "32 MiB..1 GiB in 2-MiB pages");
        assert_eq!(size(&mut f, G + 5), G);
        assert_eq!(size(&mut f, 2 * G), 2 * M, "2 GiB..2.5 GiB: half a GiB");
        assert_eq!(size(&mut f, 4 * G), G);
        assert_eq!(size(&mut f, 6 * G), 4096, "the last page, after 6 GiB");
        assert_eq!(size(&mut f, RMRR.start), 4096, "a 64-KiB RMRR");

        // Without 1-GiB pages: 2 MiB where aligned.
        let mut f = Frames::default();
        let d = build(&mut f, config(Levels::Four, true, false));
        assert_eq!(d.translate(&mut f, 0, 0, G + 5).unwrap().page_size, 2 * M);
        // Without large pages: 4 KiB throughout, many more tables.
        let mut g = Frames::default();
        let d4k = build(&mut g, config(Levels::Four, false, false));
        assert_eq!(d4k.translate(&mut g, 0, 0, G + 5).unwrap().page_size, 4096);
        assert!(g.tables.len() > 2000 && f.tables.len() < 20, "{} vs {}", g.tables.len(), f.tables.len());
    }

    #[test]
    fn entry_bits_follow_the_spec() {
        let mut f = Frames::default();
        let d = build(&mut f, config(Levels::Four, true, true));
        let root = *f.table(d.root_table());
        for bus in 0..256 {
            assert_eq!(root[2 * bus], d.context_table() | 1, "root entry: CTP | P");
            assert_eq!(root[2 * bus + 1], 0, "root entry bits 127:64 reserved");
        }
        let ctx = *f.table(d.context_table());
        for devfn in 0..256 {
            let (lo, hi) = (ctx[2 * devfn], ctx[2 * devfn + 1]);
            assert_eq!(lo & 1, 1, "P");
            assert_eq!(lo & 2, 0, "FPD clear: faults are reported");
            assert_eq!((lo >> 2) & 3, 0, "TT 00: translated, no pass-through");
            assert_eq!(lo & !0xfff, d.second_level(), "SLPTPTR");
            assert_eq!(lo & 0xff0, 0, "bits 11:4 reserved");
            assert_eq!(hi & 7, 0b010, "AW 010: 48-bit, 4-level");
            assert_eq!((hi >> 8) & 0xffff, 1, "DID 1");
            assert_eq!(hi & !(0xffff << 8 | 7), 0, "other bits reserved/ignored 0");
        }
        // Second-level: non-leaf R|W + address; leaves R|W (+ PS above 4 KiB).
        let pml4 = *f.table(d.second_level());
        let pml4e = pml4[0];
        assert_eq!(pml4e & 0xfff, 0b11);
        let pdpt = *f.table(pml4e & ADDR_MASK);
        assert_eq!(pdpt[1], G | 0b11 | 1 << 7, "1-GiB leaf at 1 GiB: address, R, W, PS");
        let pde = f.table(pdpt[0] & ADDR_MASK)[16];
        assert_eq!(pde, (32 * M) | 0b11 | 1 << 7, "2-MiB leaf at 32 MiB");
        assert_eq!(f.table(pdpt[0] & ADDR_MASK)[15], 0, "below 32 MiB: not present");
        let (root_at, ctx_at) = (d.root_table(), d.context_table());
        for (_, t) in f.tables.iter().filter(|(at, _)| **at != root_at && **at != ctx_at) {
            for e in t.iter().filter(|e| **e != 0) {
                assert_eq!(
                    e & !(ADDR_MASK | SL_READ | SL_WRITE | SL_PAGE_SIZE),
                    0,
                    "{e:#x}: X, EMT, IPAT, SNP, TM clear"
                );
                assert_eq!(e & 3, 3, "{e:#x}: read and write");
            }
        }
    }

    #[test]
    fn three_level_walk_and_its_width() {
        let mut f = Frames::default();
        let d = DmaDomain::build(&mut f, config(Levels::Three, true, false), &RAM, &[], &[]).unwrap();
        assert_eq!(f.table(d.context_table())[1] & 7, 0b001, "AW 001: 39-bit, 3-level");
        let t = d.translate(&mut f, 1, 2, 4 * G + 0x5000).unwrap();
        assert_eq!((t.phys, t.page_size), (4 * G + 0x5000, 2 * M));
        assert_eq!(d.translate(&mut f, 1, 2, 1 << 39), Err(Fault::BeyondAddressWidth { width: 39 }));

        let high = [(1 << 39)..(1 << 39) + G];
        assert_eq!(
            DmaDomain::build(&mut Frames::default(), config(Levels::Three, true, true), &high, &[], &[]).unwrap_err(),
            PagingError::BeyondAddressWidth { range: high[0].clone(), width: 39 }
        );
    }

    #[test]
    fn bad_ranges_are_refused() {
        let c = config(Levels::Four, true, true);
        let mut f = Frames::default();
        let e = DmaDomain::build(&mut f, c, &[32 * M + 1..64 * M], &[], &[]).unwrap_err();
        assert_eq!(e, PagingError::Misaligned(32 * M + 1..64 * M));
        let e = DmaDomain::build(&mut f, c, &[64 * M..64 * M], &[], &[]).unwrap_err();
        assert_eq!(e, PagingError::Misaligned(64 * M..64 * M));
        // An RMRR over the hypervisor: refused, not mapped.
        let e = DmaDomain::build(&mut f, c, &RAM, &[0x40_0000..0x50_0000], &[HYPERVISOR]).unwrap_err();
        assert_eq!(e, PagingError::Forbidden { range: 0x40_0000..0x50_0000, forbidden: HYPERVISOR });
        assert!(e.to_string().contains("overlaps protected memory 0x100000..0x2000000"), "{e}");
    }

    #[test]
    fn overlapping_ranges_map_once() {
        let mut f = Frames::default();
        let c = config(Levels::Four, true, true);
        let d = DmaDomain::build(&mut f, c, &[32 * M..G, 64 * M..64 * M + 8192], &[34 * M..36 * M], &[]).unwrap();
        assert_eq!(d.translate(&mut f, 0, 0, 64 * M + 4096).unwrap().page_size, 2 * M);
        assert_eq!(d.translate(&mut f, 0, 0, 35 * M).unwrap().phys, 35 * M);
    }

    #[test]
    fn config_from_the_capability_register() {
        // SAGAW 3- and 4-level, SLLPS 2 MiB + 1 GiB.
        let cap = Capability(0b0110 << 8 | 0b11 << 34);
        assert_eq!(DomainConfig::from_capability(cap).unwrap(), config(Levels::Four, true, true));
        let cap = Capability(0b0010 << 8 | 0b01 << 34);
        assert_eq!(DomainConfig::from_capability(cap).unwrap(), config(Levels::Three, true, false));
        let e = DomainConfig::from_capability(Capability(0b1000 << 8)).unwrap_err();
        assert_eq!(e, PagingError::NoSupportedWidth { sagaw: 0b1000 });
    }
}
