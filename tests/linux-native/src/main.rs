//! Boots a Linux kernel natively — no hypervisor — so Linux's own perf
//! driver judges the CPU's PMU (in Bochs: the counting PMU of
//! tests/bochs/patches). A `bootloader_api` kernel like
//! tests/guest/src/bin/pmu-native.rs; `cargo xtask linux-native` and the
//! `bochs-linux-native-*` cases build its image.
//!
//! The bootloader's ramdisk is a bundle (platform/src/bundle.rs) with:
//! - `setup`: the first bytes of the bzImage (its setup header); absent for
//!   a bare vmlinux (a synthetic header is used);
//! - the kernel, one of: `vmlinux-headers` + `vmlinux-flat.lz4` (the ELF's
//!   header and program headers, and its PT_LOAD segments laid out from
//!   their lowest physical address, LZ4-compressed), `vmlinux` (a whole
//!   ELF), or `bzimage` (a whole bzImage, entered at its 64-bit entry: it
//!   decompresses itself, ~110 s more in Bochs);
//! - `initrd` or `initrd.lz4`, optional;
//! - `cmdline`.
//!
//! Why compressed: the BIOS bootloader reads the ramdisk at ~2.2 s per MB in
//! Bochs 2.7 (measured here: a 16 MB ramdisk took the boot from 0.9 s to
//! 34–37 s). Debian 6.1's vmlinux is 36.7 MB of PT_LOAD data up to its last
//! non-zero byte (~80 s to load); LZ4 makes it ~16.6 MB and decompresses in
//! a few hundred million emulated instructions.
//!
//! The kernel goes at the lowest free address aligned as it asks (2 MiB;
//! its head code relocates itself physically), the initrd above it, and the
//! zero page, command line and page tables into one free block. The e820
//! map handed to Linux is the bootloader's map with every region the
//! bootloader or this loader used marked usable: nothing there is needed
//! once Linux runs (it copies the zero page and command line before it
//! allocates any memory, reserves the initrd itself, and switches to its
//! own page tables in its first instructions).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod kernel {
    use bootloader_api::config::{BootloaderConfig, Mapping};
    use bootloader_api::info::MemoryRegionKind;
    use bootloader_api::{entry_point, BootInfo};
    use core::fmt::Write;
    use perfvisor_guest::native::{self, console};
    use perfvisor_platform::bundle::Bundle;
    use perfvisor_platform::linux::bundled::{LinuxBundle, Placement};
    use perfvisor_platform::linux::layout::Range;
    use perfvisor_platform::linux::{E820Kind, E820Table, ZeroPage};

    /// All of physical memory is mapped here: the loader writes the kernel,
    /// initrd, zero page and page tables through it.
    const PHYS_OFFSET: u64 = 0xffff_a000_0000_0000;

    const BOOTLOADER_CONFIG: BootloaderConfig = {
        let mut config = BootloaderConfig::new_default();
        config.mappings.physical_memory = Some(Mapping::FixedAddress(PHYS_OFFSET));
        config.mappings.kernel_base = Mapping::FixedAddress(0xffff_8000_0000_0000);
        // Everything the bootloader maps stays in the higher half: the lower
        // half is replaced by an identity map before Linux is entered.
        config.mappings.dynamic_range_start = Some(0xffff_9000_0000_0000);
        config.kernel_stack_size = 64 * 1024;
        config
    };

    entry_point!(main, config = &BOOTLOADER_CONFIG);

    macro_rules! say {
        ($($arg:tt)*) => {{
            let _ = writeln!(console(), "linux-native: {}", format_args!($($arg)*));
        }};
    }

    /// The fail verdict (REFERENCE.md §5): the line, then the verdict ports.
    fn fail(what: core::fmt::Arguments<'_>) -> ! {
        let _ = writeln!(console(), "linux-native: {what}");
        let _ = writeln!(console(), "perfvisor: verdict FAIL (cannot boot Linux)");
        native::exit(false)
    }

    macro_rules! fail {
        ($($arg:tt)*) => { fail(format_args!($($arg)*)) };
    }

    fn tsc() -> u64 {
        // SAFETY: RDTSC has no side effects; CR4.TSD is clear in ring 0 anyway.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// Physical memory `[addr, addr + len)` as a mutable slice.
    ///
    /// # Safety
    /// The range must be RAM that nothing else in this kernel references
    /// (a `Usable` region the loader placed something in).
    unsafe fn phys_mut(addr: u64, len: u64) -> &'static mut [u8] {
        // SAFETY: the bootloader maps all physical memory at PHYS_OFFSET; the caller owns the range.
        unsafe { core::slice::from_raw_parts_mut((PHYS_OFFSET + addr) as *mut u8, len as usize) }
    }

    const MAX_REGIONS: usize = 64;

    fn main(boot_info: &'static mut BootInfo) -> ! {
        let start = tsc();
        let _ = writeln!(console());
        say!("booting Linux natively (no hypervisor)");
        if boot_info.physical_memory_offset.into_option() != Some(PHYS_OFFSET) {
            fail!("the bootloader did not map physical memory at {PHYS_OFFSET:#x}");
        }
        let (Some(ramdisk), len) = (boot_info.ramdisk_addr.into_option(), boot_info.ramdisk_len) else {
            fail!("the image has no ramdisk: nothing to boot");
        };
        // SAFETY: the bootloader mapped the ramdisk there, read-only to us, for the kernel's lifetime.
        let ramdisk = unsafe { core::slice::from_raw_parts(ramdisk as *const u8, len as usize) };
        let bundle = Bundle::parse(ramdisk).unwrap_or_else(|e| fail!("the ramdisk is not a usable bundle: {e}"));

        let linux = LinuxBundle::parse(&bundle).unwrap_or_else(|e| fail!("{e}"));
        let LinuxBundle { header, cmdline, entry_offset, image_size, kernel_size, initrd_size, .. } = linux;

        // Where everything goes: only memory the bootloader left usable.
        let mut free = [Range::new(0, 0); MAX_REGIONS];
        let mut nfree = 0;
        for r in boot_info.memory_regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable) {
            if nfree == MAX_REGIONS {
                fail!("more than {MAX_REGIONS} usable memory regions");
            }
            free[nfree] = Range::new(r.start, r.end);
            nfree += 1;
        }
        let free = &free[..nfree];
        // Zero page, command line (up to cmdline_size), PML4, PDPT and four PDs.
        let cmdline_pages = (cmdline.len() as u64 + 1).div_ceil(4096);
        let block_size = (1 + cmdline_pages + 6) * 4096;
        let Placement { kernel_at, initrd_at, block_at, .. } =
            linux.place(free, 0x10_0000, block_size).unwrap_or_else(|e| fail!("{e}"));
        say!(
            "kernel {image_size:#x} bytes (init_size {:#x}, protocol {}.{:02}) at {kernel_at:#x}, entry {:#x}; \
             initrd {initrd_size:#x} bytes at {initrd_at:#x}; zero page at {block_at:#x}",
            header.init_size,
            header.version >> 8,
            header.version & 0xff,
            kernel_at + entry_offset
        );

        // Put the kernel and initrd in place.
        let loaded = tsc();
        // SAFETY: place() put the kernel in usable RAM, apart from initrd and block; nothing else uses it.
        linux.unpack_kernel(unsafe { phys_mut(kernel_at, kernel_size) }).unwrap_or_else(|e| fail!("{e}"));
        // SAFETY: likewise for the initrd (an empty range when there is none).
        linux.unpack_initrd(unsafe { phys_mut(initrd_at, initrd_size) }).unwrap_or_else(|e| fail!("{e}"));

        // The zero page, its command line and e820 map.
        // SAFETY: the block lies in usable RAM, apart from kernel and initrd.
        let block = unsafe { phys_mut(block_at, block_size) };
        block.fill(0);
        let cmdline_at = block_at + 4096;
        block[4096..4096 + cmdline.len()].copy_from_slice(cmdline);
        let mut zero_page = ZeroPage::new(&header);
        zero_page.set_cmdline(cmdline_at);
        if initrd_size > 0 {
            zero_page.set_initrd(initrd_at, initrd_size);
        }
        if let Some(rsdp) = boot_info.rsdp_addr.into_option() {
            zero_page.set_acpi_rsdp(rsdp);
        }
        let mut e820 = E820Table::new();
        for r in boot_info.memory_regions.iter() {
            let kind = match r.kind {
                // Nothing the bootloader or this loader used is needed once Linux runs (see the top).
                MemoryRegionKind::Usable | MemoryRegionKind::Bootloader => E820Kind::Usable,
                MemoryRegionKind::UnknownBios(code) => E820Kind::from_code(code),
                // UEFI: ACPI reclaim and NVS keep their meaning; the rest stays reserved.
                MemoryRegionKind::UnknownUefi(9) => E820Kind::Acpi,
                MemoryRegionKind::UnknownUefi(10) => E820Kind::Nvs,
                _ => E820Kind::Reserved,
            };
            e820.add(r.start, r.end - r.start, kind).unwrap_or_else(|e| fail!("{e}"));
        }
        zero_page.set_e820(&e820);
        block[..4096].copy_from_slice(zero_page.as_bytes());
        for e in e820.entries() {
            say!("e820 {:#012x}-{:#012x} type {}", e.addr, e.addr + e.size - 1, e.kind.code());
        }

        // Identity page tables for the low 4 GiB (2 MiB pages), the higher
        // half (this code, its stack, the physical map) kept as the bootloader made it.
        let tables_at = block_at + (1 + cmdline_pages) * 4096;
        let tables = &mut block[((1 + cmdline_pages) * 4096) as usize..];
        let (current, _) = x86_64::registers::control::Cr3::read();
        // SAFETY: the active PML4 is a bootloader page, read through the physical map.
        let pml4 =
            unsafe { core::slice::from_raw_parts((PHYS_OFFSET + current.start_address().as_u64()) as *const u64, 512) };
        let put = |tables: &mut [u8], page: u64, index: usize, value: u64| {
            let at = (page * 4096) as usize + index * 8;
            tables[at..at + 8].copy_from_slice(&value.to_le_bytes());
        };
        const PRESENT_WRITABLE: u64 = 0b11;
        const HUGE: u64 = 1 << 7;
        for (i, entry) in pml4.iter().enumerate().skip(256) {
            put(tables, 0, i, *entry);
        }
        put(tables, 0, 0, (tables_at + 4096) | PRESENT_WRITABLE);
        for gib in 0..4u64 {
            put(tables, 1, gib as usize, (tables_at + (2 + gib) * 4096) | PRESENT_WRITABLE);
            for mib2 in 0..512u64 {
                put(tables, 2 + gib, mib2 as usize, ((gib << 30) | (mib2 << 21)) | PRESENT_WRITABLE | HUGE);
            }
        }
        let done = tsc();
        say!(
            "loaded in {} M TSC ticks (bundle parsing {} M); entering Linux at {:#x} with rsi = {block_at:#x} (TSC {done})",
            (done - loaded) / 1_000_000,
            (loaded - start) / 1_000_000,
            kernel_at + entry_offset
        );
        // SAFETY: the new tables map this code and its data exactly as before
        // (higher half copied) and identity-map the kernel, zero page and
        // command line; interrupts are off; Linux never returns.
        unsafe { enter(tables_at, kernel_at + entry_offset, block_at) }
    }

    /// The boot protocol's GDT: 0x10 a flat 64-bit code segment, 0x18 flat
    /// data. The accessed bits are preset: the GDT is in read-only memory,
    /// and the CPU's write of that bit on a segment load would page-fault.
    static GDT: [u64; 4] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

    #[repr(C, packed)]
    struct GdtPointer {
        limit: u16,
        base: u64,
    }

    /// Loads the GDT and `cr3`, reloads the segments (CS 0x10, data 0x18)
    /// and jumps to `entry` with `rsi` = `zero_page`.
    ///
    /// # Safety
    /// `cr3` must map this code and identity-map the kernel at `entry`.
    unsafe fn enter(cr3: u64, entry: u64, zero_page: u64) -> ! {
        let gdt = GdtPointer { limit: (core::mem::size_of_val(&GDT) - 1) as u16, base: GDT.as_ptr() as u64 };
        // SAFETY: the caller's contract; the GDT is static, so it outlives the far return.
        unsafe {
            core::arch::asm!(
                "cli",
                "lgdt [rdx]",
                "mov cr3, rcx",
                "push 0x10",
                "lea rax, [rip + 2f]",
                "push rax",
                "retfq",
                "2:",
                "mov eax, 0x18",
                "mov ds, eax",
                "mov es, eax",
                "mov ss, eax",
                "xor ebp, ebp",
                "xor ebx, ebx",
                "jmp rdi",
                in("rdx") &gdt,
                in("rcx") cr3,
                in("rdi") entry,
                in("rsi") zero_page,
                options(noreturn),
            )
        }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        fail!("PANIC: {}", info.message())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("perfvisor-linux-native is a kernel for x86_64-unknown-none; build it with `cargo xtask linux-native`");
}
