//! A Linux kernel, initrd and command line from a ramdisk bundle (parts
//! written by xtask/src/linux.rs): what every loader does before and while
//! it puts them in memory — perfvisor's (the guest) and the native one.
//!
//! Parts: `vmlinux-headers` + `vmlinux-flat.lz4` (the PT_LOAD image, flat
//! and LZ4-compressed, with the ELF headers it came from), or `vmlinux`
//! (a whole ELF), or `bzimage`; optionally `setup` (a bzImage's setup
//! header), `initrd` or `initrd.lz4`, `cmdline`.

use super::layout::{first_fit, Range};
use super::setup::ENTRY_64_OFFSET;
use super::{Error, SetupHeader, Vmlinux};
use crate::bundle::Bundle;
use core::fmt;

/// Why a bundle's Linux cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// A boot-protocol or image error, with the part it concerns.
    Image(&'static str, Error),
    NoKernel,
    HalfFlatKernel,
    Lz4 {
        part: &'static str,
        why: &'static str,
    },
    TooLarge {
        part: &'static str,
        size: u64,
        room: u64,
    },
    NoRoom {
        what: &'static str,
        size: u64,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(part, e) => write!(f, "{part}: {e}"),
            Self::NoKernel => {
                f.write_str("the bundle has no kernel (vmlinux-headers + vmlinux-flat.lz4, vmlinux or bzimage)")
            }
            Self::HalfFlatKernel => f.write_str(
                "the bundle has only one of vmlinux-headers and vmlinux-flat.lz4 (a flat kernel needs both)",
            ),
            Self::Lz4 { part, why } => write!(f, "bundle part {part}: {why}"),
            Self::TooLarge { part, size, room } => write!(
                f,
                "bundle part {part}: {size:#x} bytes uncompressed, more than the {room:#x} bytes reserved for it"
            ),
            Self::NoRoom { what, size } => write!(f, "no free {size:#x} bytes of RAM for the {what}"),
        }
    }
}

/// The kernel image in the bundle, and how it is put in place.
enum Kernel<'a> {
    Flat {
        vmlinux: Vmlinux,
        lz4: &'a [u8],
    },
    Elf {
        vmlinux: Vmlinux,
        elf: &'a [u8],
    },
    /// A bzImage's protected-mode code, entered [`ENTRY_64_OFFSET`] in.
    BzImage {
        code: &'a [u8],
    },
}

/// A bundle's Linux, checked, with its sizes.
pub struct LinuxBundle<'a> {
    kernel: Kernel<'a>,
    initrd_part: Option<(&'static str, &'a [u8])>,
    pub header: SetupHeader,
    pub cmdline: &'a [u8],
    /// Offset of the 64-bit entry from the load address.
    pub entry_offset: u64,
    /// Bytes of the image itself.
    pub image_size: u64,
    /// Bytes the kernel needs from its load address (at least `init_size`), page-rounded.
    pub kernel_size: u64,
    /// Bytes of the initrd (0: none).
    pub initrd_size: u64,
}

/// Where a loader puts the pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub kernel_at: u64,
    pub initrd_at: u64,
    /// The loader's own block (zero page, command line, page tables...).
    pub block_at: u64,
    pub block_size: u64,
}

fn lz4_len(part: &'static str, bytes: &[u8]) -> Result<usize, LoadError> {
    lz4_flex::block::uncompressed_size(bytes)
        .map(|(n, _)| n)
        .map_err(|_| LoadError::Lz4 { part, why: "not an LZ4 block with its length prepended" })
}

fn unlz4(part: &'static str, bytes: &[u8], dest: &mut [u8]) -> Result<usize, LoadError> {
    let (len, body) = lz4_flex::block::uncompressed_size(bytes)
        .map_err(|_| LoadError::Lz4 { part, why: "not an LZ4 block with its length prepended" })?;
    if len > dest.len() {
        return Err(LoadError::TooLarge { part, size: len as u64, room: dest.len() as u64 });
    }
    match lz4_flex::block::decompress_into(body, &mut dest[..len]) {
        Ok(n) if n == len => Ok(n),
        Ok(_) => Err(LoadError::Lz4 { part, why: "decompressed to fewer bytes than its header says" }),
        Err(_) => Err(LoadError::Lz4 { part, why: "corrupt LZ4 data" }),
    }
}

impl<'a> LinuxBundle<'a> {
    /// Finds and checks the kernel, its setup header, command line and initrd.
    pub fn parse(bundle: &Bundle<'a>) -> Result<Self, LoadError> {
        let kernel = match (bundle.get("vmlinux-headers"), bundle.get("vmlinux-flat.lz4")) {
            (Some(headers), Some(lz4)) => Kernel::Flat {
                vmlinux: Vmlinux::parse_headers(headers).map_err(|e| LoadError::Image("vmlinux-headers", e))?,
                lz4,
            },
            (Some(_), None) | (None, Some(_)) => return Err(LoadError::HalfFlatKernel),
            (None, None) => match (bundle.get("vmlinux"), bundle.get("bzimage")) {
                (Some(elf), _) => {
                    Kernel::Elf { vmlinux: Vmlinux::parse(elf).map_err(|e| LoadError::Image("vmlinux", e))?, elf }
                }
                (None, Some(image)) => {
                    let header = SetupHeader::parse(image).map_err(|e| LoadError::Image("bzImage", e))?;
                    Kernel::BzImage {
                        code: header.protected_mode_code(image).map_err(|e| LoadError::Image("bzImage", e))?,
                    }
                }
                (None, None) => return Err(LoadError::NoKernel),
            },
        };
        let header = match (bundle.get("setup").or(bundle.get("bzimage")), &kernel) {
            (Some(setup), _) => SetupHeader::parse(setup).map_err(|e| LoadError::Image("the setup header", e))?,
            (None, Kernel::Flat { vmlinux, .. } | Kernel::Elf { vmlinux, .. }) => {
                SetupHeader::for_vmlinux(vmlinux.mem_size())
            }
            (None, Kernel::BzImage { .. }) => return Err(LoadError::NoKernel),
        };
        let (entry_offset, image_size) = match &kernel {
            Kernel::Flat { vmlinux, .. } | Kernel::Elf { vmlinux, .. } => (vmlinux.entry_offset, vmlinux.mem_size()),
            Kernel::BzImage { code } => (ENTRY_64_OFFSET, code.len() as u64),
        };
        // The kernel needs init_size from its load address before it has its own memory.
        let kernel_size = image_size.max(u64::from(header.init_size)).next_multiple_of(4096);
        let cmdline = bundle.get("cmdline").unwrap_or(b"");
        header.check_cmdline(cmdline.len()).map_err(|e| LoadError::Image("cmdline", e))?;
        let (initrd_part, initrd_size) = match (bundle.get("initrd"), bundle.get("initrd.lz4")) {
            (Some(raw), _) => (Some(("initrd", raw)), raw.len() as u64),
            (None, Some(lz4)) => (Some(("initrd.lz4", lz4)), lz4_len("initrd.lz4", lz4)? as u64),
            (None, None) => (None, 0),
        };
        Ok(Self { kernel, initrd_part, header, cmdline, entry_offset, image_size, kernel_size, initrd_size })
    }

    /// Places kernel, initrd and a loader block of `block_size` bytes in
    /// `free` RAM, nothing below `low`: the kernel at its preferred
    /// address or the lowest aligned one, the initrd above it (below the
    /// header's limit), the block below 4 GiB.
    pub fn place(&self, free: &[Range], low: u64, block_size: u64) -> Result<Placement, LoadError> {
        let h = &self.header;
        let (size, align) = (self.kernel_size, h.load_alignment());
        let kernel_at = first_fit(free, &[], size, align, h.pref_address.max(low), u64::MAX)
            .or_else(|| first_fit(free, &[], size, align, low, u64::MAX))
            .ok_or(LoadError::NoRoom { what: "kernel", size })?;
        h.check_load_address(kernel_at).map_err(|e| LoadError::Image("kernel", e))?;
        let kernel = Range::new(kernel_at, kernel_at + size);
        let initrd_at = if self.initrd_size == 0 {
            0
        } else {
            let n = self.initrd_size;
            first_fit(free, &[kernel], n, 4096, kernel.end, h.initrd_limit())
                .or_else(|| first_fit(free, &[kernel], n, 4096, low, h.initrd_limit()))
                .ok_or(LoadError::NoRoom { what: "initrd", size: n })?
        };
        h.check_initrd(initrd_at, self.initrd_size).map_err(|e| LoadError::Image("initrd", e))?;
        let initrd = Range::new(initrd_at, initrd_at + self.initrd_size);
        let block_at = first_fit(free, &[kernel, initrd], block_size, 4096, low, 0x1_0000_0000)
            .ok_or(LoadError::NoRoom { what: "zero page, command line and page tables", size: block_size })?;
        Ok(Placement { kernel_at, initrd_at, block_at, block_size })
    }

    /// Writes the kernel image into `dest` (its `kernel_size` bytes at the
    /// load address) and zeroes the rest.
    pub fn unpack_kernel(&self, dest: &mut [u8]) -> Result<(), LoadError> {
        let written = match &self.kernel {
            Kernel::Flat { vmlinux, lz4 } => {
                let n = unlz4("vmlinux-flat.lz4", lz4, dest)? as u64;
                if n > vmlinux.mem_size() {
                    return Err(LoadError::TooLarge { part: "vmlinux-flat.lz4", size: n, room: vmlinux.mem_size() });
                }
                n
            }
            Kernel::Elf { vmlinux, elf } => {
                vmlinux.copy_into(elf, dest).map_err(|e| LoadError::Image("vmlinux", e))?;
                vmlinux.mem_size()
            }
            Kernel::BzImage { code } => {
                let room = dest.len() as u64;
                dest.get_mut(..code.len())
                    .ok_or(LoadError::TooLarge { part: "bzimage", size: code.len() as u64, room })?
                    .copy_from_slice(code);
                code.len() as u64
            }
        };
        dest[written as usize..].fill(0);
        Ok(())
    }

    /// Writes the initrd into `dest` (its `initrd_size` bytes); nothing if there is none.
    pub fn unpack_initrd(&self, dest: &mut [u8]) -> Result<(), LoadError> {
        match self.initrd_part {
            Some(("initrd", raw)) => {
                let room = dest.len() as u64;
                dest.get_mut(..raw.len())
                    .ok_or(LoadError::TooLarge { part: "initrd", size: raw.len() as u64, room })?
                    .copy_from_slice(raw);
            }
            Some((part, lz4)) => {
                unlz4(part, lz4, dest)?;
            }
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(parts: &[(&str, &[u8])]) -> Vec<u8> {
        crate::bundle::write(parts)
    }

    #[test]
    fn a_vmlinux_bundle_is_placed_and_unpacked() {
        let elf = crate::linux::elf::tests::vmlinux_like();
        let initrd = lz4_flex::block::compress_prepend_size(b"an initrd");
        let bytes = bundle_with(&[("vmlinux", &elf), ("initrd.lz4", &initrd), ("cmdline", b"console=ttyS0")]);
        let bundle = Bundle::parse(&bytes).unwrap();
        let linux = LinuxBundle::parse(&bundle).unwrap();
        assert_eq!(linux.initrd_size, 9);
        let free = [Range::new(0x10_0000, 0x1000_0000)];
        let p = linux.place(&free, 0x10_0000, 0x8000).unwrap();
        assert!(p.kernel_at >= 0x10_0000 && p.initrd_at >= p.kernel_at + linux.kernel_size);
        let mut kernel = vec![0xaa; linux.kernel_size as usize];
        linux.unpack_kernel(&mut kernel).unwrap();
        assert!(kernel[linux.image_size as usize..].iter().all(|&b| b == 0), "the rest zeroed");
        let mut rd = vec![0; 9];
        linux.unpack_initrd(&mut rd).unwrap();
        assert_eq!(&rd, b"an initrd");
    }

    #[test]
    fn broken_bundles_are_refused_with_a_reason() {
        let no_kernel = bundle_with(&[("cmdline", b"x")]);
        let e = LinuxBundle::parse(&Bundle::parse(&no_kernel).unwrap()).err();
        assert_eq!(e, Some(LoadError::NoKernel));
        let half = bundle_with(&[("vmlinux-headers", b"\x7fELF")]);
        assert_eq!(LinuxBundle::parse(&Bundle::parse(&half).unwrap()).err(), Some(LoadError::HalfFlatKernel));
        let bad = bundle_with(&[("vmlinux", b"not an elf")]);
        let e = LinuxBundle::parse(&Bundle::parse(&bad).unwrap()).err().unwrap();
        assert!(matches!(e, LoadError::Image("vmlinux", _)), "{e}");
        let elf = crate::linux::elf::tests::vmlinux_like();
        let bad_lz4 = bundle_with(&[("vmlinux", &elf), ("initrd.lz4", b"xy")]);
        let e = LinuxBundle::parse(&Bundle::parse(&bad_lz4).unwrap()).err().unwrap();
        assert!(e.to_string().contains("initrd.lz4"), "{e}");
        let ok = bundle_with(&[("vmlinux", &elf)]);
        let linux = LinuxBundle::parse(&Bundle::parse(&ok).unwrap()).unwrap();
        let e = linux.place(&[Range::new(0x10_0000, 0x20_0000)], 0x10_0000, 0x1000).err().unwrap();
        assert!(matches!(e, LoadError::NoRoom { what: "kernel", .. }), "{e}");
    }
}
