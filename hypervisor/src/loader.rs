//! Loads the guest image (an ELF64 executable from the ramdisk) into guest
//! RAM and prepares what the ABI promises: identity page tables, the boot
//! info, a stack (see `perfvisor_abi`).

use crate::memory::phys_map;
use core::fmt;
use elf::abi::{EM_X86_64, ET_EXEC, PT_LOAD};
use elf::endian::LittleEndian;
use elf::file::Class;
use elf::ElfBytes;
use perfvisor_abi::layout::{BOOT_INFO, GUEST_RAM_START, IMAGE_BASE, PAGE_TABLES, STACK_TOP};
use perfvisor_abi::{BootInfo, RamRange, Scenario, ABI_VERSION, BOOT_INFO_MAGIC, MAX_RAM_RANGES};

/// Why a guest image was refused, in words.
pub enum LoadError {
    Elf(elf::ParseError),
    /// Shorter than the 64-byte ELF64 header.
    Truncated(usize),
    BadMagic([u8; 4]),
    /// EI_CLASS other than ELFCLASS64.
    NotElf64(u8),
    /// EI_DATA other than ELFDATA2LSB.
    NotLittleEndian(u8),
    /// e_phentsize other than an ELF64 program header's size.
    ProgramHeaderSize(u16),
    /// e_phnum is 0 (with a program header table offset).
    NoProgramHeaderEntries,
    /// The program header table (offset, entries) ends beyond the file.
    ProgramHeadersBeyondFile {
        offset: u64,
        count: u16,
        file: usize,
    },
    /// A segment's file bytes end beyond the file.
    SegmentDataBeyondFile {
        start: u64,
        offset: u64,
        size: u64,
        file: usize,
    },
    /// p_align neither 0/1 nor a power of two, or p_offset and p_vaddr
    /// disagree modulo it (gABI "Program Header").
    SegmentAlignment {
        start: u64,
        align: u64,
    },
    SegmentLargerThanRam {
        start: u64,
        size: u64,
        ram: u64,
    },
    NotElf64X86Executable {
        class_64: bool,
        machine: u16,
        kind: u16,
    },
    NoLoadableSegment,
    /// e_phoff is 0: no program header table at all.
    NoProgramHeaders,
    /// e_phnum is PN_XNUM: the count is in section header 0 (extended numbering).
    ExtendedProgramHeaderCount,
    SegmentOutsideRam {
        start: u64,
        end: u64,
    },
    SegmentOverlapsLoaderArea {
        start: u64,
    },
    SegmentFileSizeAboveMemorySize {
        start: u64,
    },
    EntryOutsideImage(u64),
    RamDoesNotStartAtBase,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Elf(e) => write!(f, "not a valid ELF file ({e})"),
            Self::Truncated(n) => write!(f, "the file is {n} bytes: shorter than an ELF64 header (64 bytes)"),
            Self::BadMagic(m) => write!(
                f,
                "no ELF magic (the file starts with {:02x} {:02x} {:02x} {:02x}, not 7f 45 4c 46)",
                m[0], m[1], m[2], m[3]
            ),
            Self::NotElf64(c) => write!(f, "EI_CLASS is {c}{}: perfvisor loads ELF64 only", if *c == 1 { " (ELF32)" } else { "" }),
            Self::NotLittleEndian(d) => write!(
                f,
                "EI_DATA is {d}{}: perfvisor loads little-endian ELF only",
                if *d == 2 { " (big-endian)" } else { "" }
            ),
            Self::ProgramHeaderSize(n) => {
                write!(f, "e_phentsize is {n}, not {PHDR64_SIZE} (the size of an ELF64 program header)")
            }
            Self::NoProgramHeaderEntries => f.write_str("e_phnum is 0: the ELF has no program headers"),
            Self::ProgramHeadersBeyondFile { offset, count, file } => write!(
                f,
                "the program header table (e_phoff {offset:#x}, {count} entries of {PHDR64_SIZE} bytes) ends beyond the file's {file} bytes"
            ),
            Self::SegmentDataBeyondFile { start, offset, size, file } => write!(
                f,
                "segment at {start:#x}: its file bytes (p_offset {offset:#x}, p_filesz {size:#x}) end beyond the file's {file} bytes"
            ),
            Self::SegmentAlignment { start, align } => {
                if align.is_power_of_two() {
                    write!(f, "segment at {start:#x}: p_offset and p_vaddr differ modulo p_align {align:#x}")
                } else {
                    write!(f, "segment at {start:#x}: p_align {align:#x} is not a power of two")
                }
            }
            Self::SegmentLargerThanRam { start, size, ram } => write!(
                f,
                "segment at {start:#x} needs {size:#x} bytes, more than all of guest RAM ({ram:#x} bytes)"
            ),
            Self::NotElf64X86Executable { class_64, machine, kind } => write!(
                f,
                "not an ELF64 x86-64 executable (64-bit: {class_64}, e_machine {machine}, e_type {kind}; need ET_EXEC for EM_X86_64)"
            ),
            Self::NoLoadableSegment => f.write_str("the ELF has no PT_LOAD segment"),
            Self::NoProgramHeaders => f.write_str("the ELF has no program header table (e_phoff is 0)"),
            Self::ExtendedProgramHeaderCount => f.write_str(
                "e_phnum is PN_XNUM (0xffff): the program header count is in section header 0 \
                 (extended numbering), which perfvisor does not load",
            ),
            Self::SegmentOutsideRam { start, end } => {
                write!(f, "segment at {start:#x} is not inside guest RAM (it ends at {end:#x})")
            }
            Self::SegmentOverlapsLoaderArea { start } => write!(
                f,
                "segment at {start:#x} overlaps the page tables/boot info/stack below {IMAGE_BASE:#x} (link guests at {IMAGE_BASE:#x} or above)"
            ),
            Self::SegmentFileSizeAboveMemorySize { start } => write!(f, "segment at {start:#x} has p_filesz > p_memsz"),
            Self::EntryOutsideImage(e) => write!(f, "entry point {e:#x} is outside the loaded segments"),
            Self::RamDoesNotStartAtBase => {
                write!(f, "guest RAM does not start at {GUEST_RAM_START:#x} with room for the boot area")
            }
        }
    }
}

fn inside_ram(ram: &[RamRange], start: u64, end: u64) -> bool {
    ram.iter().any(|r| r.start <= start && end <= r.end)
}

/// sizeof(Elf64_Phdr).
const PHDR64_SIZE: u16 = 56;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The ELF64 header's fields the `elf` crate would only report as a
/// parse error, checked first so each refusal names its field.
fn check_header(image: &[u8]) -> Result<(), LoadError> {
    if image.len() < 64 {
        return Err(LoadError::Truncated(image.len()));
    }
    if image[..4] != *b"\x7fELF" {
        return Err(LoadError::BadMagic([image[0], image[1], image[2], image[3]]));
    }
    if image[4] != elf::abi::ELFCLASS64 {
        return Err(LoadError::NotElf64(image[4]));
    }
    if image[5] != elf::abi::ELFDATA2LSB {
        return Err(LoadError::NotLittleEndian(image[5]));
    }
    let phoff = u64::from_le_bytes(image[32..40].try_into().unwrap_or_default());
    let (phentsize, phnum) = (le16(image, 54), le16(image, 56));
    if phoff == 0 {
        return Err(LoadError::NoProgramHeaders);
    }
    if phnum == elf::abi::PN_XNUM {
        return Err(LoadError::ExtendedProgramHeaderCount);
    }
    if phnum == 0 {
        return Err(LoadError::NoProgramHeaderEntries);
    }
    if phentsize != PHDR64_SIZE {
        return Err(LoadError::ProgramHeaderSize(phentsize));
    }
    let table_end = phoff.checked_add(u64::from(phnum) * u64::from(PHDR64_SIZE));
    if table_end.is_none_or(|end| end > image.len() as u64) {
        return Err(LoadError::ProgramHeadersBeyondFile { offset: phoff, count: phnum, file: image.len() });
    }
    Ok(())
}

/// Copies the image into guest RAM, writes page tables and boot info.
/// Returns the entry point.
pub fn load(
    image: &[u8],
    ram: &[RamRange],
    scenario: Scenario,
    attack: u32,
    hypervisor_page: u64,
) -> Result<u64, LoadError> {
    if !inside_ram(ram, GUEST_RAM_START, IMAGE_BASE) {
        return Err(LoadError::RamDoesNotStartAtBase);
    }
    check_header(image)?;
    let file = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(LoadError::Elf)?;
    let h = &file.ehdr;
    if h.class != Class::ELF64 || h.e_machine != EM_X86_64 || h.e_type != ET_EXEC {
        return Err(LoadError::NotElf64X86Executable {
            class_64: h.class == Class::ELF64,
            machine: h.e_machine,
            kind: h.e_type,
        });
    }
    let ram_bytes: u64 = ram.iter().map(|r| r.end - r.start).sum();
    let segments = file.segments().ok_or(LoadError::NoProgramHeaders)?;
    let mut loaded = 0;
    let mut entry_ok = false;
    for ph in segments.iter().filter(|p| p.p_type == PT_LOAD && p.p_memsz > 0) {
        let start = ph.p_paddr;
        let end = start.checked_add(ph.p_memsz).ok_or(LoadError::SegmentOutsideRam { start, end: u64::MAX })?;
        if ph.p_filesz > ph.p_memsz {
            return Err(LoadError::SegmentFileSizeAboveMemorySize { start });
        }
        if ph.p_offset.checked_add(ph.p_filesz).is_none_or(|e| e > image.len() as u64) {
            return Err(LoadError::SegmentDataBeyondFile {
                start,
                offset: ph.p_offset,
                size: ph.p_filesz,
                file: image.len(),
            });
        }
        if ph.p_align > 1 && (!ph.p_align.is_power_of_two() || ph.p_offset % ph.p_align != ph.p_vaddr % ph.p_align) {
            return Err(LoadError::SegmentAlignment { start, align: ph.p_align });
        }
        if ph.p_memsz > ram_bytes {
            return Err(LoadError::SegmentLargerThanRam { start, size: ph.p_memsz, ram: ram_bytes });
        }
        if start < IMAGE_BASE {
            return Err(LoadError::SegmentOverlapsLoaderArea { start });
        }
        if !inside_ram(ram, start, end) {
            return Err(LoadError::SegmentOutsideRam { start, end });
        }
        let data = file.segment_data(&ph).map_err(LoadError::Elf)?;
        // SAFETY: [start, end) was checked to lie in guest RAM, which the
        // hypervisor never uses, and is mapped through the physical map.
        unsafe {
            let dst = phys_map().ptr::<u8>(start);
            core::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
            core::ptr::write_bytes(dst.add(data.len()), 0, (ph.p_memsz - ph.p_filesz) as usize);
        }
        entry_ok |= (start..end).contains(&h.e_entry);
        loaded += 1;
        log::debug!("guest: segment {start:#x}..{end:#x} ({} bytes from the file)", data.len());
    }
    if loaded == 0 {
        return Err(LoadError::NoLoadableSegment);
    }
    if !entry_ok {
        return Err(LoadError::EntryOutsideImage(h.e_entry));
    }
    write_page_tables();
    write_boot_info(ram, scenario, attack, hypervisor_page);
    log::info!(
        "guest: {loaded} segments loaded, entry {:#x}, stack top {STACK_TOP:#x}, boot info at {BOOT_INFO:#x}",
        h.e_entry
    );
    Ok(h.e_entry)
}

/// Identity map of the first 4 GiB with 2-MiB pages: PML4, PDPT, 4 PDs.
fn write_page_tables() {
    const PRESENT_WRITABLE: u64 = 0b11;
    const LARGE: u64 = 1 << 7;
    let table = |i: u64| PAGE_TABLES + i * 0x1000;
    // SAFETY: PAGE_TABLES..+0x6000 lies in guest RAM (checked by `load`)
    // and belongs to the boot area the ABI reserves for these tables.
    unsafe {
        let map = phys_map();
        core::ptr::write_bytes(map.ptr::<u8>(PAGE_TABLES), 0, 0x6000);
        *map.ptr::<u64>(table(0)) = table(1) | PRESENT_WRITABLE;
        for gib in 0..4 {
            *map.ptr::<u64>(table(1) + gib * 8) = table(2 + gib) | PRESENT_WRITABLE;
            for mib2 in 0..512 {
                let phys = (gib << 30) | (mib2 << 21);
                *map.ptr::<u64>(table(2 + gib) + mib2 * 8) = phys | PRESENT_WRITABLE | LARGE;
            }
        }
    }
}

fn write_boot_info(ram: &[RamRange], scenario: Scenario, attack: u32, hypervisor_page: u64) {
    let mut info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        abi_version: ABI_VERSION,
        scenario: scenario as u32,
        ram_count: ram.len().min(MAX_RAM_RANGES) as u32,
        attack,
        ram: [RamRange::default(); MAX_RAM_RANGES],
        hypervisor_page,
    };
    info.ram[..ram.len()].copy_from_slice(ram);
    // SAFETY: BOOT_INFO lies in the boot area of guest RAM (checked by `load`).
    unsafe { phys_map().ptr::<BootInfo>(BOOT_INFO).write(info) };
}

/// The guest's root page table (its initial CR3).
pub const GUEST_CR3: u64 = PAGE_TABLES;
