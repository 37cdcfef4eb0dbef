//! VMX failures in words: VM-instruction errors (SDM vol. 3C §31.4,
//! Table 31-1) and VM-entry failures (exit reason bit 31, §27.8).

/// The text of VM-instruction error `n` (the VMCS field read after VMfailValid).
pub fn instruction_error_text(n: u32) -> &'static str {
    match n {
        0 => "VMfailInvalid (no current VMCS)",
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer",
        19 => "VMCALL with non-clear VMCS",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with incorrect MSEG revision identifier",
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
    }
}

/// A VM entry that failed after loading guest state was attempted: exit
/// reason bit 31 set (SDM vol. 3C §27.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryFailure {
    /// Basic reason 33: a guest-state check failed (§27.3.1).
    InvalidGuestState,
    /// Basic reason 34: loading MSR number `qualification` of the VM-entry
    /// MSR-load list failed (§27.4).
    MsrLoading {
        entry: u64,
    },
    /// Basic reason 41: machine-check event during VM entry.
    MachineCheck,
    Other(u16),
}

impl EntryFailure {
    pub fn decode(basic_reason: u16, qualification: u64) -> Self {
        match basic_reason {
            33 => Self::InvalidGuestState,
            34 => Self::MsrLoading { entry: qualification },
            41 => Self::MachineCheck,
            n => Self::Other(n),
        }
    }

    /// One line, with what the exit qualification adds (§27.8, Table 28-x).
    pub fn describe(self, qualification: u64, mut out: impl FnMut(core::fmt::Arguments<'_>)) {
        match self {
            Self::InvalidGuestState => out(format_args!(
                "VM entry failed: invalid guest state ({})",
                match qualification {
                    0 => "a guest-state check in SDM vol. 3C §27.3.1 failed",
                    2 => "PDPTE loading failed",
                    3 => "NMI injection blocked by virtual-NMI blocking",
                    4 => "invalid VMCS link pointer",
                    _ => "unknown qualification",
                }
            )),
            Self::MsrLoading { entry } => {
                out(format_args!("VM entry failed: loading entry {entry} of the VM-entry MSR-load list failed"))
            }
            Self::MachineCheck => out(format_args!("VM entry failed: machine-check event")),
            Self::Other(n) => out(format_args!("VM entry failed with basic exit reason {n}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_in_words() {
        assert_eq!(instruction_error_text(7), "VM entry with invalid control field(s)");
        assert_eq!(instruction_error_text(8), "VM entry with invalid host-state field(s)");
        assert_eq!(instruction_error_text(12), "VMREAD/VMWRITE from/to unsupported VMCS component");
        assert_eq!(instruction_error_text(99), "unknown VM-instruction error");
        let mut s = String::new();
        EntryFailure::decode(33, 0).describe(0, |a| s.push_str(&a.to_string()));
        assert!(s.starts_with("VM entry failed: invalid guest state"));
        assert_eq!(EntryFailure::decode(34, 3), EntryFailure::MsrLoading { entry: 3 });
    }
}
