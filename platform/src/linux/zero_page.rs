//! The zero page (`struct boot_params`, arch/x86/include/uapi/asm/bootparam.h).

use super::e820::E820Table;
use super::setup::{offset, SetupHeader};

/// Offsets of the fields outside the setup header.
pub mod field {
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    pub const E820_ENTRIES: usize = 0x1e8;
    /// Must stay 0, or the kernel takes the loader for one that did not
    /// zero boot_params and clears fields it set.
    pub const SENTINEL: usize = 0x1ef;
    pub const E820_TABLE: usize = 0x2d0;
}

/// "Undefined" type_of_loader: a boot loader without an assigned ID.
pub const LOADER_UNDEFINED: u8 = 0xff;

/// A 4 KiB zero page being built.
#[derive(Clone)]
pub struct ZeroPage(pub [u8; 4096]);

impl ZeroPage {
    /// Zeroed, with the kernel's setup header copied in and
    /// type_of_loader set to 0xff.
    pub fn new(header: &SetupHeader) -> Self {
        let mut page = [0u8; 4096];
        let bytes = header.zero_page_bytes();
        page[offset::SETUP_SECTS..offset::SETUP_SECTS + bytes.len()].copy_from_slice(bytes);
        page[offset::TYPE_OF_LOADER] = LOADER_UNDEFINED;
        Self(page)
    }

    fn put32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// The NUL-terminated command line's physical address.
    pub fn set_cmdline(&mut self, address: u64) {
        self.put32(offset::CMD_LINE_PTR, address as u32);
        self.put32(field::EXT_CMD_LINE_PTR, (address >> 32) as u32);
    }

    pub fn set_initrd(&mut self, address: u64, size: u64) {
        self.put32(offset::RAMDISK_IMAGE, address as u32);
        self.put32(field::EXT_RAMDISK_IMAGE, (address >> 32) as u32);
        self.put32(offset::RAMDISK_SIZE, size as u32);
        self.put32(field::EXT_RAMDISK_SIZE, (size >> 32) as u32);
    }

    /// The ACPI RSDP's physical address (0: the kernel scans for it).
    pub fn set_acpi_rsdp(&mut self, address: u64) {
        self.0[field::ACPI_RSDP_ADDR..field::ACPI_RSDP_ADDR + 8].copy_from_slice(&address.to_le_bytes());
    }

    pub fn set_e820(&mut self, table: &E820Table) {
        self.0[field::E820_ENTRIES] = table.entries().len() as u8;
        table.write_to(&mut self.0[field::E820_TABLE..]);
    }

    pub fn as_bytes(&self) -> &[u8; 4096] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::e820::E820Kind;

    #[test]
    fn fields_land_where_boot_params_has_them() {
        let image = crate::linux::setup::tests::debian_like();
        let header = SetupHeader::parse(&image).unwrap();
        let mut zp = ZeroPage::new(&header);
        zp.set_cmdline(0x1_2345_6000);
        zp.set_initrd(0x800_0000, 0x30_0000);
        zp.set_acpi_rsdp(0xf_6a40);
        let mut e820 = E820Table::new();
        e820.add(0, 0x9fc00, E820Kind::Usable).unwrap();
        e820.add(0x10_0000, 0xff0_0000, E820Kind::Usable).unwrap();
        zp.set_e820(&e820);
        let b = zp.as_bytes();
        assert_eq!(&b[0x202..0x206], b"HdrS");
        assert_eq!(b[0x210], 0xff);
        assert_eq!(b[field::SENTINEL], 0);
        assert_eq!(u32::from_le_bytes(b[0x228..0x22c].try_into().unwrap()), 0x2345_6000);
        assert_eq!(u32::from_le_bytes(b[0xc8..0xcc].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(b[0x218..0x21c].try_into().unwrap()), 0x800_0000);
        assert_eq!(u32::from_le_bytes(b[0x21c..0x220].try_into().unwrap()), 0x30_0000);
        assert_eq!(u64::from_le_bytes(b[0x70..0x78].try_into().unwrap()), 0xf_6a40);
        assert_eq!(b[0x1e8], 2);
        assert_eq!(u64::from_le_bytes(b[0x2d0 + 20..0x2d0 + 28].try_into().unwrap()), 0x10_0000);
        assert_eq!(u32::from_le_bytes(b[0x2d0 + 36..0x2d0 + 40].try_into().unwrap()), 1);
        // Nothing of the header past its end leaks in.
        assert!(b[0x26c..0x2d0].iter().all(|&x| x == 0));
    }
}
