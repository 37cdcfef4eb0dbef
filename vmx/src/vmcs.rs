//! VMCS fields as typed enums, one per width, so a 16-bit field can only be
//! accessed as a `u16` and so on (encodings: SDM vol. 3D appendix B; the
//! width is encoding bits 14:13, checked by a test). Accesses go through
//! [`VmcsAccess`]: VMREAD/VMWRITE in the kernel, [`MemoryVmcs`] in tests.

use core::fmt;

macro_rules! vmcs_fields {
    ($(#[$meta:meta])* $name:ident : $width:literal { $($(#[$fmeta:meta])* $field:ident = $enc:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum $name { $($(#[$fmeta])* $field = $enc,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$field,)*];
            /// Encoding bits 14:13: 0 = 16-bit, 1 = 64-bit, 2 = 32-bit, 3 = natural width.
            pub const WIDTH_CODE: u32 = $width;
            pub fn encoding(self) -> u32 { self as u32 }
            pub fn name(self) -> &'static str {
                match self { $($name::$field => stringify!($field),)* }
            }
        }
    };
}

vmcs_fields! {
    /// 16-bit fields (SDM vol. 3D §B.1).
    Vmcs16: 0 {
        Vpid = 0x0000,
        GuestEsSelector = 0x0800,
        GuestCsSelector = 0x0802,
        GuestSsSelector = 0x0804,
        GuestDsSelector = 0x0806,
        GuestFsSelector = 0x0808,
        GuestGsSelector = 0x080a,
        GuestLdtrSelector = 0x080c,
        GuestTrSelector = 0x080e,
        HostEsSelector = 0x0c00,
        HostCsSelector = 0x0c02,
        HostSsSelector = 0x0c04,
        HostDsSelector = 0x0c06,
        HostFsSelector = 0x0c08,
        HostGsSelector = 0x0c0a,
        HostTrSelector = 0x0c0c,
    }
}

vmcs_fields! {
    /// 64-bit fields (SDM vol. 3D §B.2).
    Vmcs64: 1 {
        IoBitmapA = 0x2000,
        IoBitmapB = 0x2002,
        MsrBitmap = 0x2004,
        ExitMsrStoreAddress = 0x2006,
        ExitMsrLoadAddress = 0x2008,
        EntryMsrLoadAddress = 0x200a,
        Eptp = 0x201a,
        /// Read-only: the guest-physical address of an EPT violation.
        GuestPhysicalAddress = 0x2400,
        VmcsLinkPointer = 0x2800,
        GuestDebugCtl = 0x2802,
        GuestPat = 0x2804,
        GuestEfer = 0x2806,
        GuestPerfGlobalCtrl = 0x2808,
        HostPat = 0x2c00,
        HostEfer = 0x2c02,
        HostPerfGlobalCtrl = 0x2c04,
    }
}

vmcs_fields! {
    /// 32-bit fields (SDM vol. 3D §B.3).
    Vmcs32: 2 {
        PinControls = 0x4000,
        PrimaryControls = 0x4002,
        ExceptionBitmap = 0x4004,
        PageFaultErrorCodeMask = 0x4006,
        PageFaultErrorCodeMatch = 0x4008,
        Cr3TargetCount = 0x400a,
        ExitControls = 0x400c,
        ExitMsrStoreCount = 0x400e,
        ExitMsrLoadCount = 0x4010,
        EntryControls = 0x4012,
        EntryMsrLoadCount = 0x4014,
        EntryInterruptionInfo = 0x4016,
        EntryExceptionErrorCode = 0x4018,
        EntryInstructionLength = 0x401a,
        SecondaryControls = 0x401e,
        InstructionError = 0x4400,
        ExitReason = 0x4402,
        ExitInterruptionInfo = 0x4404,
        ExitInterruptionErrorCode = 0x4406,
        IdtVectoringInfo = 0x4408,
        IdtVectoringErrorCode = 0x440a,
        ExitInstructionLength = 0x440c,
        ExitInstructionInfo = 0x440e,
        GuestEsLimit = 0x4800,
        GuestCsLimit = 0x4802,
        GuestSsLimit = 0x4804,
        GuestDsLimit = 0x4806,
        GuestFsLimit = 0x4808,
        GuestGsLimit = 0x480a,
        GuestLdtrLimit = 0x480c,
        GuestTrLimit = 0x480e,
        GuestGdtrLimit = 0x4810,
        GuestIdtrLimit = 0x4812,
        GuestEsAccessRights = 0x4814,
        GuestCsAccessRights = 0x4816,
        GuestSsAccessRights = 0x4818,
        GuestDsAccessRights = 0x481a,
        GuestFsAccessRights = 0x481c,
        GuestGsAccessRights = 0x481e,
        GuestLdtrAccessRights = 0x4820,
        GuestTrAccessRights = 0x4822,
        GuestInterruptibility = 0x4824,
        GuestActivityState = 0x4826,
        GuestSysenterCs = 0x482a,
        PreemptionTimerValue = 0x482e,
        HostSysenterCs = 0x4c00,
    }
}

vmcs_fields! {
    /// Natural-width fields (SDM vol. 3D §B.4).
    VmcsNatural: 3 {
        Cr0GuestHostMask = 0x6000,
        Cr4GuestHostMask = 0x6002,
        Cr0ReadShadow = 0x6004,
        Cr4ReadShadow = 0x6006,
        ExitQualification = 0x6400,
        GuestLinearAddress = 0x640a,
        GuestCr0 = 0x6800,
        GuestCr3 = 0x6802,
        GuestCr4 = 0x6804,
        GuestEsBase = 0x6806,
        GuestCsBase = 0x6808,
        GuestSsBase = 0x680a,
        GuestDsBase = 0x680c,
        GuestFsBase = 0x680e,
        GuestGsBase = 0x6810,
        GuestLdtrBase = 0x6812,
        GuestTrBase = 0x6814,
        GuestGdtrBase = 0x6816,
        GuestIdtrBase = 0x6818,
        GuestDr7 = 0x681a,
        GuestRsp = 0x681c,
        GuestRip = 0x681e,
        GuestRflags = 0x6820,
        GuestPendingDebugExceptions = 0x6822,
        GuestSysenterEsp = 0x6824,
        GuestSysenterEip = 0x6826,
        HostCr0 = 0x6c00,
        HostCr3 = 0x6c02,
        HostCr4 = 0x6c04,
        HostFsBase = 0x6c06,
        HostGsBase = 0x6c08,
        HostTrBase = 0x6c0a,
        HostGdtrBase = 0x6c0c,
        HostIdtrBase = 0x6c0e,
        HostSysenterEsp = 0x6c10,
        HostSysenterEip = 0x6c12,
        HostRsp = 0x6c14,
        HostRip = 0x6c16,
    }
}

/// A VMX instruction that failed: a VMREAD/VMWRITE of field `encoding`, or
/// another instruction named by one of the [`instruction`] pseudo-encodings.
/// Two `u32`s, so `Result<u64, VmcsError>` comes back in registers: VMCS
/// accesses are the bulk of a VM exit's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmcsError {
    pub encoding: u32,
    /// The VM-instruction error number (0 when VMfailInvalid: no current VMCS).
    pub instruction_error: u32,
}

/// Pseudo-encodings (no VMCS field has them) for failures of instructions
/// other than VMREAD/VMWRITE.
pub mod instruction {
    pub const VMCLEAR: u32 = 0xffff_0001;
    pub const VMPTRLD: u32 = 0xffff_0002;
    pub const VMLAUNCH: u32 = 0xffff_0003;
    pub const VMRESUME: u32 = 0xffff_0004;
    pub const INVEPT: u32 = 0xffff_0005;
    pub const INVVPID: u32 = 0xffff_0006;
}

impl VmcsError {
    /// The instruction or field, by name.
    pub fn what(&self) -> &'static str {
        match self.encoding {
            instruction::VMCLEAR => "VMCLEAR",
            instruction::VMPTRLD => "VMPTRLD",
            instruction::VMLAUNCH => "VMLAUNCH",
            instruction::VMRESUME => "VMRESUME",
            instruction::INVEPT => "INVEPT",
            instruction::INVVPID => "INVVPID",
            e => all_fields().find(|(_, enc)| *enc == e).map_or("an unnamed VMCS field", |(n, _)| n),
        }
    }
}

impl fmt::Display for VmcsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = crate::errors::instruction_error_text(self.instruction_error);
        if self.encoding >= instruction::VMCLEAR {
            write!(f, "{} failed: {error}", self.what())
        } else {
            write!(f, "VMCS access to {} ({:#06x}) failed: {error}", self.what(), self.encoding)
        }
    }
}

/// Raw access by encoding; the typed methods below are what callers use.
pub trait VmcsAccess {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmcsError>;
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmcsError>;

    fn read16(&self, f: Vmcs16) -> Result<u16, VmcsError> {
        self.read_raw(f.encoding()).map(|v| v as u16)
    }
    fn read32(&self, f: Vmcs32) -> Result<u32, VmcsError> {
        self.read_raw(f.encoding()).map(|v| v as u32)
    }
    fn read64(&self, f: Vmcs64) -> Result<u64, VmcsError> {
        self.read_raw(f.encoding())
    }
    fn read_natural(&self, f: VmcsNatural) -> Result<u64, VmcsError> {
        self.read_raw(f.encoding())
    }
    fn write16(&mut self, f: Vmcs16, v: u16) -> Result<(), VmcsError> {
        self.write_raw(f.encoding(), u64::from(v))
    }
    fn write32(&mut self, f: Vmcs32, v: u32) -> Result<(), VmcsError> {
        self.write_raw(f.encoding(), u64::from(v))
    }
    fn write64(&mut self, f: Vmcs64, v: u64) -> Result<(), VmcsError> {
        self.write_raw(f.encoding(), v)
    }
    fn write_natural(&mut self, f: VmcsNatural, v: u64) -> Result<(), VmcsError> {
        self.write_raw(f.encoding(), v)
    }
}

/// Every known field, for dumps: (name, encoding).
pub fn all_fields() -> impl Iterator<Item = (&'static str, u32)> {
    let a = Vmcs16::ALL.iter().map(|f| (f.name(), f.encoding()));
    let b = Vmcs64::ALL.iter().map(|f| (f.name(), f.encoding()));
    let c = Vmcs32::ALL.iter().map(|f| (f.name(), f.encoding()));
    let d = VmcsNatural::ALL.iter().map(|f| (f.name(), f.encoding()));
    a.chain(b).chain(c).chain(d)
}

/// Writes every readable field as `name = value` lines through `out`
/// (unreadable fields are listed with the error): the report printed when
/// an entry fails or the guest dies.
pub fn dump(vmcs: &impl VmcsAccess, mut out: impl FnMut(fmt::Arguments<'_>)) {
    for (name, enc) in all_fields() {
        match vmcs.read_raw(enc) {
            Ok(v) => out(format_args!("  {name:<28} {enc:#06x} = {v:#x}\n")),
            Err(e) => out(format_args!(
                "  {name:<28} {enc:#06x} unreadable ({})\n",
                crate::errors::instruction_error_text(e.instruction_error)
            )),
        }
    }
}

/// An in-memory VMCS for host tests: fields keyed by encoding, truncated
/// to their width on write as VMWRITE does.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryVmcs {
    pub fields: std::collections::BTreeMap<u32, u64>,
}

#[cfg(test)]
impl VmcsAccess for MemoryVmcs {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmcsError> {
        Ok(self.fields.get(&encoding).copied().unwrap_or(0))
    }
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmcsError> {
        let v = match (encoding >> 13) & 3 {
            0 => value & 0xffff,
            2 => value & 0xffff_ffff,
            _ => value,
        };
        self.fields.insert(encoding, v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_has_its_types_width() {
        fn check(all: &[u32], width: u32) {
            for &e in all {
                assert_eq!((e >> 13) & 3, width, "{e:#x}");
                assert_eq!(e & 1, 0, "full-field encodings are even: {e:#x}");
            }
        }
        check(&Vmcs16::ALL.iter().map(|f| f.encoding()).collect::<Vec<_>>(), Vmcs16::WIDTH_CODE);
        check(&Vmcs64::ALL.iter().map(|f| f.encoding()).collect::<Vec<_>>(), Vmcs64::WIDTH_CODE);
        check(&Vmcs32::ALL.iter().map(|f| f.encoding()).collect::<Vec<_>>(), Vmcs32::WIDTH_CODE);
        check(&VmcsNatural::ALL.iter().map(|f| f.encoding()).collect::<Vec<_>>(), VmcsNatural::WIDTH_CODE);
    }

    #[test]
    fn errors_name_the_field_or_instruction() {
        let e = VmcsError { encoding: Vmcs32::ExitReason.encoding(), instruction_error: 12 };
        assert_eq!(
            e.to_string(),
            "VMCS access to ExitReason (0x4402) failed: VMREAD/VMWRITE from/to unsupported VMCS component"
        );
        let e = VmcsError { encoding: instruction::VMLAUNCH, instruction_error: 7 };
        assert_eq!(e.to_string(), "VMLAUNCH failed: VM entry with invalid control field(s)");
    }

    #[test]
    fn memory_vmcs_truncates_like_vmwrite_and_dump_names_fields() {
        let mut v = MemoryVmcs::default();
        v.write_raw(Vmcs32::ExitReason.encoding(), 0x1_0000_0030).unwrap();
        assert_eq!(v.read32(Vmcs32::ExitReason).unwrap(), 0x30);
        v.write16(Vmcs16::Vpid, 1).unwrap();
        let mut text = String::new();
        dump(&v, |a| text.push_str(&a.to_string()));
        assert!(text.contains("ExitReason"));
        assert!(text.contains("Vpid"));
    }
}
