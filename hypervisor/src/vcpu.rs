//! The virtual CPU: its VMCS (controls from the capability MSRs, full host
//! state, a 64-bit guest), its registers, and VM entry (SDM vol. 3C ch. 25
//! "VMCS", ch. 27 "VM Entries", ch. 28 "VM Exits").

use crate::arch::gdt;
use crate::memory::{self, PhysFrame};
use crate::vmx_hw::{self, ActiveVmcs};
use core::arch::global_asm;
use core::fmt;
use vmx::caps::MissingControls;
use vmx::controls::PmuControlNeeds;
use vmx::ept::{Ept, EptError, EptPerms, MemoryType};
use vmx::msr_bitmap::{Intercept, MsrBitmap};
use vmx::msr_list::MsrEntry;
use vmx::vmcs::{Vmcs16, Vmcs32, Vmcs64, VmcsAccess, VmcsError, VmcsNatural};
use vmx::VmxCaps;
use x86_64::registers::control::{Cr0, Cr3, Cr4, Cr4Flags};
use x86_64::registers::model_specific::Efer;

/// The guest's general registers (not in the VMCS), in the order the
/// entry/exit code below stores them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegisters {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

// perfvisor_vm_run(regs: *mut GuestRegisters, launched: u64) -> u64
// Saves the host's callee-saved registers, points HOST_RSP at the saved
// `regs` pointer, loads the guest's registers and executes VMLAUNCH (first
// time) or VMRESUME. It returns 1 if the instruction failed (VMfail; the
// error is in the VMCS) and 0 after a VM exit, which lands on
// perfvisor_vm_exit (HOST_RIP) with RSP = HOST_RSP.
global_asm!(
    ".pushsection .text.perfvisor_vm, \"ax\"",
    ".global perfvisor_vm_run",
    "perfvisor_vm_run:",
    "    push rbx",
    "    push rbp",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    push rdi",
    "    mov rax, 0x6c14", // HOST_RSP
    "    vmwrite rax, rsp",
    "    jbe 3f",
    "    test rsi, rsi",
    "    mov rax, [rdi + 0]",
    "    mov rbx, [rdi + 8]",
    "    mov rcx, [rdi + 16]",
    "    mov rdx, [rdi + 24]",
    "    mov rsi, [rdi + 32]",
    "    mov rbp, [rdi + 48]",
    "    mov r8, [rdi + 56]",
    "    mov r9, [rdi + 64]",
    "    mov r10, [rdi + 72]",
    "    mov r11, [rdi + 80]",
    "    mov r12, [rdi + 88]",
    "    mov r13, [rdi + 96]",
    "    mov r14, [rdi + 104]",
    "    mov r15, [rdi + 112]",
    "    mov rdi, [rdi + 40]",
    "    jnz 2f",
    "    vmlaunch",
    "    jmp 3f",
    "2:",
    "    vmresume",
    "3:",
    "    pop rdi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    mov eax, 1",
    "    ret",
    ".global perfvisor_vm_exit",
    "perfvisor_vm_exit:",
    "    push rdi",
    "    mov rdi, [rsp + 8]",
    "    mov [rdi + 0], rax",
    "    mov [rdi + 8], rbx",
    "    mov [rdi + 16], rcx",
    "    mov [rdi + 24], rdx",
    "    mov [rdi + 32], rsi",
    "    mov [rdi + 48], rbp",
    "    mov [rdi + 56], r8",
    "    mov [rdi + 64], r9",
    "    mov [rdi + 72], r10",
    "    mov [rdi + 80], r11",
    "    mov [rdi + 88], r12",
    "    mov [rdi + 96], r13",
    "    mov [rdi + 104], r14",
    "    mov [rdi + 112], r15",
    "    pop rax",
    "    mov [rdi + 40], rax",
    "    add rsp, 8",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    xor eax, eax",
    "    ret",
    ".popsection",
);

unsafe extern "C" {
    fn perfvisor_vm_run(regs: *mut GuestRegisters, launched: u64) -> u64;
    static perfvisor_vm_exit: u8;
}

/// Why the VMCS could not be set up.
pub enum SetupError {
    Controls(MissingControls),
    Vmcs(VmcsError),
    Ept(EptError),
    OutOfMemory,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Controls(m) => write!(f, "{m}"),
            Self::Vmcs(e) => write!(f, "{e}"),
            Self::Ept(e) => write!(f, "building the EPT failed: {e:?}"),
            Self::OutOfMemory => f.write_str("the hypervisor's frame pool is exhausted"),
        }
    }
}

impl From<VmcsError> for SetupError {
    fn from(e: VmcsError) -> Self {
        Self::Vmcs(e)
    }
}

impl From<MissingControls> for SetupError {
    fn from(e: MissingControls) -> Self {
        Self::Controls(e)
    }
}

/// The guest's initial state.
pub struct GuestStart {
    pub rip: u64,
    pub rsp: u64,
    pub cr3: u64,
    pub rdi: u64,
    pub rsi: u64,
    /// A Linux guest's platform (`crate::linux`); `None`: the test kernel's.
    pub linux: Option<LinuxPlatform>,
}

/// What a Linux guest gets beyond the test kernel's platform.
pub struct LinuxPlatform {
    /// The boot protocol's GDT (guest-physical, identity-mapped).
    pub gdt: u64,
    /// Usable low memory (below 640 KiB).
    pub low: [perfvisor_abi::RamRange; perfvisor_abi::MAX_RAM_RANGES],
    pub low_count: usize,
    /// The firmware's ACPI regions (e820 type 3 or 4), mapped for the guest.
    pub acpi: [(perfvisor_abi::RamRange, u32); perfvisor_abi::MAX_RAM_RANGES],
    pub acpi_count: usize,
}

pub struct Vcpu {
    pub regs: GuestRegisters,
    launched: bool,
    msr_bitmap: PhysFrame,
    /// The MSR-list entry holding the guest's GLOBAL_CTRL (VM-exit store
    /// and VM-entry load list at once), where the VMCS field is not used.
    global_ctrl_list: Option<PhysFrame>,
    ept: Ept,
    eptp: u64,
    /// Guest RAM, as mapped in the EPT.
    ram: [(u64, u64); perfvisor_abi::MAX_RAM_RANGES],
    /// Pages made read-only until their next write (TrapWrite hypercall).
    write_traps: [Option<u64>; perfvisor_abi::MAX_WRITE_TRAPS],
}

/// The VPID of the one guest (0 is the host's).
pub const VPID: u16 = 1;

/// A 16-KiB stack is not needed: exits run on the kernel's stack, whose
/// pointer `perfvisor_vm_run` writes to HOST_RSP before every entry.
fn alloc(what: &'static str) -> Result<PhysFrame, SetupError> {
    memory::allocate_frame().ok_or_else(|| {
        log::error!("vmx: no frame for the {what}");
        SetupError::OutOfMemory
    })
}

impl Vcpu {
    /// Allocates and fills a VMCS for a 64-bit guest starting at `start`,
    /// with EPT identity-mapping `ram` and every MSR intercepted except
    /// `passthrough_msrs`.
    pub fn new(
        caps: &VmxCaps,
        ram: &[perfvisor_abi::RamRange],
        passthrough_msrs: impl IntoIterator<Item = u32>,
        start: &GuestStart,
        vpmu: &crate::vpmu::Vpmu,
    ) -> Result<Self, SetupError> {
        let vmcs = alloc("VMCS")?;
        let msr_bitmap = alloc("MSR bitmap")?;
        // I/O bitmaps A (ports 0-0x7fff) and B (0x8000-0xffff): every port
        // exits but the allow-list (SDM vol. 3C §25.6.4; `guard.rs`).
        let io_bitmaps = [alloc("I/O bitmap A")?, alloc("I/O bitmap B")?];
        let pmu_on = vpmu.engine.mode() != pmu::vpmu::Mode::Off;
        let by_controls = pmu_on && vpmu.switch == crate::vpmu::GlobalCtrlSwitch::Controls;
        // The guest's GLOBAL_CTRL round-trips through the VMCS guest field when
        // the CPU both saves it at exit and loads it at entry (SDM vol. 3C
        // §28.3.1, §27.3.2.1). Otherwise one MSR-list entry serves as the
        // VM-exit MSR-store list and the VM-entry MSR-load list alike: what the
        // exit stores (§28.4) the next entry loads (§27.4), so the guest's own
        // writes survive without any work on the exit path.
        let round_trip_in_vmcs = by_controls && vpmu.save_control;
        let guest_list = if pmu_on && !round_trip_in_vmcs { Some(alloc("GLOBAL_CTRL MSR list")?) } else { None };
        // The host's 0 at VM exit: the exit control, or a VM-exit MSR-load list
        // (stores happen before loads, §28.6).
        let host_list = if pmu_on && !by_controls { Some(alloc("VM-exit MSR-load list")?) } else { None };
        let map = memory::phys_map();
        // SAFETY: the frames were just allocated for these structures and
        // are mapped writable; nothing else refers to them yet.
        unsafe {
            map.ptr::<u32>(vmcs.0).write(caps.basic().revision_id());
            let bitmap = &mut *map.ptr::<MsrBitmap>(msr_bitmap.0);
            *bitmap = MsrBitmap::intercept_all();
            for msr in passthrough_msrs {
                let _ = bitmap.set_read(msr, Intercept::PassThrough);
                let _ = bitmap.set_write(msr, Intercept::PassThrough);
            }
            for msr in crate::exits::WRITE_INTERCEPTED_MSRS {
                let _ = bitmap.set_write(msr, Intercept::Exit);
            }
            vpmu.engine.install_msr_bitmap(bitmap);
            for frame in io_bitmaps {
                core::ptr::write_bytes(map.ptr::<u8>(frame.0), 0xff, 4096);
            }
            for &port in vmx::guard::IO_ALLOW_LIST {
                let frame = io_bitmaps[usize::from(port >> 15)];
                let byte = map.ptr::<u8>(frame.0 + u64::from((port & 0x7fff) / 8));
                *byte &= !(1 << (port % 8));
            }
            if start.linux.is_some() {
                for (ports, _why) in crate::linux::IO_PASSTHROUGH {
                    for port in ports.clone() {
                        let frame = io_bitmaps[usize::from(port >> 15)];
                        let byte = map.ptr::<u8>(frame.0 + u64::from((port & 0x7fff) / 8));
                        *byte &= !(1 << (port % 8));
                    }
                }
                for msr in crate::linux::PASSTHROUGH_MSRS {
                    let _ = bitmap.set_read(msr, Intercept::PassThrough);
                    let _ = bitmap.set_write(msr, Intercept::PassThrough);
                }
                for msr in crate::linux::READ_PASSTHROUGH_MSRS {
                    let _ = bitmap.set_read(msr, Intercept::PassThrough);
                }
            }
            let global_ctrl = |value| MsrEntry { index: pmu::msr::IA32_PERF_GLOBAL_CTRL, reserved: 0, value };
            if let Some(list) = guest_list {
                map.ptr::<MsrEntry>(list.0).write(global_ctrl(vpmu.engine.global_ctrl));
            }
            if let Some(list) = host_list {
                map.ptr::<MsrEntry>(list.0).write(global_ctrl(0));
            }
            vmx_hw::vmclear(vmcs.0)?;
            vmx_hw::vmptrld(vmcs.0)?;
        }

        // EPT: guest RAM identity-mapped, write-back; nothing else.
        let mut frames = memory::PoolFrames;
        let allow_1g = caps.ept_vpid & (1 << 17) != 0;
        let mut ept = Ept::new(&mut frames, allow_1g).map_err(SetupError::Ept)?;
        for r in ram {
            ept.map(&mut frames, r.start, r.start, r.end - r.start, EptPerms::RWX, MemoryType::WriteBack)
                .map_err(SetupError::Ept)?;
        }
        if let Some(linux) = &start.linux {
            for r in &linux.low[..linux.low_count] {
                ept.map(&mut frames, r.start, r.start, r.end - r.start, EptPerms::RWX, MemoryType::WriteBack)
                    .map_err(SetupError::Ept)?;
            }
            // Firmware's low pages (BIOS data, EBDA, VGA memory, option and
            // system ROMs, unlisted holes): read-only, uncached above 640 KiB
            // (Linux reads the EBDA, the MP table and ROM signatures there).
            // The bootloader's pages stay unmapped.
            // The I/O APIC's registers (uncached): the guest routes its
            // interrupts (it cannot start other CPUs through it: no SIPI
            // delivery mode; README "Threat model").
            let ioapic = crate::linux::IOAPIC_PAGE;
            ept.map(&mut frames, ioapic, ioapic, 4096, EptPerms::READ | EptPerms::WRITE, MemoryType::Uncacheable)
                .map_err(SetupError::Ept)?;
            // The ACPI tables and NVS: the firmware's, not perfvisor's.
            for (r, _) in &linux.acpi[..linux.acpi_count] {
                ept.map(&mut frames, r.start, r.start, r.end - r.start, EptPerms::RWX, MemoryType::WriteBack)
                    .map_err(SetupError::Ept)?;
            }
            for page in (0..crate::linux::LOW_END).step_by(4096) {
                if memory::low_page_is_firmware(page) {
                    let kind =
                        if page < crate::linux::LOW_RAM_END { MemoryType::WriteBack } else { MemoryType::Uncacheable };
                    ept.map(&mut frames, page, page, 4096, EptPerms::READ, kind).map_err(SetupError::Ept)?;
                }
            }
        }
        let eptp = ept.eptp(false);

        let mut v = ActiveVmcs;
        let needs = PmuControlNeeds {
            load_global_ctrl_on_entry: round_trip_in_vmcs,
            load_global_ctrl_on_exit: by_controls,
            save_global_ctrl_on_exit: round_trip_in_vmcs,
            rdpmc_exiting: vpmu.engine.rdpmc_exiting(),
        };
        write_controls(&mut v, caps, needs, start.linux.is_none())?;
        if round_trip_in_vmcs {
            v.write64(Vmcs64::GuestPerfGlobalCtrl, vpmu.engine.global_ctrl)?;
        }
        if by_controls {
            v.write64(Vmcs64::HostPerfGlobalCtrl, 0)?;
        }
        if let Some(list) = guest_list {
            v.write64(Vmcs64::ExitMsrStoreAddress, list.0)?;
            v.write32(Vmcs32::ExitMsrStoreCount, 1)?;
            v.write64(Vmcs64::EntryMsrLoadAddress, list.0)?;
            v.write32(Vmcs32::EntryMsrLoadCount, 1)?;
        }
        if let Some(list) = host_list {
            v.write64(Vmcs64::ExitMsrLoadAddress, list.0)?;
            v.write32(Vmcs32::ExitMsrLoadCount, 1)?;
        }
        v.write64(Vmcs64::MsrBitmap, msr_bitmap.0)?;
        v.write64(Vmcs64::IoBitmapA, io_bitmaps[0].0)?;
        v.write64(Vmcs64::IoBitmapB, io_bitmaps[1].0)?;
        v.write64(Vmcs64::Eptp, eptp)?;
        v.write16(Vmcs16::Vpid, VPID)?;
        write_host_state(&mut v)?;
        write_guest_state(&mut v, caps, start)?;
        vmx_hw::invept_single_context(eptp)?;
        vmx_hw::invvpid_single_context(VPID)?;
        log::info!(
            "vmx: VMCS at {:#x}, EPT root {:#x} ({} RAM ranges, 1-GiB pages: {}), VPID {VPID}",
            vmcs.0,
            eptp & !0xfff,
            ram.len(),
            if allow_1g { "yes" } else { "no" }
        );
        let mut ram_ranges = [(0, 0); perfvisor_abi::MAX_RAM_RANGES];
        for (slot, r) in ram_ranges.iter_mut().zip(ram) {
            *slot = (r.start, r.end);
        }
        Ok(Self {
            regs: GuestRegisters { rdi: start.rdi, rsi: start.rsi, ..Default::default() },
            launched: false,
            msr_bitmap,
            global_ctrl_list: guest_list,
            ept,
            eptp,
            ram: ram_ranges,
            write_traps: [None; perfvisor_abi::MAX_WRITE_TRAPS],
        })
    }

    /// Enters the guest and returns at its next VM exit. `Err`: VMLAUNCH or
    /// VMRESUME failed (VMfailInvalid/VMfailValid), with the error.
    pub fn enter(&mut self) -> Result<(), VmcsError> {
        // SAFETY: the VMCS is current and complete (host state points back
        // to perfvisor_vm_exit on this stack); the guest runs in its own
        // EPT-confined memory and returns here on every exit.
        let failed = unsafe { perfvisor_vm_run(&mut self.regs, u64::from(self.launched)) };
        if failed != 0 {
            let error = ActiveVmcs.read32(Vmcs32::InstructionError).unwrap_or(0);
            let which = if self.launched { vmx::vmcs::instruction::VMRESUME } else { vmx::vmcs::instruction::VMLAUNCH };
            return Err(VmcsError { encoding: which, instruction_error: error });
        }
        self.launched = true;
        Ok(())
    }

    /// Makes the guest RAM page at `gpa` read-only until its next write
    /// (TrapWrite hypercall). `false`: not guest RAM, or no free slot.
    pub fn trap_write(&mut self, gpa: u64) -> bool {
        let page = gpa & !0xfff;
        let in_ram = self.ram.iter().any(|&(start, end)| start <= page && page + 0x1000 <= end);
        let Some(slot) = self.write_traps.iter_mut().find(|t| t.is_none()) else { return false };
        if !in_ram
            || self.ept.protect(&mut memory::PoolFrames, page, 0x1000, EptPerms::READ | EptPerms::EXECUTE).is_err()
        {
            return false;
        }
        *slot = Some(page);
        vmx_hw::invept_single_context(self.eptp).is_ok()
    }

    /// A write hit a trapped page: give write access back. `false`: `gpa`
    /// is not a trapped page.
    pub fn release_write_trap(&mut self, gpa: u64) -> bool {
        let page = gpa & !0xfff;
        let Some(slot) = self.write_traps.iter_mut().find(|t| **t == Some(page)) else { return false };
        *slot = None;
        self.ept.protect(&mut memory::PoolFrames, page, 0x1000, EptPerms::RWX).is_ok()
            && vmx_hw::invept_single_context(self.eptp).is_ok()
    }

    /// The MSR bitmap, to change routing between VM exits.
    pub fn msr_bitmap_mut(&mut self) -> &mut MsrBitmap {
        // SAFETY: the frame was allocated for the bitmap in `new` and stays
        // allocated; the CPU reads it only while the guest runs, never while
        // this exclusive borrow of the vCPU exists (single CPU, root mode).
        unsafe { &mut *memory::phys_map().ptr::<MsrBitmap>(self.msr_bitmap.0) }
    }

    /// Sets the guest's GLOBAL_CTRL for the next VM entry.
    pub fn set_guest_global_ctrl(&mut self, value: u64) -> Result<(), VmcsError> {
        match self.global_ctrl_list {
            Some(list) => {
                // SAFETY: the list frame is ours; the CPU uses it only at VM entry and exit.
                unsafe { (*memory::phys_map().ptr::<MsrEntry>(list.0)).value = value };
                Ok(())
            }
            None => ActiveVmcs.write64(Vmcs64::GuestPerfGlobalCtrl, value),
        }
    }

    /// The guest's GLOBAL_CTRL as the last VM exit saved it.
    pub fn saved_global_ctrl(&self) -> Result<u64, VmcsError> {
        match self.global_ctrl_list {
            // SAFETY: the list frame is ours, written by the CPU at VM exit only.
            Some(list) => Ok(unsafe { memory::phys_map().ptr::<MsrEntry>(list.0).read_volatile().value }),
            None => ActiveVmcs.read64(Vmcs64::GuestPerfGlobalCtrl),
        }
    }
}

/// `hlt_exiting`: the test kernel's HLT exits (it yields to perfvisor and
/// charges the watchdog); a Linux guest's does not: its idle loop halts the
/// CPU until its own interrupt arrives, with no exit (issue 10's target of
/// 0 exits per idle second), where the CPU allows HLT exiting off.
fn write_controls(
    v: &mut ActiveVmcs,
    caps: &VmxCaps,
    pmu: PmuControlNeeds,
    hlt_exiting: bool,
) -> Result<(), SetupError> {
    let vmx::controls::ResolvedControls { pin, mut primary, secondary, exit, entry } =
        vmx::controls::resolve_for_guest(caps, pmu)?;
    let hlt = vmx::controls::PrimaryControls::HLT_EXITING.bits();
    if !hlt_exiting && caps.primary.must_be_one & hlt == 0 {
        primary &= !hlt;
    }
    v.write32(Vmcs32::PinControls, pin)?;
    v.write32(Vmcs32::PrimaryControls, primary)?;
    v.write32(Vmcs32::SecondaryControls, secondary)?;
    v.write32(Vmcs32::ExitControls, exit)?;
    v.write32(Vmcs32::EntryControls, entry)?;
    // #MC only: a machine check in guest mode is perfvisor's to report
    // (`guard.rs`), not the guest's IDT's.
    v.write32(Vmcs32::ExceptionBitmap, 1 << 18)?;
    v.write32(Vmcs32::Cr3TargetCount, 0)?;
    v.write32(Vmcs32::ExitMsrStoreCount, 0)?;
    v.write32(Vmcs32::ExitMsrLoadCount, 0)?;
    v.write32(Vmcs32::EntryMsrLoadCount, 0)?;
    v.write32(Vmcs32::EntryInterruptionInfo, 0)?;
    crate::events::init(caps.pin.allows(vmx::controls::PinControls::PREEMPTION_TIMER.bits()));
    log::debug!(
        "vmx: controls pin {pin:#x} primary {primary:#x} secondary {secondary:#x} exit {exit:#x} entry {entry:#x}"
    );
    Ok(())
}

fn read_msr(msr: u32) -> u64 {
    crate::arch::msr::rdmsr_checked(msr).unwrap_or(0)
}

/// Host state (SDM vol. 3C §25.5, checks in §27.2.2-27.2.4).
fn write_host_state(v: &mut ActiveVmcs) -> Result<(), SetupError> {
    let sel = gdt::selectors();
    v.write_natural(VmcsNatural::HostCr0, Cr0::read_raw())?;
    v.write_natural(VmcsNatural::HostCr3, Cr3::read_raw().0.start_address().as_u64())?;
    v.write_natural(VmcsNatural::HostCr4, Cr4::read_raw())?;
    v.write16(Vmcs16::HostCsSelector, sel.code.0)?;
    for f in [Vmcs16::HostSsSelector, Vmcs16::HostDsSelector, Vmcs16::HostEsSelector] {
        v.write16(f, sel.data.0)?;
    }
    v.write16(Vmcs16::HostFsSelector, 0)?;
    v.write16(Vmcs16::HostGsSelector, 0)?;
    v.write16(Vmcs16::HostTrSelector, sel.tss.0)?;
    v.write_natural(VmcsNatural::HostFsBase, 0)?;
    v.write_natural(VmcsNatural::HostGsBase, 0)?;
    v.write_natural(VmcsNatural::HostTrBase, gdt::tss_base())?;
    v.write_natural(VmcsNatural::HostGdtrBase, x86_64::instructions::tables::sgdt().base.as_u64())?;
    v.write_natural(VmcsNatural::HostIdtrBase, x86_64::instructions::tables::sidt().base.as_u64())?;
    v.write32(Vmcs32::HostSysenterCs, 0)?;
    v.write_natural(VmcsNatural::HostSysenterEsp, 0)?;
    v.write_natural(VmcsNatural::HostSysenterEip, 0)?;
    v.write64(Vmcs64::HostEfer, Efer::read_raw())?;
    v.write64(Vmcs64::HostPat, read_msr(IA32_PAT))?;
    v.write_natural(VmcsNatural::HostRip, &raw const perfvisor_vm_exit as u64)?;
    // HOST_RSP is written by perfvisor_vm_run before each entry.
    Ok(())
}

pub const IA32_PAT: u32 = 0x277;
/// The PAT's power-up value (SDM vol. 3A §13.12.4).
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

/// A flat 64-bit guest (SDM vol. 3C §27.3.1 checks).
fn write_guest_state(v: &mut ActiveVmcs, caps: &VmxCaps, start: &GuestStart) -> Result<(), SetupError> {
    // CR0: PE, MP, ET, NE, WP, PG plus whatever VMX requires. The mask
    // makes guest writes to the fixed bits exit; the shadow is what it reads.
    let cr0 = caps.fix_cr0(0x8005_0033);
    let cr4 = caps.fix_cr4(Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits());
    let cr4_shadow = cr4 & !Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS.bits();
    v.write_natural(VmcsNatural::GuestCr0, cr0)?;
    v.write_natural(VmcsNatural::Cr0ReadShadow, cr0)?;
    v.write_natural(VmcsNatural::Cr0GuestHostMask, caps.cr0_fixed0 | !caps.cr0_fixed1)?;
    v.write_natural(VmcsNatural::GuestCr4, cr4)?;
    v.write_natural(VmcsNatural::Cr4ReadShadow, cr4_shadow)?;
    v.write_natural(VmcsNatural::Cr4GuestHostMask, caps.cr4_fixed0 | !caps.cr4_fixed1)?;
    v.write_natural(VmcsNatural::GuestCr3, start.cr3)?;
    v.write_natural(VmcsNatural::GuestDr7, 0x400)?;
    v.write_natural(VmcsNatural::GuestRsp, start.rsp)?;
    v.write_natural(VmcsNatural::GuestRip, start.rip)?;
    v.write_natural(VmcsNatural::GuestRflags, 0x2)?;
    // LME | LMA: 64-bit mode from the first instruction.
    v.write64(Vmcs64::GuestEfer, (1 << 8) | (1 << 10))?;
    v.write64(Vmcs64::GuestPat, PAT_RESET)?;
    v.write64(Vmcs64::GuestDebugCtl, 0)?;
    v.write64(Vmcs64::VmcsLinkPointer, u64::MAX)?;

    // Segments: CS 64-bit code (selector 8), data (selector 0x10) elsewhere,
    // TR a busy 64-bit TSS, LDTR unusable. Access rights: SDM vol. 3C §25.4.1.
    const CODE64: u32 = 0xa09b;
    const DATA: u32 = 0xc093;
    const TSS_BUSY: u32 = 0x8b;
    const UNUSABLE: u32 = 1 << 16;
    let segments = [
        (
            Vmcs16::GuestCsSelector,
            Vmcs32::GuestCsLimit,
            Vmcs32::GuestCsAccessRights,
            VmcsNatural::GuestCsBase,
            0x08,
            CODE64,
        ),
        (
            Vmcs16::GuestSsSelector,
            Vmcs32::GuestSsLimit,
            Vmcs32::GuestSsAccessRights,
            VmcsNatural::GuestSsBase,
            0x10,
            DATA,
        ),
        (
            Vmcs16::GuestDsSelector,
            Vmcs32::GuestDsLimit,
            Vmcs32::GuestDsAccessRights,
            VmcsNatural::GuestDsBase,
            0x10,
            DATA,
        ),
        (
            Vmcs16::GuestEsSelector,
            Vmcs32::GuestEsLimit,
            Vmcs32::GuestEsAccessRights,
            VmcsNatural::GuestEsBase,
            0x10,
            DATA,
        ),
        (
            Vmcs16::GuestFsSelector,
            Vmcs32::GuestFsLimit,
            Vmcs32::GuestFsAccessRights,
            VmcsNatural::GuestFsBase,
            0x10,
            DATA,
        ),
        (
            Vmcs16::GuestGsSelector,
            Vmcs32::GuestGsLimit,
            Vmcs32::GuestGsAccessRights,
            VmcsNatural::GuestGsBase,
            0x10,
            DATA,
        ),
    ];
    // A Linux guest: the boot protocol's selectors (CS 0x10, data 0x18) in its GDT.
    let (code_sel, data_sel, tr_sel) = if start.linux.is_some() { (0x10, 0x18, 0x20) } else { (0x08, 0x10, 0x18) };
    for (selector, limit, rights, base, value, ar) in segments {
        let value = if value == 0x08 { code_sel } else { data_sel };
        v.write16(selector, value)?;
        v.write32(limit, 0xffff_ffff)?;
        v.write32(rights, ar)?;
        v.write_natural(base, 0)?;
    }
    v.write16(Vmcs16::GuestTrSelector, tr_sel)?;
    v.write32(Vmcs32::GuestTrLimit, 0x67)?;
    v.write32(Vmcs32::GuestTrAccessRights, TSS_BUSY)?;
    v.write_natural(VmcsNatural::GuestTrBase, 0)?;
    v.write16(Vmcs16::GuestLdtrSelector, 0)?;
    v.write32(Vmcs32::GuestLdtrLimit, 0)?;
    v.write32(Vmcs32::GuestLdtrAccessRights, UNUSABLE)?;
    v.write_natural(VmcsNatural::GuestLdtrBase, 0)?;
    // The guest loads its own GDT and IDT first thing.
    let (gdt_base, gdt_limit) = match &start.linux {
        Some(l) => (l.gdt, (core::mem::size_of_val(&crate::linux::BOOT_GDT) - 1) as u32),
        None => (0, 0),
    };
    v.write_natural(VmcsNatural::GuestGdtrBase, gdt_base)?;
    v.write32(Vmcs32::GuestGdtrLimit, gdt_limit)?;
    v.write_natural(VmcsNatural::GuestIdtrBase, 0)?;
    v.write32(Vmcs32::GuestIdtrLimit, 0)?;
    v.write32(Vmcs32::GuestSysenterCs, 0)?;
    v.write_natural(VmcsNatural::GuestSysenterEsp, 0)?;
    v.write_natural(VmcsNatural::GuestSysenterEip, 0)?;
    v.write32(Vmcs32::GuestInterruptibility, 0)?;
    v.write32(Vmcs32::GuestActivityState, 0)?;
    v.write_natural(VmcsNatural::GuestPendingDebugExceptions, 0)?;
    Ok(())
}
