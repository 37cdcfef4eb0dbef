//! The platform report printed at start: what this CPU offers perfvisor.
//! Every line is stable text the test runner asserts on.

use crate::arch::msr::rdmsr_checked;
use log::{info, warn};
use pmu::{ArchPerfmon, CpuidRegs, PerfCapabilities};
use raw_cpuid::native_cpuid::cpuid_count;
use raw_cpuid::CpuId;
use vmx::VmxCaps;

/// CPUID leaf of architectural performance monitoring (SDM vol. 2A, CPUID).
const CPUID_ARCH_PERFMON: u32 = 0xa;

pub struct Platform {
    /// `Some` iff CPUID.1:ECX.VMX[bit 5] is set (the capability MSRs #GP otherwise).
    pub vmx_caps: Option<VmxCaps>,
}

pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidRegs {
    let r = cpuid_count(leaf, subleaf);
    CpuidRegs::new(r.eax, r.ebx, r.ecx, r.edx)
}

/// Probes and prints the platform.
pub fn report() -> Platform {
    let cpu = CpuId::new();
    let max_leaf = cpuid(0, 0).eax;
    let vendor = cpu.get_vendor_info();
    let features = cpu.get_feature_info();
    let brand = cpu.get_processor_brand_string();
    let (family, model, stepping) =
        features.as_ref().map_or((0, 0, 0), |f| (f.family_id(), f.model_id(), f.stepping_id()));
    info!(
        "cpu: {} family {:#x} model {:#x} stepping {:#x} \"{}\" (max basic leaf {:#x})",
        vendor.as_ref().map_or("unknown-vendor", |v| v.as_str()),
        family,
        model,
        stepping,
        brand.as_ref().map_or("", |b| b.as_str().trim()),
        max_leaf
    );
    let has = |f: fn(&raw_cpuid::FeatureInfo) -> bool| features.as_ref().is_some_and(f);
    if has(raw_cpuid::FeatureInfo::has_hypervisor) {
        info!("cpu: running under another hypervisor (CPUID.1:ECX[31] set)");
    }

    let vmx = has(raw_cpuid::FeatureInfo::has_vmx);
    let vmx_caps = if vmx {
        info!("vmx: supported by the CPU (CPUID.1:ECX.VMX = 1)");
        let caps = VmxCaps::read(|m| rdmsr_checked(m).ok());
        report_vmx(&caps);
        Some(caps)
    } else {
        None
    };

    let pmu = if max_leaf >= CPUID_ARCH_PERFMON {
        ArchPerfmon::decode(cpuid(CPUID_ARCH_PERFMON, 0))
    } else {
        ArchPerfmon::decode(CpuidRegs::default())
    };
    let raw = pmu.raw;
    info!("pmu: CPUID.0AH eax={:#010x} ebx={:#010x} ecx={:#010x} edx={:#010x}", raw.eax, raw.ebx, raw.ecx, raw.edx);
    info!("pmu: {pmu}");

    if has(raw_cpuid::FeatureInfo::has_pdcm) {
        match rdmsr_checked(pmu::msr::IA32_PERF_CAPABILITIES) {
            Ok(v) => {
                let caps = PerfCapabilities::from_bits_retain(v);
                info!("pmu: IA32_PERF_CAPABILITIES = {caps}");
            }
            Err(_) => {
                warn!(
                    "pmu: IA32_PERF_CAPABILITIES (MSR 0x345) read raised #GP although \
                     CPUID.1:ECX.PDCM = 1; treating it as absent"
                );
            }
        }
    } else {
        info!("pmu: CPUID.1:ECX.PDCM = 0: no IA32_PERF_CAPABILITIES");
    }

    Platform { vmx_caps }
}

fn report_vmx(caps: &VmxCaps) {
    let basic = caps.basic();
    info!(
        "vmx: VMCS revision {:#x}, region {} bytes, memory type {}, TRUE controls: {}",
        basic.revision_id(),
        basic.region_size(),
        basic.memory_type(),
        if basic.true_controls() { "yes" } else { "no" }
    );
    let raw = |c: vmx::ControlCap| (u64::from(c.may_be_one) << 32) | u64::from(c.must_be_one);
    info!(
        "vmx: capability MSRs basic {:#x} pin {:#x} primary {:#x} secondary {:#x} exit {:#x} entry {:#x} \
         ept/vpid {:#x} cr0 fixed {:#x}/{:#x} cr4 fixed {:#x}/{:#x}",
        caps.basic,
        raw(caps.pin),
        raw(caps.primary),
        raw(caps.secondary),
        raw(caps.exit),
        raw(caps.entry),
        caps.ept_vpid,
        caps.cr0_fixed0,
        caps.cr0_fixed1,
        caps.cr4_fixed0,
        caps.cr4_fixed1
    );
    for (name, available) in caps.features() {
        info!("vmx: control {name}: {}", if available { "yes" } else { "no" });
    }
}
