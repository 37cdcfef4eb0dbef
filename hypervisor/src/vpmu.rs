//! The pmu crate's engine wired to the real PMU: host discovery, the mode
//! choice, parking the hardware, and the `PmuHardware` the engine drives.

use crate::arch::msr::{rdmsr_checked, wrmsr_checked};
use crate::report::cpuid;
use crate::vmx_hw::ActiveVmcs;
use log::{info, warn};
use pmu::guest::{GuestPmu, GuestPmuRequest};
use pmu::host::{HostPmu, HostPmuInputs};
use pmu::hw::{GpFault, PmuHardware, RDPMC_FIXED};
use pmu::mode::{self, ModeError, ModeRequest, VmxPmuControls};
use pmu::msr;
use pmu::vpmu::{Mode, VirtualPmu};
use pmu::ArchPerfmon;
use vmx::controls::{EntryControls, ExitControls};
use vmx::vmcs::{Vmcs64, VmcsAccess};
use vmx::VmxCaps;

/// The PMU instructions on this CPU. Counter reads use RDMSR of the
/// counter's MSR rather than RDPMC: it reads the same counter, and it also
/// works where RDPMC is a stub (Bochs returns 0 and #GPs on fixed counters),
/// so one path runs everywhere. On hardware RDPMC would be a few cycles
/// cheaper per counter.
///
/// The context's IA32_DEBUGCTL is the guest's, in the current VMCS (the
/// VM-exit control "save debug controls" stored it, the entry control
/// "load debug controls" loads it): the engine asks for it only in a VM
/// exit, when a software-counted overflow signals a PMI.
pub struct KernelPmu;

impl PmuHardware for KernelPmu {
    fn rdmsr(&mut self, msr: u32) -> Result<u64, GpFault> {
        rdmsr_checked(msr).map_err(|_| GpFault)
    }

    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault> {
        // SAFETY: the engine writes only PMU MSRs (counters, selectors,
        // global control/status) of the context it switches; none affects
        // memory, paging or interrupt routing, and a #GP is caught.
        unsafe { wrmsr_checked(msr, value) }.map_err(|_| GpFault)
    }

    fn rdpmc(&mut self, index: u32) -> Result<u64, GpFault> {
        let msr = if index & RDPMC_FIXED != 0 {
            msr::IA32_FIXED_CTR0 + (index & !RDPMC_FIXED)
        } else {
            msr::IA32_PMC0 + index
        };
        self.rdmsr(msr)
    }

    fn debugctl(&mut self) -> Result<u64, GpFault> {
        ActiveVmcs.read64(Vmcs64::GuestDebugCtl).map_err(|_| GpFault)
    }

    fn set_debugctl(&mut self, value: u64) -> Result<(), GpFault> {
        ActiveVmcs.write64(Vmcs64::GuestDebugCtl, value).map_err(|_| GpFault)
    }
}

/// CPUID.(EAX=07H,ECX=1):EAX[8]: leaf 23H is enumerated.
const LEAF7_1_EAX_ARCH_PERFMON_EXT: u32 = 1 << 8;

/// Reads what host discovery needs (CPUID 0AH, 1, 7.1, 23H; PERF_CAPABILITIES).
pub fn discover_host() -> HostPmu {
    let max = cpuid(0, 0).eax;
    let pdcm = cpuid(1, 0).ecx & (1 << 15) != 0;
    let leaf_23 =
        (max >= 0x23 && cpuid(7, 1).eax & LEAF7_1_EAX_ARCH_PERFMON_EXT != 0).then(|| [cpuid(0x23, 0), cpuid(0x23, 1)]);
    HostPmu::discover(&HostPmuInputs {
        leaf_0a: if max >= 0xa { cpuid(0xa, 0) } else { Default::default() },
        pdcm,
        perf_capabilities: if pdcm { rdmsr_checked(msr::IA32_PERF_CAPABILITIES).ok() } else { None },
        leaf_23,
    })
}

/// How the guest's GLOBAL_CTRL is switched at VM entry and exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalCtrlSwitch {
    /// The VM-entry/VM-exit "load IA32_PERF_GLOBAL_CTRL" controls.
    Controls,
    /// One-entry VM-entry/VM-exit MSR-load lists, where those controls are
    /// missing (or the boot config asks: `vpmu_switch=lists`).
    MsrLists,
}

/// The vPMU, configured.
pub struct Vpmu {
    pub switch: GlobalCtrlSwitch,
    pub host: HostPmu,
    pub guest: GuestPmu,
    pub engine: VirtualPmu,
    /// The CPU saves GLOBAL_CTRL at VM exit itself (else an MSR-store list does).
    pub save_control: bool,
}

/// Why the vPMU could not be set up as the boot config asked.
pub enum VpmuError {
    Mode(ModeError),
    Guest(pmu::guest::GuestConfigError),
}

impl core::fmt::Display for VpmuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Mode(e) => write!(f, "{e}"),
            Self::Guest(e) => write!(f, "{e}"),
        }
    }
}

/// Discovers the host PMU, probes it, picks the mode (logging why), derives
/// the guest's PMU and parks the hardware.
pub fn setup(caps: &VmxCaps, request: ModeRequest, force_lists: bool) -> Result<Vpmu, VpmuError> {
    let host = discover_host();
    let faulting = if host.layout.version >= 1 { host.first_faulting_msr(&mut KernelPmu) } else { None };
    let status_set_works = faulting.is_none() && host.status_set_works(&mut KernelPmu);
    let controls = VmxPmuControls {
        load_global_ctrl_on_entry: caps.entry.allows(EntryControls::LOAD_PERF_GLOBAL_CTRL.bits()),
        load_global_ctrl_on_exit: caps.exit.allows(ExitControls::LOAD_PERF_GLOBAL_CTRL.bits()),
        save_global_ctrl_on_exit: caps.exit.allows(ExitControls::SAVE_PERF_GLOBAL_CTRL.bits()),
    };
    let choice = mode::choose(&host, faulting, status_set_works, request).map_err(VpmuError::Mode)?;
    let switch = if force_lists || !(controls.load_global_ctrl_on_entry && controls.load_global_ctrl_on_exit) {
        GlobalCtrlSwitch::MsrLists
    } else {
        GlobalCtrlSwitch::Controls
    };
    info!("pmu: vPMU mode {:?}: {}", choice.mode, choice.reason);
    let guest = match choice.mode {
        Mode::Off => GuestPmu::none(&host),
        _ => GuestPmu::derive(&host, &GuestPmuRequest::default()).map_err(VpmuError::Guest)?,
    };
    info!("pmu: the guest sees {}", ArchPerfmon::decode(guest.cpuid_0a()));
    if choice.mode != Mode::Off {
        if !host.layout.fw_write() {
            warn!(
                "pmu: no full-width counter writes (PERF_CAPABILITIES.FW_WRITE clear): counters are restored \
                 through IA32_PMCx, whose writes sign-extend bit 31 on hardware"
            );
        }
        info!(
            "pmu: the guest's GLOBAL_CTRL {}; the host's 0 loaded at VM exit by {}",
            if switch == GlobalCtrlSwitch::Controls && controls.save_global_ctrl_on_exit {
                "round-trips through the VMCS (save and load controls)"
            } else {
                "round-trips through one MSR-list entry (VM-exit store and VM-entry load list)"
            },
            if switch == GlobalCtrlSwitch::Controls { "the load control" } else { "a VM-exit MSR-load list" }
        );
        if host.park(&mut KernelPmu).is_err() {
            warn!("pmu: a PMU MSR raised #GP while parking the PMU: some register may keep the firmware's value");
        }
    }
    let engine = VirtualPmu::new(guest.layout, host.layout, choice.mode);
    Ok(Vpmu { switch, host, guest, engine, save_control: controls.save_global_ctrl_on_exit })
}

impl Vpmu {
    /// A second context with the host's whole PMU, holding a canary in
    /// counter 0 and its selector (EN clear), parked: what the PmuSwitch
    /// test hypercall switches to.
    pub fn prepare_other_context(&self) -> Result<VirtualPmu, GpFault> {
        let mut other = VirtualPmu::new(self.host.layout, self.host.layout, self.engine.mode());
        if self.engine.mode() == Mode::Off {
            return Ok(other);
        }
        let hw = &mut KernelPmu;
        other.load(hw)?;
        other.write(hw, msr::IA32_PERFEVTSEL0, crate::exits::CANARY_SELECTOR)?;
        other.write(hw, msr::IA32_PMC0, crate::exits::CANARY_COUNTER)?;
        other.put(hw)?;
        Ok(other)
    }
}
