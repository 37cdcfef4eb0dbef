//! The DMA Remapping Reporting table (DMAR; Intel VT-d spec §8), parsed from
//! its bytes.
//!
//! The `acpi` crate (5.2.0) finds and maps ACPI tables and knows the `DMAR`
//! signature, but has no structure for the DMAR's body (remapping units,
//! reserved regions, device scopes): this module parses it by hand from the
//! spec. [`Dmar::parse`] checks the whole table once — signature, length,
//! checksum, every remapping structure and device scope — so the iterators
//! over a parsed table cannot fail. It also checks what
//! [`crate::tables::find_dmar`] leaves to it, so it stands alone on any byte
//! slice.
//!
//! Layout (all little-endian):
//!
//! | offset | DMAR (§8.1) |
//! |---|---|
//! | 0 | ACPI header (36 bytes: signature, length, revision, checksum, OEM ids) |
//! | 36 | host address width N (the platform's is N + 1 bits) |
//! | 37 | flags: bit 0 INTR_REMAP, 1 X2APIC_OPT_OUT, 2 DMA_CTRL_PLATFORM_OPT_IN |
//! | 38 | reserved (10 bytes) |
//! | 48 | remapping structures: type (u16), length (u16), body |
//!
//! DRHD (type 0, §8.3): flags (bit 0 INCLUDE_PCI_ALL) at 4, size (bits 3:0:
//! register set of 2^N 4-KiB pages) at 5, segment at 6, register base (u64)
//! at 8, device scopes from 16. RMRR (type 1, §8.4): segment at 6, base
//! (u64) at 8, limit (u64, inclusive) at 16, device scopes from 24. ATSR
//! (type 2) and SATC (type 5) carry device scopes from 8. Device scope
//! (§8.3.1): type, length (6 + 2N), flags, reserved, enumeration ID, start
//! bus, then N (device, function) path entries.

use core::fmt;
use core::ops::Range;

/// The ACPI table header's size.
pub const HEADER_LEN: usize = 36;
/// The DMAR's fixed part: header, host address width, flags, reserved.
pub const FIXED_LEN: usize = 48;
const SCOPE_HEADER_LEN: usize = 6;
const PAGE: u64 = 4096;

/// The kinds of remapping structures (§8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructureKind {
    /// DMA Remapping Hardware Unit Definition.
    Drhd,
    /// Reserved Memory Region Reporting.
    Rmrr,
    /// Root Port ATS Capability Reporting.
    Atsr,
    /// Remapping Hardware Static Affinity.
    Rhsa,
    /// ACPI Name-space Device Declaration.
    Andd,
    /// SoC Integrated Address Translation Cache.
    Satc,
    /// A type this parser does not know: skipped by its length, as §8.2 asks.
    Other(u16),
}

impl StructureKind {
    fn from_type(t: u16) -> Self {
        match t {
            0 => Self::Drhd,
            1 => Self::Rmrr,
            2 => Self::Atsr,
            3 => Self::Rhsa,
            4 => Self::Andd,
            5 => Self::Satc,
            t => Self::Other(t),
        }
    }

    /// The fixed part's length, and where device scopes start (if any).
    fn layout(self) -> (usize, Option<usize>) {
        match self {
            Self::Drhd => (16, Some(16)),
            Self::Rmrr => (24, Some(24)),
            Self::Atsr | Self::Satc => (8, Some(8)),
            Self::Rhsa => (20, None),
            Self::Andd => (8, None),
            Self::Other(_) => (4, None),
        }
    }
}

impl fmt::Display for StructureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Drhd => f.write_str("DRHD (remapping unit)"),
            Self::Rmrr => f.write_str("RMRR (reserved memory region)"),
            Self::Atsr => f.write_str("ATSR"),
            Self::Rhsa => f.write_str("RHSA"),
            Self::Andd => f.write_str("ANDD"),
            Self::Satc => f.write_str("SATC"),
            Self::Other(t) => write!(f, "structure of type {t}"),
        }
    }
}

/// Why a DMAR table is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmarError {
    /// Fewer bytes than the ACPI header.
    TooShort { available: usize },
    /// The signature is not `DMAR`.
    BadSignature([u8; 4]),
    /// The header's length is below the DMAR's fixed 48 bytes.
    LengthTooSmall { length: u32 },
    /// The header's length runs past the bytes there are.
    Truncated { length: u32, available: usize },
    /// The table's bytes do not sum to 0 (mod 256).
    BadChecksum { sum: u8 },
    /// A remapping structure's type and length do not fit before the table's end.
    StructureHeaderTruncated { offset: usize },
    /// A remapping structure shorter than its fixed part (or than 4 bytes).
    StructureTooShort { offset: usize, kind: StructureKind, length: u16, minimum: usize },
    /// A remapping structure's length runs past the table's end.
    StructureOverrun { offset: usize, kind: StructureKind, length: u16, remaining: usize },
    /// A device scope's length is below 6, odd in its path, or runs past its structure.
    BadDeviceScope { offset: usize, length: u8 },
    /// An RMRR whose base or limit + 1 is not 4-KiB aligned, or whose limit is below its base.
    BadRmrr { offset: usize, base: u64, limit: u64 },
    /// A DRHD whose register base is 0 or not 4-KiB aligned.
    BadRegisterBase { offset: usize, base: u64 },
}

impl fmt::Display for DmarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { available } => {
                write!(f, "{available} bytes: shorter than the {HEADER_LEN}-byte ACPI table header")
            }
            Self::BadSignature(s) => write!(f, "signature \"{:?}\" is not \"DMAR\"", Sig(s)),
            Self::LengthTooSmall { length } => {
                write!(f, "header length {length} is below the DMAR's fixed {FIXED_LEN} bytes")
            }
            Self::Truncated { length, available } => {
                write!(f, "truncated: the header says {length} bytes, only {available} are there")
            }
            Self::BadChecksum { sum } => write!(f, "bad checksum: the bytes sum to {sum:#04x}, not 0"),
            Self::StructureHeaderTruncated { offset } => {
                write!(f, "remapping structure at offset {offset}: its type and length are cut off by the table's end")
            }
            Self::StructureTooShort { offset, kind, length, minimum } => {
                write!(f, "{kind} at offset {offset}: length {length} is below its minimum {minimum}")
            }
            Self::StructureOverrun { offset, kind, length, remaining } => write!(
                f,
                "{kind} at offset {offset}: length {length} runs past the table's end ({remaining} bytes left)"
            ),
            Self::BadDeviceScope { offset, length } => {
                write!(f, "device scope at offset {offset}: length {length} is not 6 + 2N or runs past its structure")
            }
            Self::BadRmrr { offset, base, limit } => {
                write!(f, "RMRR at offset {offset}: region {base:#x}..={limit:#x} is not 4-KiB aligned or is empty")
            }
            Self::BadRegisterBase { offset, base } => {
                write!(f, "DRHD at offset {offset}: register base {base:#x} is 0 or not 4-KiB aligned")
            }
        }
    }
}

/// Prints a signature as text where it is ASCII.
struct Sig([u8; 4]);

impl fmt::Debug for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// DMAR flags (§8.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmarFlags {
    /// The platform supports interrupt remapping.
    pub intr_remap: bool,
    /// Firmware asks system software not to enable x2APIC mode.
    pub x2apic_opt_out: bool,
    /// Platform-initiated DMA is restricted to the RMRRs at hand-off.
    pub dma_ctrl_platform_opt_in: bool,
}

/// A validated DMAR table.
#[derive(Clone, Copy, Debug)]
pub struct Dmar<'a> {
    /// The whole table (exactly the header's length).
    bytes: &'a [u8],
}

impl<'a> Dmar<'a> {
    /// Checks `bytes` (at least the header's length of them) as a DMAR table.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DmarError> {
        if bytes.len() < HEADER_LEN {
            return Err(DmarError::TooShort { available: bytes.len() });
        }
        let signature: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
        if signature != *b"DMAR" {
            return Err(DmarError::BadSignature(signature));
        }
        let length = u32_at(bytes, 4);
        if (length as usize) < FIXED_LEN {
            return Err(DmarError::LengthTooSmall { length });
        }
        if length as usize > bytes.len() {
            return Err(DmarError::Truncated { length, available: bytes.len() });
        }
        let bytes = &bytes[..length as usize];
        let sum = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        if sum != 0 {
            return Err(DmarError::BadChecksum { sum });
        }
        let dmar = Self { bytes };
        let mut offset = FIXED_LEN;
        while offset < bytes.len() {
            let s = structure_at(bytes, offset)?;
            if let Some(scopes_at) = s.kind.layout().1 {
                check_scopes(&bytes[offset..offset + s.len], scopes_at, offset)?;
            }
            match s.kind {
                StructureKind::Drhd => {
                    let base = u64_at(bytes, offset + 8);
                    if base == 0 || !base.is_multiple_of(PAGE) {
                        return Err(DmarError::BadRegisterBase { offset, base });
                    }
                }
                StructureKind::Rmrr => {
                    let (base, limit) = (u64_at(bytes, offset + 8), u64_at(bytes, offset + 16));
                    let end = limit.checked_add(1);
                    if limit < base || !base.is_multiple_of(PAGE) || !end.is_some_and(|e| e.is_multiple_of(PAGE)) {
                        return Err(DmarError::BadRmrr { offset, base, limit });
                    }
                }
                _ => {}
            }
            offset += s.len;
        }
        Ok(dmar)
    }

    /// The table's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The ACPI header's revision.
    pub fn revision(&self) -> u8 {
        self.bytes[8]
    }

    /// The OEM ID from the header.
    pub fn oem_id(&self) -> [u8; 6] {
        self.bytes[10..16].try_into().expect("6 bytes")
    }

    /// The platform's DMA addressability in bits (the field's N + 1).
    pub fn host_address_width(&self) -> u32 {
        u32::from(self.bytes[36]) + 1
    }

    pub fn flags(&self) -> DmarFlags {
        let f = self.bytes[37];
        DmarFlags { intr_remap: f & 1 != 0, x2apic_opt_out: f & 2 != 0, dma_ctrl_platform_opt_in: f & 4 != 0 }
    }

    /// Every remapping structure, in table order.
    pub fn structures(&self) -> Structures<'a> {
        Structures { bytes: self.bytes, offset: FIXED_LEN }
    }

    /// The remapping hardware units (DRHDs).
    pub fn units(&self) -> impl Iterator<Item = Drhd<'a>> + 'a {
        self.structures().filter_map(|s| match s {
            Structure::Drhd(d) => Some(d),
            _ => None,
        })
    }

    /// The reserved memory regions (RMRRs).
    pub fn rmrrs(&self) -> impl Iterator<Item = Rmrr<'a>> + 'a {
        self.structures().filter_map(|s| match s {
            Structure::Rmrr(r) => Some(r),
            _ => None,
        })
    }
}

struct RawStructure {
    kind: StructureKind,
    len: usize,
}

fn structure_at(bytes: &[u8], offset: usize) -> Result<RawStructure, DmarError> {
    let remaining = bytes.len() - offset;
    if remaining < 4 {
        return Err(DmarError::StructureHeaderTruncated { offset });
    }
    let kind = StructureKind::from_type(u16_at(bytes, offset));
    let length = u16_at(bytes, offset + 2);
    let minimum = kind.layout().0;
    if usize::from(length) < minimum {
        return Err(DmarError::StructureTooShort { offset, kind, length, minimum });
    }
    if usize::from(length) > remaining {
        return Err(DmarError::StructureOverrun { offset, kind, length, remaining });
    }
    Ok(RawStructure { kind, len: usize::from(length) })
}

fn check_scopes(structure: &[u8], scopes_at: usize, base: usize) -> Result<(), DmarError> {
    let mut at = scopes_at;
    while at < structure.len() {
        let remaining = structure.len() - at;
        let length = if remaining >= 2 { structure[at + 1] } else { 0 };
        let l = usize::from(length);
        if remaining < SCOPE_HEADER_LEN
            || l < SCOPE_HEADER_LEN
            || l > remaining
            || !(l - SCOPE_HEADER_LEN).is_multiple_of(2)
        {
            return Err(DmarError::BadDeviceScope { offset: base + at, length });
        }
        at += l;
    }
    Ok(())
}

/// Iterator over a validated table's remapping structures.
#[derive(Clone, Debug)]
pub struct Structures<'a> {
    bytes: &'a [u8],
    offset: usize,
}

/// One remapping structure.
#[derive(Clone, Copy, Debug)]
pub enum Structure<'a> {
    Drhd(Drhd<'a>),
    Rmrr(Rmrr<'a>),
    /// Another kind, with its bytes (type and length included).
    Other(StructureKind, &'a [u8]),
}

impl<'a> Iterator for Structures<'a> {
    type Item = Structure<'a>;

    fn next(&mut self) -> Option<Structure<'a>> {
        if self.offset >= self.bytes.len() {
            return None;
        }
        // Validated by `Dmar::parse`.
        let raw = structure_at(self.bytes, self.offset).ok()?;
        let b = &self.bytes[self.offset..self.offset + raw.len];
        self.offset += raw.len;
        Some(match raw.kind {
            StructureKind::Drhd => Structure::Drhd(Drhd {
                include_pci_all: b[4] & 1 != 0,
                size: b[5] & 0xf,
                segment: u16_at(b, 6),
                register_base: u64_at(b, 8),
                scopes: &b[16..],
            }),
            StructureKind::Rmrr => Structure::Rmrr(Rmrr {
                segment: u16_at(b, 6),
                base: u64_at(b, 8),
                limit: u64_at(b, 16),
                scopes: &b[24..],
            }),
            kind => Structure::Other(kind, b),
        })
    }
}

/// A DMA remapping hardware unit (DRHD, §8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drhd<'a> {
    /// The unit covers every PCI device of its segment that no other unit
    /// lists (such a unit comes last for its segment).
    pub include_pci_all: bool,
    /// Register set size: 2^size 4-KiB pages (0 on tables older than VT-d 2.x).
    pub size: u8,
    pub segment: u16,
    /// Physical address of the unit's registers (§10.4).
    pub register_base: u64,
    scopes: &'a [u8],
}

impl<'a> Drhd<'a> {
    /// The devices this unit is declared for.
    pub fn scopes(&self) -> DeviceScopes<'a> {
        DeviceScopes { bytes: self.scopes }
    }

    /// Bytes of the register set.
    pub fn register_len(&self) -> u64 {
        PAGE << self.size
    }
}

/// A reserved memory region (RMRR, §8.4): memory the listed devices may
/// DMA to at any time (USB legacy emulation, integrated graphics), which
/// must stay identity-mapped for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rmrr<'a> {
    pub segment: u16,
    pub base: u64,
    /// Last byte of the region (inclusive).
    pub limit: u64,
    scopes: &'a [u8],
}

impl<'a> Rmrr<'a> {
    /// The devices that use the region.
    pub fn scopes(&self) -> DeviceScopes<'a> {
        DeviceScopes { bytes: self.scopes }
    }

    /// The region as a half-open range.
    pub fn range(&self) -> Range<u64> {
        self.base..self.limit + 1
    }
}

/// Device scope types (§8.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    PciEndpoint,
    /// A bridge and every device below it.
    PciSubHierarchy,
    IoApic,
    Hpet,
    AcpiNamespaceDevice,
    Reserved(u8),
}

/// One device scope entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceScope<'a> {
    pub kind: ScopeKind,
    /// I/O APIC ID, HPET number or ACPI device number, by kind.
    pub enumeration_id: u8,
    pub start_bus: u8,
    /// (device, function) pairs from the start bus down through bridges.
    path: &'a [u8],
}

impl DeviceScope<'_> {
    /// The hierarchical path: (device, function) per bridge level.
    pub fn path(&self) -> impl Iterator<Item = (u8, u8)> + '_ {
        self.path.chunks_exact(2).map(|p| (p[0], p[1]))
    }
}

/// Iterator over a structure's device scopes.
#[derive(Clone, Debug)]
pub struct DeviceScopes<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for DeviceScopes<'a> {
    type Item = DeviceScope<'a>;

    fn next(&mut self) -> Option<DeviceScope<'a>> {
        // Lengths validated by `Dmar::parse`.
        let len = usize::from(*self.bytes.get(1)?);
        if len < SCOPE_HEADER_LEN || len > self.bytes.len() {
            return None;
        }
        let (b, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Some(DeviceScope {
            kind: match b[0] {
                1 => ScopeKind::PciEndpoint,
                2 => ScopeKind::PciSubHierarchy,
                3 => ScopeKind::IoApic,
                4 => ScopeKind::Hpet,
                5 => ScopeKind::AcpiNamespaceDevice,
                t => ScopeKind::Reserved(t),
            },
            enumeration_id: b[4],
            start_bus: b[5],
            path: &b[SCOPE_HEADER_LEN..],
        })
    }
}

/// Builders of hand-made tables, for this crate's tests.
#[cfg(test)]
pub(crate) mod build {
    /// A device scope: kind, enumeration ID, start bus, path.
    pub fn scope(kind: u8, id: u8, bus: u8, path: &[(u8, u8)]) -> Vec<u8> {
        let mut v = vec![kind, (6 + 2 * path.len()) as u8, 0, 0, id, bus];
        for (d, f) in path {
            v.extend([*d, *f]);
        }
        v
    }

    pub fn drhd(include_all: bool, size: u8, segment: u16, base: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = scopes.concat();
        let mut v = vec![0, 0];
        v.extend((16 + body.len() as u16).to_le_bytes());
        v.extend([u8::from(include_all), size]);
        v.extend(segment.to_le_bytes());
        v.extend(base.to_le_bytes());
        v.extend(body);
        v
    }

    pub fn rmrr(segment: u16, base: u64, limit: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = scopes.concat();
        let mut v = vec![1, 0];
        v.extend((24 + body.len() as u16).to_le_bytes());
        v.extend([0, 0]);
        v.extend(segment.to_le_bytes());
        v.extend(base.to_le_bytes());
        v.extend(limit.to_le_bytes());
        v.extend(body);
        v
    }

    /// A whole DMAR with a right length and checksum.
    pub fn dmar(haw_bits: u8, flags: u8, structures: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(b"DMAR");
        v.extend(0u32.to_le_bytes()); // length, below
        v.extend([1, 0]); // revision, checksum
        v.extend(b"PERFVI");
        v.extend(b"TESTDMAR");
        v.extend(1u32.to_le_bytes());
        v.extend(b"PVTS");
        v.extend(1u32.to_le_bytes());
        assert_eq!(v.len(), 36);
        v.push(haw_bits - 1);
        v.push(flags);
        v.extend([0; 10]);
        for s in structures {
            v.extend(s);
        }
        fix(&mut v);
        v
    }

    /// Rewrites the length field and the checksum.
    pub fn fix(v: &mut [u8]) {
        let len = v.len() as u32;
        v[4..8].copy_from_slice(&len.to_le_bytes());
        v[9] = 0;
        let sum = v.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        v[9] = 0u8.wrapping_sub(sum);
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    /// A table like a client platform's: the integrated GPU's unit, the
    /// catch-all unit with the I/O APIC and HPET, RMRRs for USB and graphics.
    fn platform() -> Vec<u8> {
        dmar(
            39,
            0b101,
            &[
                drhd(false, 0, 0, 0xfed9_0000, &[scope(1, 0, 0, &[(2, 0)])]),
                drhd(true, 1, 0, 0xfed9_1000, &[scope(3, 2, 0xf0, &[(0x1f, 0)]), scope(4, 0, 0, &[(0x1f, 0)])]),
                rmrr(0, 0x7a00_0000, 0x7a01_ffff, &[scope(1, 0, 0, &[(0x14, 0)]), scope(1, 0, 0, &[(0x1a, 0)])]),
                rmrr(0, 0x7c00_0000, 0x7fff_ffff, &[scope(1, 0, 0, &[(2, 0)])]),
            ],
        )
    }

    #[test]
    fn parses_units_rmrrs_and_device_scopes() {
        let t = platform();
        let d = Dmar::parse(&t).unwrap();
        assert_eq!(d.host_address_width(), 39);
        assert_eq!(d.flags(), DmarFlags { intr_remap: true, x2apic_opt_out: false, dma_ctrl_platform_opt_in: true });
        assert_eq!(&d.oem_id(), b"PERFVI");
        let units: Vec<_> = d.units().collect();
        assert_eq!(units.len(), 2);
        assert!(!units[0].include_pci_all);
        assert_eq!((units[0].segment, units[0].register_base, units[0].register_len()), (0, 0xfed9_0000, 4096));
        let gpu: Vec<_> = units[0].scopes().collect();
        assert_eq!(gpu.len(), 1);
        assert_eq!((gpu[0].kind, gpu[0].start_bus), (ScopeKind::PciEndpoint, 0));
        assert_eq!(gpu[0].path().collect::<Vec<_>>(), [(2, 0)]);
        assert!(units[1].include_pci_all);
        assert_eq!(units[1].register_len(), 8192);
        let scopes: Vec<_> = units[1].scopes().collect();
        assert_eq!(scopes.iter().map(|s| s.kind).collect::<Vec<_>>(), [ScopeKind::IoApic, ScopeKind::Hpet]);
        assert_eq!((scopes[0].enumeration_id, scopes[0].start_bus), (2, 0xf0));

        let rmrrs: Vec<_> = d.rmrrs().collect();
        assert_eq!(rmrrs.len(), 2);
        assert_eq!(rmrrs[0].range(), 0x7a00_0000..0x7a02_0000);
        assert_eq!(rmrrs[0].scopes().count(), 2);
        assert_eq!(rmrrs[1].range(), 0x7c00_0000..0x8000_0000);
        assert_eq!(d.structures().count(), 4);
    }

    #[test]
    fn unknown_structures_are_skipped_by_length() {
        let mut rhsa = vec![3, 0, 20, 0, 0, 0, 0, 0];
        rhsa.extend(0xfed9_0000u64.to_le_bytes());
        rhsa.extend(0u32.to_le_bytes());
        let future = vec![42, 0, 6, 0, 0xaa, 0xbb];
        let atsr = [vec![2, 0, 16, 0, 0, 0, 0, 0], scope(2, 0, 0, &[(1, 0)])].concat();
        let t = dmar(46, 0, &[drhd(true, 0, 0, 0xfed9_0000, &[]), rhsa, future, atsr]);
        let d = Dmar::parse(&t).unwrap();
        let kinds: Vec<_> = d
            .structures()
            .map(|s| match s {
                Structure::Drhd(_) => StructureKind::Drhd,
                Structure::Rmrr(_) => StructureKind::Rmrr,
                Structure::Other(k, b) => {
                    assert_eq!(usize::from(b[2]), b.len());
                    k
                }
            })
            .collect();
        assert_eq!(kinds, [StructureKind::Drhd, StructureKind::Rhsa, StructureKind::Other(42), StructureKind::Atsr]);
        assert_eq!(d.units().count(), 1);
        assert_eq!(d.rmrrs().count(), 0);
    }

    #[test]
    fn malformed_headers_are_refused_with_the_reason() {
        let good = platform();
        assert_eq!(Dmar::parse(&good[..20]).unwrap_err(), DmarError::TooShort { available: 20 });

        let mut bad = good.clone();
        bad[..4].copy_from_slice(b"APIC");
        assert_eq!(Dmar::parse(&bad).unwrap_err(), DmarError::BadSignature(*b"APIC"));
        assert!(DmarError::BadSignature(*b"AP\x01C").to_string().contains("\"AP\\x01C\""));

        // Cut short: the header still claims the full length.
        let cut = &good[..good.len() - 5];
        assert_eq!(
            Dmar::parse(cut).unwrap_err(),
            DmarError::Truncated { length: good.len() as u32, available: good.len() - 5 }
        );

        let mut small = good.clone();
        small[4..8].copy_from_slice(&40u32.to_le_bytes());
        assert_eq!(Dmar::parse(&small).unwrap_err(), DmarError::LengthTooSmall { length: 40 });

        let mut sum = good.clone();
        sum[60] ^= 0x10;
        assert_eq!(Dmar::parse(&sum).unwrap_err(), DmarError::BadChecksum { sum: 0x10 });
        assert!(DmarError::BadChecksum { sum: 0x10 }.to_string().contains("checksum"));

        // Extra bytes after the table are not part of it.
        let mut longer = good.clone();
        longer.extend([0xff; 7]);
        assert_eq!(Dmar::parse(&longer).unwrap().bytes().len(), good.len());
    }

    #[test]
    fn malformed_structures_are_refused_with_the_reason() {
        // 3 stray bytes after the last structure.
        let mut t = dmar(39, 0, &[drhd(true, 0, 0, 0xfed9_0000, &[])]);
        t.extend([0, 0, 0]);
        fix(&mut t);
        assert_eq!(Dmar::parse(&t).unwrap_err(), DmarError::StructureHeaderTruncated { offset: 64 });

        // A DRHD claiming 12 bytes (its fixed part is 16).
        let mut short = drhd(true, 0, 0, 0xfed9_0000, &[]);
        short[2] = 12;
        let t = dmar(39, 0, &[short]);
        assert_eq!(
            Dmar::parse(&t).unwrap_err(),
            DmarError::StructureTooShort { offset: 48, kind: StructureKind::Drhd, length: 12, minimum: 16 }
        );

        // A zero-length unknown structure would loop forever: refused.
        let t = dmar(39, 0, &[vec![9, 0, 0, 0]]);
        assert_eq!(
            Dmar::parse(&t).unwrap_err(),
            DmarError::StructureTooShort { offset: 48, kind: StructureKind::Other(9), length: 0, minimum: 4 }
        );

        // An RMRR claiming more bytes than the table has.
        let mut long = rmrr(0, 0x1000, 0x1fff, &[]);
        long[2] = 200;
        let t = dmar(39, 0, &[long]);
        assert_eq!(
            Dmar::parse(&t).unwrap_err(),
            DmarError::StructureOverrun { offset: 48, kind: StructureKind::Rmrr, length: 200, remaining: 24 }
        );
    }

    #[test]
    fn malformed_scopes_and_regions_are_refused_with_the_reason() {
        // Scope length 7: an odd path.
        let mut s = scope(1, 0, 0, &[(2, 0)]);
        s[1] = 7;
        s.push(0);
        let t = dmar(39, 0, &[drhd(false, 0, 0, 0xfed9_0000, &[s])]);
        assert_eq!(Dmar::parse(&t).unwrap_err(), DmarError::BadDeviceScope { offset: 64, length: 7 });

        // Scope length 4: below its header.
        let mut s = scope(1, 0, 0, &[]);
        s[1] = 4;
        let t = dmar(39, 0, &[rmrr(0, 0x1000, 0x1fff, &[s])]);
        assert_eq!(Dmar::parse(&t).unwrap_err(), DmarError::BadDeviceScope { offset: 72, length: 4 });

        // Scope running past its structure (into the next one).
        let mut s = scope(1, 0, 0, &[(2, 0)]);
        s[1] = 10;
        let t = dmar(39, 0, &[drhd(false, 0, 0, 0xfed9_0000, &[s]), drhd(true, 0, 0, 0xfed9_1000, &[])]);
        assert_eq!(Dmar::parse(&t).unwrap_err(), DmarError::BadDeviceScope { offset: 64, length: 10 });

        for (base, limit) in [(0x1800, 0x2fff), (0x1000, 0x1ffe), (0x3000, 0x1fff), (0, u64::MAX)] {
            let t = dmar(39, 0, &[rmrr(0, base, limit, &[])]);
            assert_eq!(Dmar::parse(&t).unwrap_err(), DmarError::BadRmrr { offset: 48, base, limit });
        }
        for base in [0, 0xfed9_0800] {
            let t = dmar(39, 0, &[drhd(true, 0, 0, base, &[])]);
            assert_eq!(Dmar::parse(&t).unwrap_err(), DmarError::BadRegisterBase { offset: 48, base });
        }
    }

    #[test]
    fn every_error_reads_as_words() {
        let errors = [
            DmarError::TooShort { available: 3 },
            DmarError::LengthTooSmall { length: 40 },
            DmarError::Truncated { length: 100, available: 90 },
            DmarError::StructureHeaderTruncated { offset: 64 },
            DmarError::StructureTooShort { offset: 48, kind: StructureKind::Drhd, length: 12, minimum: 16 },
            DmarError::StructureOverrun { offset: 48, kind: StructureKind::Rmrr, length: 200, remaining: 24 },
            DmarError::BadDeviceScope { offset: 64, length: 7 },
            DmarError::BadRmrr { offset: 48, base: 0x1800, limit: 0x2fff },
            DmarError::BadRegisterBase { offset: 48, base: 0 },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(text.len() > 20 && !text.contains("Drhd {"), "{text}");
        }
        assert!(DmarError::StructureTooShort { offset: 48, kind: StructureKind::Drhd, length: 12, minimum: 16 }
            .to_string()
            .starts_with("DRHD (remapping unit) at offset 48"));
    }
}
