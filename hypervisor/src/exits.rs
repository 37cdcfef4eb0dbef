//! Running the guest: the VM-exit loop and a handler per exit reason. Every
//! exit is handled, or reported in words with a VMCS dump before the guest
//! is stopped; the hypervisor itself always survives to give a verdict.

use crate::cpuid_cache::CpuidCache;
use crate::memory::phys_map;
use crate::serial::write_fmt;
use crate::vcpu::{Vcpu, IA32_PAT};
use crate::vmx_hw::ActiveVmcs;
use crate::vpmu::{KernelPmu, Vpmu};
use log::{error, info, warn};
use perfvisor_abi::{Hypercall, RamRange, TestStatus, HYPERCALL_ERROR};
use pmu::events::{ArchEvent, Ring};
use pmu::hw::PmuHardware;
use pmu::msr::PmuReg;
use pmu::vpmu::{Mode, VirtualPmu};
use vmx::errors::EntryFailure;
use vmx::exit::{injection_info, EptViolation, EventKind, ExitReason, RawExitReason};
use vmx::vmcs::{Vmcs32, Vmcs64, VmcsAccess, VmcsError, VmcsNatural};

const IA32_FEATURE_CONTROL: u32 = 0x3a;
const IA32_EFER: u32 = 0xc000_0080;
const IA32_DEBUGCTL: u32 = pmu::msr::IA32_DEBUGCTL;
const DEBUGCTL_SUPPORTED: u64 = 1 | 1 << 1 | 1 << 11 | 1 << 12 | 1 << 14;

/// The PMU MSRs the engine handles (DEBUGCTL is the VMCS's).
fn is_vpmu_msr(msr: u32) -> bool {
    PmuReg::decode(msr).is_some_and(|r| r != PmuReg::DebugCtl)
}

/// The canary the other PMU context keeps in PMC0 and PERFEVTSEL0 (event
/// 0x2e/0x4f, EN clear: it never counts).
pub const CANARY_COUNTER: u64 = 0x5eed_cafe;
pub const CANARY_SELECTOR: u64 = 0x4f2e;

/// MSRs the guest reads and writes directly: their guest values are either
/// switched by the VMCS (FS/GS base, SYSENTER_*) or unused by perfvisor
/// (KERNEL_GS_BASE, STAR/LSTAR/CSTAR/SFMASK, TSC_AUX: the hypervisor never
/// executes SWAPGS, SYSCALL or RDTSCP).
/// With them: IA32_APIC_BASE and the x2APIC MSRs, since the guest owns the
/// local APIC (see `pmi.rs`).
pub fn passthrough_msrs() -> impl Iterator<Item = u32> {
    PASSTHROUGH_MSRS.iter().copied().chain([crate::pmi::IA32_APIC_BASE]).chain(crate::pmi::X2APIC_MSRS)
}

/// MSRs among those whose writes still exit: IA32_APIC_BASE (the base
/// must not move) and the x2APIC ICR (no INIT/SIPI/SMI, no NMI to other
/// CPUs): see `guard.rs`.
pub const WRITE_INTERCEPTED_MSRS: [u32; 2] = [crate::pmi::IA32_APIC_BASE, X2APIC_ICR];
const X2APIC_ICR: u32 = 0x830;

const PASSTHROUGH_MSRS: &[u32] = &[
    0x174,
    0x175,
    0x176,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0100,
    0xc000_0101,
    0xc000_0102,
    0xc000_0103,
];

/// How the guest ended.
pub enum GuestEnd {
    /// It called the Exit hypercall with this status.
    Exited(u64),
    /// perfvisor stopped it; why.
    Stopped(&'static str),
}

/// Exits counted by basic reason (0..=77 covers every defined reason);
/// indexed by the reason's low 7 bits, so the hot path needs no bounds check.
pub const COUNTED_REASONS: usize = 128;

pub struct Guest {
    /// What a hostile guest is refused, and the hang watchdog (`guard.rs`).
    pub guard: crate::guard::Guard,
    pub vcpu: Vcpu,
    pub vpmu: Vpmu,
    /// Another PMU context (the host's, holding a canary) for the PmuSwitch test hypercall.
    pub other_context: VirtualPmu,
    /// PMIs the engine's software accounting owed the guest.
    pub pmis: crate::pmi::PendingPmis,
    pub cpuid: CpuidCache,
    pub ram: [RamRange; perfvisor_abi::MAX_RAM_RANGES],
    pub ram_count: usize,
    pub exits: [u64; COUNTED_REASONS],
    /// `exits` when the Linux guest last marked a phase (`report_phase`).
    pub exits_at_phase: [u64; COUNTED_REASONS],
    /// The phases already reported (bit i: `crate::linux::PHASES[i]`).
    pub phases_reported: u32,
    /// The guest is Linux: `crate::linux`'s MSR and port policy applies.
    pub linux: bool,
}

/// A guest MSR access that must #GP.
struct InjectGp;

impl Guest {
    fn ram(&self) -> &[RamRange] {
        &self.ram[..self.ram_count]
    }

    /// The guest's bytes at [gpa, gpa + len), if all of it is guest RAM.
    fn guest_bytes(&self, gpa: u64, len: u64) -> Option<&[u8]> {
        let end = gpa.checked_add(len)?;
        if len > 4096 || !self.ram().iter().any(|r| r.start <= gpa && end <= r.end) {
            return None;
        }
        // SAFETY: the range is guest RAM (identity-mapped for the guest, never
        // used by the hypervisor) and mapped through the physical map. The
        // guest is not running while we read it.
        Some(unsafe { core::slice::from_raw_parts(phys_map().ptr::<u8>(gpa), len as usize) })
    }

    /// Steps over the instruction that exited. Only an instruction that
    /// ends past a 4-GiB boundary needs the code size (EIP wrap, canonical
    /// addresses): `advance_rip_slow`.
    #[inline(always)]
    fn advance_rip(&self) -> Result<(), VmcsError> {
        let mut v = ActiveVmcs;
        let len = v.read32(Vmcs32::ExitInstructionLength)?;
        let rip = v.read_natural(VmcsNatural::GuestRip)?;
        if vmx::guard::needs_code_size(rip, len) {
            return self.advance_rip_slow(rip, len);
        }
        v.write_natural(VmcsNatural::GuestRip, rip.wrapping_add(u64::from(len)))
    }

    /// An emulated instruction completed: step over it, and count it as
    /// retired for the guest's counters (hardware did not see it).
    #[inline(always)]
    pub(crate) fn retire_emulated(&mut self) -> Result<(), VmcsError> {
        self.advance_rip()?;
        // Costs one bit test unless a guest counter counts instructions.
        if self.vpmu.engine.may_count(ArchEvent::InstructionsRetired) {
            self.account_emulated_instruction()?;
        }
        Ok(())
    }

    /// The TrapWrite hypercall (a test aid).
    #[cold]
    #[inline(never)]
    fn trap_write(&mut self, gpa: u64) -> u64 {
        if self.vcpu.trap_write(gpa) {
            0
        } else {
            HYPERCALL_ERROR
        }
    }

    /// HLT, skipped: it retired for the guest's counters. Out of line, so
    /// the common exits' code stays as it was.
    #[cold]
    #[inline(never)]
    fn retire_hlt(&mut self) -> Result<Option<GuestEnd>, VmcsError> {
        self.retire_emulated()?;
        self.charge_hlt()
    }

    /// An emulated RDMSR/RDPMC completed with `value` in EDX:EAX.
    #[inline(always)]
    fn complete_read(&mut self, value: u64) -> Result<(), VmcsError> {
        self.vcpu.regs.rax = value & 0xffff_ffff;
        self.vcpu.regs.rdx = value >> 32;
        self.retire_emulated()
    }

    fn inject_gp(&self) -> Result<(), VmcsError> {
        let mut v = ActiveVmcs;
        v.write32(Vmcs32::EntryInterruptionInfo, injection_info(13, EventKind::HardwareException, true))?;
        v.write32(Vmcs32::EntryExceptionErrorCode, 0)
    }

    /// Runs the guest until it exits or is stopped.
    pub fn run(&mut self) -> GuestEnd {
        loop {
            if crate::events::nmi_pending() {
                if let Err(e) = crate::events::deliver_nmi() {
                    error!("vmx: {e}");
                    return GuestEnd::Stopped("VMCS access failed");
                }
            }
            if let Err(e) = self.vcpu.enter() {
                error!("vmx: {e}");
                dump_vmcs();
                return GuestEnd::Stopped("VM entry failed");
            }
            match self.handle_exit() {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(e) => {
                    error!("vmx: {e}");
                    dump_vmcs();
                    return GuestEnd::Stopped("VMCS access failed");
                }
            }
        }
    }

    /// NMI exiting: the NMI is the guest's (the host uses none), so it is
    /// queued for injection ([`crate::events`]). The exception bitmap has
    /// #MC only, which ends the guest (`guard.rs`).
    #[cold]
    #[inline(never)]
    fn exception_or_nmi(&mut self) -> Result<Option<GuestEnd>, VmcsError> {
        let v = ActiveVmcs;
        crate::events::requeue_vectored_event()?;
        let info = v.read32(Vmcs32::ExitInterruptionInfo)?;
        if (info >> 8) & 7 == 2 {
            // The exit left NMIs blocked in root mode: unblock them, or the
            // guest's next NMI would never exit.
            crate::arch::idt::unblock_nmis();
            crate::events::queue_nmi();
            return Ok(None);
        }
        self.guest_exception(info)
    }

    fn handle_exit(&mut self) -> Result<Option<GuestEnd>, VmcsError> {
        let v = ActiveVmcs;
        let raw = RawExitReason(v.read32(Vmcs32::ExitReason)?);
        self.exits[usize::from(raw.basic()) % COUNTED_REASONS] += 1;
        if raw.entry_failed() {
            let qualification = v.read_natural(VmcsNatural::ExitQualification)?;
            EntryFailure::decode(raw.basic(), qualification)
                .describe(qualification, |a| error!("vmx: {a} (exit qualification {qualification:#x})"));
            dump_vmcs();
            return Ok(Some(GuestEnd::Stopped("VM entry failed")));
        }
        match raw.reason() {
            ExitReason::Cpuid => {
                let r = self.cpuid.lookup(self.vcpu.regs.rax as u32, self.vcpu.regs.rcx as u32);
                let regs = &mut self.vcpu.regs;
                (regs.rax, regs.rbx, regs.rcx, regs.rdx) = (r.eax.into(), r.ebx.into(), r.ecx.into(), r.edx.into());
                self.retire_emulated()?;
            }
            ExitReason::Rdmsr => {
                let msr = self.vcpu.regs.rcx as u32;
                match self.read_msr(msr)? {
                    Ok(value) => self.complete_read(value)?,
                    Err(InjectGp) => self.inject_gp()?,
                }
            }
            ExitReason::Wrmsr => {
                let msr = self.vcpu.regs.rcx as u32;
                let value = (self.vcpu.regs.rdx << 32) | (self.vcpu.regs.rax & 0xffff_ffff);
                match self.write_msr(msr, value)? {
                    Ok(()) => self.retire_emulated()?,
                    Err(InjectGp) => self.inject_gp()?,
                }
            }
            ExitReason::Vmcall => {
                // Hypercalls are the guest kernel's: none is meant for user space.
                if (v.read32(Vmcs32::GuestSsAccessRights)? >> 5) & 3 != 0 {
                    return self.refuse_user_hypercall();
                }
                let end = self.hypercall()?;
                self.retire_emulated()?;
                // A hypercall is progress: the hang watchdog's current window is not the last.
                self.guard.progress = true;
                return Ok(end);
            }
            ExitReason::Rdpmc => {
                let ecx = self.vcpu.regs.rcx as u32;
                let value = self.with_engine(|e, hw| e.rdpmc(hw, ecx))?;
                match value {
                    Ok(v) => self.complete_read(v)?,
                    Err(_) => self.inject_gp()?,
                }
            }
            // perfvisor injects no timer or device interrupts, so HLT is a
            // yield; it retired for the guest's counters.
            ExitReason::Hlt => return self.retire_hlt(),
            // The pending NMI is injected by the run loop before the entry.
            ExitReason::NmiWindow => {}
            ExitReason::PreemptionTimer => {
                crate::events::requeue_vectored_event()?;
                if crate::events::on_preemption_timer()? {
                    return self.watchdog_timer();
                }
            }
            // NMI exiting: the NMI is the guest's (the host uses none); queue it.
            ExitReason::ExceptionOrNmi => return self.exception_or_nmi(),
            ExitReason::EptViolation => {
                crate::events::requeue_vectored_event()?;
                let q = EptViolation(v.read_natural(VmcsNatural::ExitQualification)?);
                let gpa = v.read64(Vmcs64::GuestPhysicalAddress)?;
                // A page the guest asked to watch (TrapWrite): let the write through.
                if q.write() && self.vcpu.release_write_trap(gpa) {
                    return Ok(None);
                }
                let rip = v.read_natural(VmcsNatural::GuestRip)?;
                let linear =
                    if q.linear_address_valid() { v.read_natural(VmcsNatural::GuestLinearAddress)? } else { 0 };
                error!(
                    "vmx: EPT violation: guest {q} at guest-physical {gpa:#x} (linear {linear:#x}{}), RIP {rip:#x}: \
                     not guest RAM; the guest is stopped",
                    if q.linear_address_valid() { "" } else { ", not reported" }
                );
                return Ok(Some(GuestEnd::Stopped("EPT violation")));
            }
            ExitReason::TripleFault => {
                let rip = v.read_natural(VmcsNatural::GuestRip)?;
                // A Linux guest's reboot (reboot=t) is one too: said as such.
                if let Some(end) = self.linux_triple_fault(rip)? {
                    return Ok(Some(end));
                }
                error!("vmx: the guest triple-faulted (RIP {rip:#x}): an exception while delivering a double fault");
                dump_vmcs();
                return Ok(Some(GuestEnd::Stopped("triple fault")));
            }
            _ => return self.other_exit(raw.basic()),
        }
        Ok(None)
    }

    /// An exit perfvisor has no handler for: reported, the guest stopped.
    #[cold]
    #[inline(never)]
    pub(crate) fn unhandled_exit(&mut self, basic: u16) -> Result<GuestEnd, VmcsError> {
        let v = ActiveVmcs;
        crate::events::requeue_vectored_event()?;
        let q = v.read_natural(VmcsNatural::ExitQualification)?;
        let rip = v.read_natural(VmcsNatural::GuestRip)?;
        error!(
            "vmx: unhandled VM exit: {} (basic reason {basic}), qualification {q:#x}, RIP {rip:#x}",
            ExitReason::from_basic(basic)
        );
        dump_vmcs();
        Ok(GuestEnd::Stopped("unhandled VM exit"))
    }

    /// RDMSR of an intercepted MSR: emulated, or #GP as hardware gives for
    /// an MSR it does not have.
    fn read_msr(&mut self, msr: u32) -> Result<Result<u64, InjectGp>, VmcsError> {
        let v = ActiveVmcs;
        if is_vpmu_msr(msr) {
            return Ok(self.with_engine(|e, hw| e.read(hw, msr))?.map_err(|_| InjectGp));
        }
        Ok(match msr {
            IA32_DEBUGCTL => Ok(v.read64(Vmcs64::GuestDebugCtl)?),
            // Locked, VMX off: perfvisor offers no nested VMX.
            IA32_FEATURE_CONTROL => Ok(1),
            IA32_PAT => Ok(v.read64(Vmcs64::GuestPat)?),
            IA32_EFER => Ok(v.read64(Vmcs64::GuestEfer)?),
            _ if self.linux => crate::linux::read_msr(msr).ok_or(InjectGp),
            _ => Err(InjectGp),
        })
    }

    fn write_msr(&mut self, msr: u32, value: u64) -> Result<Result<(), InjectGp>, VmcsError> {
        let mut v = ActiveVmcs;
        if is_vpmu_msr(msr) {
            return Ok(self.with_engine(|e, hw| e.write(hw, msr, value))?.map_err(|_| InjectGp));
        }
        Ok(match msr {
            // Switched by the VMCS (debug-control save/load), so the guest's
            // freeze-on-PMI bits are live while it runs. Bits perfvisor
            // supports: LBR, BTF, FREEZE_LBRS_ON_PMI, FREEZE_PERFMON_ON_PMI,
            // FREEZE_WHILE_SMM; others #GP.
            IA32_DEBUGCTL if value & !DEBUGCTL_SUPPORTED == 0 => Ok(v.write64(Vmcs64::GuestDebugCtl, value)?),
            IA32_DEBUGCTL => Err(InjectGp),
            // Locked: every write #GPs (SDM vol. 4, IA32_FEATURE_CONTROL bit 0).
            IA32_FEATURE_CONTROL => Err(InjectGp),
            crate::pmi::IA32_APIC_BASE => self.write_apic_base(value).then_some(()).ok_or(InjectGp),
            X2APIC_ICR => self.write_icr(value).then_some(()).ok_or(InjectGp),
            // Each PAT entry must be a defined type (0, 1, 4, 5, 6, 7); bits
            // 7:3 of each byte are reserved (SDM vol. 3A §13.12.2).
            IA32_PAT if value.to_le_bytes().iter().all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7)) => {
                Ok(v.write64(Vmcs64::GuestPat, value)?)
            }
            IA32_PAT => Err(InjectGp),
            IA32_EFER => {
                // SCE, LME, LMA, NXE; LME/LMA cannot change while paging is on.
                const WRITABLE: u64 = 1 | 1 << 8 | 1 << 10 | 1 << 11;
                let current = v.read64(Vmcs64::GuestEfer)?;
                if value & !WRITABLE != 0 || (value ^ current) & (1 << 8 | 1 << 10) != 0 {
                    Err(InjectGp)
                } else {
                    Ok(v.write64(Vmcs64::GuestEfer, value)?)
                }
            }
            _ if self.linux && crate::linux::read_msr(msr).is_some_and(|now| now == value) => Ok(()),
            _ => Err(InjectGp),
        })
    }

    /// A VMCALL (ABI: `perfvisor_abi`). Returns `Some` when the guest ends.
    fn hypercall(&mut self) -> Result<Option<GuestEnd>, VmcsError> {
        let r = self.vcpu.regs;
        let result = match Hypercall::from_raw(r.rax) {
            Some(Hypercall::AbiVersion) => u64::from(perfvisor_abi::ABI_VERSION),
            // Every line prefixed `guest: `, control characters replaced.
            Some(Hypercall::Write) => match self.guest_bytes(r.rdi, r.rsi).map(crate::guard::guest_text) {
                Some(written) => {
                    self.guard.console_bytes += written;
                    0
                }
                None => HYPERCALL_ERROR,
            },
            Some(Hypercall::ReportTest) => {
                let name = self.guest_bytes(r.rsi, r.rdx);
                let why = if r.r8 == 0 { Some(&b""[..]) } else { self.guest_bytes(r.rcx, r.r8) };
                const OK: u64 = TestStatus::Ok as u64;
                const FAILED: u64 = TestStatus::Failed as u64;
                const SKIPPED: u64 = TestStatus::Skipped as u64;
                match (name, why, r.rdi) {
                    (Some(name), Some(_), OK) => write_fmt(format_args!("TEST {} ... ok\n", Printable(name))),
                    (Some(name), Some(why), FAILED) => {
                        write_fmt(format_args!("TEST {} ... FAILED ({})\n", Printable(name), Printable(why)))
                    }
                    (Some(name), Some(why), SKIPPED) => {
                        write_fmt(format_args!("TEST {} ... skipped ({})\n", Printable(name), Printable(why)))
                    }
                    _ => {
                        self.vcpu.regs.rax = HYPERCALL_ERROR;
                        return Ok(None);
                    }
                }
                0
            }
            Some(Hypercall::Exit) => return Ok(Some(GuestEnd::Exited(r.rdi))),
            Some(Hypercall::ExitCount) => self.exits.get(r.rdi as usize).copied().unwrap_or(HYPERCALL_ERROR),
            Some(Hypercall::PmuSwitch) => self.pmu_switch(r.rdi == 1)?,
            Some(Hypercall::TrapWrite) => self.trap_write(r.rdi),
            None => {
                if self.guard.log_unknown_hypercall() {
                    warn!("vmx: unknown hypercall {:#x} from the guest", r.rax);
                }
                HYPERCALL_ERROR
            }
        };
        self.vcpu.regs.rax = result;
        Ok(None)
    }

    /// Runs `f` on the vPMU engine with its GLOBAL_CTRL current: taken from
    /// the last VM exit before, given back to the VMCS after (the VM-entry
    /// control loads it), and the MSR bitmap refreshed (a counter may have
    /// been loaded and now passes through).
    fn with_engine<T>(&mut self, f: impl FnOnce(&mut VirtualPmu, &mut KernelPmu) -> T) -> Result<T, VmcsError> {
        if self.vpmu.engine.mode() == Mode::Off {
            return Ok(f(&mut self.vpmu.engine, &mut KernelPmu));
        }
        self.vpmu.engine.on_vm_exit(self.vcpu.saved_global_ctrl()?);
        let result = f(&mut self.vpmu.engine, &mut KernelPmu);
        self.vcpu.set_guest_global_ctrl(self.vpmu.engine.global_ctrl)?;
        self.vpmu.engine.install_msr_bitmap(self.vcpu.msr_bitmap_mut());
        Ok(result)
    }

    /// The instruction perfvisor just emulated retired in software: guest
    /// counters counting instructions are incremented (hardware did not see it).
    #[cold]
    #[inline(never)]
    fn account_emulated_instruction(&mut self) -> Result<(), VmcsError> {
        // CPL = SS.DPL (SDM vol. 3A §5.5): access-rights bits 6:5.
        let ring =
            if (ActiveVmcs.read32(Vmcs32::GuestSsAccessRights)? >> 5) & 3 == 3 { Ring::User } else { Ring::Kernel };
        let owed = self.with_engine(|e, hw| e.account_retired(hw, ArchEvent::InstructionsRetired, 1, ring))?;
        if let Ok(n @ 1..) = owed {
            self.pmis.owed += u64::from(n);
            self.pmis.deliver()?;
        }
        Ok(())
    }

    /// The PmuSwitch hypercall: the guest's context out, the other context
    /// (with its canary) in and out, the guest's back in.
    fn pmu_switch(&mut self, damage_canary: bool) -> Result<u64, VmcsError> {
        if self.vpmu.engine.mode() == Mode::Off {
            return Ok(HYPERCALL_ERROR);
        }
        self.vpmu.engine.on_vm_exit(self.vcpu.saved_global_ctrl()?);
        let (guest, other, hw) = (&mut self.vpmu.engine, &mut self.other_context, &mut KernelPmu);
        // Every step runs whatever the one before it did, so both contexts
        // end as they began, the guest's loaded and the other's not: `put`
        // always unloads and a failed `load` unloads (the engine's
        // "Failures"). Nothing the guest does can make a later switch load
        // a context twice. The guest's may be unloaded on entry only if its
        // reload failed last time; then this is another try.
        let guest_out = !guest.is_loaded() || guest.put(hw).is_ok();
        let mut canary = false;
        if other.load(hw).is_ok() {
            if damage_canary {
                // Test aid: as if the other context's counter had been lost;
                // put back after the check so later switches find it whole.
                let _ = hw.wrmsr(pmu::msr::IA32_PMC0, !CANARY_COUNTER & 0xffff);
            }
            canary = hw.rdmsr(pmu::msr::IA32_PMC0) == Ok(CANARY_COUNTER)
                && hw.rdmsr(pmu::msr::IA32_PERFEVTSEL0) == Ok(CANARY_SELECTOR);
            if damage_canary {
                let _ = hw.wrmsr(pmu::msr::IA32_PMC0, CANARY_COUNTER);
            }
            canary &= other.put(hw).is_ok();
        }
        let guest_in = guest.load(hw).is_ok();
        self.vcpu.set_guest_global_ctrl(self.vpmu.engine.global_ctrl)?;
        self.vpmu.engine.install_msr_bitmap(self.vcpu.msr_bitmap_mut());
        if !canary {
            error!("pmu: the other context's canary did not survive a switch");
        }
        if !(guest_out && guest_in) {
            error!(
                "pmu: PmuSwitch: a PMU MSR raised #GP (guest context put {}, reloaded {})",
                if guest_out { "ok" } else { "#GP" },
                if guest_in { "ok" } else { "#GP: its counters are parked until the next switch" }
            );
        }
        Ok(if guest_out && canary && guest_in { 0 } else { HYPERCALL_ERROR })
    }

    /// Parks the PMU at the guest's end (nothing of it stays readable) and
    /// says what was left undone.
    pub fn end_pmu(&mut self) {
        if self.vpmu.engine.mode() == Mode::Off {
            return;
        }
        let put = self.with_engine(|e, hw| if e.is_loaded() { e.put(hw) } else { Ok(()) });
        let p = &self.pmis;
        if p.delivered + p.masked + p.undeliverable + p.owed > 0 {
            info!(
                "pmu: PMIs owed by software accounting: {} delivered, {} not (LVTPC masked), \
                 {} undeliverable (APIC not in x2APIC mode), {} still pending",
                p.delivered, p.masked, p.undeliverable, p.owed
            );
        }
        match put {
            Ok(Ok(())) => info!("pmu: guest context put; the PMU is parked"),
            Ok(Err(_)) => error!("pmu: putting the guest context raised #GP: the PMU may not be fully parked"),
            Err(e) => error!("pmu: the guest context was not put ({e}): the PMU is not parked"),
        }
    }

    /// The exits since the previous phase mark (or the start), one line
    /// per reason: the Linux test client marks the end of each phase of
    /// its run (`crate::linux::PHASES`) for `cargo xtask bench linux`.
    #[cold]
    #[inline(never)]
    pub fn report_phase(&mut self, phase: &str) {
        let since = |(reason, (&now, &then)): (usize, (&u64, &u64))| (reason, now - then);
        let deltas = self.exits.iter().zip(self.exits_at_phase.iter()).enumerate().map(since);
        let total: u64 = deltas.clone().map(|(_, n)| n).sum();
        info!("exits: phase {phase}: {total} VM exits");
        for (reason, n) in deltas.filter(|&(_, n)| n > 0) {
            info!("exits: phase {phase}: {n} {}", ExitReason::from_basic(reason as u16));
        }
        self.exits_at_phase = self.exits;
    }

    /// One line per exit reason that occurred.
    pub fn report_exit_counts(&self) {
        let total: u64 = self.exits.iter().sum();
        info!("exits: {total} VM exits in all");
        for (reason, &n) in self.exits.iter().enumerate().filter(|(_, n)| **n > 0) {
            info!("exits: {n:>8} {}", ExitReason::from_basic(reason as u16));
        }
    }
}

/// Guest text inside one of perfvisor's lines (a test's name and reason):
/// anything but printable ASCII, newlines included, shown as `?`.
struct Printable<'a>(&'a [u8]);

impl core::fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|&b| core::fmt::Write::write_char(f, vmx::guard::console_safe(b)))
    }
}

/// Every VMCS field, on the console.
pub fn dump_vmcs() {
    write_fmt(format_args!("VMCS dump:\n"));
    vmx::vmcs::dump(&ActiveVmcs, write_fmt);
}
