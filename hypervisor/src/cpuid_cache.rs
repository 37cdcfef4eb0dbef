//! The guest's CPUID: every leaf read once at boot, adjusted, and served
//! from this table on CPUID exits (no CPUID instruction on the exit path).

use crate::report::cpuid;
use perfvisor_abi::ABI_VERSION;
use pmu::CpuidRegs;

/// Basic leaves cached (higher ones are answered like hardware answers
/// out-of-range leaves).
const BASIC_LEAVES: usize = 0x24;
/// Sub-leaves cached per basic leaf.
const SUBLEAVES: usize = 8;
const EXTENDED_LEAVES: usize = 0x09;
const EXTENDED_BASE: u32 = 0x8000_0000;

/// The hypervisor range: 0x40000000 (max leaf + signature) and 0x40000001 (ABI version).
pub const HYPERVISOR_BASE: u32 = 0x4000_0000;
const HYPERVISOR_MAX: u32 = 0x4000_0001;
/// "perfvisor\0\0\0" in EBX, ECX, EDX.
const SIGNATURE: [u8; 12] = *b"perfvisor\0\0\0";

/// Leaves whose output depends on ECX (SDM vol. 2A, CPUID).
fn has_subleaves(leaf: u32) -> bool {
    matches!(leaf, 0x4 | 0x7 | 0xb | 0xd | 0xf | 0x10 | 0x12 | 0x14 | 0x17 | 0x18 | 0x1d | 0x1e | 0x1f | 0x20 | 0x23)
}

/// CPUID bits a Linux guest does not see: (leaf, register, bit, why);
/// sub-leaf 0.
const LINUX_HIDDEN: [(u32, char, u32, &str); 5] = [
    (1, 'd', 21, "DS (BTS/PEBS buffers): not virtualised; MISC_ENABLE says BTS/PEBS unavailable too"),
    (1, 'c', 2, "DTES64: part of DS"),
    (1, 'c', 4, "DS-CPL: part of DS"),
    (7, 'b', 25, "Intel PT: not virtualised"),
    (7, 'd', 19, "architectural LBRs: not virtualised"),
];

pub struct CpuidCache {
    basic: [[CpuidRegs; SUBLEAVES]; BASIC_LEAVES],
    extended: [CpuidRegs; EXTENDED_LEAVES],
    max_basic: u32,
    max_extended: u32,
}

/// CPUID.1:ECX bits the guest does not get.
const LEAF1_ECX_VMX: u32 = 1 << 5;
const LEAF1_ECX_PDCM: u32 = 1 << 15;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;

impl CpuidCache {
    /// Reads the host's leaves and applies the guest's view: the
    /// hypervisor bit set; VMX hidden (no nested virtualization); the
    /// guest's PMU in leaves 0AH and 23H, PDCM and CPUID.(7,1):EAX[8].
    ///
    /// A Linux guest (`linux`) also loses what perfvisor does not
    /// virtualise and Linux would use (REFERENCE.md §6, issue 10): DS, DTES64
    /// and DS-CPL (with them Linux picks PEBS for `cycles:P` and records
    /// nothing), Intel PT and architectural LBRs.
    pub fn build(pmu: &pmu::guest::GuestPmu, linux: bool) -> Self {
        let max_basic = cpuid(0, 0).eax.min(BASIC_LEAVES as u32 - 1);
        let max_extended = cpuid(EXTENDED_BASE, 0).eax.min(EXTENDED_BASE + EXTENDED_LEAVES as u32 - 1);
        let mut c = Self {
            basic: [[CpuidRegs::default(); SUBLEAVES]; BASIC_LEAVES],
            extended: [CpuidRegs::default(); EXTENDED_LEAVES],
            max_basic,
            max_extended,
        };
        for leaf in 0..=max_basic {
            let subs = if has_subleaves(leaf) { SUBLEAVES } else { 1 };
            for sub in 0..subs {
                c.basic[leaf as usize][sub] = cpuid(leaf, sub as u32);
            }
        }
        c.basic[0][0].eax = max_basic;
        for leaf in EXTENDED_BASE..=max_extended {
            c.extended[(leaf - EXTENDED_BASE) as usize] = cpuid(leaf, 0);
        }
        c.extended[0].eax = max_extended;
        let leaf1 = &mut c.basic[1][0];
        leaf1.ecx = (leaf1.ecx | LEAF1_ECX_HYPERVISOR) & !(LEAF1_ECX_VMX | LEAF1_ECX_PDCM);
        if pmu.layout.pdcm && pmu.layout.version > 0 {
            leaf1.ecx |= LEAF1_ECX_PDCM;
        }
        if linux {
            for (leaf, reg, bit, _why) in LINUX_HIDDEN {
                if leaf <= max_basic {
                    let regs = &mut c.basic[leaf as usize][0];
                    let r = match reg {
                        'b' => &mut regs.ebx,
                        'c' => &mut regs.ecx,
                        _ => &mut regs.edx,
                    };
                    *r &= !(1 << bit);
                }
            }
        }
        if max_basic >= 0xa {
            c.basic[0xa][0] = pmu.cpuid_0a();
        }
        if max_basic >= 7 {
            const ARCH_PERFMON_EXT: u32 = 1 << 8;
            let leaf7_1 = &mut c.basic[7][1];
            leaf7_1.eax = (leaf7_1.eax & !ARCH_PERFMON_EXT) | if pmu.leaf_23 { ARCH_PERFMON_EXT } else { 0 };
        }
        if max_basic >= 0x23 {
            for (sub, regs) in c.basic[0x23].iter_mut().enumerate() {
                *regs = pmu.cpuid_23(sub as u32);
            }
        }
        c
    }

    /// What CPUID(leaf, subleaf) returns to the guest.
    pub fn lookup(&self, leaf: u32, subleaf: u32) -> CpuidRegs {
        match leaf {
            HYPERVISOR_BASE => {
                let word =
                    |i: usize| u32::from_le_bytes([SIGNATURE[i], SIGNATURE[i + 1], SIGNATURE[i + 2], SIGNATURE[i + 3]]);
                CpuidRegs::new(HYPERVISOR_MAX, word(0), word(4), word(8))
            }
            0x4000_0001 => CpuidRegs::new(ABI_VERSION, 0, 0, 0),
            l if l <= self.max_basic => {
                let sub = if has_subleaves(l) { subleaf as usize } else { 0 };
                self.basic[l as usize].get(sub).copied().unwrap_or_default()
            }
            l if (EXTENDED_BASE..=self.max_extended).contains(&l) => self.extended[(l - EXTENDED_BASE) as usize],
            // Out of range: Intel returns the highest basic leaf's data
            // (SDM vol. 2A, CPUID, "INPUT EAX = 0").
            _ => self.basic[self.max_basic as usize][0],
        }
    }
}
