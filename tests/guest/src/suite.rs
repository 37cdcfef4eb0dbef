//! The guest-side tests of the VMX core. Each prints, through the
//! ReportTest hypercall, `TEST name ... ok|FAILED (why)|skipped (why)`.
// The guest has no allocator: a failure's message is a fixed 256-byte buffer.
#![allow(clippy::result_large_err)]

use core::arch::x86_64::{__cpuid_count, CpuidResult};
use perfvisor_abi::{BootInfo, Hypercall, TestStatus, ABI_VERSION, HYPERCALL_ERROR};
use perfvisor_guest::faults::{rdmsr, wrmsr};
use perfvisor_guest::fmt;
use perfvisor_guest::fmtbuf::Buf;
use perfvisor_guest::hypercall;
use perfvisor_guest::pmu_checks::{self, Check};

type Outcome = Result<(), Buf>;

macro_rules! ensure {
    ($cond:expr, $($why:tt)*) => {
        if !$cond {
            return Err(fmt!($($why)*));
        }
    };
}

/// Basic exit reasons (SDM vol. 3D appendix C).
const EXIT_CPUID: u64 = 10;
const EXIT_HLT: u64 = 12;
const EXIT_RDMSR: u64 = 31;
const EXIT_WRMSR: u64 = 32;
const GP: u8 = 13;

const IA32_FEATURE_CONTROL: u32 = 0x3a;
const IA32_PAT: u32 = 0x277;
const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;

fn cpuid(leaf: u32, sub: u32) -> CpuidResult {
    __cpuid_count(leaf, sub)
}

fn hypervisor_leaf() -> Outcome {
    let r = cpuid(0x4000_0000, 0);
    let mut sig = [0u8; 12];
    sig[..4].copy_from_slice(&r.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
    sig[8..].copy_from_slice(&r.edx.to_le_bytes());
    ensure!(&sig == b"perfvisor\0\0\0", "signature {:?}", sig);
    ensure!(r.eax >= 0x4000_0001, "max hypervisor leaf {:#x}", r.eax);
    ensure!(cpuid(0x4000_0001, 0).eax == ABI_VERSION, "leaf 0x40000001 is not the ABI version");
    ensure!(cpuid(1, 0).ecx & (1 << 31) != 0, "CPUID.1:ECX.hypervisor clear");
    Ok(())
}

fn cached_values() -> Outcome {
    let a = cpuid(0, 0);
    let b = cpuid(0, 0);
    ensure!(a == b, "leaf 0 changed between reads");
    let mut vendor = [0u8; 12];
    for (i, reg) in [a.ebx, a.edx, a.ecx].into_iter().enumerate() {
        vendor[4 * i..4 * i + 4].copy_from_slice(&reg.to_le_bytes());
    }
    ensure!(&vendor == b"GenuineIntel", "vendor {:?}", vendor);
    ensure!(cpuid(1, 0).ecx & (1 << 5) == 0, "VMX is visible to the guest");
    ensure!(cpuid(0xa, 0) == cpuid(0xa, 0), "CPUID.0AH changed between reads");
    let before = hypercall::exit_count(EXIT_CPUID);
    for _ in 0..5 {
        cpuid(7, 0);
    }
    let after = hypercall::exit_count(EXIT_CPUID);
    ensure!(after - before == 5, "5 CPUIDs made {} CPUID exits", after - before);
    Ok(())
}

fn msr_passthrough() -> Outcome {
    let (rd, wr) = (hypercall::exit_count(EXIT_RDMSR), hypercall::exit_count(EXIT_WRMSR));
    let pattern = 0xffff_8000_1234_5000;
    // SAFETY: KERNEL_GS_BASE only matters to SWAPGS, which the guest never runs.
    unsafe { wrmsr(IA32_KERNEL_GS_BASE, pattern) }.map_err(|v| fmt!("WRMSR faulted with vector {v}"))?;
    let back = rdmsr(IA32_KERNEL_GS_BASE).map_err(|v| fmt!("RDMSR faulted with vector {v}"))?;
    ensure!(back == pattern, "read back {back:#x}");
    ensure!(
        hypercall::exit_count(EXIT_RDMSR) == rd && hypercall::exit_count(EXIT_WRMSR) == wr,
        "a passed-through access caused an exit"
    );
    Ok(())
}

fn unknown_msr_gp() -> Outcome {
    ensure!(rdmsr(0x1234_5678) == Err(GP), "RDMSR of an unknown MSR did not #GP");
    // SAFETY: the MSR does not exist; the write must fault.
    let written = unsafe { wrmsr(0x1234_5678, 1) };
    ensure!(written == Err(GP), "WRMSR of an unknown MSR did not #GP");
    ensure!(rdmsr(0x1234_5678) == Err(GP), "RDMSR after a #GP did not #GP again");
    Ok(())
}

fn emulated_msr_reserved_bits_gp() -> Outcome {
    let pat = rdmsr(IA32_PAT).map_err(|v| fmt!("RDMSR PAT faulted ({v})"))?;
    // SAFETY: a PAT whose entry 0 is type 8 (reserved) must #GP and change nothing.
    let written = unsafe { wrmsr(IA32_PAT, (pat & !0xff) | 0x08) };
    ensure!(written == Err(GP), "reserved PAT type accepted");
    ensure!(rdmsr(IA32_PAT) == Ok(pat), "PAT changed by a faulting write");
    // Entry 0 becomes write-combining.
    let new = (pat & !0xff) | 0x01;
    // SAFETY: only entry 0 changes, which the guest's page tables never select (PAT bits 0).
    unsafe { wrmsr(IA32_PAT, new) }.map_err(|v| fmt!("valid PAT write faulted ({v})"))?;
    ensure!(rdmsr(IA32_PAT) == Ok(new), "PAT did not keep the value");
    // SAFETY: restores the original value.
    let _ = unsafe { wrmsr(IA32_PAT, pat) };
    Ok(())
}

fn feature_control_locked() -> Outcome {
    let v = rdmsr(IA32_FEATURE_CONTROL).map_err(|v| fmt!("RDMSR faulted ({v})"))?;
    ensure!(v & 1 == 1 && v & 0b110 == 0, "IA32_FEATURE_CONTROL = {v:#x}: want locked, VMX off");
    // SAFETY: the write must #GP (the MSR is locked).
    let written = unsafe { wrmsr(IA32_FEATURE_CONTROL, v) };
    ensure!(written == Err(GP), "write to a locked MSR accepted");
    Ok(())
}

fn vmcall_abi() -> Outcome {
    let v = hypercall::vmcall(Hypercall::AbiVersion as u64, [0; 5]);
    ensure!(v == u64::from(ABI_VERSION), "ABI version {v}");
    ensure!(hypercall::vmcall(0xdead, [0; 5]) == HYPERCALL_ERROR, "unknown hypercall did not fail");
    // A buffer outside guest RAM (the hypervisor's pool is below 32 MiB).
    ensure!(
        hypercall::vmcall(Hypercall::Write as u64, [0x1000, 16, 0, 0, 0]) == HYPERCALL_ERROR,
        "bad pointer accepted"
    );
    ensure!(hypercall::write("vmcall_abi: hello from the guest\n") == 0, "Write failed");
    Ok(())
}

fn hlt() -> Outcome {
    let before = hypercall::exit_count(EXIT_HLT);
    // SAFETY: HLT exits to perfvisor, which resumes the guest after it.
    unsafe { core::arch::asm!("hlt") };
    ensure!(hypercall::exit_count(EXIT_HLT) == before + 1, "HLT did not exit once");
    Ok(())
}

fn boot_info(info: &BootInfo) -> Outcome {
    ensure!(info.magic == perfvisor_abi::BOOT_INFO_MAGIC, "bad magic");
    ensure!(info.abi_version == ABI_VERSION, "ABI {}", info.abi_version);
    ensure!(info.ram_count >= 1, "no RAM ranges");
    let ram = &info.ram[..info.ram_count as usize];
    ensure!(ram[0].start == perfvisor_abi::layout::GUEST_RAM_START, "RAM starts at {:#x}", ram[0].start);
    let here = boot_info as *const () as u64;
    ensure!(ram.iter().any(|r| r.start <= here && here < r.end), "the code at {here:#x} is not in guest RAM");
    Ok(())
}

/// Runs every test; returns the number that failed.
pub fn run(info: &BootInfo) -> u64 {
    let tests: [(&str, &dyn Fn() -> Outcome); 9] = [
        ("boot_info", &|| boot_info(info)),
        ("cpuid_hypervisor_leaf", &hypervisor_leaf),
        ("cpuid_cached_values", &cached_values),
        ("msr_passthrough", &msr_passthrough),
        ("msr_unknown_gp", &unknown_msr_gp),
        ("msr_emulated_reserved_bits_gp", &emulated_msr_reserved_bits_gp),
        ("msr_feature_control_locked", &feature_control_locked),
        ("vmcall_abi", &vmcall_abi),
        ("hlt", &hlt),
    ];
    let mut failed = 0;
    let mut run = tests.len();
    for (name, test) in tests {
        match test() {
            Ok(()) => hypercall::report(TestStatus::Ok, name, ""),
            Err(why) => {
                failed += 1;
                hypercall::report(TestStatus::Failed, name, why.as_str());
            }
        }
    }
    pmu_checks::run(|name, check| {
        run += 1;
        match check {
            Check::Pass => hypercall::report(TestStatus::Ok, name, ""),
            Check::Skip(why) => hypercall::report(TestStatus::Skipped, name, why),
            Check::Fail(why) => {
                failed += 1;
                hypercall::report(TestStatus::Failed, name, why.as_str());
            }
        }
    });
    hypercall::write(fmt!("TESTS DONE {run} run, {failed} failed\n").as_str());
    failed
}
