//! The 4-KiB MSR bitmap (SDM vol. 3C §25.6.9): read bitmap for MSRs
//! 0..0x1fff at offset 0, for 0xc0000000..0xc0001fff at 1024; write bitmaps
//! at 2048 and 3072. A set bit makes the access exit; MSRs outside both
//! ranges always exit.

/// Whether an access exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intercept {
    Exit,
    PassThrough,
}

#[repr(C, align(4096))]
pub struct MsrBitmap(pub [u8; 4096]);

/// The MSR is outside the two ranges a bitmap covers: it always exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange(pub u32);

const LOW_END: u32 = 0x2000;
const HIGH_BASE: u32 = 0xc000_0000;

impl MsrBitmap {
    /// Every access exits.
    pub const fn intercept_all() -> Self {
        Self([0xff; 4096])
    }

    /// (byte offset, bit) of `msr` in the read bitmap.
    fn locate(msr: u32) -> Result<(usize, u8), OutOfRange> {
        let (base, index) = if msr < LOW_END {
            (0, msr)
        } else if (HIGH_BASE..HIGH_BASE + LOW_END).contains(&msr) {
            (1024, msr - HIGH_BASE)
        } else {
            return Err(OutOfRange(msr));
        };
        Ok((base + (index / 8) as usize, (index % 8) as u8))
    }

    fn set(&mut self, offset: usize, bit: u8, how: Intercept) {
        match how {
            Intercept::Exit => self.0[offset] |= 1 << bit,
            Intercept::PassThrough => self.0[offset] &= !(1 << bit),
        }
    }

    pub fn set_read(&mut self, msr: u32, how: Intercept) -> Result<(), OutOfRange> {
        let (offset, bit) = Self::locate(msr)?;
        self.set(offset, bit, how);
        Ok(())
    }

    pub fn set_write(&mut self, msr: u32, how: Intercept) -> Result<(), OutOfRange> {
        let (offset, bit) = Self::locate(msr)?;
        self.set(offset + 2048, bit, how);
        Ok(())
    }

    pub fn read_exits(&self, msr: u32) -> bool {
        match Self::locate(msr) {
            Err(_) => true,
            Ok((o, b)) => self.0[o] & (1 << b) != 0,
        }
    }

    pub fn write_exits(&self, msr: u32) -> bool {
        match Self::locate(msr) {
            Err(_) => true,
            Ok((o, b)) => self.0[o + 2048] & (1 << b) != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_low_high_and_out_of_range() {
        let mut b = MsrBitmap::intercept_all();
        b.set_read(0x38f, Intercept::PassThrough).unwrap();
        assert_eq!(b.0[0x38f / 8], !(1 << 7), "low read: byte 0x71, bit 7");
        b.set_write(0x38f, Intercept::PassThrough).unwrap();
        assert_eq!(b.0[2048 + 0x71], !(1 << 7), "low write at 2048");
        b.set_read(0xc000_0080, Intercept::PassThrough).unwrap();
        assert_eq!(b.0[1024 + 0x10], !1, "high read: EFER at 1024 + 0x10, bit 0");
        b.set_write(0xc000_0102, Intercept::PassThrough).unwrap();
        assert_eq!(b.0[3072 + 0x20], !(1 << 2), "high write at 3072");
        assert!(!b.read_exits(0x38f) && !b.write_exits(0x38f));
        assert!(b.read_exits(0x390));
        assert_eq!(b.set_read(0x2000, Intercept::PassThrough), Err(OutOfRange(0x2000)));
        assert_eq!(b.set_write(0x4000_0000, Intercept::PassThrough), Err(OutOfRange(0x4000_0000)));
        assert!(b.read_exits(0x4000_0000) && b.write_exits(0x8000_0000));
        b.set_read(0x1fff, Intercept::PassThrough).unwrap();
        assert_eq!(b.0[1023], !(1 << 7), "last low MSR at the end of the first KiB");
    }
}
