//! The malformed guest ELFs (issue 11): each derived from the real guest
//! test kernel by corrupting one thing, each refused by perfvisor's loader
//! with a named reason (`hostile_elf_<name>` cases in `hostile_cases`).
//!
//! Offsets are the ELF64 header's and program header's (System V gABI,
//! "ELF Header" and "Program Header"); the corruption is applied to the
//! first PT_LOAD unless said otherwise.

/// One corruption of the guest ELF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElfDefect {
    BadMagic,
    Class32,
    BigEndian,
    Machine,
    TypeDyn,
    TruncatedHeader,
    PhoffBeyondFile,
    PhentsizeWrong,
    PhnumZero,
    PhnumXnum,
    FileszAboveMemsz,
    OffsetBeyondFile,
    PaddrOutsideRam,
    OverlapsBootArea,
    EntryOutsideLoad,
    AlignBogus,
    TooBigForRam,
}

/// Every defect: its name (the case is `hostile_elf_<name>`), and the
/// words of perfvisor's console line that must name the reason.
pub const ALL: [(ElfDefect, &str, &str); 17] = [
    (ElfDefect::BadMagic, "bad_magic", "no ELF magic (the file starts with 7f 58 4c 46"),
    (ElfDefect::Class32, "class32", "EI_CLASS is 1 (ELF32): perfvisor loads ELF64 only"),
    (ElfDefect::BigEndian, "big_endian", "EI_DATA is 2 (big-endian): perfvisor loads little-endian ELF only"),
    (ElfDefect::Machine, "machine", "not an ELF64 x86-64 executable (64-bit: true, e_machine 183, e_type 2"),
    (ElfDefect::TypeDyn, "type_dyn", "not an ELF64 x86-64 executable (64-bit: true, e_machine 62, e_type 3"),
    (ElfDefect::TruncatedHeader, "truncated_header", "the file is 40 bytes: shorter than an ELF64 header (64 bytes)"),
    (ElfDefect::PhoffBeyondFile, "phoff_beyond_file", "the program header table (e_phoff 0x"),
    (ElfDefect::PhentsizeWrong, "phentsize_wrong", "e_phentsize is 32, not 56 (the size of an ELF64 program header)"),
    (ElfDefect::PhnumZero, "phnum_zero", "e_phnum is 0: the ELF has no program headers"),
    (ElfDefect::PhnumXnum, "phnum_xnum", "e_phnum is PN_XNUM (0xffff)"),
    (ElfDefect::FileszAboveMemsz, "filesz_above_memsz", "segment at 0x2100000 has p_filesz > p_memsz"),
    (ElfDefect::OffsetBeyondFile, "offset_beyond_file", "segment at 0x2100000: its file bytes (p_offset 0x"),
    (ElfDefect::PaddrOutsideRam, "paddr_outside_ram", "segment at 0x40000000 is not inside guest RAM (it ends at 0x4"),
    (
        ElfDefect::OverlapsBootArea,
        "overlaps_boot_area",
        "segment at 0x2006000 overlaps the page tables/boot info/stack",
    ),
    (ElfDefect::EntryOutsideLoad, "entry_outside_load", "entry point 0x2200000 is outside the loaded segments"),
    (ElfDefect::AlignBogus, "align_bogus", "segment at 0x2100000: p_align 0x1001 is not a power of two"),
    (ElfDefect::TooBigForRam, "too_big_for_ram", "needs 0x100000000 bytes, more than all of guest RAM"),
];

impl ElfDefect {
    pub fn name(self) -> &'static str {
        ALL.iter().find(|(d, ..)| *d == self).map_or("?", |(_, n, _)| n)
    }
}

const E_TYPE: usize = 16;
const E_MACHINE: usize = 18;
const E_ENTRY: usize = 24;
const E_PHOFF: usize = 32;
const E_PHENTSIZE: usize = 54;
const E_PHNUM: usize = 56;
const PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const P_OFFSET: usize = 8;
const P_PADDR: usize = 24;
const P_FILESZ: usize = 32;
const P_MEMSZ: usize = 40;
const P_ALIGN: usize = 48;

fn get(b: &[u8], at: usize, n: usize) -> u64 {
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(&b[at..at + n]);
    u64::from_le_bytes(v)
}

fn put(b: &mut [u8], at: usize, n: usize, value: u64) {
    b[at..at + n].copy_from_slice(&value.to_le_bytes()[..n]);
}

/// Offsets of the PT_LOAD program headers, in table order.
fn loads(elf: &[u8]) -> Result<Vec<usize>, String> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err("the guest image is not a little-endian ELF64 file".into());
    }
    let (phoff, phnum) = (get(elf, E_PHOFF, 8) as usize, get(elf, E_PHNUM, 2) as usize);
    if get(elf, E_PHENTSIZE, 2) as usize != PHDR_SIZE || phoff + phnum * PHDR_SIZE > elf.len() {
        return Err("the guest image's program header table is not as expected".into());
    }
    let loads: Vec<usize> = (0..phnum)
        .map(|i| phoff + i * PHDR_SIZE)
        .filter(|&p| get(elf, p, 4) == u64::from(PT_LOAD) && get(elf, p + P_MEMSZ, 8) > 0)
        .collect();
    if loads.is_empty() {
        return Err("the guest image has no PT_LOAD".into());
    }
    Ok(loads)
}

/// The guest ELF `elf` with `defect`.
pub fn corrupt(elf: &[u8], defect: ElfDefect) -> Result<Vec<u8>, String> {
    let loads = loads(elf)?;
    let (first, last) = (loads[0], loads[loads.len() - 1]);
    let mut b = elf.to_vec();
    let len = b.len() as u64;
    match defect {
        ElfDefect::BadMagic => b[1] = b'X',
        ElfDefect::Class32 => b[4] = 1,
        ElfDefect::BigEndian => b[5] = 2,
        // EM_AARCH64.
        ElfDefect::Machine => put(&mut b, E_MACHINE, 2, 183),
        // ET_DYN.
        ElfDefect::TypeDyn => put(&mut b, E_TYPE, 2, 3),
        ElfDefect::TruncatedHeader => b.truncate(40),
        ElfDefect::PhoffBeyondFile => put(&mut b, E_PHOFF, 8, len + 0x1000),
        ElfDefect::PhentsizeWrong => put(&mut b, E_PHENTSIZE, 2, 32),
        ElfDefect::PhnumZero => put(&mut b, E_PHNUM, 2, 0),
        ElfDefect::PhnumXnum => put(&mut b, E_PHNUM, 2, 0xffff),
        ElfDefect::FileszAboveMemsz => {
            let memsz = get(&b, first + P_MEMSZ, 8);
            put(&mut b, first + P_FILESZ, 8, memsz + 0x10);
        }
        // The segment's file bytes run 16 bytes past the end of the file.
        ElfDefect::OffsetBeyondFile => {
            let filesz = get(&b, first + P_FILESZ, 8);
            put(&mut b, first + P_OFFSET, 8, (len + 16).saturating_sub(filesz));
        }
        // 1 GiB: above the 256 MiB the test machines give guest RAM.
        ElfDefect::PaddrOutsideRam => put(&mut b, first + P_PADDR, 8, 0x4000_0000),
        // perfvisor_abi::layout::BOOT_INFO.
        ElfDefect::OverlapsBootArea => put(&mut b, first + P_PADDR, 8, 0x0200_6000),
        ElfDefect::EntryOutsideLoad => put(&mut b, E_ENTRY, 8, 0x0220_0000),
        ElfDefect::AlignBogus => put(&mut b, first + P_ALIGN, 8, 0x1001),
        // 4 GiB of .bss.
        ElfDefect::TooBigForRam => put(&mut b, last + P_MEMSZ, 8, 0x1_0000_0000),
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ET_EXEC like the guest's: two PT_LOADs and a GNU_STACK.
    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 0x3000];
        b[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
        put(&mut b, E_TYPE, 2, 2);
        put(&mut b, E_MACHINE, 2, 62);
        put(&mut b, 20, 4, 1);
        put(&mut b, E_ENTRY, 8, 0x0210_0000);
        put(&mut b, E_PHOFF, 8, 64);
        put(&mut b, E_PHENTSIZE, 2, PHDR_SIZE as u64);
        put(&mut b, E_PHNUM, 2, 3);
        for (i, (kind, offset, addr, filesz, memsz)) in [
            (1u64, 0x1000u64, 0x0210_0000u64, 0x800u64, 0x800u64),
            (1, 0x2000, 0x0210_1000, 0, 0x4000),
            (0x6474e551, 0, 0, 0, 0),
        ]
        .into_iter()
        .enumerate()
        {
            let p = 64 + i * PHDR_SIZE;
            put(&mut b, p, 4, kind);
            put(&mut b, p + P_OFFSET, 8, offset);
            put(&mut b, p + 16, 8, addr);
            put(&mut b, p + P_PADDR, 8, addr);
            put(&mut b, p + P_FILESZ, 8, filesz);
            put(&mut b, p + P_MEMSZ, 8, memsz);
            put(&mut b, p + P_ALIGN, 8, 0x1000);
        }
        b
    }

    #[test]
    fn each_defect_changes_one_thing_and_all_differ() {
        let elf = sample();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        for (defect, name, reason) in ALL {
            let bad = corrupt(&elf, defect).unwrap();
            assert_ne!(bad, elf, "{name}");
            assert!(!seen.contains(&bad), "{name} duplicates another defect");
            assert!(!reason.is_empty() && defect.name() == name);
            if bad.len() == elf.len() {
                let changed = bad.iter().zip(&elf).filter(|(a, b)| a != b).count();
                assert!((1..=8).contains(&changed), "{name}: {changed} bytes changed");
            }
            seen.push(bad);
        }
    }

    #[test]
    fn defects_land_where_named() {
        let elf = sample();
        let c = |d| corrupt(&elf, d).unwrap();
        assert_eq!(get(&c(ElfDefect::PhnumXnum), E_PHNUM, 2), 0xffff);
        assert_eq!(c(ElfDefect::TruncatedHeader).len(), 40);
        let beyond = c(ElfDefect::OffsetBeyondFile);
        assert_eq!(get(&beyond, 64 + P_OFFSET, 8) + get(&beyond, 64 + P_FILESZ, 8), elf.len() as u64 + 16);
        // The .bss-like segment (the last PT_LOAD), not GNU_STACK.
        assert_eq!(get(&c(ElfDefect::TooBigForRam), 64 + PHDR_SIZE + P_MEMSZ, 8), 0x1_0000_0000);
        let over = c(ElfDefect::FileszAboveMemsz);
        assert!(get(&over, 64 + P_FILESZ, 8) > get(&over, 64 + P_MEMSZ, 8));
        assert!(corrupt(b"not an elf", ElfDefect::BadMagic).is_err());
    }
}
