//! Physical memory: the bootloader maps all of it at a fixed offset
//! (`BootInfo::physical_memory_offset`), and a frame allocator hands out
//! 4 KiB frames from the usable regions of its memory map.
//!
//! Frames are never freed: the hypervisor allocates its VMX structures
//! once, at boot. They come only from below
//! [`perfvisor_abi::layout::GUEST_RAM_START`]: usable memory from there up
//! is the guest's RAM (see [`guest_ram`]), so the two never overlap.

use bootloader_api::info::{MemoryRegionKind, MemoryRegions};
use perfvisor_abi::layout::GUEST_RAM_START;
use perfvisor_abi::{RamRange, MAX_RAM_RANGES};
use spin::Mutex;

pub const FRAME_SIZE: u64 = 4096;

/// A 4 KiB-aligned physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysFrame(pub u64);

/// Physical address -> pointer through the bootloader's linear map.
#[derive(Clone, Copy, Debug)]
pub struct PhysMap {
    offset: u64,
}

impl PhysMap {
    pub fn ptr<T>(&self, phys: u64) -> *mut T {
        (self.offset + phys) as *mut T
    }
}

pub struct FrameAllocator {
    regions: &'static MemoryRegions,
    /// Index of the region being carved, and the next free address in it.
    region: usize,
    next: u64,
    map: PhysMap,
}

/// The lowest frame handed out: the first MiB holds firmware structures
/// (real-mode IVT, EBDA, BIOS data) that some firmware still uses.
const LOWEST_FRAME: u64 = 0x10_0000;

impl FrameAllocator {
    fn new(regions: &'static MemoryRegions, map: PhysMap) -> Self {
        Self { regions, region: 0, next: 0, map }
    }

    /// A zeroed frame, or `None` when usable memory is exhausted.
    pub fn allocate_zeroed(&mut self) -> Option<PhysFrame> {
        while let Some(r) = self.regions.get(self.region) {
            if r.kind == MemoryRegionKind::Usable {
                let start = r.start.max(LOWEST_FRAME).next_multiple_of(FRAME_SIZE);
                let addr = self.next.max(start);
                if addr + FRAME_SIZE <= r.end.min(GUEST_RAM_START) {
                    self.next = addr + FRAME_SIZE;
                    // SAFETY: the frame is usable RAM per the memory map, handed out
                    // once, and mapped writable through the bootloader's linear map.
                    unsafe { core::ptr::write_bytes(self.map.ptr::<u8>(addr), 0, FRAME_SIZE as usize) };
                    return Some(PhysFrame(addr));
                }
            }
            self.region += 1;
        }
        None
    }
}

static FRAMES: Mutex<Option<FrameAllocator>> = Mutex::new(None);
static PHYS_MAP: spin::Once<PhysMap> = spin::Once::new();

/// Sets up the allocator and returns (usable bytes, region count) for the report.
pub fn init(regions: &'static MemoryRegions, physical_memory_offset: u64) -> (u64, usize) {
    let map = *PHYS_MAP.call_once(|| PhysMap { offset: physical_memory_offset });
    *FRAMES.lock() = Some(FrameAllocator::new(regions, map));
    let usable = regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable).map(|r| r.end - r.start).sum();
    (usable, regions.len())
}

/// The linear map of physical memory.
pub fn phys_map() -> PhysMap {
    *PHYS_MAP.get().expect("memory::init not called")
}

/// Guest RAM: the usable memory at and above GUEST_RAM_START (at most
/// MAX_RAM_RANGES ranges; further ones are left out and logged).
pub fn guest_ram() -> ([RamRange; MAX_RAM_RANGES], usize) {
    let mut ranges = [RamRange::default(); MAX_RAM_RANGES];
    let mut n = 0;
    let frames = FRAMES.lock();
    let Some(alloc) = frames.as_ref() else {
        return (ranges, 0);
    };
    for r in alloc.regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable) {
        let start = r.start.max(GUEST_RAM_START).next_multiple_of(FRAME_SIZE);
        let end = r.end & !(FRAME_SIZE - 1);
        if start >= end {
            continue;
        }
        if n == MAX_RAM_RANGES {
            log::warn!("memory: guest RAM range {start:#x}..{end:#x} left out (more than {MAX_RAM_RANGES} ranges)");
            continue;
        }
        // The bootloader splits usable memory around what it allocated; merge neighbours.
        if n > 0 && ranges[n - 1].end == start {
            ranges[n - 1].end = end;
        } else {
            ranges[n] = RamRange { start, end };
            n += 1;
        }
    }
    (ranges, n)
}

/// Usable memory below `end` (at most 1 MiB: perfvisor's frame pool starts
/// there, so these pages are never its own), page-aligned: a Linux
/// guest's low memory.
pub fn low_ram(end: u64) -> ([RamRange; MAX_RAM_RANGES], usize) {
    let mut ranges = [RamRange::default(); MAX_RAM_RANGES];
    let mut n = 0;
    let frames = FRAMES.lock();
    let Some(alloc) = frames.as_ref() else {
        return (ranges, 0);
    };
    let end = end.min(LOWEST_FRAME);
    for r in alloc.regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable && r.start < end) {
        let start = r.start.next_multiple_of(FRAME_SIZE);
        let stop = r.end.min(end) & !(FRAME_SIZE - 1);
        if start >= stop || n == MAX_RAM_RANGES {
            continue;
        }
        if n > 0 && ranges[n - 1].end == start {
            ranges[n - 1].end = stop;
        } else {
            ranges[n] = RamRange { start, end: stop };
            n += 1;
        }
    }
    (ranges, n)
}

/// Whether the page at `addr` (below 1 MiB) is firmware's or unlisted:
/// neither usable memory nor the bootloader's (a Linux guest may read it).
pub fn low_page_is_firmware(addr: u64) -> bool {
    let frames = FRAMES.lock();
    let Some(alloc) = frames.as_ref() else { return false };
    match alloc.regions.iter().find(|r| r.start <= addr && addr < r.end) {
        Some(r) => !matches!(r.kind, MemoryRegionKind::Usable | MemoryRegionKind::Bootloader),
        None => true,
    }
}

/// The firmware's ACPI regions above 1 MiB (ACPI tables, ACPI NVS; BIOS
/// e820 types 3 and 4, UEFI types 9 and 10) with their e820 type codes:
/// a Linux guest reads its ACPI tables there.
pub fn acpi_regions() -> ([(RamRange, u32); MAX_RAM_RANGES], usize) {
    let mut out = [(RamRange::default(), 0); MAX_RAM_RANGES];
    let mut n = 0;
    let frames = FRAMES.lock();
    let Some(alloc) = frames.as_ref() else {
        return (out, 0);
    };
    for r in alloc.regions.iter() {
        let code = match r.kind {
            MemoryRegionKind::UnknownBios(c @ (3 | 4)) => c,
            MemoryRegionKind::UnknownUefi(9) => 3,
            MemoryRegionKind::UnknownUefi(10) => 4,
            _ => continue,
        };
        let start = r.start & !(FRAME_SIZE - 1);
        let end = r.end.next_multiple_of(FRAME_SIZE);
        if start < LOWEST_FRAME || n == MAX_RAM_RANGES {
            continue;
        }
        out[n] = (RamRange { start, end }, code);
        n += 1;
    }
    (out, n)
}

/// EPT tables come from the hypervisor's pool.
pub struct PoolFrames;

impl vmx::ept::FrameSource for PoolFrames {
    fn allocate(&mut self) -> Option<u64> {
        allocate_frame().map(|f| f.0)
    }

    fn table(&mut self, phys: u64) -> &mut [u64; 512] {
        // SAFETY: `phys` is a frame this allocator handed to the EPT builder
        // as a table; it is mapped through the physical-memory map and only
        // the builder touches it (single CPU, boot time).
        unsafe { &mut *phys_map().ptr::<[u64; 512]>(phys) }
    }
}

/// A zeroed 4 KiB frame from the global allocator.
pub fn allocate_frame() -> Option<PhysFrame> {
    FRAMES.lock().as_mut()?.allocate_zeroed()
}
