//! Finding the DMAR table with the `acpi` crate: RSDP → RSDT/XSDT → the
//! table whose signature is `DMAR`. The crate validates the RSDP (signature,
//! checksums) and the root table; the DMAR itself is checked by
//! [`Dmar::parse`], so a corrupt DMAR is reported with its reason instead of
//! being skipped as missing.

use crate::dmar::{Dmar, DmarError};
use acpi::sdt::{SdtHeader, Signature};
use acpi::{AcpiError, AcpiHandler, AcpiTable, AcpiTables, PhysicalMapping};
use core::fmt;

/// The largest DMAR accepted: real ones are a few KiB; a length beyond this
/// is a corrupt header, not a table to map and read.
pub const MAX_DMAR_LEN: u32 = 64 * 1024;

/// The DMAR as the `acpi` crate maps it: its header, the body following it.
#[repr(C, packed)]
pub struct DmarSdt {
    header: SdtHeader,
}

// SAFETY: `DmarSdt` is exactly an SDT header (36 bytes, alignment 1), which
// every ACPI table starts with; the crate maps the header's length.
unsafe impl AcpiTable for DmarSdt {
    const SIGNATURE: Signature = Signature::DMAR;

    fn header(&self) -> &SdtHeader {
        &self.header
    }

    /// The crate has checked the signature and OEM fields; the length and
    /// checksum are [`Dmar::parse`]'s to report (with a reason).
    fn validate(&self) -> Result<(), AcpiError> {
        Ok(())
    }
}

/// Why no DMAR could be read.
#[derive(Debug)]
pub enum FindError {
    /// The RSDP or the root table is invalid (the `acpi` crate's error).
    Acpi(AcpiError),
    /// The DMAR's header gives an implausible length.
    TooLong(u32),
    /// The DMAR is there but malformed.
    Dmar(DmarError),
}

impl fmt::Display for FindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Acpi(e) => write!(f, "the ACPI tables are unusable: {e:?}"),
            Self::TooLong(l) => {
                write!(f, "the DMAR header gives a length of {l} bytes (at most {MAX_DMAR_LEN} accepted)")
            }
            Self::Dmar(e) => write!(f, "the DMAR table is malformed: {e}"),
        }
    }
}

/// A DMAR found in memory: its mapping, and the table's bytes in it.
pub struct FoundDmar<H: AcpiHandler> {
    mapping: PhysicalMapping<H, DmarSdt>,
}

impl<H: AcpiHandler> FoundDmar<H> {
    /// The physical address of the table.
    pub fn physical_address(&self) -> usize {
        self.mapping.physical_start()
    }

    /// The parsed table.
    pub fn dmar(&self) -> Dmar<'_> {
        // SAFETY: `find_dmar` checked that the mapping covers the header's
        // length (`region_length`), and `Dmar::parse` accepted these bytes;
        // the mapping lives as long as `self`.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                self.mapping.virtual_start().as_ptr().cast::<u8>(),
                self.mapping.region_length(),
            )
        };
        Dmar::parse(bytes).expect("checked by find_dmar")
    }
}

/// Looks for the DMAR table from the RSDP at physical address `rsdp`.
/// `Ok(None)`: the platform reports no DMA remapping hardware.
///
/// # Safety
///
/// `rsdp` must be the physical address of the RSDP the firmware reported,
/// and `handler` must map any physical range the ACPI tables name (a linear
/// map of all physical memory does).
pub unsafe fn find_dmar<H: AcpiHandler>(handler: H, rsdp: usize) -> Result<Option<FoundDmar<H>>, FindError> {
    // SAFETY: the caller vouches for `rsdp` and the handler.
    let tables = unsafe { AcpiTables::from_rsdp(handler, rsdp) }.map_err(FindError::Acpi)?;
    let mapping = match tables.find_table::<DmarSdt>() {
        Ok(m) => m,
        Err(AcpiError::TableMissing(_)) => return Ok(None),
        Err(e) => return Err(FindError::Acpi(e)),
    };
    let length = mapping.header.length;
    if length > MAX_DMAR_LEN {
        return Err(FindError::TooLong(length));
    }
    if mapping.region_length() < length as usize {
        return Err(FindError::Dmar(DmarError::Truncated { length, available: mapping.region_length() }));
    }
    // SAFETY: the handler mapped `region_length` bytes from the header on,
    // and they live as long as `mapping`.
    let bytes =
        unsafe { core::slice::from_raw_parts(mapping.virtual_start().as_ptr().cast::<u8>(), mapping.region_length()) };
    Dmar::parse(bytes).map_err(FindError::Dmar)?;
    Ok(Some(FoundDmar { mapping }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dmar::build;
    use core::ptr::NonNull;
    use std::rc::Rc;

    /// "Physical memory": a buffer whose byte `i` is at physical `BASE + i`.
    #[derive(Clone)]
    struct FakeMemory(Rc<Vec<u8>>);

    const BASE: usize = 0xe_0000;

    impl AcpiHandler for FakeMemory {
        unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
            assert!(phys >= BASE && phys + size <= BASE + self.0.len(), "mapping {phys:#x}+{size} outside memory");
            let ptr = NonNull::new(self.0.as_ptr().wrapping_add(phys - BASE).cast_mut().cast::<T>()).unwrap();
            // SAFETY: `ptr` is inside the buffer (asserted), which outlives
            // the mapping through the `Rc` in the handler.
            unsafe { PhysicalMapping::new(phys, ptr, size, size, self.clone()) }
        }

        fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
    }

    fn checksum(bytes: &[u8]) -> u8 {
        0u8.wrapping_sub(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)))
    }

    /// RSDP (ACPI 2.0, at BASE) → XSDT (at BASE + 0x100) → `tables` (from BASE + 0x200).
    fn memory(tables: &[Vec<u8>]) -> FakeMemory {
        let mut mem = vec![0u8; 0x200];
        let mut addrs = Vec::new();
        for t in tables {
            addrs.push((BASE + mem.len()) as u64);
            mem.extend(t);
            mem.resize(mem.len().next_multiple_of(16), 0);
        }
        let mut rsdp = Vec::new();
        rsdp.extend(b"RSD PTR ");
        rsdp.push(0);
        rsdp.extend(b"PERFVI");
        rsdp.push(2);
        rsdp.extend(0u32.to_le_bytes());
        rsdp.extend(36u32.to_le_bytes());
        rsdp.extend((BASE as u64 + 0x100).to_le_bytes());
        rsdp.extend([0; 4]);
        rsdp[8] = checksum(&rsdp[..20]);
        rsdp[32] = checksum(&rsdp);
        mem[..36].copy_from_slice(&rsdp);
        let mut xsdt = build::dmar(39, 0, &[]);
        xsdt[..4].copy_from_slice(b"XSDT");
        xsdt.truncate(36);
        for a in addrs {
            xsdt.extend(a.to_le_bytes());
        }
        build::fix(&mut xsdt);
        mem[0x100..0x100 + xsdt.len()].copy_from_slice(&xsdt);
        // Room for what a corrupt length makes the crate map.
        mem.resize(0x4_0000, 0);
        FakeMemory(Rc::new(mem))
    }

    fn other_table(sig: &[u8; 4]) -> Vec<u8> {
        let mut t = build::dmar(39, 0, &[]);
        t[..4].copy_from_slice(sig);
        build::fix(&mut t);
        t
    }

    #[test]
    fn finds_the_dmar_through_rsdp_and_xsdt() {
        let dmar = build::dmar(46, 1, &[build::drhd(true, 0, 0, 0xfed9_0000, &[])]);
        let mem = memory(&[other_table(b"APIC"), dmar.clone()]);
        // SAFETY: the fake memory maps every address the tables name.
        let found = unsafe { find_dmar(mem, BASE) }.unwrap().expect("a DMAR");
        assert_eq!(found.physical_address(), BASE + 0x200 + 48);
        let d = found.dmar();
        assert_eq!(d.bytes(), &dmar[..]);
        assert_eq!(d.host_address_width(), 46);
        assert_eq!(d.units().next().unwrap().register_base, 0xfed9_0000);
    }

    #[test]
    fn no_dmar_is_none_and_bad_ones_are_named() {
        // SAFETY: as above.
        assert!(unsafe { find_dmar(memory(&[other_table(b"APIC")]), BASE) }.unwrap().is_none());

        let mut bad = build::dmar(46, 1, &[build::drhd(true, 0, 0, 0xfed9_0000, &[])]);
        bad[50] ^= 1;
        // SAFETY: as above.
        match unsafe { find_dmar(memory(&[bad]), BASE) } {
            Err(FindError::Dmar(DmarError::BadChecksum { .. })) => {}
            other => panic!("{:?}", other.map(|f| f.is_some())),
        }

        let mut huge = build::dmar(46, 1, &[]);
        huge[4..8].copy_from_slice(&0x2_0000u32.to_le_bytes());
        // SAFETY: as above (the length is refused before the body is read).
        let e = unsafe { find_dmar(memory(&[huge]), BASE) }.map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("131072 bytes"), "{e}");

        let mem = memory(&[]);
        let mut broken = (*mem.0).clone();
        broken[8] ^= 0xff;
        // SAFETY: as above.
        let e = unsafe { find_dmar(FakeMemory(Rc::new(broken)), BASE) }.map(|_| ()).unwrap_err();
        assert!(matches!(e, FindError::Acpi(AcpiError::RsdpInvalidChecksum)), "{e}");
    }
}
