//! Physical memory: the bootloader maps all of it at a fixed offset
//! (`BootInfo::physical_memory_offset`), and a frame allocator hands out
//! 4 KiB frames from the usable regions of its memory map.
//!
//! Frames are never freed: the hypervisor allocates its VMX structures
//! once, at boot.

use bootloader_api::info::{MemoryRegionKind, MemoryRegions};
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
        Self {
            regions,
            region: 0,
            next: 0,
            map,
        }
    }

    /// A zeroed frame, or `None` when usable memory is exhausted.
    pub fn allocate_zeroed(&mut self) -> Option<PhysFrame> {
        while let Some(r) = self.regions.get(self.region) {
            if r.kind == MemoryRegionKind::Usable {
                let start = r.start.max(LOWEST_FRAME).next_multiple_of(FRAME_SIZE);
                let addr = self.next.max(start);
                if addr + FRAME_SIZE <= r.end {
                    self.next = addr + FRAME_SIZE;
                    // SAFETY: the frame is usable RAM per the memory map, handed out
                    // once, and mapped writable through the bootloader's linear map.
                    unsafe {
                        core::ptr::write_bytes(self.map.ptr::<u8>(addr), 0, FRAME_SIZE as usize)
                    };
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
    let map = *PHYS_MAP.call_once(|| PhysMap {
        offset: physical_memory_offset,
    });
    *FRAMES.lock() = Some(FrameAllocator::new(regions, map));
    let usable = regions
        .iter()
        .filter(|r| r.kind == MemoryRegionKind::Usable)
        .map(|r| r.end - r.start)
        .sum();
    (usable, regions.len())
}

/// The linear map of physical memory.
pub fn phys_map() -> PhysMap {
    *PHYS_MAP.get().expect("memory::init not called")
}

/// A zeroed 4 KiB frame from the global allocator.
pub fn allocate_frame() -> Option<PhysFrame> {
    FRAMES.lock().as_mut()?.allocate_zeroed()
}
