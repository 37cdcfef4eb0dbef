//! The Linux x86 boot protocol, 64-bit entry (Documentation/arch/x86/boot.rst).
//!
//! A loader using this module:
//! 1. reads the kernel's setup header from a bzImage ([`SetupHeader::parse`]),
//!    or makes one for a bare vmlinux ([`SetupHeader::for_vmlinux`]);
//! 2. finds the 64-bit code to load: a vmlinux ELF's PT_LOAD segments
//!    ([`Vmlinux::parse`], copied by [`Vmlinux::copy_into`]) or a bzImage's
//!    protected-mode part ([`SetupHeader::protected_mode_code`], entered
//!    0x200 bytes in);
//! 3. picks physical places for kernel, initrd, zero page and command line
//!    ([`layout::first_fit`]), checked against the header
//!    ([`SetupHeader::check_load_address`], [`SetupHeader::check_initrd`],
//!    [`SetupHeader::check_cmdline`]);
//! 4. builds the zero page ([`ZeroPage`]) with an e820 table ([`E820Table`]);
//! 5. enters the kernel in 64-bit mode with paging on, the loaded kernel,
//!    zero page and command line identity-mapped, `CS` = 0x10 and
//!    `DS`/`ES`/`SS` = 0x18 (flat), interrupts off, and `rsi` = the zero
//!    page's physical address.

pub mod bundled;
pub mod cmdline;
pub mod e820;
pub mod elf;
pub mod layout;
pub mod setup;
pub mod zero_page;

pub use e820::{E820Entry, E820Kind, E820Table};
pub use elf::Vmlinux;
pub use setup::SetupHeader;
pub use zero_page::ZeroPage;

use core::fmt;

/// Everything that can be wrong with a kernel, its initrd, command line or
/// the memory offered for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Fewer bytes than the setup header needs.
    TooShortForSetupHeader { len: usize },
    /// No "HdrS" at offset 0x202.
    NoHdrSMagic,
    /// Protocol older than 2.12 (no 64-bit entry or xloadflags).
    ProtocolTooOld { major: u8, minor: u8 },
    /// loadflags LOADED_HIGH clear: a zImage, loaded at 0x10000.
    NotLoadedHigh,
    /// relocatable_kernel is 0.
    NotRelocatable,
    /// xloadflags XLF_KERNEL_64 clear.
    No64BitEntry,
    /// The header's end (0x202 + the byte at 0x201) lies beyond the image.
    HeaderBeyondImage { end: usize, len: usize },
    /// kernel_alignment is not a power of two.
    BadKernelAlignment { alignment: u32 },
    /// The payload or protected-mode code lies beyond the end of the image.
    PayloadBeyondImage { end: u64, len: usize },
    /// Not an ELF file.
    NotElf,
    /// A 32-bit ELF (or another class).
    ElfNot64Bit,
    /// Not little-endian x86-64.
    ElfNotX86_64 { machine: u16 },
    /// Not ET_EXEC.
    ElfNotExecutable { kind: u16 },
    /// Program headers missing, of the wrong size, or beyond the file.
    ElfBadProgramHeaders,
    /// More PT_LOAD segments than the loader keeps.
    ElfTooManySegments { count: usize },
    /// No PT_LOAD segment.
    ElfNoLoadSegments,
    /// A segment's file bytes lie beyond the end of the file, or its
    /// file size exceeds its memory size.
    ElfSegmentBeyondFile { index: usize },
    /// The entry point is in no PT_LOAD segment.
    ElfEntryOutsideSegments { entry: u64 },
    /// A load address not aligned as the kernel requires.
    MisalignedLoad { address: u64, alignment: u64 },
    /// The initrd would end above initrd_addr_max.
    InitrdTooHigh { end: u64, max: u64 },
    /// The command line (with its NUL) is longer than cmdline_size allows.
    CmdlineTooLong { len: usize, max: u32 },
    /// More memory regions than the zero page's e820 table holds.
    E820TableFull,
    /// A destination buffer smaller than what must be written into it.
    BufferTooSmall { need: u64, have: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShortForSetupHeader { len } => {
                write!(f, "not a bzImage: {len} bytes is too short for a setup header")
            }
            Self::NoHdrSMagic => f.write_str("not a bzImage: no HdrS magic at offset 0x202"),
            Self::ProtocolTooOld { major, minor } => {
                write!(f, "boot protocol {major}.{minor:02} is older than 2.12 (no 64-bit entry)")
            }
            Self::NotLoadedHigh => f.write_str("a zImage (loadflags LOADED_HIGH clear): only bzImages are supported"),
            Self::NotRelocatable => f.write_str("the kernel is not relocatable (relocatable_kernel = 0)"),
            Self::No64BitEntry => f.write_str("the kernel has no 64-bit entry point (xloadflags XLF_KERNEL_64 clear)"),
            Self::HeaderBeyondImage { end, len } => {
                write!(f, "the setup header ends at {end:#x}, beyond the image's {len:#x} bytes")
            }
            Self::BadKernelAlignment { alignment } => {
                write!(f, "kernel_alignment {alignment:#x} is not a power of two")
            }
            Self::PayloadBeyondImage { end, len } => {
                write!(f, "the kernel payload ends at {end:#x}, beyond the image's {len:#x} bytes (truncated?)")
            }
            Self::NotElf => f.write_str("not an ELF file (no \\x7fELF magic)"),
            Self::ElfNot64Bit => f.write_str("not a 64-bit ELF: no 64-bit entry point"),
            Self::ElfNotX86_64 { machine } => {
                write!(f, "not a little-endian x86-64 ELF (e_machine {machine})")
            }
            Self::ElfNotExecutable { kind } => write!(f, "not an executable ELF (e_type {kind}, want ET_EXEC)"),
            Self::ElfBadProgramHeaders => f.write_str("the ELF's program headers are missing or lie beyond the file"),
            Self::ElfTooManySegments { count } => {
                write!(f, "the ELF has {count} PT_LOAD segments; at most {} are supported", elf::MAX_SEGMENTS)
            }
            Self::ElfNoLoadSegments => f.write_str("the ELF has no PT_LOAD segment"),
            Self::ElfSegmentBeyondFile { index } => {
                write!(f, "PT_LOAD segment {index} lies beyond the end of the file or is larger on file than in memory")
            }
            Self::ElfEntryOutsideSegments { entry } => {
                write!(f, "the ELF entry point {entry:#x} lies in no PT_LOAD segment")
            }
            Self::MisalignedLoad { address, alignment } => {
                write!(f, "load address {address:#x} is not aligned to the kernel's {alignment:#x}")
            }
            Self::InitrdTooHigh { end, max } => {
                write!(f, "the initrd would end at {end:#x}, above the kernel's initrd_addr_max {max:#x}")
            }
            Self::CmdlineTooLong { len, max } => {
                write!(f, "the command line is {len} bytes with its NUL; the kernel accepts at most {max}")
            }
            Self::E820TableFull => write!(f, "more than {} memory regions: the e820 table is full", e820::MAX_ENTRIES),
            Self::BufferTooSmall { need, have } => {
                write!(f, "{need:#x} bytes must be written into a buffer of {have:#x}")
            }
        }
    }
}

/// Little-endian readers that never panic: `None` past the end.
pub(crate) fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}
