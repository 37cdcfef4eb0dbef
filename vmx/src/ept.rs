//! Extended page tables (SDM vol. 3C §29.3): a 4-level builder that maps
//! with 1-GiB, 2-MiB and 4-KiB pages, and unmaps or re-protects ranges,
//! splitting large pages where a range ends inside one. Tables come from a
//! [`FrameSource`], so the same code runs in the kernel and in host tests.

use bitflags::bitflags;

/// Where EPT tables come from.
pub trait FrameSource {
    /// A zeroed 4-KiB frame's physical address.
    fn allocate(&mut self) -> Option<u64>;
    /// The 512 entries of the table at physical address `phys`.
    fn table(&mut self, phys: u64) -> &mut [u64; 512];
}

bitflags! {
    /// Access rights of an EPT entry (bits 2:0).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct EptPerms: u64 {
        const READ = 1 << 0;
        const WRITE = 1 << 1;
        const EXECUTE = 1 << 2;
        const RWX = 7;
    }
}

/// EPT memory types (SDM vol. 3A §13.3; EPT entry bits 5:3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryType {
    Uncacheable = 0,
    WriteBack = 6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    OutOfFrames,
    /// Addresses and lengths must be 4-KiB aligned.
    Misaligned {
        gpa: u64,
        len: u64,
    },
}

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const LARGE: u64 = 1 << 7;
const LEVELS: u8 = 4;

fn page_size(level: u8) -> u64 {
    1 << (12 + 9 * (u32::from(level) - 1))
}

#[derive(Clone, Copy)]
enum Op {
    Map { delta: u64, perms: EptPerms, mem: MemoryType },
    Protect(EptPerms),
    Unmap,
}

pub struct Ept {
    root: u64,
    /// 1-GiB pages may be used (IA32_VMX_EPT_VPID_CAP bit 17).
    pub allow_1g: bool,
}

impl Ept {
    pub fn new(frames: &mut impl FrameSource, allow_1g: bool) -> Result<Self, EptError> {
        Ok(Self { root: frames.allocate().ok_or(EptError::OutOfFrames)?, allow_1g })
    }

    /// The EPT pointer: write-back paging structures, 4-level walk,
    /// optionally accessed/dirty flags (SDM vol. 3C §25.6.11).
    pub fn eptp(&self, accessed_dirty: bool) -> u64 {
        self.root | MemoryType::WriteBack as u64 | (u64::from(LEVELS) - 1) << 3 | u64::from(accessed_dirty) << 6
    }

    /// Maps guest-physical `[gpa, gpa + len)` to host-physical `hpa..`.
    pub fn map(
        &mut self,
        frames: &mut impl FrameSource,
        gpa: u64,
        hpa: u64,
        len: u64,
        perms: EptPerms,
        mem: MemoryType,
    ) -> Result<(), EptError> {
        check(gpa, len)?;
        check(hpa, len)?;
        self.apply(frames, gpa, len, Op::Map { delta: hpa.wrapping_sub(gpa), perms, mem })
    }

    /// Removes `[gpa, gpa + len)`: an access there is an EPT violation.
    pub fn unmap(&mut self, frames: &mut impl FrameSource, gpa: u64, len: u64) -> Result<(), EptError> {
        check(gpa, len)?;
        self.apply(frames, gpa, len, Op::Unmap)
    }

    /// Changes the rights of the mapped pages in `[gpa, gpa + len)`.
    pub fn protect(
        &mut self,
        frames: &mut impl FrameSource,
        gpa: u64,
        len: u64,
        perms: EptPerms,
    ) -> Result<(), EptError> {
        check(gpa, len)?;
        self.apply(frames, gpa, len, Op::Protect(perms))
    }

    /// (host-physical address, rights, page size) of `gpa`, if mapped.
    pub fn translate(&self, frames: &mut impl FrameSource, gpa: u64) -> Option<(u64, EptPerms, u64)> {
        let mut table = self.root;
        for level in (1..=LEVELS).rev() {
            let size = page_size(level);
            let e = frames.table(table)[((gpa / size) % 512) as usize];
            if e & 7 == 0 {
                return None;
            }
            if level == 1 || e & LARGE != 0 {
                return Some(((e & ADDR_MASK & !(size - 1)) + gpa % size, EptPerms::from_bits_truncate(e), size));
            }
            table = e & ADDR_MASK;
        }
        None
    }

    fn apply(&mut self, frames: &mut impl FrameSource, gpa: u64, len: u64, op: Op) -> Result<(), EptError> {
        self.apply_level(frames, self.root, LEVELS, 0, gpa, gpa + len, op)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_level(
        &self,
        frames: &mut impl FrameSource,
        table: u64,
        level: u8,
        base: u64,
        start: u64,
        end: u64,
        op: Op,
    ) -> Result<(), EptError> {
        let size = page_size(level);
        let first = (start - base) / size;
        let last = (end - base).div_ceil(size);
        for index in first..last.min(512) {
            let entry_gpa = base + index * size;
            let (lo, hi) = (start.max(entry_gpa), end.min(entry_gpa + size));
            let whole = lo == entry_gpa && hi == entry_gpa + size;
            let e = frames.table(table)[index as usize];
            let present = e & 7 != 0;
            let is_leaf = present && (level == 1 || e & LARGE != 0);
            let leaf_ok = level == 1 || level == 2 || (level == 3 && self.allow_1g);
            let new = match op {
                Op::Map { delta, perms, mem }
                    if whole && leaf_ok && entry_gpa.wrapping_add(delta).is_multiple_of(size) =>
                {
                    Some(leaf(entry_gpa.wrapping_add(delta), level, perms, mem as u64))
                }
                Op::Unmap if whole => Some(0),
                Op::Protect(p) if whole && is_leaf => Some((e & !7) | p.bits()),
                Op::Unmap | Op::Protect(_) if !present => None,
                _ => {
                    // Descend: into the existing table, a new one, or one
                    // made by splitting this large page.
                    let next = if present && !is_leaf {
                        e & ADDR_MASK
                    } else {
                        let t = frames.allocate().ok_or(EptError::OutOfFrames)?;
                        if is_leaf {
                            let child = page_size(level - 1);
                            let mem = (e >> 3) & 7;
                            let perms = EptPerms::from_bits_truncate(e);
                            let hpa = e & ADDR_MASK & !(size - 1);
                            let entries = frames.table(t);
                            for (i, slot) in entries.iter_mut().enumerate() {
                                *slot = leaf(hpa + i as u64 * child, level - 1, perms, mem);
                            }
                        }
                        frames.table(table)[index as usize] = t | EptPerms::RWX.bits();
                        t
                    };
                    self.apply_level(frames, next, level - 1, entry_gpa, lo, hi, op)?;
                    None
                }
            };
            if let Some(v) = new {
                frames.table(table)[index as usize] = v;
            }
        }
        Ok(())
    }
}

fn leaf(hpa: u64, level: u8, perms: EptPerms, mem: u64) -> u64 {
    hpa | perms.bits() | mem << 3 | if level > 1 { LARGE } else { 0 }
}

fn check(addr: u64, len: u64) -> Result<(), EptError> {
    if !addr.is_multiple_of(4096) || !len.is_multiple_of(4096) {
        Err(EptError::Misaligned { gpa: addr, len })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Tables in a hash map keyed by a fake physical address.
    #[derive(Default)]
    struct Frames {
        tables: HashMap<u64, Box<[u64; 512]>>,
        next: u64,
    }

    impl FrameSource for Frames {
        fn allocate(&mut self) -> Option<u64> {
            self.next += 4096;
            let phys = 0x1000_0000_0000 + self.next;
            self.tables.insert(phys, Box::new([0; 512]));
            Some(phys)
        }
        fn table(&mut self, phys: u64) -> &mut [u64; 512] {
            self.tables.get_mut(&phys).expect("a table the builder allocated")
        }
    }

    const G: u64 = 1 << 30;
    const M2: u64 = 2 << 20;

    #[test]
    fn identity_map_uses_large_pages_and_holes_split_them() {
        let mut f = Frames::default();
        let mut ept = Ept::new(&mut f, true).unwrap();
        ept.map(&mut f, 0, 0, 4 * G, EptPerms::RWX, MemoryType::WriteBack).unwrap();
        assert_eq!(ept.translate(&mut f, 0x1234_5678), Some((0x1234_5678, EptPerms::RWX, G)));
        assert_eq!(f.tables.len(), 2, "PML4 + one PDPT: four 1-GiB leaves");

        // A hole: one 4-KiB page inside the first GiB.
        ept.unmap(&mut f, 0x20_3000, 0x1000).unwrap();
        assert_eq!(ept.translate(&mut f, 0x20_3000), None);
        assert_eq!(ept.translate(&mut f, 0x20_2fff), Some((0x20_2fff, EptPerms::RWX, 4096)));
        assert_eq!(ept.translate(&mut f, 0x20_4000).map(|t| t.2), Some(4096));
        assert_eq!(ept.translate(&mut f, 0x40_0000).map(|t| t.2), Some(M2), "rest of the GiB in 2-MiB pages");
        assert_eq!(ept.translate(&mut f, G + 5).map(|t| t.2), Some(G), "other GiBs untouched");

        ept.protect(&mut f, 0x40_0000, M2, EptPerms::READ).unwrap();
        assert_eq!(ept.translate(&mut f, 0x40_0010).map(|t| t.1), Some(EptPerms::READ));
        let eptp = ept.eptp(false);
        assert_eq!(eptp & 0xfff, 0x1e, "WB, 4-level walk");
    }

    #[test]
    fn without_1g_pages_and_with_offsets_and_bad_alignment() {
        let mut f = Frames::default();
        let mut ept = Ept::new(&mut f, false).unwrap();
        ept.map(
            &mut f,
            0x10_0000,
            0x8000_0000 + 0x10_0000,
            5 * M2,
            EptPerms::READ | EptPerms::WRITE,
            MemoryType::WriteBack,
        )
        .unwrap();
        assert_eq!(ept.translate(&mut f, 0x10_0000).map(|t| (t.0, t.2)), Some((0x8010_0000, 4096)));
        assert_eq!(ept.translate(&mut f, 0x20_0000).map(|t| (t.0, t.2)), Some((0x8020_0000, M2)));
        assert_eq!(ept.translate(&mut f, 0), None);
        assert_eq!(
            ept.map(&mut f, 0x123, 0, 4096, EptPerms::RWX, MemoryType::WriteBack),
            Err(EptError::Misaligned { gpa: 0x123, len: 4096 })
        );
    }
}
