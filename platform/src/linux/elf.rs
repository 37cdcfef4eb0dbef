//! A vmlinux ELF: its PT_LOAD segments and 64-bit entry, laid out by
//! physical address (as Firecracker and the bzImage's own decompressor load
//! it). x86-64's vmlinux links its segments at physical 16 MiB up
//! (`p_paddr`), with `e_entry` the physical address of `startup_64`; the
//! kernel's head code relocates itself when loaded elsewhere, so a loader
//! may place the whole image at any suitably aligned address, keeping the
//! segments' distances.

use super::{le_u16, le_u32, le_u64, Error};

/// The most PT_LOAD segments kept (6.1's vmlinux has 4).
pub const MAX_SEGMENTS: usize = 16;

const PT_LOAD: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PHDR_SIZE: usize = 56;

/// One PT_LOAD segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub paddr: u64,
    pub vaddr: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub mem_size: u64,
}

/// A parsed vmlinux.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vmlinux {
    segments: [Segment; MAX_SEGMENTS],
    count: usize,
    /// The lowest segment's physical address: where the image was linked.
    pub link_paddr: u64,
    /// The end of the highest segment in memory (physical).
    pub end_paddr: u64,
    /// The 64-bit entry, as an offset from `link_paddr`.
    pub entry_offset: u64,
}

impl Vmlinux {
    /// Parses the ELF header and program headers, and checks every
    /// segment's file bytes lie inside `elf` (the whole file).
    pub fn parse(elf: &[u8]) -> Result<Self, Error> {
        let v = Self::parse_headers(elf)?;
        for (index, s) in v.segments().iter().enumerate() {
            let end = s.file_offset.checked_add(s.file_size);
            if end.is_none_or(|end| end > elf.len() as u64) {
                return Err(Error::ElfSegmentBeyondFile { index });
            }
        }
        Ok(v)
    }

    /// Parses only the ELF header and program headers: `elf` may be just
    /// the start of the file (e.g. its first page) when the segments' bytes
    /// travel separately, flattened by [`Self::copy_into`] on another machine.
    pub fn parse_headers(elf: &[u8]) -> Result<Self, Error> {
        if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err(Error::NotElf);
        }
        if elf.get(4) != Some(&2) {
            return Err(Error::ElfNot64Bit);
        }
        let machine = le_u16(elf, 18).ok_or(Error::ElfBadProgramHeaders)?;
        if elf.get(5) != Some(&1) || machine != EM_X86_64 {
            return Err(Error::ElfNotX86_64 { machine });
        }
        let kind = le_u16(elf, 16).ok_or(Error::ElfBadProgramHeaders)?;
        if kind != ET_EXEC {
            return Err(Error::ElfNotExecutable { kind });
        }
        let entry = le_u64(elf, 24).ok_or(Error::ElfBadProgramHeaders)?;
        let phoff = le_u64(elf, 32).ok_or(Error::ElfBadProgramHeaders)?;
        let phentsize = le_u16(elf, 54).ok_or(Error::ElfBadProgramHeaders)?;
        let phnum = le_u16(elf, 56).ok_or(Error::ElfBadProgramHeaders)?;
        if usize::from(phentsize) != PHDR_SIZE || phnum == 0 {
            return Err(Error::ElfBadProgramHeaders);
        }
        let table_end = phoff.checked_add(u64::from(phnum) * PHDR_SIZE as u64);
        if table_end.is_none_or(|end| end > elf.len() as u64) {
            return Err(Error::ElfBadProgramHeaders);
        }
        let mut segments = [Segment::default(); MAX_SEGMENTS];
        let mut count = 0;
        for i in 0..usize::from(phnum) {
            let at = phoff as usize + i * PHDR_SIZE;
            let field = |o: usize| le_u64(elf, at + o).ok_or(Error::ElfBadProgramHeaders);
            if le_u32(elf, at).ok_or(Error::ElfBadProgramHeaders)? != PT_LOAD {
                continue;
            }
            let s = Segment {
                file_offset: field(8)?,
                vaddr: field(16)?,
                paddr: field(24)?,
                file_size: field(32)?,
                mem_size: field(40)?,
            };
            if s.file_size > s.mem_size || s.paddr.checked_add(s.mem_size).is_none() {
                return Err(Error::ElfSegmentBeyondFile { index: count });
            }
            if count == MAX_SEGMENTS {
                let total = (i..usize::from(phnum))
                    .filter(|j| le_u32(elf, phoff as usize + j * PHDR_SIZE) == Some(PT_LOAD))
                    .count();
                return Err(Error::ElfTooManySegments { count: MAX_SEGMENTS + total });
            }
            segments[count] = s;
            count += 1;
        }
        if count == 0 {
            return Err(Error::ElfNoLoadSegments);
        }
        let loaded = &segments[..count];
        let link_paddr = loaded.iter().map(|s| s.paddr).min().expect("count > 0");
        let end_paddr = loaded.iter().map(|s| s.paddr + s.mem_size).max().expect("count > 0");
        // e_entry is physical in x86-64's vmlinux (ENTRY(phys_startup_64));
        // accept a virtual one too, translated through its segment.
        let entry_paddr = loaded
            .iter()
            .find(|s| (s.paddr..s.paddr + s.mem_size).contains(&entry))
            .map(|_| entry)
            .or_else(|| {
                loaded
                    .iter()
                    .find(|s| entry >= s.vaddr && entry - s.vaddr < s.mem_size)
                    .map(|s| s.paddr + (entry - s.vaddr))
            })
            .ok_or(Error::ElfEntryOutsideSegments { entry })?;
        Ok(Self { segments, count, link_paddr, end_paddr, entry_offset: entry_paddr - link_paddr })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.count]
    }

    /// Bytes from the lowest segment's start to the highest one's end in memory.
    pub fn mem_size(&self) -> u64 {
        self.end_paddr - self.link_paddr
    }

    /// Bytes of the flat image that hold file data (the rest is zeros).
    pub fn flat_file_size(&self) -> u64 {
        self.segments().iter().map(|s| s.paddr - self.link_paddr + s.file_size).max().unwrap_or(0)
    }

    /// Lays the segments out in `dest` as they sit in memory from
    /// `link_paddr` (the loader places `dest` at its chosen address):
    /// file bytes copied, the rest up to [`Self::mem_size`] zeroed. `elf` is
    /// the whole file, as given to [`Self::parse`].
    pub fn copy_into(&self, elf: &[u8], dest: &mut [u8]) -> Result<(), Error> {
        let size = self.mem_size();
        if (dest.len() as u64) < size {
            return Err(Error::BufferTooSmall { need: size, have: dest.len() });
        }
        dest[..size as usize].fill(0);
        for (index, s) in self.segments().iter().enumerate() {
            let from = elf
                .get(s.file_offset as usize..(s.file_offset + s.file_size) as usize)
                .ok_or(Error::ElfSegmentBeyondFile { index })?;
            let at = (s.paddr - self.link_paddr) as usize;
            dest[at..at + from.len()].copy_from_slice(from);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ELF shaped like 6.1's vmlinux: text at 16 MiB, data, the percpu
    /// segment (vaddr 0), and init+bss with more memory than file.
    pub fn vmlinux_like() -> Vec<u8> {
        let mut e = vec![0u8; 0x6000];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        e[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        e[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes());
        e[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        let segs: [(u32, u64, u64, u64, u64, u64); 5] = [
            (PT_LOAD, 0x1000, 0xffff_ffff_8100_0000, 0x100_0000, 0x1000, 0x1000),
            (PT_LOAD, 0x2000, 0xffff_ffff_8120_0000, 0x120_0000, 0x1000, 0x1000),
            (PT_LOAD, 0x3000, 0, 0x120_1000, 0x800, 0x800),
            (PT_LOAD, 0x4000, 0xffff_ffff_8140_0000, 0x140_0000, 0x1000, 0x5000),
            (4, 0x1100, 0xffff_ffff_8100_0100, 0x100_0100, 0x10, 0x10),
        ];
        e[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for (i, (kind, off, vaddr, paddr, filesz, memsz)) in segs.iter().enumerate() {
            let at = 64 + i * PHDR_SIZE;
            e[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            for (o, v) in [(8, off), (16, vaddr), (24, paddr), (32, filesz), (40, memsz)] {
                e[at + o..at + o + 8].copy_from_slice(&v.to_le_bytes());
            }
            e[*off as usize] = 0xa0 + i as u8;
        }
        e
    }

    #[test]
    fn finds_segments_and_entry() {
        let elf = vmlinux_like();
        let v = Vmlinux::parse(&elf).unwrap();
        assert_eq!(v.segments().len(), 4);
        assert_eq!(v.link_paddr, 0x100_0000);
        assert_eq!(v.mem_size(), 0x40_5000);
        assert_eq!(v.flat_file_size(), 0x40_1000);
        assert_eq!(v.entry_offset, 0);
        let mut flat = vec![0xffu8; 0x40_5000];
        v.copy_into(&elf, &mut flat).unwrap();
        assert_eq!(flat[0], 0xa0);
        assert_eq!(flat[0x20_0000], 0xa1);
        assert_eq!(flat[0x20_1000], 0xa2);
        assert_eq!(flat[0x40_0000], 0xa3);
        assert_eq!(flat[0x40_4fff], 0, "bss zeroed");
        assert!(v.copy_into(&elf, &mut flat[..0x1000]).unwrap_err().to_string().contains("buffer"));
    }

    #[test]
    fn a_virtual_entry_is_translated() {
        let mut elf = vmlinux_like();
        elf[24..32].copy_from_slice(&0xffff_ffff_8120_0010u64.to_le_bytes());
        assert_eq!(Vmlinux::parse(&elf).unwrap().entry_offset, 0x20_0010);
    }

    fn error_of(mut edit: impl FnMut(&mut Vec<u8>)) -> String {
        let mut elf = vmlinux_like();
        edit(&mut elf);
        Vmlinux::parse(&elf).unwrap_err().to_string()
    }

    #[test]
    fn malformed_elves_are_refused_in_words() {
        assert!(error_of(|e| e[0] = 0).contains("not an ELF"));
        assert!(error_of(|e| e.truncate(3)).contains("not an ELF"));
        assert_eq!(error_of(|e| e[4] = 1), "not a 64-bit ELF: no 64-bit entry point");
        assert!(error_of(|e| e[18] = 3).contains("e_machine 3"));
        assert!(error_of(|e| e[16] = 3).contains("e_type 3"));
        assert!(error_of(|e| e[54] = 32).contains("program headers"));
        assert!(error_of(|e| e.truncate(100)).contains("program headers"));
        assert!(
            error_of(|e| e[24..32].copy_from_slice(&0x5000_0000u64.to_le_bytes())).contains("entry point 0x50000000")
        );
        assert!(error_of(|e| e.truncate(0x4800)).contains("PT_LOAD segment 3 lies beyond"));
        assert!(error_of(|e| {
            for i in 0..5 {
                e[64 + i * PHDR_SIZE] = 4;
            }
        })
        .contains("no PT_LOAD"));
        // File size larger than memory size.
        assert!(error_of(|e| e[64 + 32] = 0xff).contains("PT_LOAD segment 0"));
    }

    #[test]
    fn headers_alone_parse_without_the_segments() {
        let elf = vmlinux_like();
        assert!(Vmlinux::parse_headers(&elf[..0x200]).is_ok());
        assert!(Vmlinux::parse(&elf[..0x200]).is_err());
    }
}
