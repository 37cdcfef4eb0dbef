//! What a hostile guest gets refused (README "Threat model"): every exit
//! perfvisor does not serve on the hot path ends here and is refused,
//! emulated or ends the guest with a reason — never "unhandled".
//!
//! - VMX instructions, GETSEC: #UD (no nested VMX, no SMX). INVD runs as
//!   WBINVD (dropping dirty lines would lose perfvisor's writes too).
//! - XSETBV: emulated per the SDM (CPL 0, XCR0 only, valid against
//!   CPUID.(0DH,0)), else #GP; XCR0 is the guest's (the host uses no
//!   extended state).
//! - CR0/CR4 writes to bits perfvisor owns (PE, NE, PG, VMXE, bits the
//!   CPU lacks): #GP. perfvisor's guest stays in paged protected mode.
//! - I/O: every port exits except [`vmx::guard::IO_ALLOW_LIST`]; reset,
//!   power-off and emulator-control ports end the guest; COM1 is emulated
//!   (its bytes become prefixed `guest:` lines; the real UART is
//!   perfvisor's); any other port is refused (reads all ones, writes
//!   dropped). No device is reachable, so none can be told to DMA.
//! - IA32_APIC_BASE: the base stays at 0xfee00000; x2APIC ICR: no INIT,
//!   SIPI, SMI or NMI to another CPU ([`vmx::guard::check_icr`]). The
//!   xAPIC page is not mapped in the EPT: in xAPIC mode every APIC access
//!   is an EPT violation that stops the guest, so the x2APIC MSRs are the
//!   only way to the APIC, and their ICR is intercepted.
//! - #MC in guest mode exits (exception bitmap) and ends the guest.
//! - The hang watchdog ([`crate::events`]).
//! - Log lines a guest can trigger are rate-limited per reason.
//!
//! A Linux guest (`crate::linux`) gets a wider policy where Linux needs it
//! (its tables: passed-through timer and RTC ports, emulated MSRs, its
//! verdict port 0xf4, low memory, ACPI and I/O APIC pages); everything
//! above holds for it too.

use crate::arch::msr::{rdmsr_checked, wrmsr_checked, xsetbv_checked};
use crate::exits::{Guest, GuestEnd};
use crate::serial::write_fmt;
use crate::vmx_hw::ActiveVmcs;
use log::{error, info, warn};
use vmx::exit::{injection_info, EventKind};
use vmx::guard::{console_safe, CodeSize, IoExit, PortAction, RateLimit};
use vmx::vmcs::{Vmcs32, Vmcs64, VmcsAccess, VmcsError, VmcsNatural};

const UD: u8 = 6;
const GP: u8 = 13;
const MC: u8 = 18;

/// The emulated COM1 (a 16550 as the guest's drivers expect it): output
/// bytes are collected into lines printed as `guest: <line>` (at most
/// [`Com1::LINE`] bytes each); no input.
pub struct Com1 {
    regs: [u8; 8],
    divisor: [u8; 2],
    line: [u8; Com1::LINE],
    len: usize,
    /// The guest is Linux: each line, when it ends, is checked for the
    /// kernel's panic line ([`vmx::guard::linux_panic_reason`]).
    pub linux: bool,
    /// The reason of the Linux guest's kernel panic once its line ended:
    /// the I/O exit that ended it stops the guest (`Guest::other_exit`).
    panic: Option<PanicReason>,
    /// The THRE interrupt is due: reset, or a byte went out, since IIR
    /// last reported it (see `read`).
    thre_pending: bool,
}

/// The reason from a Linux guest's panic line, copied: more bytes may
/// follow in the same exit and reuse the line buffer.
struct PanicReason {
    bytes: [u8; Com1::LINE],
    len: usize,
    /// The line reached [`Com1::LINE`] bytes: the reason may go on.
    cut: bool,
}

impl Default for Com1 {
    fn default() -> Self {
        Self {
            regs: [0; 8],
            divisor: [0; 2],
            line: [0; Com1::LINE],
            len: 0,
            linux: false,
            panic: None,
            thre_pending: true,
        }
    }
}

impl Com1 {
    pub const LINE: usize = 100;
    const LCR: usize = 3;
    const IER_THRI: u8 = 0x02;
    const DLAB: u8 = 0x80;

    fn read(&mut self, offset: u8) -> u8 {
        let dlab = self.regs[Self::LCR] & Self::DLAB != 0;
        match offset {
            0 | 1 if dlab => self.divisor[usize::from(offset)],
            0 => 0,
            // IIR (FIFOs enabled if FCR bit 0 was set): "transmitter
            // empty" pending, while the THRE interrupt is enabled, once
            // after reset and once after bytes were written (reading IIR
            // clears it, as on a 16550), else none. Enabling the THRE
            // interrupt does not re-assert it: that is a real UART bug
            // Linux's 8250 driver detects (UART_BUG_THRE) and then drives
            // the port from a timer. perfvisor raises no COM1 interrupt,
            // so without this a Linux guest's tty output (a shell) stalls
            // after one FIFO load, waiting for IRQ 4.
            2 => {
                let fifo = if self.regs[2] & 1 != 0 { 0xc0 } else { 0 };
                if self.thre_pending && self.regs[1] & Self::IER_THRI != 0 {
                    self.thre_pending = false;
                    fifo | 0x02
                } else {
                    fifo | 0x01
                }
            }
            // LSR: transmitter empty, no data.
            5 => 0x60,
            // MSR: CTS, DSR, DCD.
            6 => 0xb0,
            o => self.regs[usize::from(o)],
        }
    }

    /// Returns the bytes printed to the console.
    fn write(&mut self, offset: u8, value: u8) -> u64 {
        let dlab = self.regs[Self::LCR] & Self::DLAB != 0;
        match offset {
            0 | 1 if dlab => self.divisor[usize::from(offset)] = value,
            0 => {
                self.thre_pending = true;
                return self.byte(value);
            }
            5 | 6 => {}
            o => self.regs[usize::from(o)] = value,
        }
        0
    }

    fn byte(&mut self, b: u8) -> u64 {
        match b {
            b'\r' => 0,
            b'\n' => self.flush(),
            _ => {
                self.line[self.len] = b;
                self.len += 1;
                if self.len == self.line.len() {
                    self.flush()
                } else {
                    0
                }
            }
        }
    }

    /// Prints the pending line, if any.
    pub fn flush(&mut self) -> u64 {
        if self.len == 0 {
            return 0;
        }
        let n = self.len;
        self.len = 0;
        // Only at a line's end, so a byte costs nothing more; the first panic counts.
        if self.linux && self.panic.is_none() {
            if let Some(reason) = vmx::guard::linux_panic_reason(&self.line[..n]) {
                let mut bytes = [0; Self::LINE];
                bytes[..reason.len()].copy_from_slice(reason);
                self.panic = Some(PanicReason { bytes, len: reason.len(), cut: n == Self::LINE });
            }
        }
        guest_line(&self.line[..n])
    }

    /// A Linux guest's console line was its kernel's panic line.
    #[inline(always)]
    pub fn panicked(&self) -> bool {
        self.panic.is_some()
    }
}

/// Guest bytes shown on perfvisor's console: each made safe by
/// [`console_safe`] (no control characters, so no line of the guest's can
/// look like one of perfvisor's).
struct SafeText<'a>(&'a [u8]);

impl core::fmt::Display for SafeText<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|&b| core::fmt::Write::write_char(f, console_safe(b)))
    }
}

/// One line of guest text on the console: `guest: ` and the bytes made
/// safe (no control characters, so no line of the guest's can look like
/// one of perfvisor's). Returns the bytes written.
pub fn guest_line(bytes: &[u8]) -> u64 {
    write_fmt(format_args!("guest: {}\n", SafeText(bytes)));
    bytes.len() as u64 + 8
}

/// Guest text from the Write hypercall: each line prefixed. Returns the bytes written.
pub fn guest_text(bytes: &[u8]) -> u64 {
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    text.split(|&b| b == b'\n').map(|l| guest_line(l.strip_suffix(b"\r").unwrap_or(l))).sum()
}

/// Per-reason log limits and what was refused.
#[derive(Default)]
struct Refusals {
    unknown_hypercall: RateLimit,
    user_hypercall: RateLimit,
    port: RateLimit,
    instruction: RateLimit,
    apic: RateLimit,
}

pub struct Guard {
    pub com1: Com1,
    refusals: Refusals,
    /// Bytes perfvisor printed for the guest (COM1 and Write).
    pub console_bytes: u64,
    /// Watchdog budget per timer round in preemption-timer ticks (0:
    /// off); the 32-bit timer runs `watchdog_rounds` rounds for the budget.
    pub watchdog_budget: u32,
    watchdog_rounds: u32,
    rounds_left: u32,
    /// A hypercall happened in the current window (set on the VMCALL
    /// path: one store; the window ending with it set starts a new one).
    pub progress: bool,
    /// What a HLT with interrupts off costs of the budget (1 ms).
    hlt_charge: u32,
    watchdog_ms: u32,
}

/// The TSC's frequency: CPUID.15H (crystal × ratio), else CPUID.16H's
/// base frequency; `None` if neither says.
fn tsc_hz() -> Option<u64> {
    let max = crate::report::cpuid(0, 0).eax;
    if max >= 0x15 {
        let l = crate::report::cpuid(0x15, 0);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return Some(u64::from(l.ecx) * u64::from(l.ebx) / u64::from(l.eax));
        }
    }
    if max >= 0x16 {
        let mhz = crate::report::cpuid(0x16, 0).eax & 0xffff;
        if mhz != 0 {
            return Some(u64::from(mhz) * 1_000_000);
        }
    }
    None
}

impl Guard {
    /// Sets up what the VMCS (current) needs beyond `Vcpu::new`: the
    /// watchdog, and the host's CR4.OSXSAVE so XSETBV can be emulated.
    pub fn new(caps: &vmx::VmxCaps, watchdog_ms: u32) -> Result<Self, VmcsError> {
        let mut guard = Self {
            com1: Com1::default(),
            refusals: Refusals::default(),
            console_bytes: 0,
            watchdog_budget: 0,
            watchdog_rounds: 1,
            rounds_left: 1,
            progress: false,
            hlt_charge: 0,
            watchdog_ms,
        };
        let xsave = crate::report::cpuid(1, 0).ecx & (1 << 26) != 0;
        if xsave {
            // SAFETY: CR4.OSXSAVE only enables XSETBV/XGETBV and XSAVE; the
            // host runs no code that uses extended state, and the VMCS's
            // host CR4 is updated to match.
            unsafe { enable_host_osxsave() };
            ActiveVmcs.write_natural(VmcsNatural::HostCr4, x86_64::registers::control::Cr4::read_raw())?;
        }
        if watchdog_ms == 0 {
            info!("watchdog: off (watchdog=0, or a Linux guest)");
            return Ok(guard);
        }
        let save = caps.exit.allows(vmx::controls::ExitControls::SAVE_PREEMPTION_TIMER.bits());
        let rate = (caps.misc & 0x1f) as u32;
        let (hz, source) = match tsc_hz() {
            Some(hz) => (hz, "CPUID"),
            None => (1_000_000_000, "assumed (CPUID.15H/16H say nothing)"),
        };
        let ticks = |ms: u64| ((u128::from(ms) * u128::from(hz) / 1000) >> rate).max(1);
        let total = ticks(u64::from(watchdog_ms));
        // The timer has 32 bits: longer budgets take several rounds.
        guard.watchdog_rounds = total.div_ceil(u128::from(u32::MAX)) as u32;
        guard.rounds_left = guard.watchdog_rounds;
        guard.watchdog_budget = (total / u128::from(guard.watchdog_rounds)) as u32;
        guard.hlt_charge = ticks(1).min(u128::from(guard.watchdog_budget)) as u32;
        if crate::events::arm_watchdog(guard.watchdog_budget, save)? {
            info!(
                "watchdog: the guest is stopped after {watchdog_ms} ms of guest time without a hypercall \
                 (checked in windows of that length: stopped within 1-2 windows) \
                 ({} rounds of {} preemption-timer ticks; TSC {} MHz {source}, timer rate TSC/2^{rate}){}",
                guard.watchdog_rounds,
                guard.watchdog_budget,
                hz / 1_000_000,
                if save {
                    "; a HLT with interrupts off counts 1 ms"
                } else {
                    "; no \"save preemption timer\" control: the budget restarts at every exit"
                }
            );
            if !save {
                guard.hlt_charge = 0;
            }
        } else {
            guard.watchdog_budget = 0;
            warn!("watchdog: the CPU has no VMX-preemption timer: a hung guest runs until it is killed");
        }
        Ok(guard)
    }

    /// The guest ended: flush its console line and summarize the refusals.
    pub fn end(&mut self, exits: &[u64]) {
        self.console_bytes += self.com1.flush();
        let r = &self.refusals;
        let line = |what: &str, l: &RateLimit| {
            if l.logged > 0 {
                info!("guard: {what}: {} refused ({} not logged)", u64::from(l.logged) + l.suppressed, l.suppressed);
            }
        };
        line("hypercalls from CPL > 0", &r.user_hypercall);
        line("unknown hypercalls", &r.unknown_hypercall);
        line("I/O port accesses", &r.port);
        line("instructions (#UD/#GP injected)", &r.instruction);
        line("APIC writes", &r.apic);
        info!(
            "guard: {} console bytes written for the guest; {} I/O exits",
            self.console_bytes,
            exits.get(30).copied().unwrap_or(0)
        );
    }

    /// The timer ran out: `true` when the window (all its rounds) ended
    /// without a hypercall. A window with one starts the next window.
    fn next_round(&mut self) -> Result<bool, VmcsError> {
        if self.rounds_left <= 1 {
            if !core::mem::take(&mut self.progress) {
                return Ok(true);
            }
            self.rounds_left = self.watchdog_rounds;
            crate::events::reset_watchdog(self.watchdog_budget)?;
            return Ok(false);
        }
        self.rounds_left -= 1;
        crate::events::reset_watchdog(self.watchdog_budget)?;
        Ok(false)
    }

    /// Whether to log an unknown hypercall (else counted).
    pub fn log_unknown_hypercall(&mut self) -> bool {
        self.refusals.unknown_hypercall.allow()
    }

    pub fn watchdog_ms(&self) -> u32 {
        self.watchdog_ms
    }
}

/// Sets CR4.OSXSAVE in root mode.
///
/// # Safety
/// The CPU must support XSAVE (CPUID.1:ECX[26]); the caller keeps the VMCS
/// host CR4 in step.
unsafe fn enable_host_osxsave() {
    use x86_64::registers::control::Cr4;
    const OSXSAVE: u64 = 1 << 18;
    // SAFETY: the caller guarantees XSAVE support; the bit changes nothing else.
    unsafe { Cr4::write_raw(Cr4::read_raw() | OSXSAVE) };
}

fn inject(vector: u8, error_code: Option<u32>) -> Result<(), VmcsError> {
    let mut v = ActiveVmcs;
    if let Some(code) = error_code {
        v.write32(Vmcs32::EntryExceptionErrorCode, code)?;
    }
    v.write32(Vmcs32::EntryInterruptionInfo, injection_info(vector, EventKind::HardwareException, error_code.is_some()))
}

fn guest_rip() -> u64 {
    ActiveVmcs.read_natural(VmcsNatural::GuestRip).unwrap_or(0)
}

/// The guest's CPL (SS.DPL, SDM vol. 3A §5.5).
pub fn cpl() -> Result<u8, VmcsError> {
    Ok(((ActiveVmcs.read32(Vmcs32::GuestSsAccessRights)? >> 5) & 3) as u8)
}

impl Guest {
    /// A general register by its instruction encoding (0 = RAX ... 15 = R15).
    fn gpr(&self, index: u64) -> Result<u64, VmcsError> {
        let r = &self.vcpu.regs;
        Ok(match index & 15 {
            0 => r.rax,
            1 => r.rcx,
            2 => r.rdx,
            3 => r.rbx,
            4 => ActiveVmcs.read_natural(VmcsNatural::GuestRsp)?,
            5 => r.rbp,
            6 => r.rsi,
            7 => r.rdi,
            8 => r.r8,
            9 => r.r9,
            10 => r.r10,
            11 => r.r11,
            12 => r.r12,
            13 => r.r13,
            14 => r.r14,
            _ => r.r15,
        })
    }

    fn set_gpr(&mut self, index: u64, value: u64) -> Result<(), VmcsError> {
        let r = &mut self.vcpu.regs;
        let slot = match index & 15 {
            0 => &mut r.rax,
            1 => &mut r.rcx,
            2 => &mut r.rdx,
            3 => &mut r.rbx,
            4 => return ActiveVmcs.write_natural(VmcsNatural::GuestRsp, value),
            5 => &mut r.rbp,
            6 => &mut r.rsi,
            7 => &mut r.rdi,
            8 => &mut r.r8,
            9 => &mut r.r9,
            10 => &mut r.r10,
            11 => &mut r.r11,
            12 => &mut r.r12,
            13 => &mut r.r13,
            14 => &mut r.r14,
            _ => &mut r.r15,
        };
        *slot = value;
        Ok(())
    }

    /// The instruction at RIP is refused with `vector` (RIP stays).
    fn refuse_instruction(&mut self, what: &str, vector: u8) -> Result<Option<GuestEnd>, VmcsError> {
        if self.guard.refusals.instruction.allow() {
            warn!("guard: {what} at RIP {:#x}: {} injected", guest_rip(), if vector == UD { "#UD" } else { "#GP(0)" });
        }
        inject(vector, (vector == GP).then_some(0))?;
        Ok(None)
    }

    /// RIP crossed a 64-KiB boundary: wrap as the guest's code size does.
    #[cold]
    #[inline(never)]
    pub(crate) fn advance_rip_slow(&self, rip: u64, len: u32) -> Result<(), VmcsError> {
        let mut v = ActiveVmcs;
        let size = CodeSize::decode(
            v.read64(Vmcs64::GuestEfer)?,
            v.read32(Vmcs32::GuestCsAccessRights)?,
            v.read_natural(VmcsNatural::GuestCr4)?,
        );
        match vmx::guard::next_rip(rip, len, size) {
            Some(next) => v.write_natural(VmcsNatural::GuestRip, next),
            // The next instruction would be fetched from a non-canonical address.
            None => inject(GP, Some(0)),
        }
    }

    /// VMCALL at CPL > 0: #UD (no hypercall is meant for user space).
    #[cold]
    #[inline(never)]
    pub(crate) fn refuse_user_hypercall(&mut self) -> Result<Option<GuestEnd>, VmcsError> {
        if self.guard.refusals.user_hypercall.allow() {
            warn!("guard: hypercall {:#x} from CPL > 0 at RIP {:#x}: #UD injected", self.vcpu.regs.rax, guest_rip());
        }
        inject(UD, None)?;
        Ok(None)
    }

    /// Exits the hot path does not serve (by basic reason): kept out of
    /// `handle_exit`'s match so the CPUID/MSR/VMCALL paths stay as short.
    #[cold]
    #[inline(never)]
    pub(crate) fn other_exit(&mut self, basic: u16) -> Result<Option<GuestEnd>, VmcsError> {
        match basic {
            // INIT signal, SIPI: another CPU (or the guest's own LVT) tried to reset this one.
            3 | 4 => {
                error!("guard: the guest received an INIT or start-up IPI (exit reason {basic}); the guest is stopped");
                Ok(Some(GuestEnd::Stopped("INIT/SIPI received")))
            }
            11 => self.refuse_instruction("GETSEC (perfvisor offers no SMX)", UD),
            28 => self.cr_access(),
            30 => {
                let end = self.io_exit()?;
                // The Linux guest's console line this exit ended was its
                // kernel's panic line: stop it now, with the reason, rather
                // than at the reboot that follows (panic=-1 reboot=t: a
                // triple fault) or never (panic=0 spins forever).
                if end.is_none() && self.guard.com1.panicked() {
                    return Ok(Some(self.linux_panicked()));
                }
                Ok(end)
            }
            55 => self.xsetbv(),
            13 => {
                // INVD would drop dirty lines of perfvisor's memory too:
                // write back and invalidate instead (SDM vol. 2A INVD: WBINVD
                // is the safe substitute, as KVM does).
                // SAFETY: WBINVD writes caches back and invalidates them; it
                // changes no memory contents.
                unsafe { core::arch::asm!("wbinvd", options(nostack, preserves_flags)) };
                self.retire_emulated()?;
                Ok(None)
            }
            19..=27 | 50 | 53 | 59 => self.refuse_instruction("a VMX instruction (perfvisor offers no nested VMX)", UD),
            _ => Ok(Some(self.unhandled_exit(basic)?)),
        }
    }

    /// The Linux guest's kernel panicked (its console said so): the reason
    /// in perfvisor's words, and the guest stopped.
    #[cold]
    #[inline(never)]
    fn linux_panicked(&self) -> GuestEnd {
        if let Some(p) = &self.guard.com1.panic {
            let reason = &p.bytes[..p.len];
            error!(
                "linux: the guest kernel panicked: {}{}",
                SafeText(reason),
                match (reason.is_empty(), p.cut) {
                    (true, _) => "(no reason given)",
                    (false, true) => "...",
                    (false, false) => "",
                }
            );
        }
        GuestEnd::Stopped("guest kernel panic")
    }

    /// A Linux guest triple-faulted. Linux reboots that way with
    /// `reboot=t` (arch/x86/kernel/reboot.c: an empty IDT, then INT3), also
    /// after a panic (`panic=-1` reboots at once): such a reboot ended the
    /// run, and is reported as one. It is told from a real triple fault by
    /// the empty IDT after the console printed: Linux loads its IDT long
    /// before its console prints (the guest starts with an empty IDT, so
    /// an early fault has one too). `Ok(None)`: no such reboot; the caller
    /// reports the triple fault as for any guest.
    #[cold]
    #[inline(never)]
    pub(crate) fn linux_triple_fault(&self, rip: u64) -> Result<Option<GuestEnd>, VmcsError> {
        if !self.linux || self.guard.console_bytes == 0 || ActiveVmcs.read32(Vmcs32::GuestIdtrLimit)? != 0 {
            return Ok(None);
        }
        error!(
            "linux: the guest rebooted (a triple fault on an empty IDT at RIP {rip:#x}: Linux's reboot=t, \
             as after a panic with panic=-1); a guest reboot ended the run"
        );
        Ok(Some(GuestEnd::Stopped("guest reboot (triple fault)")))
    }

    /// XSETBV (SDM vol. 2D): CPL 0, CR4.OSXSAVE, XCR0 valid for this CPU.
    #[cold]
    #[inline(never)]
    pub(crate) fn xsetbv(&mut self) -> Result<Option<GuestEnd>, VmcsError> {
        const OSXSAVE: u64 = 1 << 18;
        if ActiveVmcs.read_natural(VmcsNatural::GuestCr4)? & OSXSAVE == 0 {
            return self.refuse_instruction("XSETBV with CR4.OSXSAVE clear", UD);
        }
        if cpl()? != 0 {
            return self.refuse_instruction("XSETBV at CPL > 0", GP);
        }
        let ecx = self.vcpu.regs.rcx as u32;
        let value = (self.vcpu.regs.rdx << 32) | (self.vcpu.regs.rax & 0xffff_ffff);
        let leaf = self.cpuid.lookup(0xd, 0);
        let supported = u64::from(leaf.eax) | u64::from(leaf.edx) << 32;
        if let Err(why) = vmx::guard::check_xsetbv(ecx, value, supported) {
            if self.guard.refusals.instruction.allow() {
                warn!("guard: XSETBV XCR{ecx} = {value:#x} refused ({why}): #GP(0) injected");
            }
            inject(GP, Some(0))?;
            return Ok(None);
        }
        // SAFETY: the host's CR4.OSXSAVE was set at setup when XSAVE exists
        // (and the guest's CR4.OSXSAVE is set, so it does); the value is a
        // valid XCR0 for this CPU, and only the guest uses extended state.
        match unsafe { xsetbv_checked(ecx, value) } {
            Ok(()) => self.retire_emulated()?,
            Err(_) => inject(GP, Some(0))?,
        }
        Ok(None)
    }

    /// A CR access that exited (SDM vol. 3C Table 28-3).
    #[cold]
    #[inline(never)]
    pub(crate) fn cr_access(&mut self) -> Result<Option<GuestEnd>, VmcsError> {
        let q = ActiveVmcs.read_natural(VmcsNatural::ExitQualification)?;
        let (cr, access, reg) = (q & 15, (q >> 4) & 3, (q >> 8) & 15);
        match (cr, access) {
            // MOV to CR0/CR4 exits only when a bit perfvisor owns would
            // change (PE, NE, PG, VMXE, bits the CPU lacks): refused.
            (0 | 4, 0) => self.refuse_instruction(
                if cr == 0 {
                    "MOV to CR0 changing PE, NE or PG (perfvisor keeps them set)"
                } else {
                    "MOV to CR4 setting VMXE or a bit the CPU lacks"
                },
                GP,
            ),
            // CR3 exits only where the CPU forces CR3 exiting: emulated.
            (3, 0) => {
                let value = self.gpr(reg)? & !(1 << 63);
                ActiveVmcs.write_natural(VmcsNatural::GuestCr3, value)?;
                let _ = crate::vmx_hw::invvpid_single_context(crate::vcpu::VPID);
                self.retire_emulated()?;
                Ok(None)
            }
            (3, 1) => {
                let value = ActiveVmcs.read_natural(VmcsNatural::GuestCr3)?;
                self.set_gpr(reg, value)?;
                self.retire_emulated()?;
                Ok(None)
            }
            _ => self.refuse_instruction("a control-register access perfvisor does not emulate", GP),
        }
    }

    /// An exception exit that is not an NMI: #MC (the only vector in the
    /// exception bitmap) ends the guest.
    #[cold]
    #[inline(never)]
    pub(crate) fn guest_exception(&mut self, info: u32) -> Result<Option<GuestEnd>, VmcsError> {
        let rip = guest_rip();
        if info & 0xff == u32::from(MC) {
            error!(
                "guard: machine check (#MC) while the guest ran (RIP {rip:#x}): the machine's state is \
                 suspect; the guest is stopped"
            );
            return Ok(Some(GuestEnd::Stopped("machine check in guest mode")));
        }
        error!("vmx: unexpected exception exit (interruption info {info:#x}), RIP {rip:#x}");
        crate::exits::dump_vmcs();
        Ok(Some(GuestEnd::Stopped("unhandled VM exit")))
    }

    /// An I/O instruction (every port outside the allow-list exits).
    #[cold]
    #[inline(never)]
    pub(crate) fn io_exit(&mut self) -> Result<Option<GuestEnd>, VmcsError> {
        let q = IoExit(ActiveVmcs.read_natural(VmcsNatural::ExitQualification)?);
        if q.is_string() {
            if self.guard.refusals.port.allow() {
                warn!("guard: {q} at RIP {:#x}: string I/O is not emulated; #GP(0) injected", guest_rip());
            }
            inject(GP, Some(0))?;
            return Ok(None);
        }
        if self.linux && q.port() == crate::linux::EXIT_PORT && !q.is_in() {
            if let Some((index, phase)) = crate::linux::phase_marked(self.vcpu.regs.rax as u8) {
                // Each phase once: a guest repeating marks cannot flood the log.
                if self.phases_reported & (1 << index) == 0 {
                    self.phases_reported |= 1 << index;
                    self.report_phase(phase);
                }
                self.retire_emulated()?;
                return Ok(None);
            }
            let status = u64::from(self.vcpu.regs.rax as u8 != 0x10);
            info!("linux: the guest wrote {:#x} to port {:#x} (its verdict port)", self.vcpu.regs.rax as u8, q.port());
            return Ok(Some(GuestEnd::Exited(status)));
        }
        let size = u16::from(q.size());
        let mut result: u32 = 0;
        let mut refused = false;
        for lane in 0..size {
            let port = q.port().wrapping_add(lane);
            let byte = (self.vcpu.regs.rax >> (8 * lane)) as u8;
            // A dword at 0xcf8 is PCI CONFIG_ADDRESS, not the reset register in its lane 1.
            let config_address = q.port() == 0xcf8 && size == 4;
            let out = (!(q.is_in() || config_address)).then_some(u32::from(byte));
            match vmx::guard::port_action(port, out) {
                PortAction::EndGuest(why) => {
                    error!(
                        "guard: {q} (value {:#x}) at RIP {:#x}: {why}; the guest is stopped",
                        self.vcpu.regs.rax & 0xffff_ffff,
                        guest_rip()
                    );
                    return Ok(Some(GuestEnd::Stopped(why)));
                }
                PortAction::Com1(offset) if q.is_in() => {
                    result |= u32::from(self.guard.com1.read(offset)) << (8 * lane)
                }
                PortAction::Com1(offset) => self.guard.console_bytes += self.guard.com1.write(offset, byte),
                PortAction::Refuse => {
                    refused = true;
                    result |= 0xff << (8 * lane);
                }
            }
        }
        if refused && self.guard.refusals.port.allow() {
            warn!("guard: {q} at RIP {:#x} refused (no device for the guest there)", guest_rip());
        }
        if q.is_in() {
            let rax = &mut self.vcpu.regs.rax;
            *rax = match size {
                1 => (*rax & !0xff) | u64::from(result & 0xff),
                2 => (*rax & !0xffff) | u64::from(result & 0xffff),
                // A 32-bit destination zero-extends into RAX.
                _ => u64::from(result),
            };
        }
        self.retire_emulated()?;
        Ok(None)
    }

    /// WRMSR IA32_APIC_BASE: the base stays at 0xfee00000.
    #[cold]
    #[inline(never)]
    pub(crate) fn write_apic_base(&mut self, value: u64) -> bool {
        const BSP: u64 = 1 << 8;
        let leaf = self.cpuid.lookup(0x8000_0008, 0);
        let bits = if leaf.eax & 0xff != 0 { leaf.eax & 0xff } else { 36 };
        if let Err(why) = vmx::guard::check_apic_base(value, bits) {
            if self.guard.refusals.apic.allow() {
                warn!("guard: IA32_APIC_BASE = {value:#x} refused ({why}): #GP(0) injected");
            }
            return false;
        }
        let current = rdmsr_checked(crate::pmi::IA32_APIC_BASE).unwrap_or(0);
        // SAFETY: the base is the architectural one; the enable bits are the
        // guest's APIC's (perfvisor's host uses no APIC), and hardware
        // refuses invalid mode transitions with #GP, returned as `Err`.
        unsafe { wrmsr_checked(crate::pmi::IA32_APIC_BASE, (value & !BSP) | (current & BSP)) }.is_ok()
    }

    /// WRMSR to the x2APIC ICR: no INIT, SIPI, SMI, nor NMI to another CPU.
    #[cold]
    #[inline(never)]
    pub(crate) fn write_icr(&mut self, value: u64) -> bool {
        let own = rdmsr_checked(0x802).unwrap_or(u64::MAX) as u32;
        if let Err(why) = vmx::guard::check_icr(value, own) {
            if self.guard.refusals.apic.allow() {
                warn!("guard: x2APIC ICR = {value:#x} refused ({why}): #GP(0) injected");
            }
            return false;
        }
        // SAFETY: a fixed or lowest-priority interrupt, or an NMI to this
        // CPU, sent by the guest's own APIC (which it owns); a write the
        // APIC rejects raises #GP, returned as `Err`.
        unsafe { wrmsr_checked(0x830, value) }.is_ok()
    }

    /// A HLT with interrupts off spends 1 ms of the watchdog's budget.
    /// `Some`: the budget is gone.
    #[cold]
    #[inline(never)]
    pub(crate) fn charge_hlt(&mut self) -> Result<Option<GuestEnd>, VmcsError> {
        const IF: u64 = 1 << 9;
        if self.guard.hlt_charge == 0 || ActiveVmcs.read_natural(VmcsNatural::GuestRflags)? & IF != 0 {
            return Ok(None);
        }
        let mut v = ActiveVmcs;
        let left = v.read32(Vmcs32::PreemptionTimerValue)?.saturating_sub(self.guard.hlt_charge);
        if left == 0 {
            if self.guard.next_round()? {
                return Ok(Some(self.watchdog_expired("halted with interrupts disabled")));
            }
            return Ok(None);
        }
        v.write32(Vmcs32::PreemptionTimerValue, left)?;
        Ok(None)
    }

    /// The preemption timer ran out while the watchdog is armed: the
    /// next round, or the end of the guest.
    #[cold]
    #[inline(never)]
    pub(crate) fn watchdog_timer(&mut self) -> Result<Option<GuestEnd>, VmcsError> {
        if self.guard.next_round()? {
            return Ok(Some(self.watchdog_expired("no exit that counts as progress")));
        }
        Ok(None)
    }

    /// The watchdog's budget ran out.
    #[cold]
    #[inline(never)]
    pub(crate) fn watchdog_expired(&mut self, how: &str) -> GuestEnd {
        error!(
            "watchdog: the guest made no hypercall for {} ms of guest time or more ({how}, RIP {:#x}); the guest is stopped",
            self.guard.watchdog_ms(),
            guest_rip()
        );
        GuestEnd::Stopped("hang watchdog")
    }
}
