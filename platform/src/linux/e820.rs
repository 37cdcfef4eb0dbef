//! The zero page's e820 memory map.

use super::Error;

/// The zero page holds at most 128 entries (E820_MAX_ENTRIES_ZEROPAGE).
pub const MAX_ENTRIES: usize = 128;

/// e820 region types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820Kind {
    Usable,
    Reserved,
    Acpi,
    Nvs,
    Unusable,
    /// Any other type code, kept as the firmware said.
    Other(u32),
}

impl E820Kind {
    pub fn code(self) -> u32 {
        match self {
            Self::Usable => 1,
            Self::Reserved => 2,
            Self::Acpi => 3,
            Self::Nvs => 4,
            Self::Unusable => 5,
            Self::Other(c) => c,
        }
    }

    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::Usable,
            2 => Self::Reserved,
            3 => Self::Acpi,
            4 => Self::Nvs,
            5 => Self::Unusable,
            c => Self::Other(c),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Kind,
}

impl E820Entry {
    fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// A sorted, non-overlapping e820 table, adjacent regions of one type merged.
#[derive(Clone, Debug)]
pub struct E820Table {
    entries: [E820Entry; MAX_ENTRIES],
    len: usize,
}

impl Default for E820Table {
    fn default() -> Self {
        Self::new()
    }
}

impl E820Table {
    pub const fn new() -> Self {
        Self { entries: [E820Entry { addr: 0, size: 0, kind: E820Kind::Reserved }; MAX_ENTRIES], len: 0 }
    }

    pub fn entries(&self) -> &[E820Entry] {
        &self.entries[..self.len]
    }

    /// Adds a region; where it overlaps regions already there, it wins
    /// (so reservations are added after the memory they carve out of).
    pub fn add(&mut self, addr: u64, size: u64, kind: E820Kind) -> Result<(), Error> {
        if size == 0 {
            return Ok(());
        }
        let end = addr.saturating_add(size);
        let new = E820Entry { addr, size: end - addr, kind };
        // Cut every overlapped entry to the parts outside [addr, end).
        let mut out = Self::new();
        for e in self.entries() {
            if e.end() <= addr || e.addr >= end {
                out.push(*e)?;
                continue;
            }
            if e.addr < addr {
                out.push(E820Entry { addr: e.addr, size: addr - e.addr, kind: e.kind })?;
            }
            if e.end() > end {
                out.push(E820Entry { addr: end, size: e.end() - end, kind: e.kind })?;
            }
        }
        out.push(new)?;
        out.sort_and_merge();
        *self = out;
        Ok(())
    }

    fn push(&mut self, e: E820Entry) -> Result<(), Error> {
        *self.entries.get_mut(self.len).ok_or(Error::E820TableFull)? = e;
        self.len += 1;
        Ok(())
    }

    fn sort_and_merge(&mut self) {
        self.entries[..self.len].sort_unstable_by_key(|e| e.addr);
        let mut w = 0;
        for r in 0..self.len {
            let e = self.entries[r];
            if w > 0 && self.entries[w - 1].kind == e.kind && self.entries[w - 1].end() == e.addr {
                self.entries[w - 1].size += e.size;
            } else {
                self.entries[w] = e;
                w += 1;
            }
        }
        self.len = w;
    }

    /// The table as the zero page stores it: 20 bytes per entry
    /// (addr u64, size u64, type u32).
    pub fn write_to(&self, out: &mut [u8]) {
        for (i, e) in self.entries().iter().enumerate() {
            let at = i * 20;
            out[at..at + 8].copy_from_slice(&e.addr.to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&e.size.to_le_bytes());
            out[at + 16..at + 20].copy_from_slice(&e.kind.code().to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_merge_and_reservations_carve() {
        let mut t = E820Table::new();
        t.add(0, 0x9fc00, E820Kind::Usable).unwrap();
        t.add(0x10_0000, 0x10_0000, E820Kind::Usable).unwrap();
        t.add(0x20_0000, 0xe00_0000, E820Kind::Usable).unwrap();
        t.add(0xf0000, 0x10000, E820Kind::Reserved).unwrap();
        assert_eq!(t.entries().len(), 3, "{:?}", t.entries());
        assert_eq!(t.entries()[2], E820Entry { addr: 0x10_0000, size: 0xe10_0000, kind: E820Kind::Usable });
        t.add(0x100_0000, 0x1000, E820Kind::Reserved).unwrap();
        let e = t.entries();
        assert_eq!(e.len(), 5);
        assert_eq!(e[2], E820Entry { addr: 0x10_0000, size: 0xf0_0000, kind: E820Kind::Usable });
        assert_eq!(e[3], E820Entry { addr: 0x100_0000, size: 0x1000, kind: E820Kind::Reserved });
        assert_eq!(e[4].addr, 0x100_1000);
        assert_eq!(e[4].end(), 0xe20_0000);
        let mut bytes = [0u8; 100];
        t.write_to(&mut bytes);
        assert_eq!(bytes[16], 1);
        assert_eq!(bytes[36], 2);
    }

    #[test]
    fn too_many_regions_is_an_error() {
        let mut t = E820Table::new();
        let mut result = Ok(());
        for i in 0..200u64 {
            let kind = if i % 2 == 0 { E820Kind::Usable } else { E820Kind::Reserved };
            result = result.and(t.add(i * 0x1000, 0x1000, kind));
        }
        assert_eq!(result.unwrap_err().to_string(), "more than 128 memory regions: the e820 table is full");
    }
}
