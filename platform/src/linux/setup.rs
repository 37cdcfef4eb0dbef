//! The bzImage's setup header (boot.rst, "THE REAL-MODE KERNEL HEADER").

use super::{le_u16, le_u32, le_u64, Error};

/// Offsets in the bzImage and in the zero page (the header sits at the same
/// place in both).
pub mod offset {
    pub const SETUP_SECTS: usize = 0x1f1;
    pub const BOOT_FLAG: usize = 0x1fe;
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PAYLOAD_OFFSET: usize = 0x248;
    pub const PAYLOAD_LENGTH: usize = 0x24c;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
    /// The end of the 2.15 header (kernel_info_offset).
    pub const END_2_15: usize = 0x26c;
}

/// "HdrS".
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// loadflags: the protected-mode code is loaded at 0x100000.
pub const LOADED_HIGH: u8 = 1 << 0;
/// xloadflags: the kernel has the 64-bit entry at 0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// xloadflags: kernel, boot_params, command line and initrd may be above 4 GiB.
pub const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// The oldest protocol with everything the 64-bit entry needs (xloadflags).
pub const MIN_VERSION: u16 = 0x020c;
/// The 64-bit entry's offset from the start of the protected-mode code.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// Where the setup header ends in a header this module writes itself.
const SYNTHETIC_END: usize = offset::END_2_15;

/// A parsed, validated setup header, and its raw bytes for the zero page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// Bytes 0..`end` of the image (the boot sector part is kept so the
    /// header's offsets index it directly); only 0x1f1..`end` is copied
    /// into a zero page.
    raw: [u8; SYNTHETIC_END + 0x100],
    /// 0x202 + the byte at 0x201: where the header ends.
    pub end: usize,
    pub version: u16,
    /// 512-byte sectors of real-mode code after the boot sector (0 means 4).
    pub setup_sects: u8,
    pub loadflags: u8,
    pub relocatable: bool,
    pub xloadflags: u16,
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub cmdline_size: u32,
    pub payload_offset: u32,
    pub payload_length: u32,
    pub pref_address: u64,
    /// Memory the kernel needs from its load address until it has set up
    /// its own (boot.rst: init_size).
    pub init_size: u32,
}

impl SetupHeader {
    /// Parses and validates a bzImage's header: `image` needs at least its
    /// first 0x270 bytes (the whole image for [`Self::protected_mode_code`]).
    pub fn parse(image: &[u8]) -> Result<Self, Error> {
        let short = Error::TooShortForSetupHeader { len: image.len() };
        if le_u32(image, offset::HEADER).ok_or(short)? != HDRS_MAGIC {
            return Err(Error::NoHdrSMagic);
        }
        let version = le_u16(image, offset::VERSION).ok_or(short)?;
        if version < MIN_VERSION {
            return Err(Error::ProtocolTooOld { major: (version >> 8) as u8, minor: version as u8 });
        }
        let end = offset::HEADER + usize::from(image[offset::JUMP + 1]);
        if end > image.len() {
            return Err(Error::HeaderBeyondImage { end, len: image.len() });
        }
        if end < offset::INIT_SIZE + 4 {
            // Version 2.12 and up always reach init_size; a shorter jump is corrupt.
            return Err(Error::HeaderBeyondImage { end: offset::INIT_SIZE + 4, len: end });
        }
        let loadflags = image[offset::LOADFLAGS];
        if loadflags & LOADED_HIGH == 0 {
            return Err(Error::NotLoadedHigh);
        }
        let relocatable = image[offset::RELOCATABLE_KERNEL] != 0;
        if !relocatable {
            return Err(Error::NotRelocatable);
        }
        let xloadflags = le_u16(image, offset::XLOADFLAGS).ok_or(short)?;
        if xloadflags & XLF_KERNEL_64 == 0 {
            return Err(Error::No64BitEntry);
        }
        let kernel_alignment = le_u32(image, offset::KERNEL_ALIGNMENT).ok_or(short)?;
        if !kernel_alignment.is_power_of_two() {
            return Err(Error::BadKernelAlignment { alignment: kernel_alignment });
        }
        let mut raw = [0u8; SYNTHETIC_END + 0x100];
        let kept = end.min(raw.len());
        raw[..kept].copy_from_slice(&image[..kept]);
        Ok(Self {
            raw,
            end: kept,
            version,
            setup_sects: image[offset::SETUP_SECTS],
            loadflags,
            relocatable,
            xloadflags,
            initrd_addr_max: le_u32(image, offset::INITRD_ADDR_MAX).ok_or(short)?,
            kernel_alignment,
            cmdline_size: le_u32(image, offset::CMDLINE_SIZE).ok_or(short)?,
            payload_offset: le_u32(image, offset::PAYLOAD_OFFSET).ok_or(short)?,
            payload_length: le_u32(image, offset::PAYLOAD_LENGTH).ok_or(short)?,
            pref_address: le_u64(image, offset::PREF_ADDRESS).ok_or(short)?,
            init_size: le_u32(image, offset::INIT_SIZE).ok_or(short)?,
        })
    }

    /// A header for a bare vmlinux, which carries none (as Firecracker
    /// writes it): protocol 2.15, relocatable, 2 MiB alignment, initrd below
    /// 4 GiB, a 2 KiB command line, and `init_size` the image's memory size.
    pub fn for_vmlinux(init_size: u64) -> Self {
        let mut raw = [0u8; SYNTHETIC_END + 0x100];
        let mut put = |at: usize, bytes: &[u8]| raw[at..at + bytes.len()].copy_from_slice(bytes);
        put(offset::BOOT_FLAG, &0xaa55u16.to_le_bytes());
        put(offset::JUMP, &[0xeb, (SYNTHETIC_END - offset::HEADER) as u8]);
        put(offset::HEADER, &HDRS_MAGIC.to_le_bytes());
        put(offset::VERSION, &0x020fu16.to_le_bytes());
        put(offset::LOADFLAGS, &[LOADED_HIGH]);
        put(offset::INITRD_ADDR_MAX, &0x7fff_ffffu32.to_le_bytes());
        put(offset::KERNEL_ALIGNMENT, &0x20_0000u32.to_le_bytes());
        put(offset::RELOCATABLE_KERNEL, &[1]);
        put(offset::XLOADFLAGS, &XLF_KERNEL_64.to_le_bytes());
        put(offset::CMDLINE_SIZE, &2047u32.to_le_bytes());
        put(offset::PREF_ADDRESS, &0x100_0000u64.to_le_bytes());
        let init_size = u32::try_from(init_size).unwrap_or(u32::MAX);
        put(offset::INIT_SIZE, &init_size.to_le_bytes());
        Self::parse(&raw).expect("the synthetic header is valid")
    }

    /// The header bytes a zero page takes: 0x1f1 up to [`Self::end`].
    pub fn zero_page_bytes(&self) -> &[u8] {
        &self.raw[offset::SETUP_SECTS..self.end]
    }

    /// The size of the real-mode part (boot sector + setup sectors): where
    /// the protected-mode code starts in the file.
    pub fn protected_mode_offset(&self) -> usize {
        (usize::from(if self.setup_sects == 0 { 4 } else { self.setup_sects }) + 1) * 512
    }

    /// The protected-mode code of `image` (loaded at the kernel's address;
    /// the 64-bit entry is [`ENTRY_64_OFFSET`] into it).
    pub fn protected_mode_code<'a>(&self, image: &'a [u8]) -> Result<&'a [u8], Error> {
        image.get(self.protected_mode_offset()..).filter(|c| c.len() > ENTRY_64_OFFSET as usize).ok_or(
            Error::PayloadBeyondImage { end: self.protected_mode_offset() as u64 + ENTRY_64_OFFSET, len: image.len() },
        )
    }

    /// The compressed kernel inside `image` (payload_offset/length, from the
    /// start of the protected-mode code): what a host tool decompresses to
    /// get the vmlinux ELF.
    pub fn payload<'a>(&self, image: &'a [u8]) -> Result<&'a [u8], Error> {
        let start = self.protected_mode_offset() as u64 + u64::from(self.payload_offset);
        let end = start + u64::from(self.payload_length);
        if self.payload_length == 0 || end > image.len() as u64 {
            return Err(Error::PayloadBeyondImage { end, len: image.len() });
        }
        Ok(&image[start as usize..end as usize])
    }

    /// The alignment the kernel's physical load address needs: its
    /// kernel_alignment, and never less than 2 MiB (the 64-bit head code
    /// relocates itself in 2 MiB pages).
    pub fn load_alignment(&self) -> u64 {
        u64::from(self.kernel_alignment).max(0x20_0000)
    }

    /// `address` is a valid physical load address for the kernel.
    pub fn check_load_address(&self, address: u64) -> Result<(), Error> {
        let alignment = self.load_alignment();
        if !address.is_multiple_of(alignment) {
            return Err(Error::MisalignedLoad { address, alignment });
        }
        Ok(())
    }

    /// The highest address (exclusive) an initrd may end at.
    pub fn initrd_limit(&self) -> u64 {
        if self.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G != 0 {
            u64::MAX
        } else {
            u64::from(self.initrd_addr_max) + 1
        }
    }

    /// An initrd at `address` of `len` bytes is acceptable.
    pub fn check_initrd(&self, address: u64, len: u64) -> Result<(), Error> {
        let end = address.saturating_add(len);
        if end > self.initrd_limit() {
            return Err(Error::InitrdTooHigh { end, max: self.initrd_limit() - 1 });
        }
        Ok(())
    }

    /// A command line of `len` bytes (without its NUL) fits.
    pub fn check_cmdline(&self, len: usize) -> Result<(), Error> {
        // cmdline_size excludes the NUL (boot.rst: "the maximum size of the
        // command line without the terminating zero").
        if len > self.cmdline_size as usize {
            return Err(Error::CmdlineTooLong { len: len + 1, max: self.cmdline_size + 1 });
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The first bytes of a bzImage like Debian's 6.1 kernel (protocol 2.15).
    pub fn debian_like() -> Vec<u8> {
        let mut b = vec![0u8; 0x4000];
        b[offset::SETUP_SECTS] = 27;
        b[offset::BOOT_FLAG..offset::BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[offset::JUMP] = 0xeb;
        b[offset::JUMP + 1] = 0x6a;
        b[offset::HEADER..offset::HEADER + 4].copy_from_slice(b"HdrS");
        b[offset::VERSION..offset::VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        b[offset::LOADFLAGS] = LOADED_HIGH;
        b[offset::INITRD_ADDR_MAX..offset::INITRD_ADDR_MAX + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        b[offset::KERNEL_ALIGNMENT..offset::KERNEL_ALIGNMENT + 4].copy_from_slice(&0x20_0000u32.to_le_bytes());
        b[offset::RELOCATABLE_KERNEL] = 1;
        b[offset::XLOADFLAGS..offset::XLOADFLAGS + 2].copy_from_slice(&0x7fu16.to_le_bytes());
        b[offset::CMDLINE_SIZE..offset::CMDLINE_SIZE + 4].copy_from_slice(&2047u32.to_le_bytes());
        b[offset::PAYLOAD_OFFSET..offset::PAYLOAD_OFFSET + 4].copy_from_slice(&0x100u32.to_le_bytes());
        b[offset::PAYLOAD_LENGTH..offset::PAYLOAD_LENGTH + 4].copy_from_slice(&0x200u32.to_le_bytes());
        b[offset::PREF_ADDRESS..offset::PREF_ADDRESS + 8].copy_from_slice(&0x100_0000u64.to_le_bytes());
        b[offset::INIT_SIZE..offset::INIT_SIZE + 4].copy_from_slice(&0x3f9_8000u32.to_le_bytes());
        b
    }

    #[test]
    fn parses_a_debian_like_header() {
        let image = debian_like();
        let h = SetupHeader::parse(&image).unwrap();
        assert_eq!(h.version, 0x020f);
        assert_eq!(h.end, 0x26c);
        assert_eq!(h.protected_mode_offset(), 28 * 512);
        assert_eq!(h.init_size, 0x3f9_8000);
        assert_eq!(h.pref_address, 0x100_0000);
        assert_eq!(h.zero_page_bytes().len(), 0x26c - 0x1f1);
        assert_eq!(h.payload(&image).unwrap().len(), 0x200);
        assert_eq!(h.protected_mode_code(&image).unwrap().len(), 0x4000 - 28 * 512);
        assert_eq!(h.initrd_limit(), u64::MAX, "XLF_CAN_BE_LOADED_ABOVE_4G is set");
    }

    fn error_of(mut edit: impl FnMut(&mut Vec<u8>)) -> String {
        let mut image = debian_like();
        edit(&mut image);
        SetupHeader::parse(&image).unwrap_err().to_string()
    }

    #[test]
    fn malformed_headers_are_refused_in_words() {
        assert_eq!(error_of(|b| b[offset::HEADER] = b'X'), "not a bzImage: no HdrS magic at offset 0x202");
        assert_eq!(
            error_of(|b| b[offset::VERSION..offset::VERSION + 2].copy_from_slice(&0x0205u16.to_le_bytes())),
            "boot protocol 2.05 is older than 2.12 (no 64-bit entry)"
        );
        assert!(error_of(|b| b[offset::LOADFLAGS] = 0).contains("zImage"));
        assert!(error_of(|b| b[offset::RELOCATABLE_KERNEL] = 0).contains("not relocatable"));
        assert!(error_of(|b| b[offset::XLOADFLAGS] = 0).contains("no 64-bit entry point"));
        assert!(error_of(|b| b[offset::KERNEL_ALIGNMENT] = 3).contains("not a power of two"));
        assert!(error_of(|b| b.truncate(0x250)).contains("beyond the image"));
        assert!(error_of(|b| b.truncate(0x100)).contains("too short for a setup header"));
        assert!(error_of(|b| b.clear()).contains("0 bytes is too short"));
        assert!(error_of(|b| b[offset::JUMP + 1] = 0x10).contains("setup header ends"));
    }

    #[test]
    fn truncated_payload_and_code_are_refused() {
        let image = debian_like();
        let h = SetupHeader::parse(&image).unwrap();
        assert!(h.payload(&image[..28 * 512 + 0x200]).unwrap_err().to_string().contains("truncated"));
        assert!(h.protected_mode_code(&image[..28 * 512]).is_err());
    }

    #[test]
    fn limits_are_checked() {
        let mut image = debian_like();
        image[offset::XLOADFLAGS] = XLF_KERNEL_64 as u8;
        let h = SetupHeader::parse(&image).unwrap();
        assert!(h.check_load_address(0x400_0000).is_ok());
        assert_eq!(
            h.check_load_address(0x410_0000).unwrap_err().to_string(),
            "load address 0x4100000 is not aligned to the kernel's 0x200000"
        );
        assert!(h.check_initrd(0x7000_0000, 0x100_0000).is_ok());
        assert!(h.check_initrd(0x7fff_0000, 0x2_0000).unwrap_err().to_string().contains("initrd_addr_max 0x7fffffff"));
        assert!(h.check_cmdline(2047).is_ok());
        assert!(h.check_cmdline(2048).is_err());
    }

    #[test]
    fn a_vmlinux_gets_a_synthetic_header() {
        let h = SetupHeader::for_vmlinux(0x380_0000);
        assert_eq!(h.init_size, 0x380_0000);
        assert_eq!(h.version, 0x020f);
        assert_eq!(h.load_alignment(), 0x20_0000);
        assert_eq!(h.zero_page_bytes()[0x202 - 0x1f1..0x206 - 0x1f1], *b"HdrS");
    }
}
