//! What perfvisor refuses a hostile guest, as pure decisions the exit
//! handlers apply and host tests check: the next RIP after an emulated
//! instruction, XCR0 values (XSETBV), x2APIC ICR and IA32_APIC_BASE
//! writes, the I/O-port policy with its I/O-instruction exit qualification,
//! and a per-reason log rate limit.

use core::fmt;

/// The guest's code size, for the RIP an emulated instruction advances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSize {
    /// 64-bit mode (IA-32e mode and CS.L = 1); `la57`: 57-bit linear addresses (CR4.LA57).
    Long { la57: bool },
    /// 32-bit code (compatibility mode or legacy protected mode, CS.D = 1).
    Bits32,
    /// 16-bit code (CS.D = 0).
    Bits16,
}

impl CodeSize {
    /// From IA32_EFER.LMA, CS's access rights (L = bit 13, D/B = bit 14) and CR4.
    pub fn decode(efer: u64, cs_access_rights: u32, cr4: u64) -> Self {
        const EFER_LMA: u64 = 1 << 10;
        const CR4_LA57: u64 = 1 << 12;
        if efer & EFER_LMA != 0 && cs_access_rights & (1 << 13) != 0 {
            Self::Long { la57: cr4 & CR4_LA57 != 0 }
        } else if cs_access_rights & (1 << 14) != 0 {
            Self::Bits32
        } else {
            Self::Bits16
        }
    }
}

/// The RIP after an instruction of `len` bytes at `rip` (SDM vol. 1 §3.5:
/// EIP wraps at 4 GiB and IP at 64 KiB; in 64-bit mode the address wraps
/// at 2^64). `None`: the next RIP is not canonical, where hardware would
/// raise #GP on the next fetch; perfvisor injects #GP at the instruction.
pub fn next_rip(rip: u64, len: u32, size: CodeSize) -> Option<u64> {
    let next = rip.wrapping_add(u64::from(len));
    match size {
        CodeSize::Long { la57 } => {
            let bits = if la57 { 57 } else { 48 };
            let sign_extended = (((next << (64 - bits)) as i64) >> (64 - bits)) as u64;
            (sign_extended == next).then_some(next)
        }
        CodeSize::Bits32 => Some(next & 0xffff_ffff),
        CodeSize::Bits16 => Some(next & 0xffff),
    }
}

/// Whether the fast path's plain 64-bit addition may be wrong: only an
/// instruction that ends past a 4-GiB boundary can (EIP wraps there; the
/// non-canonical hole begins at one; the 2^64 wrap is the addition's own).
/// One carry test on the hot path. 16-bit code's IP wrap at 64 KiB is not
/// caught (perfvisor's guests start in 64-bit mode; see README).
#[inline(always)]
pub fn needs_code_size(rip: u64, len: u32) -> bool {
    (rip as u32).checked_add(len).is_none()
}

/// XCR0 state components (SDM vol. 1 §13.1).
mod xcr0 {
    pub const X87: u64 = 1 << 0;
    pub const SSE: u64 = 1 << 1;
    pub const AVX: u64 = 1 << 2;
    pub const BNDREGS: u64 = 1 << 3;
    pub const BNDCSR: u64 = 1 << 4;
    pub const AVX512: u64 = 0b111 << 5;
    pub const TILECFG: u64 = 1 << 17;
    pub const TILEDATA: u64 = 1 << 18;
}

/// Why an XSETBV is refused (#GP(0)), or `Ok` for a value to load.
/// `ecx`: the XCR number; `supported`: CPUID.(EAX=0DH,ECX=0):EDX:EAX
/// (SDM vol. 2D XSETBV "Operation", vol. 1 §13.3).
pub fn check_xsetbv(ecx: u32, value: u64, supported: u64) -> Result<(), &'static str> {
    use xcr0::*;
    if ecx != 0 {
        return Err("XCR number other than 0");
    }
    if value & !supported != 0 {
        return Err("a bit CPUID.(0DH,0) does not report as supported");
    }
    if value & X87 == 0 {
        return Err("bit 0 (x87) clear");
    }
    if value & AVX != 0 && value & SSE == 0 {
        return Err("AVX without SSE");
    }
    if value & AVX512 != 0 && (value & AVX512 != AVX512 || value & AVX == 0) {
        return Err("AVX-512 components not all set, or set without AVX");
    }
    if (value & BNDREGS == 0) != (value & BNDCSR == 0) {
        return Err("BNDREGS and BNDCSR differ");
    }
    if (value & TILECFG == 0) != (value & TILEDATA == 0) {
        return Err("TILECFG and TILEDATA differ");
    }
    Ok(())
}

/// The x2APIC ICR (MSR 0x830, SDM vol. 3A §12.12.9): `Err` names what the
/// guest may not send. The other CPUs belong to nobody (perfvisor runs one
/// guest on one CPU): INIT and SIPI would start them outside VMX, SMI
/// enters the firmware's SMM handler on the guest's word, and an NMI to
/// another CPU interrupts code that is not the guest's. Fixed and
/// lowest-priority interrupts are harmless (a CPU waiting for SIPI ignores
/// them), and an NMI to itself is the guest's own.
pub fn check_icr(value: u64, own_x2apic_id: u32) -> Result<(), &'static str> {
    let mode = (value >> 8) & 7;
    let shorthand = (value >> 18) & 3;
    let destination = (value >> 32) as u32;
    let logical = value & (1 << 11) != 0;
    match mode {
        0 | 1 => Ok(()),
        2 => Err("SMI"),
        4 if shorthand == 1 || (shorthand == 0 && !logical && destination == own_x2apic_id) => Ok(()),
        4 => Err("NMI to another CPU"),
        5 => Err("INIT"),
        6 => Err("start-up IPI"),
        _ => Err("reserved delivery mode"),
    }
}

/// The architectural local-APIC base (SDM vol. 3A §12.4.4).
pub const APIC_DEFAULT_BASE: u64 = 0xfee0_0000;

/// IA32_APIC_BASE writes: the base stays at [`APIC_DEFAULT_BASE`] (moved,
/// the APIC page would shadow whatever physical page the guest names:
/// perfvisor's, its MSR bitmap, its EPT). The enable bits are the guest's
/// (hardware checks their transitions); the BSP flag is kept.
pub fn check_apic_base(value: u64, physical_address_bits: u32) -> Result<(), &'static str> {
    const BSP: u64 = 1 << 8;
    const EXTD: u64 = 1 << 10;
    const EN: u64 = 1 << 11;
    let base_mask = ((1u64 << physical_address_bits.clamp(36, 52)) - 1) & !0xfff;
    if value & !(base_mask | BSP | EXTD | EN) != 0 {
        return Err("reserved bits set");
    }
    if value & base_mask != APIC_DEFAULT_BASE {
        return Err("the APIC base moved from 0xfee00000");
    }
    Ok(())
}

/// An I/O-instruction exit qualification (SDM vol. 3C Table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoExit(pub u64);

impl IoExit {
    /// 1, 2 or 4 bytes.
    pub fn size(self) -> u8 {
        (self.0 & 7) as u8 + 1
    }
    pub fn is_in(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// INS/OUTS.
    pub fn is_string(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    pub fn port(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

impl fmt::Display for IoExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} of {} byte{} at port {:#x}",
            if self.is_in() { "IN" } else { "OUT" },
            if self.is_string() { "S" } else { "" },
            self.size(),
            if self.size() == 1 { "" } else { "s" },
            self.port()
        )
    }
}

/// The ports the guest reaches directly (clear in the I/O bitmaps): the
/// 8259 interrupt controllers, which only route interrupts to the guest
/// (perfvisor's host takes none). Every other port exits.
pub const IO_ALLOW_LIST: &[u16] = &[0x20, 0x21, 0xa0, 0xa1];

/// COM1, which perfvisor owns and emulates for the guest.
pub const COM1: core::ops::RangeInclusive<u16> = 0x3f8..=0x3ff;

/// What perfvisor does with an intercepted port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortAction {
    /// A reset, power-off or emulator-control write: the guest ends, with why.
    EndGuest(&'static str),
    /// COM1 register at this offset, emulated.
    Com1(u8),
    /// Refused: reads see all ones (no device), writes are dropped.
    Refuse,
}

/// The policy for an access to `port` (`value`: the written value, for OUT).
pub fn port_action(port: u16, out: Option<u32>) -> PortAction {
    if COM1.contains(&port) {
        return PortAction::Com1((port - COM1.start()) as u8);
    }
    let Some(v) = out else { return PortAction::Refuse };
    match port {
        // Reset control register: RST_CPU (bit 2) resets (SDM-adjacent: ICH/PCH datasheets).
        0xcf9 if v & 0b100 != 0 => PortAction::EndGuest("reset requested through port 0xcf9 (reset control)"),
        // 8042 commands 0xf0-0xff pulse output lines whose bit is 0; bit 0 is the reset line.
        0x64 if v & 0xf0 == 0xf0 && v & 1 == 0 => {
            PortAction::EndGuest("reset requested through the keyboard controller (port 0x64)")
        }
        // System control port A: bit 0 is the fast reset.
        0x92 if v & 1 != 0 => PortAction::EndGuest("fast reset requested through port 0x92 (bit 0)"),
        // ACPI PM1a control with SLP_EN (bit 13): Bochs' PIIX4 (0xb004) and
        // QEMU q35's ICH9 (0x604) blocks, where their firmware puts them.
        0xb004 | 0x604 if v & (1 << 13) != 0 => {
            PortAction::EndGuest("sleep/power-off requested through ACPI PM1a control")
        }
        0x8900 => PortAction::EndGuest("write to Bochs' shutdown port 0x8900"),
        0xf4..=0xf7 => PortAction::EndGuest("write to QEMU's isa-debug-exit port 0xf4"),
        _ => PortAction::Refuse,
    }
}

/// At most `LIMIT` log lines per reason; the rest are counted for a summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateLimit {
    pub logged: u32,
    pub suppressed: u64,
}

impl RateLimit {
    pub const LIMIT: u32 = 8;

    /// Whether this event may be logged (else it is counted).
    pub fn allow(&mut self) -> bool {
        if self.logged < Self::LIMIT {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// Bytes of guest text made safe for perfvisor's console: printable ASCII
/// stays, tab becomes a space, anything else (newlines included: callers
/// split lines themselves) becomes `?`.
pub fn console_safe(b: u8) -> char {
    match b {
        0x20..=0x7e => b as char,
        b'\t' => ' ',
        _ => '?',
    }
}

/// What Linux's `panic()` prints first (kernel/panic.c, 6.1:
/// `pr_emerg("Kernel panic - not syncing: %s\n", buf)`).
pub const LINUX_PANIC_MARK: &[u8] = b"Kernel panic - not syncing: ";

/// The reason of a Linux kernel panic, from one line of a Linux guest's
/// console, or `None` for any other line. The mark may follow up to two
/// printk prefixes in brackets (the time stamp unless `printk.time=0`, the
/// caller with CONFIG_PRINTK_CALLER), so that other command lines match too;
/// anywhere else in a line it is text, not the kernel's panic. Cheap on
/// other lines: they fail on their first bytes.
pub fn linux_panic_reason(line: &[u8]) -> Option<&[u8]> {
    let mut rest = line;
    for _ in 0..2 {
        if rest.first() != Some(&b'[') {
            break;
        }
        let close = rest.iter().position(|&b| b == b']')?;
        rest = &rest[close + 1..];
        rest = rest.strip_prefix(b" ").unwrap_or(rest);
    }
    rest.strip_prefix(LINUX_PANIC_MARK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rip_wraps_per_code_size() {
        let long = CodeSize::Long { la57: false };
        assert_eq!(next_rip(0xffff_ffff_ffff_fffe, 2, long), Some(0));
        assert_eq!(next_rip(0x1000, 2, long), Some(0x1002));
        // Crossing into the non-canonical hole.
        assert_eq!(next_rip(0x0000_7fff_ffff_fffe, 2, long), None);
        assert_eq!(next_rip(0x00ff_ffff_ffff_fffe, 2, CodeSize::Long { la57: true }), None);
        assert_eq!(next_rip(0x0000_7fff_ffff_fffe, 2, CodeSize::Long { la57: true }), Some(0x0000_8000_0000_0000));
        assert_eq!(next_rip(0xffff_fffe, 2, CodeSize::Bits32), Some(0));
        assert_eq!(next_rip(0xfffe, 3, CodeSize::Bits16), Some(1));
        assert!(needs_code_size(0xffff_ffff_ffff_fffe, 2));
        assert!(needs_code_size(0x0000_7fff_ffff_fffe, 2));
        assert!(needs_code_size(0xffff_fffe, 3));
        assert!(!needs_code_size(0x1000, 2));
        assert!(!needs_code_size(0x1_ffff_fff0, 4));
    }

    #[test]
    fn code_size_from_segment_and_efer() {
        assert_eq!(CodeSize::decode(1 << 10, 0xa09b, 0), CodeSize::Long { la57: false });
        assert_eq!(CodeSize::decode(1 << 10, 0xc09b, 0), CodeSize::Bits32);
        assert_eq!(CodeSize::decode(0, 0x809b, 0), CodeSize::Bits16);
    }

    #[test]
    fn xcr0_rules() {
        let all = 0b1110_0111 | 0b11 << 17;
        assert_eq!(check_xsetbv(0, 1, all), Ok(()));
        assert_eq!(check_xsetbv(0, 0b111, all), Ok(()));
        assert_eq!(check_xsetbv(0, 0b1110_0111, all), Ok(()));
        assert!(check_xsetbv(1, 1, all).is_err());
        assert!(check_xsetbv(0, 0, all).is_err(), "x87 must be set");
        assert!(check_xsetbv(0, 0b101, all).is_err(), "AVX without SSE");
        assert!(check_xsetbv(0, 0b0010_0111, all).is_err(), "partial AVX-512");
        assert!(check_xsetbv(0, 0b1110_0011, all).is_err(), "AVX-512 without AVX");
        assert!(check_xsetbv(0, 0b1_0000_0001, all).is_err(), "unsupported bit 8");
        assert!(check_xsetbv(0, 1 | 1 << 17, all).is_err(), "TILECFG alone");
        assert!(check_xsetbv(0, 0b1001, 0b11111).is_err(), "BNDREGS alone");
    }

    #[test]
    fn icr_refuses_init_sipi_smi_and_foreign_nmi() {
        let icr = |mode: u64, shorthand: u64, dest: u64| mode << 8 | shorthand << 18 | dest << 32;
        assert_eq!(check_icr(icr(0, 0, 1) | 0x40, 0), Ok(()));
        assert_eq!(check_icr(icr(5, 3, 0), 0), Err("INIT"));
        assert_eq!(check_icr(icr(6, 3, 0) | 0x10, 0), Err("start-up IPI"));
        assert_eq!(check_icr(icr(2, 1, 0), 0), Err("SMI"));
        assert_eq!(check_icr(icr(4, 1, 0), 0), Ok(()));
        assert_eq!(check_icr(icr(4, 0, 7), 7), Ok(()));
        assert_eq!(check_icr(icr(4, 0, 1), 0), Err("NMI to another CPU"));
        assert_eq!(check_icr(icr(4, 2, 0), 0), Err("NMI to another CPU"));
        assert_eq!(check_icr(icr(7, 0, 0), 0), Err("reserved delivery mode"));
    }

    #[test]
    fn apic_base_stays_put() {
        assert_eq!(check_apic_base(0xfee0_0000 | 1 << 11, 39), Ok(()));
        assert_eq!(check_apic_base(0xfee0_0000 | 3 << 10 | 1 << 8, 39), Ok(()));
        assert!(check_apic_base(0x0210_0000 | 1 << 11, 39).is_err());
        assert!(check_apic_base(0xfee0_0000 | 1, 39).is_err());
        assert!(check_apic_base(0x1_fee0_0000, 39).is_err());
    }

    #[test]
    fn port_policy() {
        assert_eq!(
            port_action(0xcf9, Some(0x06)),
            PortAction::EndGuest("reset requested through port 0xcf9 (reset control)")
        );
        assert_eq!(port_action(0xcf9, Some(0x02)), PortAction::Refuse);
        assert!(matches!(port_action(0x64, Some(0xfe)), PortAction::EndGuest(_)));
        assert_eq!(port_action(0x64, Some(0xff)), PortAction::Refuse);
        assert!(matches!(port_action(0x92, Some(1)), PortAction::EndGuest(_)));
        assert_eq!(port_action(0x92, Some(2)), PortAction::Refuse);
        assert!(matches!(port_action(0x8900, Some(b'S' as u32)), PortAction::EndGuest(_)));
        assert!(matches!(port_action(0xf4, Some(0x10)), PortAction::EndGuest(_)));
        assert!(matches!(port_action(0xb004, Some(0x2000)), PortAction::EndGuest(_)));
        assert_eq!(port_action(0x3fb, Some(0x80)), PortAction::Com1(3));
        assert_eq!(port_action(0x1f0, None), PortAction::Refuse);
        assert_eq!(port_action(0xcf9, None), PortAction::Refuse);
        for p in IO_ALLOW_LIST {
            assert!(!COM1.contains(p));
        }
        let q = IoExit(0x3f8_0000 | 1 << 3);
        assert_eq!((q.port(), q.is_in(), q.size(), q.is_string()), (0x3f8, true, 1, false));
        assert_eq!(IoExit(0xcf9_0000 | 0x10 | 3).to_string(), "OUTS of 4 bytes at port 0xcf9");
    }

    #[test]
    fn rate_limit_logs_first_few() {
        let mut r = RateLimit::default();
        let allowed = (0..2000).filter(|_| r.allow()).count();
        assert_eq!(allowed, RateLimit::LIMIT as usize);
        assert_eq!(r.suppressed, 2000 - u64::from(RateLimit::LIMIT));
    }

    #[test]
    fn linux_panic_lines() {
        let reason = |l: &str| linux_panic_reason(l.as_bytes()).map(|r| String::from_utf8_lossy(r).into_owned());
        let vfs = "VFS: Unable to mount root fs on unknown-block(0,0)";
        assert_eq!(reason(&format!("Kernel panic - not syncing: {vfs}")).as_deref(), Some(vfs));
        assert_eq!(reason("Kernel panic - not syncing: ").as_deref(), Some(""));
        // printk's time stamp and caller prefixes.
        assert_eq!(
            reason("[    2.345678] Kernel panic - not syncing: No working init found.").as_deref(),
            Some("No working init found.")
        );
        assert_eq!(reason("[    2.345678][    T1] Kernel panic - not syncing: x").as_deref(), Some("x"));
        assert_eq!(reason("[    T1] Kernel panic - not syncing: x").as_deref(), Some("x"));
        // Not the kernel's panic line.
        assert_eq!(reason("---[ end Kernel panic - not syncing: x ]---"), None);
        assert_eq!(reason("echo Kernel panic - not syncing: x"), None);
        assert_eq!(reason("Kernel panic - not syncing"), None);
        assert_eq!(reason("[ unterminated Kernel panic - not syncing: x"), None);
        assert_eq!(reason("[a] [b] [c] Kernel panic - not syncing: x"), None);
        assert_eq!(reason(""), None);
    }

    #[test]
    fn console_text_cannot_break_lines() {
        let s: String = b"ok\n\r\x1b[2Jperfvisor".iter().map(|&b| console_safe(b)).collect();
        assert_eq!(s, "ok???[2Jperfvisor");
    }
}
