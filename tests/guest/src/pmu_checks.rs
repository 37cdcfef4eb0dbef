//! The guest PMU conformance checks, modelled on kvm-unit-tests x86/pmu.c
//! and KVM's pmu_counters_test / vmx_pmu_caps_test (REFERENCE.md §3). They
//! test the PMU the guest sees through CPUID.0AH, whatever the platform;
//! a check that needs a counting PMU reports SKIP where the counters do not
//! advance (an emulator such as Bochs).

use crate::faults::{rdmsr, wrmsr};
use crate::fmt;
use crate::fmtbuf::Buf;
use crate::hypercall;
use core::arch::x86_64::__cpuid_count;
use perfvisor_abi::{Hypercall, HYPERCALL_ERROR};
use pmu::layout::{evtsel, status};
use pmu::msr::*;
use pmu::{ArchPerfmon, CpuidRegs};

/// A check's result: pass, fail with why, or skip with why. (The guest has
/// no allocator: a failure carries its message in a fixed buffer.)
#[allow(clippy::large_enum_variant)]
pub enum Check {
    Pass,
    Fail(Buf),
    Skip(&'static str),
}

const GP: u8 = 13;

macro_rules! ensure {
    ($cond:expr, $($why:tt)*) => {
        if !$cond {
            return Check::Fail(fmt!($($why)*));
        }
    };
}

/// Whether this kernel runs as perfvisor's guest (CPUID 0x40000000 carries
/// its signature) rather than natively.
pub fn under_perfvisor() -> bool {
    let r = __cpuid_count(0x4000_0000, 0);
    [r.ebx, r.ecx, r.edx]
        == [u32::from_le_bytes(*b"perf"), u32::from_le_bytes(*b"viso"), u32::from_le_bytes(*b"r\0\0\0")]
}

/// What the guest sees.
pub struct Pmu {
    pub arch: ArchPerfmon,
    pub pdcm: bool,
}

impl Pmu {
    pub fn detect() -> Self {
        let r = __cpuid_count(0xa, 0);
        Self {
            arch: ArchPerfmon::decode(CpuidRegs::new(r.eax, r.ebx, r.ecx, r.edx)),
            pdcm: __cpuid_count(1, 0).ecx & (1 << 15) != 0,
        }
    }

    fn gp(&self) -> u32 {
        u32::from(self.arch.gp_counters)
    }
}

/// The guest's WRMSR of a PMU register, for checks.
fn write(msr: u32, value: u64) -> Result<(), u8> {
    // SAFETY: PMU registers only; nothing the guest kernel relies on.
    unsafe { wrmsr(msr, value) }
}

/// CPUID.0AH is self-consistent and every register it promises exists,
/// every one it does not promise #GPs (the fixed-counter rule included).
pub fn cpuid_and_counters_exist(p: &Pmu) -> Check {
    if !p.arch.present() {
        for msr in [IA32_PMC0, IA32_PERFEVTSEL0, IA32_FIXED_CTR0, IA32_PERF_GLOBAL_CTRL, IA32_PERF_GLOBAL_STATUS] {
            ensure!(rdmsr(msr) == Err(GP), "no PMU in CPUID.0AH but MSR {msr:#x} exists");
        }
        ensure!(!p.pdcm, "no PMU but PDCM set");
        return Check::Pass;
    }
    ensure!((2..=5).contains(&p.arch.version), "version {}", p.arch.version);
    ensure!(p.gp() <= 8 && p.gp() >= 1, "{} GP counters", p.gp());
    for i in 0..8 {
        let exists = i < p.gp();
        ensure!(rdmsr(IA32_PMC0 + i).is_ok() == exists, "IA32_PMC{i}: exists {}", !exists);
        ensure!(rdmsr(IA32_PERFEVTSEL0 + i).is_ok() == exists, "IA32_PERFEVTSEL{i}: exists {}", !exists);
    }
    for i in 0..16 {
        let exists = p.arch.fixed.contains(i);
        ensure!(
            rdmsr(IA32_FIXED_CTR0 + i).is_ok() == exists,
            "IA32_FIXED_CTR{i}: exists {} (set {})",
            !exists,
            p.arch.fixed
        );
    }
    Check::Pass
}

pub fn global_ctrl_reset_value(p: &Pmu) -> Check {
    let v = rdmsr(IA32_PERF_GLOBAL_CTRL);
    ensure!(v == Ok(p.arch.gp_mask()), "GLOBAL_CTRL {v:x?}, want the GP enables {:#x}", p.arch.gp_mask());
    Check::Pass
}

pub fn reserved_bits_gp(p: &Pmu) -> Check {
    ensure!(write(IA32_PERFEVTSEL0, 1 << 32) == Err(GP), "PERFEVTSEL bit 32 accepted");
    if p.arch.anythread_deprecated {
        ensure!(write(IA32_PERFEVTSEL0, evtsel::ANY_THREAD) == Err(GP), "AnyThread accepted though deprecated");
    }
    if p.gp() < 32 {
        ensure!(write(IA32_PERF_GLOBAL_CTRL, 1 << p.gp()) == Err(GP), "GLOBAL_CTRL enabled absent GP{}", p.gp());
    }
    let absent_fixed = (0..16).find(|&i| !p.arch.fixed.contains(i)).unwrap_or(15);
    ensure!(
        write(IA32_PERF_GLOBAL_CTRL, 1 << (32 + absent_fixed)) == Err(GP),
        "GLOBAL_CTRL enabled absent fixed counter {absent_fixed}"
    );
    ensure!(
        write(IA32_FIXED_CTR_CTRL, 0x1 << (4 * absent_fixed)) == Err(GP),
        "FIXED_CTR_CTRL enabled absent fixed counter {absent_fixed}"
    );
    ensure!(rdmsr(IA32_PERF_GLOBAL_CTRL) == Ok(p.arch.gp_mask()), "a faulting write changed GLOBAL_CTRL");
    Check::Pass
}

pub fn perf_capabilities(p: &Pmu) -> Check {
    if !p.pdcm {
        ensure!(rdmsr(IA32_PERF_CAPABILITIES) == Err(GP), "PERF_CAPABILITIES readable without PDCM");
        return Check::Pass;
    }
    let caps = rdmsr(IA32_PERF_CAPABILITIES);
    ensure!(caps.is_ok(), "PERF_CAPABILITIES read faulted with PDCM set");
    ensure!(write(IA32_PERF_CAPABILITIES, caps.unwrap_or(0)) == Err(GP), "PERF_CAPABILITIES write accepted");
    let fw = caps.unwrap_or(0) & (1 << 13) != 0;
    ensure!(rdmsr(IA32_A_PMC0).is_ok() == fw, "IA32_A_PMC0 exists {} with FW_WRITE {fw}", !fw);
    Check::Pass
}

pub fn status_set_reset_inuse(p: &Pmu) -> Check {
    if p.arch.version < 4 {
        ensure!(write(IA32_PERF_GLOBAL_STATUS_SET, 1) == Err(GP), "STATUS_SET exists below v4");
        return Check::Pass;
    }
    ensure!(rdmsr(IA32_PERF_GLOBAL_STATUS) == Ok(0), "GLOBAL_STATUS not clear at start");
    ensure!(write(IA32_PERF_GLOBAL_STATUS, 1) == Err(GP), "GLOBAL_STATUS is writable");
    ensure!(write(IA32_PERF_GLOBAL_STATUS_SET, 1 | status::CTR_FRZ) == Ok(()), "STATUS_SET write faulted");
    ensure!(rdmsr(IA32_PERF_GLOBAL_STATUS) == Ok(1 | status::CTR_FRZ), "STATUS_SET did not set the bits");
    ensure!(write(IA32_PERF_GLOBAL_STATUS_SET, status::COND_CHGD) == Err(GP), "CondChgd settable");
    ensure!(write(IA32_PERF_GLOBAL_STATUS_RESET, 1 | status::CTR_FRZ) == Ok(()), "STATUS_RESET faulted");
    ensure!(rdmsr(IA32_PERF_GLOBAL_STATUS) == Ok(0), "STATUS_RESET did not clear");
    ensure!(rdmsr(IA32_PERF_GLOBAL_INUSE) == Ok(0), "INUSE not 0 with every selector 0");
    let _ = write(IA32_PERFEVTSEL0, 0xc0);
    let inuse = rdmsr(IA32_PERF_GLOBAL_INUSE);
    let _ = write(IA32_PERFEVTSEL0, 0);
    ensure!(inuse == Ok(1), "INUSE {inuse:x?} after PERFEVTSEL0 = 0xc0, want bit 0");
    ensure!(write(IA32_PERF_GLOBAL_INUSE, 0) == Err(GP), "INUSE is writable");
    Check::Pass
}

/// Values the guest writes (selectors with EN clear: nothing counts) stay
/// put across 10,000 VM exits and a PMU context switch; the other context's
/// canary is checked by perfvisor (the PmuSwitch hypercall fails if lost).
pub fn values_survive_exits_and_switches(p: &Pmu) -> Check {
    let counter = |i: u32| 0x1000 + u64::from(i) * 0x111;
    let selector = |i: u32| 0x0041_0000 | u64::from(0xc0 + i); // USR|INT, EN clear
    for i in 0..p.gp() {
        ensure!(
            write(IA32_PMC0 + i, counter(i)).is_ok() && write(IA32_PERFEVTSEL0 + i, selector(i)).is_ok(),
            "GP{i} write faulted"
        );
    }
    for i in p.arch.fixed.iter() {
        ensure!(write(IA32_FIXED_CTR0 + i, counter(16 + i)).is_ok(), "FC{i} write faulted");
    }
    // GLOBAL_CTRL too (every selector has EN clear: nothing counts): the VM
    // entry must load the value the guest last wrote, not a stale one.
    let global = p.arch.gp_mask() & 0b101;
    ensure!(write(IA32_PERF_GLOBAL_CTRL, global).is_ok(), "GLOBAL_CTRL write faulted");
    // GLOBAL_STATUS too, where STATUS_SET can set it (v4+): a switch must
    // restore it (through STATUS_SET on a mediated host).
    let status_bits = if p.arch.version >= 4 { 1 << 1 | 1 << 32 } else { 0 };
    if status_bits != 0 {
        ensure!(write(IA32_PERF_GLOBAL_STATUS_SET, status_bits).is_ok(), "STATUS_SET write faulted");
    }
    for _ in 0..10_000 {
        core::hint::black_box(__cpuid_count(0, 0));
    }
    if under_perfvisor() {
        let switched = hypercall::vmcall(Hypercall::PmuSwitch as u64, [0; 5]);
        ensure!(switched != HYPERCALL_ERROR, "the PMU switch lost the other context's values");
    }
    let status_after = rdmsr(IA32_PERF_GLOBAL_STATUS);
    let _ = write(IA32_PERF_GLOBAL_STATUS_RESET, status_bits);
    ensure!(
        status_after.map(|s| s & status_bits) == Ok(status_bits),
        "GLOBAL_STATUS = {status_after:x?} after the exits and a switch, want bits {status_bits:#x}"
    );
    for i in 0..p.gp() {
        ensure!(rdmsr(IA32_PMC0 + i) == Ok(counter(i)), "PMC{i} = {:x?} after the exits", rdmsr(IA32_PMC0 + i));
        ensure!(rdmsr(IA32_PERFEVTSEL0 + i) == Ok(selector(i)), "PERFEVTSEL{i} = {:x?}", rdmsr(IA32_PERFEVTSEL0 + i));
    }
    for i in p.arch.fixed.iter() {
        ensure!(rdmsr(IA32_FIXED_CTR0 + i) == Ok(counter(16 + i)), "FIXED_CTR{i} = {:x?}", rdmsr(IA32_FIXED_CTR0 + i));
    }
    let global_after = rdmsr(IA32_PERF_GLOBAL_CTRL);
    let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask());
    ensure!(global_after == Ok(global), "GLOBAL_CTRL = {global_after:x?} after the exits, want {global:#x}");
    for i in 0..p.gp() {
        let _ = write(IA32_PERFEVTSEL0 + i, 0);
        let _ = write(IA32_PMC0 + i, 0);
    }
    for i in p.arch.fixed.iter() {
        let _ = write(IA32_FIXED_CTR0 + i, 0);
    }
    Check::Pass
}

/// What a counter counts over [`spin`]`(n)`: armed by `arm` (which writes its
/// selector and GLOBAL_CTRL), read after `disarm`. Never inlined, so both
/// measurements of a differential check run the very same instructions
/// around the loop and only the loop's length differs.
#[inline(never)]
fn count_spin(counter: u32, arm: &dyn Fn(), disarm: &dyn Fn(), n: u64) -> u64 {
    let _ = write(counter, 0);
    arm();
    spin(core::hint::black_box(n));
    disarm();
    let count = rdmsr(counter).unwrap_or(0);
    let _ = write(counter, 0);
    count
}

/// Counts over two loop lengths: their difference is exact, whatever the
/// counter adds for the instructions that enable and read it.
fn differential(counter: u32, arm: &dyn Fn(), disarm: &dyn Fn(), short: u64, long: u64) -> (u64, u64) {
    (count_spin(counter, arm, disarm, short), count_spin(counter, arm, disarm, long))
}

/// Fixed counter 0 and GP0 (event C0H) counting instructions retired at
/// ring 0: the loop `dec; jnz` of 100,000 iterations counts exactly
/// 200,000 more than one of 1,000 x 2 (SDM vol. 3B §20.2.1; kvm-unit-tests'
/// exact-count rule).
pub fn counts_instructions(p: &Pmu) -> Check {
    if !counting_pmu(p) {
        return Check::Skip(NEEDS_COUNTING);
    }
    let global = p.arch.gp_mask() | 1 << 32;
    // GLOBAL_CTRL first: FIXED_CTR_CTRL, written last, starts the count
    // in both measurements alike (counting needs both enables, SDM §20.2.2).
    let arm_fixed = || {
        let _ = write(IA32_PERF_GLOBAL_CTRL, global);
        let _ = write(IA32_FIXED_CTR_CTRL, 0x1); // FC0, ring 0
    };
    let disarm_fixed = || {
        let _ = write(IA32_FIXED_CTR_CTRL, 0);
    };
    let (short, long) = differential(IA32_FIXED_CTR0, &arm_fixed, &disarm_fixed, 1_000, 100_000);
    let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask());
    ensure!(long - short == 198_000, "FC0: {long} - {short} = {} instructions, want exactly 198000", long - short);
    let arm_gp = || {
        let _ = write(IA32_PERFEVTSEL0, 0xc0 | evtsel::OS | evtsel::EN);
    };
    let disarm_gp = || {
        let _ = write(IA32_PERFEVTSEL0, 0);
    };
    let (short, long) = differential(IA32_PMC0, &arm_gp, &disarm_gp, 1_000, 100_000);
    ensure!(
        long - short == 198_000,
        "GP0 (C0H): {long} - {short} = {} instructions, want exactly 198000",
        long - short
    );
    Check::Pass
}

/// Exactly `2 * n` instructions (`dec`, `jnz`) and `n` branches retired
/// (`n - 1` taken `jnz`s and the final one not taken).
#[inline(always)]
fn spin(n: u64) {
    // SAFETY: a register-only loop.
    unsafe { core::arch::asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) n => _, options(nomem, nostack)) };
}

const NEEDS_COUNTING: &str = "needs a counting PMU: fixed counter 0 did not advance (an emulator's register file)";

/// GP counter 0 counting branch instructions retired (event C4H) at ring
/// 0: a loop of 100,000 `jnz`s counts exactly 99,000 more than one of 1,000.
pub fn counts_branches(p: &Pmu) -> Check {
    if !counting_pmu(p) {
        return Check::Skip(NEEDS_COUNTING);
    }
    let arm = || {
        let _ = write(IA32_PERFEVTSEL0, 0xc4 | evtsel::OS | evtsel::EN);
    };
    let disarm = || {
        let _ = write(IA32_PERFEVTSEL0, 0);
    };
    let (short, long) = differential(IA32_PMC0, &arm, &disarm, 1_000, 100_000);
    ensure!(long - short == 99_000, "C4H: {long} - {short} = {} branches, want exactly 99000", long - short);
    Check::Pass
}

static mut REP_BUFFER: [u8; 4096] = [0; 4096];

/// `rep stosb` is one instruction however many bytes it stores: 16 and
/// 4,096 iterations retire the same number of instructions and branches.
pub fn rep_string_counted_once(p: &Pmu) -> Check {
    if !counting_pmu(p) {
        return Check::Skip(NEEDS_COUNTING);
    }
    #[inline(never)]
    fn count(event: u64, bytes: u64) -> u64 {
        let _ = write(IA32_PMC0, 0);
        let _ = write(IA32_PERFEVTSEL0, event | evtsel::OS | evtsel::EN);
        // SAFETY: stores at most 4,096 bytes into the static buffer, which
        // nothing else uses.
        unsafe {
            core::arch::asm!(
                "rep stosb",
                inout("rcx") core::hint::black_box(bytes) => _,
                inout("rdi") core::ptr::addr_of_mut!(REP_BUFFER) as *mut u8 => _,
                in("al") 0x5au8,
                options(nostack),
            )
        };
        let _ = write(IA32_PERFEVTSEL0, 0);
        let n = rdmsr(IA32_PMC0).unwrap_or(0);
        let _ = write(IA32_PMC0, 0);
        n
    }
    for (event, what) in [(0xc0, "instructions"), (0xc4, "branches")] {
        let (few, many) = (count(event, 16), count(event, 4096));
        ensure!(few == many, "rep stosb of 16 bytes counted {few} {what}, of 4096 bytes {many}");
    }
    Check::Pass
}

/// The USR and OS filters across a ring transition (SDM vol. 3B §20.2.1.1,
/// PERFEVTSEL bits 16/17; FIXED_CTR_CTRL bits 1/0): a loop run at CPL 3
/// counts exactly 2 instructions and 1 branch an iteration more in a
/// USR-only counter, and nothing more in an OS-only one.
pub fn usr_os_filters_across_rings(p: &Pmu) -> Check {
    if !counting_pmu(p) {
        return Check::Skip(NEEDS_COUNTING);
    }
    if let Err(why) = crate::ring3::prepare() {
        return Check::Fail(fmt!("cannot run ring 3: {why}"));
    }
    #[inline(never)]
    fn count(counter: u32, program: u64, n: u64) -> u64 {
        let _ = write(counter, 0);
        if counter == IA32_PMC0 {
            let _ = write(IA32_PERFEVTSEL0, program);
        } else {
            let _ = write(IA32_FIXED_CTR_CTRL, program);
        }
        crate::ring3::run_loop(core::hint::black_box(n));
        let _ = write(IA32_PERFEVTSEL0, 0);
        let _ = write(IA32_FIXED_CTR_CTRL, 0);
        let c = rdmsr(counter).unwrap_or(0);
        let _ = write(counter, 0);
        c
    }
    let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask() | 1 << 32);
    let cases = [
        ("GP0 C0H USR", IA32_PMC0, 0xc0 | evtsel::USR | evtsel::EN, 2000),
        ("GP0 C0H OS", IA32_PMC0, 0xc0 | evtsel::OS | evtsel::EN, 0),
        ("GP0 C4H USR", IA32_PMC0, 0xc4 | evtsel::USR | evtsel::EN, 1000),
        ("GP0 C4H OS", IA32_PMC0, 0xc4 | evtsel::OS | evtsel::EN, 0),
        ("FC0 USR", IA32_FIXED_CTR0, 0x2, 2000),
        ("FC0 OS", IA32_FIXED_CTR0, 0x1, 0),
    ];
    let mut result = Check::Pass;
    for (name, counter, program, want) in cases {
        if counter == IA32_FIXED_CTR0 && !p.arch.fixed.contains(0) {
            continue;
        }
        let (short, long) = (count(counter, program, 10), count(counter, program, 1010));
        if long.wrapping_sub(short) != want {
            result = Check::Fail(fmt!(
                "{name}: 1,000 more ring-3 iterations counted {} more, want exactly {want} ({short} then {long})",
                long.wrapping_sub(short) as i64
            ));
            break;
        }
    }
    let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask());
    result
}

/// Legacy IA32_PMCx writes sign-extend from bit 31 to the counter width;
/// IA32_A_PMCx writes take the value whole and #GP beyond the width
/// (SDM vol. 3B §20.2.6). Plain registers (an emulator) store what is
/// written, so this needs a real PMU.
pub fn legacy_and_full_width_writes(p: &Pmu) -> Check {
    if !counting_pmu(p) {
        return Check::Skip(NEEDS_COUNTING);
    }
    let width_mask = (1u64 << p.arch.gp_width) - 1;
    let _ = write(IA32_PMC0, 0x8000_0000);
    let legacy = rdmsr(IA32_PMC0);
    ensure!(legacy == Ok(width_mask & !0x7fff_ffff), "legacy write of 0x80000000 read back {legacy:x?}");
    if p.pdcm && rdmsr(IA32_PERF_CAPABILITIES).is_ok_and(|c| c & (1 << 13) != 0) {
        ensure!(write(IA32_A_PMC0, 0x8000_0000).is_ok(), "full-width write faulted");
        ensure!(rdmsr(IA32_PMC0) == Ok(0x8000_0000), "full-width write was sign-extended");
        ensure!(write(IA32_A_PMC0, width_mask + 1).is_err(), "full-width write beyond the width accepted");
    }
    let _ = write(IA32_PMC0, 0);
    Check::Pass
}

/// With DEBUGCTL.FREEZE_PERFMON_ON_PMI, a PMI freezes the counters: on v4+
/// by setting GLOBAL_STATUS.CTR_Frz (SDM vol. 3B §20.2.4.1).
pub fn freeze_on_pmi(p: &Pmu) -> Check {
    if p.arch.version < 4 {
        return Check::Skip("checks the v4 streamlined freeze");
    }
    if !counting_pmu(p) {
        return Check::Skip(NEEDS_COUNTING);
    }
    const IA32_DEBUGCTL: u32 = 0x1d9;
    const FREEZE_PERFMON_ON_PMI: u64 = 1 << 12;
    let debugctl = rdmsr(IA32_DEBUGCTL).unwrap_or(0);
    ensure!(write(IA32_DEBUGCTL, debugctl | FREEZE_PERFMON_ON_PMI).is_ok(), "DEBUGCTL write faulted");
    let _ = write(IA32_PMC0, 0xffff_ffff_ffff - 100);
    let _ = write(IA32_PERFEVTSEL0, 0xc0 | evtsel::OS | evtsel::EN | evtsel::INT);
    spin(10_000);
    let frozen_at = rdmsr(IA32_PMC0).unwrap_or(0);
    spin(10_000);
    let later = rdmsr(IA32_PMC0).unwrap_or(0);
    let status = rdmsr(IA32_PERF_GLOBAL_STATUS).unwrap_or(0);
    let _ = write(IA32_PERFEVTSEL0, 0);
    let _ = write(IA32_DEBUGCTL, debugctl);
    let _ = write(IA32_PERF_GLOBAL_STATUS_RESET, 1 | status::CTR_FRZ);
    let _ = write(IA32_PMC0, 0);
    ensure!(status & status::CTR_FRZ != 0, "GLOBAL_STATUS {status:#x}: CTR_Frz not set after the PMI");
    ensure!(later == frozen_at, "the counter moved from {frozen_at:#x} to {later:#x} while frozen");
    Check::Pass
}

/// `n` iterations of `mov eax, 0; cpuid; dec; jnz`: 4 instructions each.
#[inline(never)]
fn cpuid_loop(n: u64) {
    // SAFETY: CPUID and a register loop; RBX (reserved by LLVM) is saved.
    unsafe {
        core::arch::asm!(
            "push rbx",
            "2:",
            "mov eax, 0",
            "cpuid",
            "dec rsi",
            "jnz 2b",
            "pop rbx",
            inout("rsi") core::hint::black_box(n) => _,
            out("eax") _, out("ecx") _, out("edx") _,
        )
    };
}

/// Counters counting at ring 0 see exactly the instructions the guest
/// retires, nothing of the hypervisor: a loop of CPUIDs counts exactly 4
/// instructions (and, IPC = 1 in Bochs, core cycles are not checked) per
/// iteration. Under perfvisor every CPUID is a VM exit: the exit must load
/// the host's GLOBAL_CTRL = 0 (else perfvisor's own instructions count), the
/// entry must load the guest's value back, and perfvisor must count the
/// CPUID it emulates in software. Natively the loop simply retires.
/// Without a counting PMU under perfvisor (plain registers), only the
/// software accounting moves the counter: exactly 1 per CPUID.
pub fn emulated_instructions_counted(p: &Pmu) -> Check {
    let counting = counting_pmu(p);
    if !counting && !under_perfvisor() {
        return Check::Skip(NEEDS_COUNTING);
    }
    #[inline(never)]
    fn count(counter: u32, n: u64) -> u64 {
        let _ = write(counter, 0);
        if counter == IA32_PMC0 {
            let _ = write(IA32_PERFEVTSEL0, 0xc0 | evtsel::OS | evtsel::EN);
        } else {
            let _ = write(IA32_FIXED_CTR_CTRL, 0x1);
        }
        cpuid_loop(n);
        let _ = write(IA32_PERFEVTSEL0, 0);
        let _ = write(IA32_FIXED_CTR_CTRL, 0);
        let c = rdmsr(counter).unwrap_or(0);
        let _ = write(counter, 0);
        c
    }
    let per_iteration = if counting { 4 } else { 1 };
    let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask() | (u64::from(p.arch.fixed.contains(0)) << 32));
    let counters = [(IA32_PMC0, "GP0 (C0H)"), (IA32_FIXED_CTR0, "FC0")];
    let gp_only = !p.arch.fixed.contains(0) || !counting;
    let mut result = Check::Pass;
    for (counter, name) in counters {
        if counter == IA32_FIXED_CTR0 && gp_only {
            break;
        }
        let (short, long) = (count(counter, 100), count(counter, 1100));
        if long.wrapping_sub(short) != 1000 * per_iteration {
            result = Check::Fail(fmt!(
                "{name}: 1,000 more CPUID loop iterations counted {} instructions, want exactly {}",
                long.wrapping_sub(short) as i64,
                1000 * per_iteration
            ));
            break;
        }
    }
    let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask());
    result
}

const IA32_APIC_BASE: u32 = 0x1b;
const X2APIC_LVT_PMI: u32 = 0x834;
const LVT_MASKED: u64 = 1 << 16;

/// A counter made to overflow with its PMI bit set raises exactly one PMI
/// on the LVTPC vector, sets its GLOBAL_STATUS bit and masks the LVTPC.
/// PMC0 starts at -1 (2^48 - 1) counting
/// instructions at ring 0; a CPUID (perfvisor emulates it and accounts
/// for it in software; hardware counts it natively) makes it wrap.
pub fn overflow_raises_one_pmi(p: &Pmu) -> Check {
    if __cpuid_count(1, 0).ecx & (1 << 21) == 0 {
        return Check::Skip("needs an x2APIC (the LVTPC is programmed through its MSR)");
    }
    if !under_perfvisor() && !counting_pmu(p) {
        return Check::Skip(NEEDS_COUNTING);
    }
    quiet_apic_for_pmis();
    ensure!(rdmsr(IA32_APIC_BASE).is_ok_and(|b| b & (1 << 10) != 0), "enabling x2APIC mode failed");
    ensure!(write(X2APIC_LVT_PMI, u64::from(crate::faults::PMI_VECTOR)).is_ok(), "LVTPC write faulted");
    let before = crate::faults::pmis_taken();
    // -1 at 48 bits: what a legacy write of 0xffffffff gives by sign
    // extension, written whole so registers that do not sign-extend agree.
    let _ = write(IA32_PMC0, 0xffff_ffff_ffff);
    let _ = write(IA32_PERFEVTSEL0, 0xc0 | evtsel::OS | evtsel::EN | evtsel::INT);
    // SAFETY: interrupts are on for a few instructions, with the PMI vector
    // handled; nothing else is programmed to interrupt.
    unsafe {
        core::arch::asm!(
            "push rbx", "sti", "nop", "cpuid", "nop", "nop", "cli", "pop rbx",
            inout("eax") 0 => _, out("ecx") _, out("edx") _,
        )
    };
    let _ = write(IA32_PERFEVTSEL0, 0);
    let taken = crate::faults::pmis_taken() - before;
    let status = rdmsr(IA32_PERF_GLOBAL_STATUS).unwrap_or(0);
    let lvtpc = rdmsr(X2APIC_LVT_PMI).unwrap_or(0);
    let _ = write(IA32_PERF_GLOBAL_STATUS_RESET, 1);
    let _ = write(IA32_PMC0, 0);
    let _ = write(X2APIC_LVT_PMI, LVT_MASKED | u64::from(crate::faults::PMI_VECTOR));
    ensure!(taken == 1, "{taken} PMIs on vector {:#x}, want exactly 1", crate::faults::PMI_VECTOR);
    ensure!(status & 1 == 1, "GLOBAL_STATUS {status:#x}: the overflow bit of PMC0 is not set");
    ensure!(lvtpc & LVT_MASKED != 0, "LVTPC {lvtpc:#x} not masked after the PMI");
    Check::Pass
}

/// Counters started 1,000 below 2^width, counting instructions at ring 0
/// with their PMI bit set, overflow within a 2,000-iteration loop: exactly
/// one PMI each on the LVTPC vector, the counter's GLOBAL_STATUS bit set
/// (0 for GP0, 32 for FC0), the LVTPC masked, and the counter wrapped to a
/// small value (SDM vol. 3B §20.2.2 and §11.5.1, LVT masking on PMI).
pub fn overflow_near_wrap(p: &Pmu) -> Check {
    if __cpuid_count(1, 0).ecx & (1 << 21) == 0 {
        return Check::Skip("needs an x2APIC (the LVTPC is programmed through its MSR)");
    }
    if !counting_pmu(p) {
        return Check::Skip(NEEDS_COUNTING);
    }
    quiet_apic_for_pmis();
    let cases = [(IA32_PMC0, 0u32, p.arch.gp_width), (IA32_FIXED_CTR0, 32, p.arch.fixed_width)];
    let n_cases = if p.arch.fixed.contains(0) { 2 } else { 1 };
    for &(counter, status_bit, width) in &cases[..n_cases] {
        let start = (1u64 << width) - 1000;
        ensure!(write(X2APIC_LVT_PMI, u64::from(crate::faults::PMI_VECTOR)).is_ok(), "LVTPC write faulted");
        let before = crate::faults::pmis_taken();
        let fixed_write = if counter == IA32_PMC0 { IA32_A_PMC0 } else { counter };
        // Full width where it exists; else the legacy write of -1000, which sign-extends.
        if write(fixed_write, start).is_err() {
            let _ = write(counter, start & 0xffff_ffff);
        }
        let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask() | 1 << 32);
        if counter == IA32_PMC0 {
            let _ = write(IA32_PERFEVTSEL0, 0xc0 | evtsel::OS | evtsel::EN | evtsel::INT);
        } else {
            let _ = write(IA32_FIXED_CTR_CTRL, 0x9); // FC0: ring 0, PMI
        }
        // SAFETY: interrupts are on for the loop, with the PMI vector handled
        // and every other interrupt source masked.
        unsafe { core::arch::asm!("sti") };
        spin(2000);
        // SAFETY: as above.
        unsafe { core::arch::asm!("cli") };
        let _ = write(IA32_PERFEVTSEL0, 0);
        let _ = write(IA32_FIXED_CTR_CTRL, 0);
        let taken = crate::faults::pmis_taken() - before;
        let value = rdmsr(counter).unwrap_or(0);
        let status = rdmsr(IA32_PERF_GLOBAL_STATUS).unwrap_or(0);
        let lvtpc = rdmsr(X2APIC_LVT_PMI).unwrap_or(0);
        let _ = write(IA32_PERF_GLOBAL_STATUS_RESET, 1 << status_bit);
        let _ = write(counter, 0);
        let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask());
        let _ = write(X2APIC_LVT_PMI, LVT_MASKED | u64::from(crate::faults::PMI_VECTOR));
        ensure!(taken == 1, "MSR {counter:#x}: {taken} PMIs, want exactly 1");
        ensure!(status & (1 << status_bit) != 0, "MSR {counter:#x}: GLOBAL_STATUS {status:#x} lacks bit {status_bit}");
        ensure!(status & !(1 << status_bit) == 0, "MSR {counter:#x}: GLOBAL_STATUS {status:#x} has other bits");
        ensure!(lvtpc & LVT_MASKED != 0, "MSR {counter:#x}: LVTPC {lvtpc:#x} not masked after the PMI");
        ensure!(value < 4000, "MSR {counter:#x}: {value:#x} after the overflow, want a small wrapped value");
    }
    Check::Pass
}

/// Starts counter `index` (GP, or fixed with `fixed`) 1,000 below 2^width,
/// counting instructions at ring 0 with its PMI bit set.
fn arm_near_wrap(p: &Pmu, index: u32, fixed: bool) {
    if fixed {
        let start = (1u64 << p.arch.fixed_width) - 1000;
        let _ = write(IA32_FIXED_CTR0 + index, start);
        let _ = write(IA32_FIXED_CTR_CTRL, 0x9 << (4 * index));
    } else {
        let start = (1u64 << p.arch.gp_width) - 1000;
        if write(IA32_A_PMC0 + index, start).is_err() {
            // The legacy write of -1000 sign-extends to the same value.
            let _ = write(IA32_PMC0 + index, start & 0xffff_ffff);
        }
        let _ = write(IA32_PERFEVTSEL0 + index, 0xc0 | evtsel::OS | evtsel::EN | evtsel::INT);
    }
}

fn disarm_all(p: &Pmu) {
    let _ = write(IA32_FIXED_CTR_CTRL, 0);
    for i in 0..p.gp() {
        let _ = write(IA32_PERFEVTSEL0 + i, 0);
        let _ = write(IA32_PMC0 + i, 0);
    }
    for i in p.arch.fixed.iter() {
        let _ = write(IA32_FIXED_CTR0 + i, 0);
    }
    let status = rdmsr(IA32_PERF_GLOBAL_STATUS).unwrap_or(0);
    let _ = write(IA32_PERF_GLOBAL_STATUS_RESET, status);
    let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask());
    let _ = write(X2APIC_LVT_PMI, LVT_MASKED | u64::from(crate::faults::PMI_VECTOR));
}

/// What PMIs in NMI mode need: an x2APIC to program the LVTPC, and a PMU
/// that counts (natively) or perfvisor's software accounting.
fn nmi_checks_possible(p: &Pmu) -> Result<(), &'static str> {
    if __cpuid_count(1, 0).ecx & (1 << 21) == 0 {
        return Err("needs an x2APIC (the LVTPC is programmed through its MSR)");
    }
    if !counting_pmu(p) {
        return Err(NEEDS_COUNTING);
    }
    if p.gp() < 2 {
        return Err("needs two GP counters");
    }
    Ok(())
}

/// LVTPC in NMI mode (as Linux programs it): two overflows in a row raise
/// two NMIs, each seeing its own GLOBAL_STATUS bit, and a third overflow
/// after the handlers' IRETs raises a third. A hypervisor that injects NMIs
/// without tracking NMI blocking (NMI exiting without virtual NMIs) loses
/// every NMI after the first.
pub fn nmi_pmi_twice(p: &Pmu) -> Check {
    use crate::interrupts::{LVT_NMI, NMIS, NMI_RELOAD, NMI_STATUS, NMI_UNMASK};
    if let Err(why) = nmi_checks_possible(p) {
        return Check::Skip(why);
    }
    quiet_apic_for_pmis();
    NMIS.store(0, core::sync::atomic::Ordering::SeqCst);
    NMI_RELOAD.store(0, core::sync::atomic::Ordering::SeqCst);
    NMI_UNMASK.store(1, core::sync::atomic::Ordering::SeqCst);
    let _ = write(X2APIC_LVT_PMI, LVT_NMI);
    let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask());
    let mut result = Check::Pass;
    for (n, counter) in [0u32, 1, 0].into_iter().enumerate() {
        arm_near_wrap(p, counter, false);
        spin(2000);
        let _ = write(IA32_PERFEVTSEL0 + counter, 0);
        let taken = NMIS.load(core::sync::atomic::Ordering::SeqCst);
        let status = NMI_STATUS[n].load(core::sync::atomic::Ordering::SeqCst);
        if taken != n as u64 + 1 {
            result = Check::Fail(fmt!("after overflow {} (PMC{counter}): {taken} NMIs, want {}", n + 1, n + 1));
            break;
        }
        if status & (1 << counter) == 0 {
            result = Check::Fail(fmt!("NMI {} saw GLOBAL_STATUS {status:#x}, without PMC{counter}'s bit", n + 1));
            break;
        }
    }
    disarm_all(p);
    result
}

/// An NMI watchdog's pattern: fixed counter 0 in NMI mode, reloaded by the
/// handler 1,000 below overflow each time, must raise 1,000 NMIs.
pub fn nmi_watchdog_style(p: &Pmu) -> Check {
    use crate::interrupts::{LVT_NMI, NMIS, NMI_RELOAD, NMI_UNMASK};
    use core::sync::atomic::Ordering::SeqCst;
    if let Err(why) = nmi_checks_possible(p) {
        return Check::Skip(why);
    }
    if !p.arch.fixed.contains(0) {
        return Check::Skip("needs fixed counter 0");
    }
    quiet_apic_for_pmis();
    NMIS.store(0, SeqCst);
    NMI_UNMASK.store(1, SeqCst);
    let reload = (1u64 << p.arch.fixed_width) - 5000;
    NMI_RELOAD.store(u64::from(IA32_FIXED_CTR0) << 48 | reload, SeqCst);
    let _ = write(X2APIC_LVT_PMI, LVT_NMI);
    let _ = write(IA32_FIXED_CTR0, reload);
    let _ = write(IA32_FIXED_CTR_CTRL, 0x9); // FC0: ring 0, PMI
    let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask() | 1 << 32);
    // 1,000 periods of 5,000 instructions is 5 M; allow twice that.
    let mut rounds = 0;
    while NMIS.load(SeqCst) < 1000 && rounds < 1000 {
        spin(5_000);
        rounds += 1;
    }
    let _ = write(IA32_FIXED_CTR_CTRL, 0);
    NMI_RELOAD.store(0, SeqCst);
    let taken = NMIS.load(SeqCst);
    disarm_all(p);
    ensure!(taken >= 1000, "{taken} NMIs in {rounds} rounds of 10,000 instructions, want 1000");
    Check::Pass
}

/// A PMI owed while a higher-priority interrupt is in service waits, as the
/// APIC makes a hardware PMI wait: none arrives before that interrupt's EOI,
/// exactly one after it, and every in-service bit is clear at the end (the
/// guest's EOIs retired the right vectors). Under perfvisor the overflow is
/// made by the emulated WRMSR that enables the counter, so it is owed by
/// software accounting; natively the hardware PMI takes the same path.
pub fn owed_pmi_through_apic(p: &Pmu) -> Check {
    use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
    static IN_SERVICE_PMIS: AtomicU64 = AtomicU64::new(u64::MAX);
    static AFTER_EOI_PMIS: AtomicU64 = AtomicU64::new(u64::MAX);
    if __cpuid_count(1, 0).ecx & (1 << 21) == 0 {
        return Check::Skip("needs an x2APIC (the LVTPC is programmed through its MSR)");
    }
    if !under_perfvisor() && !counting_pmu(p) {
        return Check::Skip(NEEDS_COUNTING);
    }
    quiet_apic_for_pmis();
    let _ = write(X2APIC_LVT_PMI, u64::from(crate::faults::PMI_VECTOR));
    // -1 at 48 bits, written whole so registers that do not sign-extend agree.
    let _ = write(IA32_PMC0, 0xffff_ffff_ffff);
    fn body() {
        let before = crate::faults::pmis_taken();
        // SAFETY: enables PMC0 (an existing counter) and lets interrupts in
        // for a few instructions; every source but the PMI is masked.
        unsafe {
            core::arch::asm!(
                "wrmsr",
                "sti", "nop", "nop", "nop", "nop", "cli",
                in("ecx") IA32_PERFEVTSEL0,
                in("eax") (0xc0 | evtsel::OS | evtsel::EN | evtsel::INT) as u32,
                in("edx") 0,
                options(nostack),
            )
        };
        IN_SERVICE_PMIS.store(crate::faults::pmis_taken() - before, SeqCst);
        crate::interrupts::eoi();
        // SAFETY: as above.
        unsafe { core::arch::asm!("sti", "nop", "nop", "nop", "nop", "cli", options(nomem, nostack)) };
        AFTER_EOI_PMIS.store(crate::faults::pmis_taken() - before, SeqCst);
    }
    crate::interrupts::run_in_service(body);
    let _ = write(IA32_PERFEVTSEL0, 0);
    let status = rdmsr(IA32_PERF_GLOBAL_STATUS).unwrap_or(0);
    let isr = crate::interrupts::in_service();
    disarm_all(p);
    let (during, after) = (IN_SERVICE_PMIS.load(SeqCst), AFTER_EOI_PMIS.load(SeqCst));
    ensure!(during != u64::MAX, "the higher-priority interrupt never ran");
    ensure!(during == 0, "{during} PMIs arrived while vector {:#x} was in service", crate::interrupts::HIGH_VECTOR);
    ensure!(after == 1, "{after} PMIs after the EOI, want exactly 1");
    ensure!(status & 1 != 0, "GLOBAL_STATUS {status:#x}: PMC0's overflow bit is not set");
    ensure!(isr == [0; 8], "in-service bits left set: {isr:x?}");
    Check::Pass
}

/// A PMI whose delivery is cut short by a VM exit (perfvisor traps writes
/// to the page of the PMI's stack, so pushing the interrupt frame exits
/// with the PMI in the IDT-vectoring information) is delivered exactly
/// once, and its EOI leaves no in-service bit: perfvisor re-injected it.
pub fn pmi_during_event_delivery(p: &Pmu) -> Check {
    if !under_perfvisor() {
        return Check::Skip("checks perfvisor's re-injection of events in flight");
    }
    if __cpuid_count(1, 0).ecx & (1 << 21) == 0 {
        return Check::Skip("needs an x2APIC (the LVTPC is programmed through its MSR)");
    }
    if !counting_pmu(p) {
        return Check::Skip(NEEDS_COUNTING);
    }
    const EPT_VIOLATION: u64 = 48;
    quiet_apic_for_pmis();
    let _ = write(X2APIC_LVT_PMI, u64::from(crate::faults::PMI_VECTOR));
    let stack_page = core::ptr::addr_of!(crate::ring3::PMI_STACK) as u64;
    let violations_before = hypercall::vmcall(Hypercall::ExitCount as u64, [EPT_VIOLATION, 0, 0, 0, 0]);
    let before = crate::faults::pmis_taken();
    ensure!(
        hypercall::vmcall(Hypercall::TrapWrite as u64, [stack_page, 0, 0, 0, 0]) == 0,
        "perfvisor refused to trap writes to the PMI stack page {stack_page:#x}"
    );
    let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask());
    arm_near_wrap(p, 0, false);
    // SAFETY: interrupts on for the loop; every source but the PMI is masked.
    unsafe { core::arch::asm!("sti") };
    spin(2000);
    // SAFETY: as above.
    unsafe { core::arch::asm!("cli") };
    let taken = crate::faults::pmis_taken() - before;
    let violations = hypercall::vmcall(Hypercall::ExitCount as u64, [EPT_VIOLATION, 0, 0, 0, 0]) - violations_before;
    let isr = crate::interrupts::in_service();
    disarm_all(p);
    ensure!(violations >= 1, "no EPT violation: the PMI's delivery did not exit (trap not hit)");
    ensure!(taken == 1, "{taken} PMIs delivered, want exactly 1");
    ensure!(isr == [0; 8], "in-service bits left set after the PMI's EOI: {isr:x?}");
    Check::Pass
}

/// A PMU switch that finds the other context damaged reports it and
/// leaves both contexts usable: the next switch succeeds and the guest's
/// values survive both (perfvisor once left the other context loaded there,
/// and its next switch panicked).
pub fn switch_failure_is_survivable(p: &Pmu) -> Check {
    if !under_perfvisor() {
        return Check::Skip("checks perfvisor's PMU context switch");
    }
    let _ = write(IA32_PMC0, 0x4321);
    let damaged = hypercall::vmcall(Hypercall::PmuSwitch as u64, [1, 0, 0, 0, 0]);
    let after_damage = rdmsr(IA32_PMC0);
    let again = hypercall::vmcall(Hypercall::PmuSwitch as u64, [0; 5]);
    let after = rdmsr(IA32_PMC0);
    let _ = write(IA32_PMC0, 0);
    ensure!(p.gp() >= 1, "no GP counter");
    ensure!(damaged == HYPERCALL_ERROR, "a damaged canary was not reported ({damaged:#x})");
    ensure!(again == 0, "the switch after the damaged one failed ({again:#x})");
    ensure!(after_damage == Ok(0x4321) && after == Ok(0x4321), "PMC0 {after_damage:x?} then {after:x?}, want 0x4321");
    Check::Pass
}

/// PERF_METRICS (MSR 0x329) and fixed counter 3 keep the guest's values
/// across a PMU context switch (PmuSwitch hypercall).
pub fn perf_metrics_survive_switch(p: &Pmu) -> Check {
    const IA32_PERF_METRICS: u32 = 0x329;
    const PERF_METRICS_CAP: u64 = 1 << 15;
    if !under_perfvisor() {
        return Check::Skip("checks perfvisor's PMU context switch");
    }
    let caps = if p.pdcm { rdmsr(IA32_PERF_CAPABILITIES).unwrap_or(0) } else { 0 };
    if caps & PERF_METRICS_CAP == 0 || !p.arch.fixed.contains(3) {
        return Check::Skip("the PMU has no PERF_METRICS (PERF_CAPABILITIES bit 15) or no fixed counter 3");
    }
    let metrics = 0x1020_3040_5060_7080;
    ensure!(write(IA32_FIXED_CTR0 + 3, 0x12345).is_ok(), "FC3 write faulted");
    ensure!(write(IA32_PERF_METRICS, metrics).is_ok(), "PERF_METRICS write faulted");
    let switched = hypercall::vmcall(Hypercall::PmuSwitch as u64, [0; 5]);
    let fc3 = rdmsr(IA32_FIXED_CTR0 + 3);
    let back = rdmsr(IA32_PERF_METRICS);
    let _ = write(IA32_PERF_METRICS, 0);
    let _ = write(IA32_FIXED_CTR0 + 3, 0);
    ensure!(switched != HYPERCALL_ERROR, "the PMU switch failed");
    ensure!(fc3 == Ok(0x12345), "FC3 = {fc3:x?} after the switch");
    ensure!(back == Ok(metrics), "PERF_METRICS = {back:x?} after the switch, want {metrics:#x}");
    Check::Pass
}

/// x2APIC mode with every interrupt source but the LVTPC masked: the
/// legacy PICs (the BIOS routes the timer to vector 8) and the APIC's
/// timer, LINT0 and LINT1.
fn quiet_apic_for_pmis() {
    let apic_base = rdmsr(IA32_APIC_BASE).unwrap_or(0);
    let _ = write(IA32_APIC_BASE, apic_base | 1 << 11 | 1 << 10);
    // SAFETY: port I/O to the 8259 mask registers; the kernel takes no device interrupts.
    unsafe {
        x86_64::instructions::port::Port::<u8>::new(0x21).write(0xff);
        x86_64::instructions::port::Port::<u8>::new(0xa1).write(0xff);
    }
    for lvt in [0x832, 0x835, 0x836] {
        let _ = write(lvt, LVT_MASKED);
    }
}

/// Whether fixed counter 0 advances over a loop (else: an emulator's registers).
fn counting_pmu(p: &Pmu) -> bool {
    if !p.arch.fixed.contains(0) {
        return false;
    }
    let _ = write(IA32_FIXED_CTR0, 0);
    let _ = write(IA32_FIXED_CTR_CTRL, 0x1);
    let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask() | 1 << 32);
    spin(1000);
    let count = rdmsr(IA32_FIXED_CTR0).unwrap_or(0);
    let _ = write(IA32_FIXED_CTR_CTRL, 0);
    let _ = write(IA32_PERF_GLOBAL_CTRL, p.arch.gp_mask());
    let _ = write(IA32_FIXED_CTR0, 0);
    count != 0
}

/// Runs every check; returns (failed, names run).
pub fn run(mut report: impl FnMut(&str, Check)) {
    let p = Pmu::detect();
    type NamedCheck = (&'static str, fn(&Pmu) -> Check);
    let checks: [NamedCheck; 21] = [
        ("pmu_cpuid_and_counters_exist", cpuid_and_counters_exist),
        ("pmu_global_ctrl_reset_value", global_ctrl_reset_value),
        ("pmu_reserved_bits_gp", reserved_bits_gp),
        ("pmu_perf_capabilities", perf_capabilities),
        ("pmu_status_set_reset_inuse", status_set_reset_inuse),
        ("pmu_values_survive_exits_and_switches", values_survive_exits_and_switches),
        ("pmu_counts_instructions", counts_instructions),
        ("pmu_counts_branches", counts_branches),
        ("pmu_rep_string_counted_once", rep_string_counted_once),
        ("pmu_usr_os_filters_across_rings", usr_os_filters_across_rings),
        ("pmu_emulated_instructions_counted", emulated_instructions_counted),
        ("pmu_legacy_and_full_width_writes", legacy_and_full_width_writes),
        ("pmu_overflow_raises_one_pmi", overflow_raises_one_pmi),
        ("pmu_overflow_near_wrap", overflow_near_wrap),
        ("pmu_freeze_on_pmi", freeze_on_pmi),
        ("pmu_nmi_pmi_twice", nmi_pmi_twice),
        ("pmu_nmi_watchdog_style", nmi_watchdog_style),
        ("pmu_owed_pmi_through_apic", owed_pmi_through_apic),
        ("pmu_pmi_during_event_delivery", pmi_during_event_delivery),
        ("pmu_perf_metrics_survive_switch", perf_metrics_survive_switch),
        ("pmu_switch_failure_is_survivable", switch_failure_is_survivable),
    ];
    for (name, check) in checks {
        let needs_pmu = name != "pmu_cpuid_and_counters_exist";
        if needs_pmu && !p.arch.present() {
            report(name, Check::Skip("the guest has no PMU (CPUID.0AH = 0)"));
            continue;
        }
        report(name, check(&p));
    }
}
