//! A Linux kernel as perfvisor's guest (issue 10): the loader and the
//! platform policy a Linux guest gets beyond the test kernel's.
//!
//! The ramdisk is the bundle tests/linux-native reads (its doc comment and
//! xtask/src/linux.rs: `setup`, `vmlinux-headers` + `vmlinux-flat.lz4` or
//! `vmlinux` or `bzimage`, `initrd`/`initrd.lz4`, `cmdline`) plus perfvisor's
//! `config` and `nonce`. The boot protocol is the `platform` crate's, the
//! same code the native loader uses: the kernel goes into guest RAM at the
//! lowest 2-MiB-aligned address it fits (its head code relocates itself
//! physically), the initrd above it, then one block with the zero page,
//! the command line, the protocol's GDT and identity page tables for the
//! low 4 GiB. The vCPU starts at the 64-bit entry with `rsi` = the zero page,
//! CS = 0x10 and DS/ES/SS = 0x18 from that GDT, interrupts off.
//!
//! What the guest's e820 says: guest RAM (usable memory from 32 MiB up) and
//! the usable low memory below 640 KiB (Linux needs it for its real-mode
//! trampoline) are usable; the rest of the first MiB is reserved (its
//! firmware pages mapped read-only: Linux reads the BIOS data area, the
//! EBDA, the MP table and the ROM signatures there; the bootloader's pages
//! unmapped); the firmware's ACPI regions keep their types and are mapped
//! (Linux finds its APIC driver through the MADT: with x2APIC on and only
//! an MP table, Debian's 6.1 reads the xAPIC page through a fixmap it never
//! set and oopses in `register_lapic_address`). Nothing else is described
//! or mapped but the I/O APIC's page ([`IOAPIC_PAGE`]): not the xAPIC
//! page (x2APIC is enabled before the guest starts), not the HPET
//! (`hpet=disable`), no PCI MMIO (`pci=off`).

use crate::memory::phys_map;
use core::fmt;
use perfvisor_abi::RamRange;
use perfvisor_platform::bundle::Bundle;
use perfvisor_platform::linux::bundled::{LinuxBundle, LoadError, Placement};
use perfvisor_platform::linux::cmdline::{with_required, RequiredOption};
use perfvisor_platform::linux::layout::Range;
use perfvisor_platform::linux::{E820Kind, E820Table, ZeroPage};

/// The bundle parts of a Linux guest (any one of the kernel parts makes the
/// ramdisk a Linux guest's).
pub const PARTS: [&str; 8] =
    ["setup", "vmlinux-headers", "vmlinux-flat.lz4", "vmlinux", "bzimage", "initrd", "initrd.lz4", "cmdline"];
const KERNEL_PARTS: [&str; 3] = ["vmlinux-flat.lz4", "vmlinux", "bzimage"];

pub fn is_kernel_part(name: &str) -> bool {
    KERNEL_PARTS.contains(&name)
}

/// Where the guest starts.
pub struct LinuxStart {
    pub entry: u64,
    pub zero_page: u64,
    pub cr3: u64,
    pub gdt: u64,
}

/// Why the Linux guest cannot be loaded, in words.
pub enum LinuxError {
    Bundle(perfvisor_platform::bundle::BundleError),
    /// The kernel, command line or initrd, or room for them (the platform crate's checks).
    Load(LoadError),
    /// A boot-protocol error while building the zero page.
    Image(&'static str, perfvisor_platform::linux::Error),
    InitrdMissing,
    /// The command line with perfvisor's options would need this many bytes.
    CmdlineTooLong(usize),
}

impl fmt::Display for LinuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bundle(e) => write!(f, "the ramdisk is not a usable bundle: {e}"),
            Self::Load(e) => write!(f, "{e}"),
            Self::Image(part, e) => write!(f, "{part}: {e}"),
            Self::CmdlineTooLong(n) => {
                write!(f, "the command line with perfvisor's required options needs {n} bytes: too long")
            }
            Self::InitrdMissing => f.write_str(
                "the bundle has no initrd (part initrd or initrd.lz4): perfvisor gives a Linux guest no disk, \
                 so without an initrd it has no root file system",
            ),
        }
    }
}

/// Guest RAM `[addr, addr + len)` as a slice.
///
/// # Safety
/// The range must lie in guest RAM (which perfvisor never uses itself) and
/// nothing else may refer to it.
unsafe fn guest_mut(addr: u64, len: u64) -> &'static mut [u8] {
    // SAFETY: the caller's contract; the bootloader maps all physical memory.
    unsafe { core::slice::from_raw_parts_mut(phys_map().ptr::<u8>(addr), len as usize) }
}

/// The low memory a Linux guest gets: usable pages below 640 KiB (the
/// real-mode trampoline, BIOS data area) and, read-only, 640 KiB-1 MiB.
pub const LOW_RAM_END: u64 = 0xa_0000;
pub const LOW_END: u64 = 0x10_0000;

/// Loads the Linux guest of `ramdisk` into `ram` (plus `low`, usable low
/// memory for its e820).
/// `acpi`: the firmware's ACPI regions with their e820 types (mapped for
/// the guest), `rsdp` the ACPI RSDP for the zero page.
pub fn load(
    ramdisk: &[u8],
    ram: &[RamRange],
    low: &[RamRange],
    acpi: &[(RamRange, u32)],
    rsdp: Option<u64>,
) -> Result<LinuxStart, LinuxError> {
    let bundle = Bundle::parse(ramdisk).map_err(LinuxError::Bundle)?;
    let linux = LinuxBundle::parse(&bundle).map_err(LinuxError::Load)?;
    if linux.initrd_size == 0 {
        return Err(LinuxError::InitrdMissing);
    }
    let LinuxBundle { header, cmdline, entry_offset, image_size, kernel_size, initrd_size, .. } = linux;
    let mut free = [Range::new(0, 0); perfvisor_abi::MAX_RAM_RANGES];
    for (slot, r) in free.iter_mut().zip(ram) {
        *slot = Range::new(r.start, r.end);
    }
    // Zero page, command line (with room for the required options), GDT,
    // PML4, PDPT and four PDs.
    let room = cmdline.len() + REQUIRED_CMDLINE.iter().map(|r| r.option.len() + 1).sum::<usize>();
    let cmdline_pages = (room as u64 + 1).div_ceil(4096);
    let block_size = (1 + cmdline_pages + 1 + 6) * 4096;
    let Placement { kernel_at, initrd_at, block_at, .. } =
        linux.place(&free[..ram.len()], 0, block_size).map_err(LinuxError::Load)?;
    // SAFETY: place() put the kernel in guest RAM, apart from initrd and block; nothing else uses it.
    linux.unpack_kernel(unsafe { guest_mut(kernel_at, kernel_size) }).map_err(LinuxError::Load)?;
    // SAFETY: likewise for the initrd.
    linux.unpack_initrd(unsafe { guest_mut(initrd_at, initrd_size) }).map_err(LinuxError::Load)?;

    // SAFETY: the block lies in guest RAM, apart from kernel and initrd.
    let block = unsafe { guest_mut(block_at, block_size) };
    block.fill(0);
    let cmdline_at = block_at + 4096;
    let (cmdline_len, added) = with_required(cmdline, &REQUIRED_CMDLINE, &mut block[4096..4096 + room])
        .map_err(|e| LinuxError::CmdlineTooLong(e.needed))?;
    header.check_cmdline(cmdline_len).map_err(|e| LinuxError::Image("cmdline with perfvisor's options", e))?;
    for (_, r) in REQUIRED_CMDLINE.iter().enumerate().filter(|(i, _)| added & (1 << i) != 0) {
        log::info!(
            "linux: `{}` added to the command line: {} (name one of {:?} to choose otherwise)",
            r.option,
            r.why,
            r.overridden_by
        );
    }
    log::info!(
        "linux: command line {:?}",
        core::str::from_utf8(&block[4096..4096 + cmdline_len]).unwrap_or("(not UTF-8)")
    );
    let mut zero_page = ZeroPage::new(&header);
    zero_page.set_cmdline(cmdline_at);
    if initrd_size > 0 {
        zero_page.set_initrd(initrd_at, initrd_size);
    }
    if let Some(rsdp) = rsdp {
        zero_page.set_acpi_rsdp(rsdp);
    }
    let mut e820 = E820Table::new();
    let image = |part, e| LinuxError::Image(part, e);
    e820.add(0, LOW_END, E820Kind::Reserved).map_err(|e| image("e820", e))?;
    for r in low {
        e820.add(r.start, r.end - r.start, E820Kind::Usable).map_err(|e| image("e820", e))?;
    }
    for r in ram {
        e820.add(r.start, r.end - r.start, E820Kind::Usable).map_err(|e| image("e820", e))?;
    }
    for (r, code) in acpi {
        e820.add(r.start, r.end - r.start, E820Kind::from_code(*code)).map_err(|e| image("e820", e))?;
    }
    zero_page.set_e820(&e820);
    block[..4096].copy_from_slice(zero_page.as_bytes());
    for e in e820.entries() {
        log::info!("linux: e820 {:#012x}-{:#012x} type {}", e.addr, e.addr + e.size - 1, e.kind.code());
    }

    // The boot protocol's GDT: 0x10 flat 64-bit code, 0x18 flat data (accessed bits preset).
    let gdt_at = cmdline_at + cmdline_pages * 4096;
    let gdt_off = (gdt_at - block_at) as usize;
    for (i, d) in BOOT_GDT.iter().enumerate() {
        block[gdt_off + i * 8..gdt_off + i * 8 + 8].copy_from_slice(&d.to_le_bytes());
    }
    // Identity page tables for the low 4 GiB with 2-MiB pages.
    let tables_at = gdt_at + 4096;
    let t = (tables_at - block_at) as usize;
    let mut put = |page: u64, index: u64, value: u64| {
        let at = t + (page * 4096 + index * 8) as usize;
        block[at..at + 8].copy_from_slice(&value.to_le_bytes());
    };
    const PRESENT_WRITABLE: u64 = 0b11;
    const HUGE: u64 = 1 << 7;
    put(0, 0, (tables_at + 4096) | PRESENT_WRITABLE);
    for gib in 0..4u64 {
        put(1, gib, (tables_at + (2 + gib) * 4096) | PRESENT_WRITABLE);
        for mib2 in 0..512u64 {
            put(2 + gib, mib2, (gib << 30) | (mib2 << 21) | PRESENT_WRITABLE | HUGE);
        }
    }
    log::info!(
        "linux: kernel {image_size:#x} bytes (init_size {:#x}, protocol {}.{:02}) at {kernel_at:#x}, entry {:#x}; \
         initrd {initrd_size:#x} bytes at {initrd_at:#x}; zero page at {block_at:#x}",
        header.init_size,
        header.version >> 8,
        header.version & 0xff,
        kernel_at + entry_offset,
    );
    Ok(LinuxStart { entry: kernel_at + entry_offset, zero_page: block_at, cr3: tables_at, gdt: gdt_at })
}

/// What a Linux guest's command line must say about this platform, each
/// added unless the user's line names a parameter that decides it
/// (issue 10: one CPU, and no device perfvisor does not give the guest).
pub const REQUIRED_CMDLINE: [RequiredOption; 3] = [
    RequiredOption {
        option: "nosmp",
        overridden_by: &["nosmp", "maxcpus=", "nr_cpus="],
        why: "the guest runs on the boot CPU only (SMP guests are not supported yet); it also keeps Linux off \
              the I/O APIC setup",
    },
    RequiredOption {
        option: "hpet=disable",
        overridden_by: &["hpet="],
        why: "the HPET is not mapped for the guest (an access would stop it with an EPT violation)",
    },
    RequiredOption {
        option: "pci=off",
        overridden_by: &["pci="],
        why: "PCI configuration space is refused: without an IOMMU in use a device could DMA into perfvisor",
    },
];

/// The I/O APIC's register page, where PC firmware puts the first one
/// (Bochs' MP table and MADT both say 0xfec00000).
pub const IOAPIC_PAGE: u64 = 0xfec0_0000;

/// The boot protocol's GDT (Documentation/arch/x86/boot.rst, 64-bit boot
/// protocol: `__BOOT_CS` 0x10, `__BOOT_DS` 0x18).
pub const BOOT_GDT: [u64; 4] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

/// The MSRs a Linux guest reads that perfvisor emulates (the test kernel's
/// policy leaves them #GP): index, value read, why. Writes of the value
/// read are accepted and change nothing; other writes #GP.
pub const EMULATED_MSRS: &[(u32, u64, &str)] = &[
    (
        0x1a0,
        1 | 1 << 7 | 1 << 11 | 1 << 12,
        "IA32_MISC_ENABLE: read before Linux has an IDT (a #GP is a triple fault); fast strings, \
         perfmon available, BTS and PEBS unavailable (perfvisor virtualises neither)",
    ),
    (0x179, 0, "IA32_MCG_CAP: no machine-check banks (Linux panics when it #GPs); #MC stays perfvisor's"),
    (0x17a, 0, "IA32_MCG_STATUS: clear"),
    (0x8b, 0, "IA32_BIOS_SIGN_ID: microcode revision 0 (read unchecked by early Intel init)"),
];

/// MSRs a Linux guest may read from the hardware (writes #GP): MTRR
/// capabilities, default type and ranges (the guest sees the platform's
/// memory types), APERF/MPERF where CPUID.6 advertises them; and two that
/// CPUID advertises (CPUID.7.EDX[29], CPUID.7.EBX[1]) and Linux reads
/// unchecked, so they must not #GP: IA32_ARCH_CAPABILITIES (0x10a, the
/// CPU's vulnerability enumeration, read-only; [`ARCH_CAPABILITIES_HIDDEN`]
/// masked) and IA32_TSC_ADJUST (0x3b; Linux writes it only to undo a
/// non-zero value, which would #GP: a host whose firmware set it is not
/// supported yet). A CPU without
/// them still #GPs the read.
pub fn readable_msr(msr: u32) -> bool {
    matches!(
        msr,
        0xfe | 0x2ff | 0x200..=0x213 | 0x250 | 0x258 | 0x259 | 0x268..=0x26f | 0xe7 | 0xe8 | 0x10a | 0x3b
    )
}

/// MSRs a Linux guest owns outright (MSR-bitmap pass-through): the TSC
/// deadline (the LAPIC timer is the guest's, like the whole local APIC);
/// the speculation controls CPUID advertises (SPEC_CTRL, PRED_CMD's IBPB
/// on every address-space switch, FLUSH_CMD): per-CPU mitigations that
/// perfvisor does not use itself and that hide nothing of its state (a
/// WRMSR of an MSR the CPU lacks still #GPs in the guest).
pub const PASSTHROUGH_MSRS: [u32; 4] = [0x6e0, 0x48, 0x49, 0x10b];

/// MSRs a Linux guest reads without an exit (writes still exit and #GP
/// unless they write the value read, `readable_msr`): APERF and MPERF,
/// which Linux's scheduler tick reads on every tick for frequency
/// invariance, and TSC_ADJUST, which its idle loop checks once a second
/// (an exit each would be a cost of the idle and busy guest).
pub const READ_PASSTHROUGH_MSRS: [u32; 3] = [0xe7, 0xe8, 0x3b];

/// I/O ports a Linux guest reaches directly (I/O-bitmap pass-through),
/// with why; every other port keeps the test kernel's policy (reset and
/// power-off ports end the guest, COM1 emulated, the rest refused).
pub const IO_PASSTHROUGH: &[(core::ops::RangeInclusive<u16>, &str)] = &[
    (0x40..=0x43, "PIT: Linux's timer tick and TSC calibration (a timer, not a bus master)"),
    (0x61..=0x61, "NMI status and PIT gate 2: PIT calibration (port 0x61 has no reset bit)"),
    (
        0x70..=0x71,
        "RTC/CMOS: the wall clock (no DMA; the CMOS shutdown byte matters only on a reset, which ends the guest)",
    ),
];

/// Port 0xf4 (the isa-debug-exit port the test initramfs writes its
/// verdict to): 0x10 is the guest's success, `PHASE_MARK | n` the end of
/// the client's phase `PHASES[n]`, anything else its failure.
pub const EXIT_PORT: u16 = 0xf4;

/// A phase mark's high nibble on [`EXIT_PORT`] (tests/linux-client).
pub const PHASE_MARK: u8 = 0x20;

/// The client's phases, by the low nibble of its mark: from the entry to
/// /init, one second of idle sleep, a counting (`perf stat`-like) run, a
/// sampling (`perf record`-like) run. Only marked under perfvisor.
pub const PHASES: [&str; 4] = ["boot", "idle", "perf-stat", "perf-record"];

/// The phase a byte written to [`EXIT_PORT`] marks, if it is a mark:
/// its index and name.
pub fn phase_marked(value: u8) -> Option<(usize, &'static str)> {
    let index = usize::from(value & 0xf);
    if value & 0xf0 == PHASE_MARK {
        PHASES.get(index).map(|&name| (index, name))
    } else {
        None
    }
}

/// IA32_ARCH_CAPABILITIES bits that announce MSRs a Linux guest cannot
/// use here (they #GP): TSX_CTRL (bit 7, MSR 0x122), FB_CLEAR_CTRL (bit 18,
/// MSR 0x123), GDS_CTRL (bit 25, MSR 0x123). Linux writes those MSRs when
/// told they exist; hidden, as KVM hides them from its guests.
pub const ARCH_CAPABILITIES_HIDDEN: u64 = 1 << 7 | 1 << 18 | 1 << 25;

/// RDMSR for a Linux guest beyond the common policy: `EMULATED_MSRS`, then
/// `readable_msr` from the hardware; `None`: #GP.
pub fn read_msr(msr: u32) -> Option<u64> {
    if let Some(&(_, value, _)) = EMULATED_MSRS.iter().find(|(m, _, _)| *m == msr) {
        return Some(value);
    }
    if readable_msr(msr) {
        let value = crate::arch::msr::rdmsr_checked(msr).ok()?;
        return Some(if msr == 0x10a { value & !ARCH_CAPABILITIES_HIDDEN } else { value });
    }
    None
}

/// Puts the local APIC in x2APIC mode before Linux starts, where CPUID
/// offers it: Linux then keeps x2APIC ("enabled by BIOS") and reaches its
/// APIC through the MSRs perfvisor already passes through or checks (the
/// ICR), so the xAPIC page stays unmapped and its ICR out of reach.
pub fn enable_x2apic() {
    const X2APIC: u32 = 1 << 21;
    const ENABLE: u64 = 1 << 11;
    const EXTD: u64 = 1 << 10;
    if crate::report::cpuid(1, 0).ecx & X2APIC == 0 {
        log::warn!("linux: no x2APIC: Linux's xAPIC accesses will stop the guest (the xAPIC page is not mapped)");
        return;
    }
    let Ok(base) = crate::arch::msr::rdmsr_checked(crate::pmi::IA32_APIC_BASE) else { return };
    // SAFETY: enabling the APIC and then x2APIC mode is a valid transition
    // (SDM vol. 3A §11.12.5); the host uses no APIC, the guest owns it.
    let done = unsafe {
        crate::arch::msr::wrmsr_checked(crate::pmi::IA32_APIC_BASE, base | ENABLE)
            .and_then(|()| crate::arch::msr::wrmsr_checked(crate::pmi::IA32_APIC_BASE, base | ENABLE | EXTD))
    };
    match done {
        Ok(()) => log::info!("linux: local APIC in x2APIC mode (the xAPIC page is not mapped for the guest)"),
        Err(_) => log::warn!("linux: enabling x2APIC mode raised #GP"),
    }
}
