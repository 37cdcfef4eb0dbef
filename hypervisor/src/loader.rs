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
            Self::Elf(e) => write!(f, "not a valid ELF file ({e:?})"),
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
                write!(f, "segment {start:#x}..{end:#x} is not inside guest RAM")
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
    let file = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(LoadError::Elf)?;
    let h = &file.ehdr;
    if h.class != Class::ELF64 || h.e_machine != EM_X86_64 || h.e_type != ET_EXEC {
        return Err(LoadError::NotElf64X86Executable {
            class_64: h.class == Class::ELF64,
            machine: h.e_machine,
            kind: h.e_type,
        });
    }
    if h.e_phnum == elf::abi::PN_XNUM {
        return Err(LoadError::ExtendedProgramHeaderCount);
    }
    let segments = file.segments().ok_or(LoadError::NoProgramHeaders)?;
    let mut loaded = 0;
    let mut entry_ok = false;
    for ph in segments.iter().filter(|p| p.p_type == PT_LOAD && p.p_memsz > 0) {
        let start = ph.p_paddr;
        let end = start.checked_add(ph.p_memsz).ok_or(LoadError::SegmentOutsideRam { start, end: u64::MAX })?;
        if ph.p_filesz > ph.p_memsz {
            return Err(LoadError::SegmentFileSizeAboveMemorySize { start });
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
