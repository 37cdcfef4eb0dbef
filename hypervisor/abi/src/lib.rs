//! perfvisor's guest ABI, version [`ABI_VERSION`].
//!
//! # Boot
//! The guest is an ELF64 executable (ET_EXEC, x86-64) linked inside guest
//! RAM. perfvisor loads its PT_LOAD segments at their physical addresses,
//! builds identity page tables (2-MiB pages, the first 4 GiB) at
//! [`layout::PAGE_TABLES`], writes a [`BootInfo`] at [`layout::BOOT_INFO`],
//! and starts it in 64-bit mode at the ELF entry point with
//! RSP = [`layout::STACK_TOP`] and RDI = the BootInfo's address.
//! Guest-physical addresses equal host-physical ones (EPT identity map);
//! the hypervisor's own memory is not mapped.
//!
//! # Hypercalls
//! `VMCALL` with RAX = [`Hypercall`] number and arguments in RDI, RSI, RDX,
//! RCX, R8. The result is returned in RAX; [`HYPERCALL_ERROR`] for an
//! unknown call or a bad argument (e.g. a buffer outside guest RAM).
#![no_std]

pub const ABI_VERSION: u32 = 1;

/// "PVBOOT01", little-endian.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"PVBOOT01");

/// Guest RAM ranges given in the boot info at most.
pub const MAX_RAM_RANGES: usize = 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RamRange {
    pub start: u64,
    pub end: u64,
}

/// What the guest is told at boot.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BootInfo {
    pub magic: u64,
    pub abi_version: u32,
    /// Which [`Scenario`] the boot config asked for.
    pub scenario: u32,
    pub ram_count: u32,
    /// Which [`Attack`] the `attack` scenario makes (0 otherwise).
    pub attack: u32,
    pub ram: [RamRange; MAX_RAM_RANGES],
    /// A physical address the hypervisor owns (the guest must not reach
    /// it): for the isolation test.
    pub hypervisor_page: u64,
}

/// VMCALL numbers (RAX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Hypercall {
    /// Returns [`ABI_VERSION`].
    AbiVersion = 0,
    /// Writes RSI bytes at guest-physical RDI to the console.
    Write = 1,
    /// Reports a test: RDI = [`TestStatus`], name at RSI (RDX bytes), reason
    /// at RCX (R8 bytes; 0 for none). Printed as `TEST name ... ok`.
    ReportTest = 2,
    /// Ends the guest with status RDI (0 = success): the run's verdict.
    Exit = 3,
    /// Returns how many VM exits of basic reason RDI the guest has caused.
    ExitCount = 4,
    /// Test aid: switches the PMU to another context (the host's, holding
    /// a canary) and back, as when another vCPU takes the core. Returns 0,
    /// or HYPERCALL_ERROR if the other context's values did not survive.
    /// RDI = 1 damages the canary while the other context is loaded, so the
    /// switch must report the loss and leave both contexts usable.
    PmuSwitch = 5,
    /// Test aid: makes the guest-physical page at RDI read-only in the EPT
    /// until the guest's next write to it, which perfvisor lets through
    /// (write access restored, the access retried), as write tracking does.
    /// Returns 0, or HYPERCALL_ERROR for a page outside guest RAM or when
    /// [`MAX_WRITE_TRAPS`] are set.
    TrapWrite = 6,
}

/// How many pages [`Hypercall::TrapWrite`] can watch at once.
pub const MAX_WRITE_TRAPS: usize = 4;

impl Hypercall {
    pub fn from_raw(n: u64) -> Option<Self> {
        Some(match n {
            0 => Self::AbiVersion,
            1 => Self::Write,
            2 => Self::ReportTest,
            3 => Self::Exit,
            4 => Self::ExitCount,
            5 => Self::PmuSwitch,
            6 => Self::TrapWrite,
            _ => return None,
        })
    }
}

pub const HYPERCALL_ERROR: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum TestStatus {
    Ok = 0,
    Failed = 1,
    Skipped = 2,
}

/// What the guest test kernel does, chosen by the boot config's `guest=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Scenario {
    /// Run the test suite.
    Suite = 0,
    /// Read the hypervisor's page: an EPT violation.
    EptViolation = 1,
    /// Fault with no IDT: a triple fault.
    TripleFault = 2,
    /// Exit with status 3.
    ExitStatus = 3,
    /// Measure exit costs and print them.
    Bench = 4,
    /// Pseudo-random PMU MSR accesses (seeded), counting the #GPs.
    PmuFuzz = 5,
    /// The hostile-guest suite: attacks perfvisor must refuse while the
    /// guest goes on, each a `hostile_*` test with a figure.
    Hostile = 6,
    /// One attack that ends the run ([`BootInfo::attack`] says which).
    Attack = 7,
    /// The x2APIC ICR attacks aimed at CPU 1 (a machine with 2 CPUs):
    /// INIT, SIPI, SMI and NMI, each a `hostile_*` test.
    HostileIcr = 8,
}

/// The attacks of [`Scenario::Attack`], each ending the run: perfvisor
/// must end the guest with a reason and never give a pass verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Attack {
    /// `perfvisor: verdict PASS` written to COM1, then Bochs' magic breakpoint.
    ForgeConsole = 1,
    /// The same line inside a Write hypercall after a newline, then the breakpoint.
    ForgeWrite = 2,
    /// `cli; jmp $`.
    HangSpin = 3,
    /// `cli; hlt` in a loop.
    HangHalt = 4,
    /// Reset through port 0xcf9.
    ResetCf9 = 5,
    /// Reset through the keyboard controller (0xfe to port 0x64).
    ResetKbc = 6,
    /// Fast reset through port 0x92.
    ResetPort92 = 7,
    /// "Shutdown" to Bochs' port 0x8900.
    BochsShutdown = 8,
    /// A pass code (0x10) to QEMU's isa-debug-exit port 0xf4.
    DebugExit = 9,
    // Memory probes: one access to a guest-physical address outside guest
    // RAM (the guest prints `probe: ... guest-physical <addr>` first); each
    // must end the guest with an EPT violation naming the address.
    /// Read the last byte below the first guest RAM range (perfvisor's frame pool).
    ProbeBelowRam = 10,
    /// Read the first byte above the last guest RAM range.
    ProbeAboveRam = 11,
    /// Read the first byte of the first hole between guest RAM ranges.
    ProbeHoleStart = 12,
    /// Read the last byte of the first hole between guest RAM ranges.
    ProbeHoleEnd = 13,
    /// Read [`BootInfo::hypervisor_page`].
    ProbeHypervisorRead = 14,
    /// Write [`BootInfo::hypervisor_page`].
    ProbeHypervisorWrite = 15,
    /// Jump to [`BootInfo::hypervisor_page`].
    ProbeHypervisorExec = 16,
    /// Read physical page 0 (real-mode IVT).
    ProbePage0 = 17,
    /// Read the legacy VGA window at 0xa0000.
    ProbeVga = 18,
    /// Read the BIOS ROM's top page (0xfffff000, the reset vector's).
    ProbeBiosRom = 19,
    /// Read the local APIC page 0xfee00000 (xAPIC registers).
    ProbeLocalApic = 20,
    /// Read the IOAPIC at 0xfec00000.
    ProbeIoApic = 21,
    /// Read the HPET at 0xfed00000.
    ProbeHpet = 22,
    /// Read PCI MMIO at 0xe0000000 (Bochs' VBE framebuffer).
    ProbePciMmio = 23,
}

impl Attack {
    pub const ALL: [(&'static str, Attack); 23] = [
        ("forge-console", Self::ForgeConsole),
        ("forge-write", Self::ForgeWrite),
        ("hang-spin", Self::HangSpin),
        ("hang-halt", Self::HangHalt),
        ("reset-cf9", Self::ResetCf9),
        ("reset-kbc", Self::ResetKbc),
        ("reset-92", Self::ResetPort92),
        ("bochs-shutdown", Self::BochsShutdown),
        ("debug-exit", Self::DebugExit),
        ("probe-below-ram", Self::ProbeBelowRam),
        ("probe-above-ram", Self::ProbeAboveRam),
        ("probe-hole-start", Self::ProbeHoleStart),
        ("probe-hole-end", Self::ProbeHoleEnd),
        ("probe-hypervisor-read", Self::ProbeHypervisorRead),
        ("probe-hypervisor-write", Self::ProbeHypervisorWrite),
        ("probe-hypervisor-exec", Self::ProbeHypervisorExec),
        ("probe-page0", Self::ProbePage0),
        ("probe-vga", Self::ProbeVga),
        ("probe-bios-rom", Self::ProbeBiosRom),
        ("probe-local-apic", Self::ProbeLocalApic),
        ("probe-ioapic", Self::ProbeIoApic),
        ("probe-hpet", Self::ProbeHpet),
        ("probe-pci-mmio", Self::ProbePciMmio),
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(name, _)| *name == s).map(|(_, a)| *a)
    }

    pub fn from_raw(n: u32) -> Option<Self> {
        Self::ALL.iter().find(|(_, a)| *a as u32 == n).map(|(_, a)| *a)
    }
}

impl Scenario {
    pub fn from_raw(n: u32) -> Option<Self> {
        Some(match n {
            0 => Self::Suite,
            1 => Self::EptViolation,
            2 => Self::TripleFault,
            3 => Self::ExitStatus,
            4 => Self::Bench,
            5 => Self::PmuFuzz,
            6 => Self::Hostile,
            7 => Self::Attack,
            8 => Self::HostileIcr,
            _ => return None,
        })
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "suite" => Self::Suite,
            "ept-violation" => Self::EptViolation,
            "triple-fault" => Self::TripleFault,
            "exit-status" => Self::ExitStatus,
            "bench" => Self::Bench,
            "pmu-fuzz" => Self::PmuFuzz,
            "hostile" => Self::Hostile,
            "hostile-icr" => Self::HostileIcr,
            s if s.strip_prefix("attack:").is_some_and(|a| Attack::parse(a).is_some()) => Self::Attack,
            _ => return None,
        })
    }
}

/// Guest-physical layout (identity-mapped).
pub mod layout {
    /// Guest RAM is the usable memory at and above this address; below it
    /// is the hypervisor's frame pool.
    pub const GUEST_RAM_START: u64 = 0x0200_0000;
    /// PML4, PDPT and four page directories (identity, 4 GiB, 2-MiB pages).
    pub const PAGE_TABLES: u64 = GUEST_RAM_START;
    pub const BOOT_INFO: u64 = GUEST_RAM_START + 0x6000;
    pub const STACK_BOTTOM: u64 = GUEST_RAM_START + 0x1_0000;
    pub const STACK_TOP: u64 = GUEST_RAM_START + 0x2_0000;
    /// Where guest images are linked (tests/guest/link.ld).
    pub const IMAGE_BASE: u64 = GUEST_RAM_START + 0x10_0000;
}
