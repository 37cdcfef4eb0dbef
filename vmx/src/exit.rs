//! VM-exit reasons perfvisor handles, and decoders for their exit
//! qualifications (SDM vol. 3C §28.2, appendix C).

use core::fmt;

/// The basic exit reasons (exit reason bits 15:0; SDM vol. 3D appendix C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    ExceptionOrNmi,
    ExternalInterrupt,
    TripleFault,
    InterruptWindow,
    NmiWindow,
    Cpuid,
    Hlt,
    Vmcall,
    CrAccess,
    IoInstruction,
    Rdmsr,
    Wrmsr,
    EptViolation,
    EptMisconfiguration,
    Rdpmc,
    PreemptionTimer,
    Xsetbv,
    /// Anything else, by number.
    Other(u16),
}

impl ExitReason {
    pub fn from_basic(n: u16) -> Self {
        match n {
            0 => Self::ExceptionOrNmi,
            1 => Self::ExternalInterrupt,
            2 => Self::TripleFault,
            7 => Self::InterruptWindow,
            8 => Self::NmiWindow,
            10 => Self::Cpuid,
            12 => Self::Hlt,
            15 => Self::Rdpmc,
            18 => Self::Vmcall,
            28 => Self::CrAccess,
            30 => Self::IoInstruction,
            31 => Self::Rdmsr,
            32 => Self::Wrmsr,
            48 => Self::EptViolation,
            49 => Self::EptMisconfiguration,
            52 => Self::PreemptionTimer,
            55 => Self::Xsetbv,
            n => Self::Other(n),
        }
    }

    /// A dense index for per-reason counters (`COUNTED` entries).
    pub fn index(self) -> usize {
        match self {
            Self::ExceptionOrNmi => 0,
            Self::ExternalInterrupt => 1,
            Self::TripleFault => 2,
            Self::Cpuid => 3,
            Self::Hlt => 4,
            Self::Vmcall => 5,
            Self::CrAccess => 6,
            Self::IoInstruction => 7,
            Self::Rdmsr => 8,
            Self::Wrmsr => 9,
            Self::EptViolation => 10,
            Self::EptMisconfiguration => 11,
            Self::Rdpmc => 12,
            Self::PreemptionTimer => 13,
            Self::Xsetbv => 14,
            Self::InterruptWindow => 15,
            Self::NmiWindow => 16,
            Self::Other(_) => 17,
        }
    }

    pub const COUNTED: usize = 18;

    /// The reason of counter slot `index` (for printing counts).
    pub fn name_of_index(index: usize) -> &'static str {
        [
            "exception/NMI",
            "external interrupt",
            "triple fault",
            "CPUID",
            "HLT",
            "VMCALL",
            "CR access",
            "I/O instruction",
            "RDMSR",
            "WRMSR",
            "EPT violation",
            "EPT misconfiguration",
            "RDPMC",
            "preemption timer",
            "XSETBV",
            "interrupt window",
            "NMI window",
            "other",
        ][index]
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(n) => write!(f, "exit reason {n}"),
            r => f.write_str(Self::name_of_index(r.index())),
        }
    }
}

/// The 32-bit exit-reason field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawExitReason(pub u32);

impl RawExitReason {
    pub fn basic(self) -> u16 {
        self.0 as u16
    }
    pub fn reason(self) -> ExitReason {
        ExitReason::from_basic(self.basic())
    }
    /// Bit 31: the VM entry failed (§27.8).
    pub fn entry_failed(self) -> bool {
        self.0 & (1 << 31) != 0
    }
}

/// An EPT-violation exit qualification (SDM vol. 3C Table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation(pub u64);

impl EptViolation {
    pub fn read(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn write(self) -> bool {
        self.0 & 2 != 0
    }
    pub fn fetch(self) -> bool {
        self.0 & 4 != 0
    }
    /// Bits 5:3: whether the page was readable, writable, executable.
    pub fn permissions(self) -> (bool, bool, bool) {
        (self.0 & 8 != 0, self.0 & 16 != 0, self.0 & 32 != 0)
    }
    /// Bit 7: the guest linear address field is valid.
    pub fn linear_address_valid(self) -> bool {
        self.0 & (1 << 7) != 0
    }
}

impl fmt::Display for EptViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = match (self.read(), self.write(), self.fetch()) {
            (_, true, _) => "write",
            (_, _, true) => "instruction fetch",
            (true, _, _) => "read",
            _ => "unknown access",
        };
        let (r, w, x) = self.permissions();
        if !(r || w || x) {
            write!(f, "{access} of an unmapped guest-physical page")
        } else {
            write!(
                f,
                "{access} denied (page is {}{}{})",
                if r { "r" } else { "-" },
                if w { "w" } else { "-" },
                if x { "x" } else { "-" }
            )
        }
    }
}

/// VM-entry interruption information for event injection (SDM vol. 3C §25.8.3).
pub fn injection_info(vector: u8, kind: EventKind, error_code: bool) -> u32 {
    u32::from(vector) | (kind as u32) << 8 | if error_code { 1 << 11 } else { 0 } | 1 << 31
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EventKind {
    ExternalInterrupt = 0,
    Nmi = 2,
    HardwareException = 3,
    SoftwareInterrupt = 4,
    SoftwareException = 6,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_qualifications() {
        let r = RawExitReason(0x8000_0021);
        assert!(r.entry_failed());
        assert_eq!(r.basic(), 33);
        assert_eq!(RawExitReason(10).reason(), ExitReason::Cpuid);
        assert_eq!(ExitReason::Rdmsr.to_string(), "RDMSR");
        assert_eq!(ExitReason::Other(77).to_string(), "exit reason 77");
        assert_eq!(EptViolation(0x181).to_string(), "read of an unmapped guest-physical page");
        assert_eq!(EptViolation(0x0a).to_string(), "write denied (page is r--)");
        // #GP, hardware exception, with error code, valid.
        assert_eq!(injection_info(13, EventKind::HardwareException, true), 0x8000_0b0d);
    }
}
