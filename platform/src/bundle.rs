//! The ramdisk bundle every perfvisor image carries (the format
//! hypervisor/src/config.rs documents): a text header of `name length`
//! lines after `#perfvisor-bundle v1`, an empty line, then the parts'
//! bytes in header order. Names ending in `.lz4` are LZ4 blocks with their
//! uncompressed length prepended (4 bytes, little-endian), as
//! `lz4_flex::compress_prepend_size` writes them.

use core::fmt;

pub const MAGIC: &str = "#perfvisor-bundle v1\n";
/// The most parts a bundle may have.
pub const MAX_PARTS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    NoMagic,
    NoHeaderEnd,
    HeaderNotText,
    BadLine,
    BadLength,
    PartBeyondEnd { index: usize },
    TooManyParts,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMagic => write!(f, "not a bundle: it does not start with {:?}", MAGIC.trim_end()),
            Self::NoHeaderEnd => f.write_str("bundle header has no terminating empty line"),
            Self::HeaderNotText => f.write_str("bundle header is not text"),
            Self::BadLine => f.write_str("bundle header line is not `name length`"),
            Self::BadLength => f.write_str("bundle part length is not a number"),
            Self::PartBeyondEnd { index } => write!(f, "bundle part {index} is longer than what follows the header"),
            Self::TooManyParts => write!(f, "more than {MAX_PARTS} bundle parts"),
        }
    }
}

/// A parsed bundle: its parts by name.
#[derive(Clone, Copy, Debug)]
pub struct Bundle<'a> {
    parts: [(&'a str, &'a [u8]); MAX_PARTS],
    count: usize,
}

impl<'a> Bundle<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BundleError> {
        let rest = bytes.strip_prefix(MAGIC.as_bytes()).ok_or(BundleError::NoMagic)?;
        let header_end = rest.windows(2).position(|w| w == b"\n\n").ok_or(BundleError::NoHeaderEnd)?;
        let header = core::str::from_utf8(&rest[..header_end]).map_err(|_| BundleError::HeaderNotText)?;
        let mut data = &rest[header_end + 2..];
        let mut bundle = Self { parts: [("", &[]); MAX_PARTS], count: 0 };
        for line in header.lines() {
            let (name, len) = line.split_once(' ').ok_or(BundleError::BadLine)?;
            let len: usize = len.trim().parse().map_err(|_| BundleError::BadLength)?;
            if len > data.len() {
                return Err(BundleError::PartBeyondEnd { index: bundle.count });
            }
            let (part, after) = data.split_at(len);
            data = after;
            *bundle.parts.get_mut(bundle.count).ok_or(BundleError::TooManyParts)? = (name, part);
            bundle.count += 1;
        }
        Ok(bundle)
    }

    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.parts[..self.count].iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    pub fn names(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.parts[..self.count].iter().map(|(n, _)| *n)
    }
}

/// Writes a bundle (host tools).
#[cfg(test)]
pub fn write(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = String::from(MAGIC);
    for (name, bytes) in parts {
        out.push_str(&format!("{name} {}\n", bytes.len()));
    }
    out.push('\n');
    let mut out = out.into_bytes();
    for (_, bytes) in parts {
        out.extend_from_slice(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let b = write(&[("cmdline", b"console=ttyS0"), ("initrd", b"\x00\x01")]);
        let bundle = Bundle::parse(&b).unwrap();
        assert_eq!(bundle.get("cmdline"), Some(b"console=ttyS0".as_slice()));
        assert_eq!(bundle.get("initrd"), Some(b"\x00\x01".as_slice()));
        assert_eq!(bundle.get("kernel"), None);
        assert_eq!(bundle.names().count(), 2);
    }

    #[test]
    fn malformed_bundles_are_refused() {
        assert_eq!(Bundle::parse(b"hello").unwrap_err(), BundleError::NoMagic);
        assert_eq!(Bundle::parse(b"#perfvisor-bundle v1\nx 1\n").unwrap_err(), BundleError::NoHeaderEnd);
        assert_eq!(Bundle::parse(b"#perfvisor-bundle v1\nx\n\n").unwrap_err(), BundleError::BadLine);
        assert_eq!(Bundle::parse(b"#perfvisor-bundle v1\nx y\n\n").unwrap_err(), BundleError::BadLength);
        assert_eq!(
            Bundle::parse(b"#perfvisor-bundle v1\nx 5\n\nabc").unwrap_err().to_string(),
            "bundle part 0 is longer than what follows the header"
        );
    }
}
