//! Formatting without an allocator.

use core::fmt::{self, Write};

/// A fixed buffer for formatting (the guest has no allocator).
pub struct Buf {
    bytes: [u8; 256],
    len: usize,
}

impl Buf {
    pub const fn new() -> Self {
        Self { bytes: [0; 256], len: 0 }
    }

    pub fn as_str(&self) -> &str {
        // Only whole `str`s are ever appended, truncated at a char boundary.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("?")
    }
}

impl Default for Buf {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Buf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// `format!` into a [`Buf`].
#[macro_export]
macro_rules! fmt {
    ($($arg:tt)*) => {{
        let mut b = $crate::fmtbuf::Buf::new();
        let _ = core::fmt::Write::write_fmt(&mut b, format_args!($($arg)*));
        b
    }};
}
