//! The hostile-guest suite (`guest=hostile`) and the attacks that end a
//! run (`guest=attack:<name>`): what perfvisor must refuse, each check a
//! `hostile_*` test that prints its figure as a `guest: FIGURE` line.
// The guest has no allocator: a failure's message is a fixed 256-byte buffer.
#![allow(clippy::result_large_err)]

use core::arch::global_asm;
use core::arch::x86_64::_rdtsc;
use perfvisor_abi::{Attack, BootInfo, Hypercall, TestStatus, HYPERCALL_ERROR};
use perfvisor_guest::faults::{attempt, rdmsr, wrmsr};
use perfvisor_guest::fmt;
use perfvisor_guest::fmtbuf::Buf;
use perfvisor_guest::hypercall;
use x86_64::instructions::port::Port;

type Outcome = Result<Buf, Buf>;

macro_rules! ensure {
    ($cond:expr, $($why:tt)*) => {
        if !$cond {
            return Err(fmt!($($why)*));
        }
    };
}

const UD: u8 = 6;
const GP: u8 = 13;
const EXIT_IO: u64 = 30;
const EXIT_RDMSR: u64 = 31;
const IA32_APIC_BASE: u32 = 0x1b;
const X2APIC_ICR: u32 = 0x830;
/// The ports perfvisor lets through (vmx::guard::IO_ALLOW_LIST).
const IO_ALLOW_LIST: [u16; 4] = [0x20, 0x21, 0xa0, 0xa1];

// Instruction stubs: `<name>(rdi, rsi) -> rax`; a fault resumes at
// `<name>_end` (the `ret`), so `attempt` reports the vector.
macro_rules! stubs {
    ($($name:ident = $body:literal;)*) => {
        global_asm!($(
            concat!(".global ", stringify!($name), "\n", stringify!($name), ":\n", $body,
                    "\n.global ", stringify!($name), "_end\n", stringify!($name), "_end:\nret\n"),
        )*);
        mod stub {
            unsafe extern "C" {
                $(pub fn $name(a: u64, b: u64) -> u64;)*
            }
        }
    };
}

stubs! {
    s_vmxon = "vmxon [rdi]";
    s_vmclear = "vmclear [rdi]";
    s_vmptrld = "vmptrld [rdi]";
    s_vmptrst = "vmptrst [rdi]";
    s_vmread = "vmread rax, rsi";
    s_vmwrite = "vmwrite rsi, rdi";
    s_vmlaunch = "vmlaunch";
    s_vmresume = "vmresume";
    s_vmxoff = "vmxoff";
    s_invept = "mov rax, 1\ninvept rax, [rdi]";
    s_invvpid = "mov rax, 1\ninvvpid rax, [rdi]";
    s_vmfunc = "xor eax, eax\nxor ecx, ecx\n.byte 0x0f, 0x01, 0xd4";
    s_invd = "invd\nmov rax, [rdi]";
    s_getsec = "xor eax, eax\ngetsec";
    s_xsetbv = "mov rax, rdi\nmov rdx, rdi\nshr rdx, 32\nmov ecx, esi\nxsetbv";
    s_xgetbv = "xor ecx, ecx\nxgetbv\nshl rdx, 32\nor rax, rdx";
    s_mov_cr0 = "mov cr0, rdi";
    s_mov_cr4 = "mov cr4, rdi";
}

/// Runs stub `f` (its `_end` symbol at `end`) with recovery.
fn try_stub(f: unsafe extern "C" fn(u64, u64) -> u64, end: *const u8, a: u64, b: u64) -> Result<u64, u8> {
    // SAFETY: the stubs run one instruction perfvisor must refuse or
    // emulate; a fault resumes at their `ret`.
    attempt(end as u64, || unsafe { f(a, b) })
}

macro_rules! stub_call {
    ($name:ident, $end:ident, $a:expr, $b:expr) => {{
        unsafe extern "C" {
            static $end: u8;
        }
        try_stub(stub::$name, &raw const $end, $a, $b)
    }};
}

fn figure(name: &str, text: &str) {
    hypercall::write(fmt!("FIGURE {name}: {text}\n").as_str());
}

fn ticks<F: FnMut()>(n: u64, mut f: F) -> u64 {
    // SAFETY: RDTSC is unprivileged and does not exit.
    let start = unsafe { _rdtsc() };
    for _ in 0..n {
        f();
    }
    // SAFETY: as above.
    (unsafe { _rdtsc() } - start) / n
}

/// Every port outside the allow-list must exit: IN from each, counting
/// I/O exits; refused ports read all ones.
fn io_matrix() -> Outcome {
    let before = hypercall::exit_count(EXIT_IO);
    let (mut probed, mut not_ones) = (0u64, 0u64);
    for port in 0..=0xffffu16 {
        if IO_ALLOW_LIST.contains(&port) || (0x3f8..=0x3ff).contains(&port) {
            continue;
        }
        // SAFETY: a read; perfvisor intercepts it (the check is that it does).
        let v: u8 = unsafe { Port::<u8>::new(port).read() };
        probed += 1;
        not_ones += u64::from(v != 0xff);
    }
    let exits = hypercall::exit_count(EXIT_IO) - before;
    let passed = probed.saturating_sub(exits);
    let text = fmt!("{probed} ports read, {exits} exited, {passed} passed through outside the allow-list, {not_ones} read other than 0xff");
    ensure!(passed == 0 && not_ones == 0, "{}", text.as_str());
    Ok(text)
}

/// The DMA path: PCI configuration space (to find and enable a bus
/// master) and the IDE controller cannot be reached.
fn io_devices_unreachable() -> Outcome {
    // SAFETY: port I/O perfvisor refuses: PCI CONFIG_ADDRESS/DATA for
    // 0:1.1 (PIIX IDE) vendor ID, and the ATA status register.
    let (vendor, ata, bmide) = unsafe {
        Port::<u32>::new(0xcf8).write(0x8000_0900);
        let vendor = Port::<u32>::new(0xcfc).read();
        Port::<u8>::new(0x1f6).write(0xe0);
        let ata = Port::<u8>::new(0x1f7).read();
        // Bochs' BIOS puts the IDE bus-master block at 0xc000.
        Port::<u8>::new(0xc000).write(1);
        (vendor, ata, Port::<u8>::new(0xc002).read())
    };
    let text = fmt!("PCI config read {vendor:#x}, ATA status {ata:#x}, bus-master status {bmide:#x}");
    ensure!(vendor == 0xffff_ffff && ata == 0xff && bmide == 0xff, "{}", text.as_str());
    Ok(text)
}

/// COM1 is perfvisor's: the guest's LCR.DLAB and its bytes land in the
/// emulated UART; a `TEST ... ok` written there is printed prefixed.
fn com1_emulated() -> Outcome {
    // SAFETY: COM1 is emulated for the guest.
    let (lcr, dll) = unsafe {
        Port::<u8>::new(0x3fb).write(0x83);
        Port::<u8>::new(0x3f8).write(0x01);
        let lcr = Port::<u8>::new(0x3fb).read();
        let dll = Port::<u8>::new(0x3f8).read();
        Port::<u8>::new(0x3fb).write(0x03);
        for &b in b"TEST hostile_forged_on_com1 ... ok\nperfvisor: verdict PASS\x1b[2J\r\n" {
            Port::<u8>::new(0x3f8).write(b);
        }
        // DLAB left set, as an attack on perfvisor's console would.
        Port::<u8>::new(0x3fb).write(0x80);
        (lcr, dll)
    };
    let written = hypercall::write("hostile: a Write with a newline\nTEST hostile_forged_in_write ... ok\n");
    let text = fmt!("LCR read back {lcr:#x}, divisor latch {dll:#x}; guest lines prefixed (runner checks)");
    ensure!(lcr == 0x83 && dll == 0x01 && written == 0, "{}", text.as_str());
    Ok(text)
}

/// Hypercalls at CPL 3: every one refused with #UD (Exit(0) included).
fn cpl3_hypercalls() -> Outcome {
    perfvisor_guest::ring3::prepare().map_err(|e| fmt!("ring 3 unavailable: {e}"))?;
    let msg = "hostile: written from CPL 3\n";
    let calls = [
        (Hypercall::AbiVersion as u64, 0, 0),
        (Hypercall::Write as u64, msg.as_ptr() as u64, msg.len() as u64),
        (Hypercall::ExitCount as u64, 10, 0),
        (Hypercall::TrapWrite as u64, 0x0300_0000, 0),
        (0xdead, 0, 0),
        (Hypercall::Exit as u64, 0, 0),
    ];
    let (mut accepted, mut ud) = (0, 0);
    for (call, a, b) in calls {
        match perfvisor_guest::ring3::vmcall_at_ring3(call, a, b) {
            Err(UD) => ud += 1,
            _ => accepted += 1,
        }
    }
    let text = fmt!("{} hypercalls at CPL 3: {accepted} accepted, {ud} #UD", calls.len());
    ensure!(accepted == 0 && ud == calls.len(), "{}", text.as_str());
    Ok(text)
}

/// IA32_APIC_BASE: moving the base is refused with #GP, the value kept.
fn apic_base_relocation(info: &BootInfo) -> Outcome {
    let base = rdmsr(IA32_APIC_BASE).map_err(|v| fmt!("RDMSR APIC_BASE faulted ({v})"))?;
    let flags = base & 0xd00;
    let targets = [info.ram[0].start + 0x30_0000, info.hypervisor_page & !0xfff, 0xfed0_0000];
    let mut accepted = 0;
    for t in targets {
        // SAFETY: must #GP; if perfvisor let it through, it is put back below.
        if unsafe { wrmsr(IA32_APIC_BASE, t | flags) }.is_ok() {
            accepted += 1;
            // SAFETY: restores the original base.
            let _ = unsafe { wrmsr(IA32_APIC_BASE, base) };
        }
    }
    let kept = rdmsr(IA32_APIC_BASE) == Ok(base);
    // SAFETY: the same value: allowed (the base does not move).
    let same = unsafe { wrmsr(IA32_APIC_BASE, base) }.is_ok();
    let text = fmt!(
        "{} relocations tried: {accepted} accepted; base kept: {kept}; same-base write allowed: {same}",
        targets.len()
    );
    ensure!(accepted == 0 && kept && same, "{}", text.as_str());
    Ok(text)
}

/// x2APIC ICR: INIT, SIPI, SMI and NMI to other CPUs refused with #GP.
fn icr_refused() -> Outcome {
    let base = rdmsr(IA32_APIC_BASE).map_err(|v| fmt!("RDMSR APIC_BASE faulted ({v})"))?;
    if base & (1 << 10) == 0 {
        // SAFETY: x2APIC mode (the PMU checks use it too).
        unsafe { wrmsr(IA32_APIC_BASE, base | 3 << 10) }.map_err(|v| fmt!("x2APIC enable faulted ({v})"))?;
    }
    const ALL_BUT_SELF: u64 = 3 << 18;
    let ipis = [
        ("INIT", 5u64 << 8 | 1 << 14 | ALL_BUT_SELF),
        ("SIPI", 6 << 8 | 0x10 | ALL_BUT_SELF),
        ("SMI", 2 << 8 | ALL_BUT_SELF),
        ("NMI to others", 4 << 8 | ALL_BUT_SELF),
        ("INIT to APIC 1", 5 << 8 | 1 << 14 | 1 << 32),
    ];
    let mut sent = 0;
    for (_, icr) in ipis {
        // SAFETY: must #GP (perfvisor refuses these IPIs).
        if unsafe { wrmsr(X2APIC_ICR, icr) } != Err(GP) {
            sent += 1;
        }
    }
    let text = fmt!("{} IPIs tried (INIT, SIPI, SMI, NMI to others): {sent} sent", ipis.len());
    ensure!(sent == 0, "{}", text.as_str());
    Ok(text)
}

/// The ICR writes an OS makes to start CPU 1 (x2APIC ID 1), and NMI and
/// SMI to it: each must #GP. Whether CPU 1 received anything is in Bochs'
/// log, which the runner reads (`hostile_icr_aps_started`): the guest
/// cannot place a trampoline where a SIPI could point (below 1 MiB is not
/// guest RAM), so no marker of the AP's could show up in guest memory.
fn icr_to_cpu1() -> Outcome {
    let base = rdmsr(IA32_APIC_BASE).map_err(|v| fmt!("RDMSR APIC_BASE faulted ({v})"))?;
    if base & (1 << 10) == 0 {
        // SAFETY: x2APIC mode, as in `icr_refused`.
        unsafe { wrmsr(IA32_APIC_BASE, base | 3 << 10) }.map_err(|v| fmt!("x2APIC enable faulted ({v})"))?;
    }
    let own = rdmsr(0x802).map_err(|v| fmt!("RDMSR x2APIC ID faulted ({v})"))?;
    const CPU1: u64 = 1 << 32;
    const ASSERT: u64 = 1 << 14;
    const LEVEL: u64 = 1 << 15;
    const LOGICAL: u64 = 1 << 11;
    const VECTOR: u64 = 0x9f;
    let ipis = [
        5u64 << 8 | ASSERT | LEVEL | CPU1,
        5 << 8 | LEVEL | CPU1,
        6 << 8 | ASSERT | VECTOR | CPU1,
        6 << 8 | ASSERT | VECTOR | CPU1,
        4 << 8 | ASSERT | CPU1,
        4 << 8 | ASSERT | LOGICAL | CPU1,
        2 << 8 | ASSERT | CPU1,
        5 << 8 | ASSERT | 3 << 18,
        6 << 8 | ASSERT | VECTOR | 3 << 18,
        4 << 8 | ASSERT | 2 << 18,
    ];
    let mut sent = 0;
    for icr in ipis {
        // SAFETY: must #GP (perfvisor refuses these IPIs); if one is sent,
        // CPU 1 runs firmware code outside VMX: the check reports it.
        if unsafe { wrmsr(X2APIC_ICR, icr) } != Err(GP) {
            sent += 1;
        }
    }
    let text = fmt!(
        "{} ICR writes to CPU 1 (INIT assert/deassert, SIPI x2, NMI physical/logical, SMI, INIT/SIPI all-but-self, NMI to all) from x2APIC ID {own}: {sent} sent",
        ipis.len()
    );
    ensure!(sent == 0, "{}", text.as_str());
    Ok(text)
}

/// Every VMX instruction: #UD.
fn vmx_instructions() -> Outcome {
    let region = [0u64; 2];
    let p = region.as_ptr() as u64;
    let results = [
        stub_call!(s_vmxon, s_vmxon_end, p, 0),
        stub_call!(s_vmclear, s_vmclear_end, p, 0),
        stub_call!(s_vmptrld, s_vmptrld_end, p, 0),
        stub_call!(s_vmptrst, s_vmptrst_end, p, 0),
        stub_call!(s_vmread, s_vmread_end, 0, 0x4402),
        stub_call!(s_vmwrite, s_vmwrite_end, 0, 0x681e),
        stub_call!(s_vmlaunch, s_vmlaunch_end, 0, 0),
        stub_call!(s_vmresume, s_vmresume_end, 0, 0),
        stub_call!(s_vmxoff, s_vmxoff_end, 0, 0),
        stub_call!(s_invept, s_invept_end, p, 0),
        stub_call!(s_invvpid, s_invvpid_end, p, 0),
        stub_call!(s_vmfunc, s_vmfunc_end, 0, 0),
    ];
    let ud = results.iter().filter(|r| **r == Err(UD)).count();
    let text = fmt!("{} VMX instructions: {ud} #UD", results.len());
    ensure!(ud == results.len(), "{} ({:?})", text.as_str(), results);
    Ok(text)
}

/// INVD completes (as WBINVD: memory written before it survives); GETSEC #UD.
fn invd_and_getsec() -> Outcome {
    let cell = core::hint::black_box(0x1234_5678_u64);
    let invd = stub_call!(s_invd, s_invd_end, &raw const cell as u64, 0);
    let getsec = stub_call!(s_getsec, s_getsec_end, 0, 0);
    let text = fmt!("INVD {invd:x?} (memory kept), GETSEC {getsec:?}");
    ensure!(invd == Ok(0x1234_5678) && getsec == Err(UD), "{}", text.as_str());
    Ok(text)
}

/// XSETBV: valid XCR0 values accepted, invalid ones #GP.
fn xsetbv() -> Outcome {
    let leaf1 = core::arch::x86_64::__cpuid_count(1, 0);
    if leaf1.ecx & (1 << 26) == 0 {
        return Err(fmt!("CPUID.1:ECX.XSAVE = 0: nothing to test"));
    }
    let cr4 = x86_64::registers::control::Cr4::read_raw();
    stub_call!(s_mov_cr4, s_mov_cr4_end, cr4 | 1 << 18, 0).map_err(|v| fmt!("setting CR4.OSXSAVE faulted ({v})"))?;
    let leaf_d = core::arch::x86_64::__cpuid_count(0xd, 0);
    let supported = u64::from(leaf_d.eax) | u64::from(leaf_d.edx) << 32;
    let current = stub_call!(s_xgetbv, s_xgetbv_end, 0, 0).map_err(|v| fmt!("XGETBV faulted ({v})"))?;
    let avx = supported & 0b111;
    let valid = [0b11, avx, current];
    let invalid = [(0, 0), (0b101 & supported | 1, 0), (current, 1), (current | 1 << 63, 0), (0b10, 0)];
    let ok = valid.iter().filter(|&&v| stub_call!(s_xsetbv, s_xsetbv_end, v, 0).is_ok()).count();
    let gp = invalid.iter().filter(|&&(v, x)| stub_call!(s_xsetbv, s_xsetbv_end, v, x) == Err(GP)).count();
    let back = stub_call!(s_xgetbv, s_xgetbv_end, 0, 0);
    let text = fmt!(
        "valid {ok}/{} accepted, invalid {gp}/{} #GP (supported {supported:#x}); XCR0 now {back:x?}",
        valid.len(),
        invalid.len()
    );
    ensure!(ok == valid.len() && gp == invalid.len() && back == Ok(current), "{}", text.as_str());
    Ok(text)
}

/// CR writes to the bits perfvisor owns: #GP, nothing changed.
fn cr_masked_bits() -> Outcome {
    use x86_64::registers::control::{Cr0, Cr4};
    let (cr0, cr4) = (Cr0::read_raw(), Cr4::read_raw());
    let writes = [
        stub_call!(s_mov_cr0, s_mov_cr0_end, cr0 & !(1 << 5), 0),
        stub_call!(s_mov_cr4, s_mov_cr4_end, cr4 | 1 << 13, 0),
        stub_call!(s_mov_cr0, s_mov_cr0_end, cr0 & !(1 << 31), 0),
    ];
    let gp = writes.iter().filter(|r| **r == Err(GP)).count();
    let kept = Cr0::read_raw() == cr0 && Cr4::read_raw() == cr4;
    let text = fmt!("{} writes (CR0.NE clear, CR4.VMXE set, CR0.PG clear): {gp} #GP, CRs kept: {kept}", writes.len());
    ensure!(gp == writes.len() && kept, "{} ({:?})", text.as_str(), writes);
    Ok(text)
}

/// Every MSR of the bitmap's two ranges read once: passed through,
/// emulated or #GP; what passes through must be in perfvisor's policy.
fn msr_matrix() -> Outcome {
    let arch = core::arch::x86_64::__cpuid_count(0xa, 0);
    let (gp_counters, fixed) = ((arch.eax >> 8) & 0xff, (arch.edx & 0x1f).max(arch.ecx.count_ones()));
    let allowed = |m: u32| {
        matches!(m, 0x1b | 0x174..=0x176 | 0x800..=0x8ff | 0xc000_0081..=0xc000_0084 | 0xc000_0100..=0xc000_0103)
            || (0xc1..0xc1 + gp_counters).contains(&m)
            || (0x4c1..0x4c1 + gp_counters).contains(&m)
            || (0x309..0x309 + fixed.max(4)).contains(&m)
            || m == 0x329
            // GLOBAL_STATUS/CTRL/OVF_CTRL/STATUS_SET/INUSE, FIXED_CTR_CTRL: the vPMU's table.
            || (0x38d..=0x392).contains(&m)
    };
    let (mut passed, mut emulated, mut gp, mut outside, mut vmx) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut first_outside = None;
    for msr in (0..0x2000u32).chain(0xc000_0000..0xc000_2000) {
        let before = hypercall::exit_count(EXIT_RDMSR);
        let r = rdmsr(msr);
        let exited = hypercall::exit_count(EXIT_RDMSR) - before == 1;
        match (r, exited) {
            (Err(_), _) => gp += 1,
            (Ok(_), true) => emulated += 1,
            (Ok(_), false) => {
                passed += 1;
                if !allowed(msr) {
                    outside += 1;
                    first_outside.get_or_insert(msr);
                }
            }
        }
        if (0x480..=0x493).contains(&msr) && r.is_ok() {
            vmx += 1;
        }
    }
    let text = fmt!(
        "16384 MSRs: {passed} passed through, {emulated} emulated, {gp} #GP; {outside} passed through outside the \
         policy (first {first_outside:x?}); VMX capability MSRs readable: {vmx}"
    );
    ensure!(outside == 0 && vmx == 0, "{}", text.as_str());
    Ok(text)
}

/// Unknown hypercalls cost what a known one costs (no log line each,
/// once the first few have been logged).
fn exit_flood() -> Outcome {
    for _ in 0..16 {
        hypercall::vmcall(0xbad0_0000, [0; 5]);
    }
    let known = ticks(500, || {
        core::hint::black_box(hypercall::vmcall(Hypercall::AbiVersion as u64, [0; 5]));
    });
    let unknown = ticks(2000, || {
        core::hint::black_box(hypercall::vmcall(0xbad0_0000, [0; 5]));
    });
    let text =
        fmt!("2000 unknown hypercalls: {unknown} TSC ticks each, a known one {known} (x{})", unknown / known.max(1));
    ensure!(unknown <= 3 * known, "{}", text.as_str());
    Ok(text)
}

/// Guest events perfvisor refuses, each kind `FLOOD_EVENTS` times between
/// `FLOOD <kind> begin` and `FLOOD <kind> end <n>` lines, after 16 of
/// them (past the 8 logged per reason): the runner counts perfvisor's
/// console bytes between the marks (`hostile_console_bytes_per_event`);
/// the figure here is the cost in TSC ticks of each kind's exit.
fn log_flood() -> Outcome {
    const FLOOD_EVENTS: u64 = 1000;
    let outcomes = core::cell::Cell::new(0u64);
    let expect = |ok: bool| outcomes.set(outcomes.get() + u64::from(!ok));
    let kinds: [(&str, u64, &dyn Fn()); 7] = [
        ("cpuid", FLOOD_EVENTS, &|| {
            core::hint::black_box(core::arch::x86_64::__cpuid_count(0, 0));
        }),
        ("known-hypercall", FLOOD_EVENTS, &|| {
            core::hint::black_box(hypercall::vmcall(Hypercall::AbiVersion as u64, [0; 5]));
        }),
        ("unknown-hypercall", FLOOD_EVENTS, &|| expect(hypercall::vmcall(0xbad0_0001, [0; 5]) == HYPERCALL_ERROR)),
        // SAFETY: port 0x80 is refused (the write dropped).
        ("refused-port", FLOOD_EVENTS, &|| unsafe { Port::<u8>::new(0x80).write(0) }),
        ("unknown-msr", FLOOD_EVENTS, &|| expect(rdmsr(0x1fff).is_err())),
        ("vmx-instruction", FLOOD_EVENTS, &|| expect(stub_call!(s_vmxoff, s_vmxoff_end, 0, 0) == Err(UD))),
        // SAFETY: must #GP (INIT to the other CPUs is refused).
        ("icr-init", FLOOD_EVENTS, &|| expect(unsafe { wrmsr(X2APIC_ICR, 5 << 8 | 1 << 14 | 3 << 18) } == Err(GP))),
    ];
    let base = rdmsr(IA32_APIC_BASE).map_err(|v| fmt!("RDMSR APIC_BASE faulted ({v})"))?;
    if base & (1 << 10) == 0 {
        // SAFETY: x2APIC mode, for the ICR events.
        unsafe { wrmsr(IA32_APIC_BASE, base | 3 << 10) }.map_err(|v| fmt!("x2APIC enable faulted ({v})"))?;
    }
    let mut text = Buf::new();
    for (kind, n, event) in kinds {
        for _ in 0..16 {
            event();
        }
        hypercall::write(fmt!("FLOOD {kind} begin\n").as_str());
        let each = ticks(n, event);
        hypercall::write(fmt!("FLOOD {kind} end {n}\n").as_str());
        let _ = core::fmt::Write::write_fmt(&mut text, format_args!("{kind} {each}, "));
    }
    let wrong = outcomes.get();
    let text = fmt!("TSC ticks per exit: {}{wrong} events not refused as expected", text.as_str());
    ensure!(wrong == 0, "{}", text.as_str());
    Ok(text)
}

/// Identity-maps `linear`'s 4-KiB page onto the guest-RAM page `phys`,
/// building tables (in guest RAM at `tables`, 4 pages) as needed.
///
/// # Safety
/// `phys` and `tables` must be free guest RAM; `linear` must not be in use.
unsafe fn map_page(linear: u64, phys: u64, tables: u64) {
    const P_W: u64 = 0b11;
    let index = |level: u32| ((linear >> (12 + 9 * level)) & 0x1ff) as usize;
    let (cr3, _) = x86_64::registers::control::Cr3::read_raw();
    let mut table = cr3.start_address().as_u64() as *mut u64;
    let mut next_table = tables;
    for level in (1..4).rev() {
        // SAFETY: the active tables are identity-mapped guest RAM.
        let entry = unsafe { table.add(index(level)) };
        // SAFETY: as above.
        let value = unsafe { entry.read_volatile() };
        if value & 1 == 0 || value & (1 << 7) != 0 {
            // SAFETY: `next_table` is free guest RAM (the caller's promise).
            unsafe {
                core::ptr::write_bytes(next_table as *mut u8, 0, 4096);
                entry.write_volatile(next_table | P_W);
            }
            next_table += 4096;
        }
        // SAFETY: as above.
        table = (unsafe { entry.read_volatile() } & 0x000f_ffff_ffff_f000) as *mut u64;
    }
    // SAFETY: as above.
    unsafe { table.add(index(0)).write_volatile(phys | P_W) };
    x86_64::instructions::tlb::flush_all();
}

/// CPUID as the last instruction before the top of the address space
/// resumes at 0; before the non-canonical hole, #GP.
fn rip_edges(info: &BootInfo) -> Outcome {
    let ram = info.ram[0].start;
    let (top, landing, hole) = (ram + 0x40_0000, ram + 0x40_1000, ram + 0x40_2000);
    let tables = ram + 0x41_0000;
    let back = rip_edge_return as *const () as u64;
    // SAFETY: free guest RAM above the image (the guest's layout keeps
    // 36-37 MiB unused); the linear pages at the top, at 0 and below the
    // hole are not used by this kernel.
    unsafe {
        for page in [top, landing, hole] {
            core::ptr::write_bytes(page as *mut u8, 0xcc, 4096);
        }
        // CPUID in the last two bytes below 2^64 and below 2^47.
        core::ptr::copy_nonoverlapping([0x0f, 0xa2].as_ptr(), (top + 0xffe) as *mut u8, 2);
        core::ptr::copy_nonoverlapping([0x0f, 0xa2].as_ptr(), (hole + 0xffe) as *mut u8, 2);
        // At linear 0: movabs r11, back; jmp r11.
        let mut code = [0x49, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0x41, 0xff, 0xe3];
        code[2..10].copy_from_slice(&back.to_le_bytes());
        core::ptr::copy_nonoverlapping(code.as_ptr(), landing as *mut u8, code.len());
        map_page(0xffff_ffff_ffff_f000, top, tables);
        map_page(0, landing, tables + 0x3000);
        map_page(0x0000_7fff_ffff_f000, hole, tables + 0x6000);
    }
    // SAFETY: runs CPUID at the edge; the landing code jumps back to
    // `rip_edge_return`, which returns from `rip_edge_run`.
    let wrapped = attempt(back, || unsafe { rip_edge_run(0xffff_ffff_ffff_fffe) });
    // SAFETY: as above; the #GP resumes at `rip_edge_return`.
    let hole_result = attempt(back, || unsafe { rip_edge_run(0x0000_7fff_ffff_fffe) });
    let text = fmt!("CPUID at 0xfffffffffffffffe: {wrapped:x?} (resumed at 0); at 0x7ffffffffffe: {hole_result:x?}");
    ensure!(wrapped == Ok(1) && hole_result == Err(GP), "{}", text.as_str());
    Ok(text)
}

unsafe extern "C" {
    fn rip_edge_run(target: u64) -> u64;
    fn rip_edge_return();
}

// rip_edge_run(target): saves callee-saved registers (CPUID clobbers RBX),
// jumps to `target`; the landing code (or the #GP recovery) comes back to
// rip_edge_return with the stack as it was, which returns 1.
global_asm!(
    ".global rip_edge_run",
    "rip_edge_run:",
    "push rbx",
    "xor eax, eax",
    "jmp rdi",
    ".global rip_edge_return",
    "rip_edge_return:",
    "pop rbx",
    "mov eax, 1",
    "ret",
);

/// Runs the hostile suite; returns the number that failed.
pub fn run(info: &BootInfo) -> u64 {
    let checks: [(&str, &dyn Fn() -> Outcome); 15] = [
        ("hostile_io_matrix", &io_matrix),
        ("hostile_io_devices_unreachable", &io_devices_unreachable),
        ("hostile_com1_emulated", &com1_emulated),
        ("hostile_cpl3_hypercalls", &cpl3_hypercalls),
        ("hostile_apic_base_relocation", &|| apic_base_relocation(info)),
        ("hostile_icr_init_sipi_smi_nmi", &icr_refused),
        ("hostile_vmx_instructions", &vmx_instructions),
        ("hostile_invd_getsec", &invd_and_getsec),
        ("hostile_xsetbv", &xsetbv),
        ("hostile_cr_masked_bits", &cr_masked_bits),
        ("hostile_msr_matrix", &msr_matrix),
        ("hostile_exit_flood", &exit_flood),
        ("hostile_log_flood", &log_flood),
        ("hostile_rip_edges", &|| rip_edges(info)),
        ("hostile_unknown_hypercall_refused", &|| {
            let r = hypercall::vmcall(0x1234, [0; 5]);
            let text = fmt!("unknown hypercall returned {r:#x}");
            ensure!(r == HYPERCALL_ERROR, "{}", text.as_str());
            Ok(text)
        }),
    ];
    report_checks(&checks)
}

/// The 2-CPU scenario (`guest=hostile-icr`); returns the number that failed.
pub fn run_icr() -> u64 {
    report_checks(&[("hostile_icr_to_cpu1_refused", &icr_to_cpu1)])
}

fn report_checks(checks: &[(&str, &dyn Fn() -> Outcome)]) -> u64 {
    let mut failed = 0;
    for &(name, check) in checks {
        match check() {
            Ok(text) => {
                figure(name, text.as_str());
                hypercall::report(TestStatus::Ok, name, "");
            }
            Err(why) => {
                failed += 1;
                hypercall::report(TestStatus::Failed, name, why.as_str());
            }
        }
    }
    hypercall::write(fmt!("TESTS DONE {} run, {failed} failed\n", checks.len()).as_str());
    failed
}

/// The address a memory probe touches, and what it is; `None`: nothing
/// to probe on this machine (no hole between guest RAM ranges).
fn probe_target(attack: Attack, info: &BootInfo) -> Option<(u64, &'static str)> {
    let ram = &info.ram[..(info.ram_count as usize).min(info.ram.len())];
    let first_hole = ram.windows(2).find(|w| w[0].end < w[1].start);
    Some(match attack {
        Attack::ProbeBelowRam => (ram.first()?.start - 1, "the last byte below guest RAM"),
        Attack::ProbeAboveRam => (ram.last()?.end, "the first byte above guest RAM"),
        Attack::ProbeHoleStart => (first_hole?[0].end, "the first byte of the first hole in guest RAM"),
        Attack::ProbeHoleEnd => (first_hole?[1].start - 1, "the last byte of the first hole in guest RAM"),
        Attack::ProbeHypervisorRead | Attack::ProbeHypervisorWrite | Attack::ProbeHypervisorExec => {
            (info.hypervisor_page, "a hypervisor page")
        }
        Attack::ProbePage0 => (0, "physical page 0"),
        Attack::ProbeVga => (0xa_0000, "the VGA window"),
        Attack::ProbeBiosRom => (0xffff_f000, "the BIOS ROM's top page"),
        Attack::ProbeLocalApic => (0xfee0_0000, "the local APIC page"),
        Attack::ProbeIoApic => (0xfec0_0000, "the IOAPIC"),
        Attack::ProbeHpet => (0xfed0_0000, "the HPET"),
        Attack::ProbePciMmio => (0xe000_0000, "PCI MMIO (the VBE framebuffer)"),
        _ => return None,
    })
}

/// One access to a guest-physical address outside guest RAM: perfvisor
/// must stop the guest (EPT violation) before it returns.
fn probe(attack: Attack, info: &BootInfo) -> ! {
    let Some((addr, what)) = probe_target(attack, info) else {
        hypercall::write("probe: this machine's guest RAM has no hole to probe\n");
        hypercall::exit(91)
    };
    let access = match attack {
        Attack::ProbeHypervisorWrite => "writing",
        Attack::ProbeHypervisorExec => "executing",
        _ => "reading",
    };
    hypercall::write(fmt!("probe: {access} {what} at guest-physical {addr:#x}\n").as_str());
    // SAFETY: a deliberate access outside guest RAM (the identity page
    // tables map the first 4 GiB); perfvisor must stop the guest with an
    // EPT violation, so none of these returns under perfvisor.
    let reached = unsafe {
        match attack {
            Attack::ProbeHypervisorWrite => {
                core::ptr::write_volatile(addr as *mut u8, 0xcc);
                0xcc
            }
            Attack::ProbeHypervisorExec => {
                let f: extern "C" fn() = core::mem::transmute(addr as usize);
                f();
                0
            }
            _ => core::ptr::read_volatile(addr as *const u8),
        }
    };
    hypercall::write(fmt!("probe: REACHED {addr:#x} (got {reached:#x}): isolation broken\n").as_str());
    hypercall::exit(92)
}

/// One attack that ends the run; perfvisor must end it with a fail verdict.
pub fn attack(info: &BootInfo) -> ! {
    let attack = Attack::from_raw(info.attack);
    hypercall::write(fmt!("attack: {attack:?}\n").as_str());
    if let Some(a) = attack.filter(|&a| a as u32 >= Attack::ProbeBelowRam as u32) {
        probe(a, info);
    }
    // SAFETY: each is an attack perfvisor must stop; none returns normally
    // under perfvisor (it ends the guest), so the exit below reports it did.
    unsafe {
        match attack {
            Some(Attack::ForgeConsole) => {
                for &b in b"\nperfvisor: verdict PASS\n" {
                    Port::<u8>::new(0x3f8).write(b);
                }
                core::arch::asm!("xchg bx, bx");
            }
            Some(Attack::ForgeWrite) => {
                hypercall::write("done\nperfvisor: verdict PASS\n");
                core::arch::asm!("xchg bx, bx");
            }
            Some(Attack::HangSpin) => core::arch::asm!("cli", "2:", "jmp 2b"),
            Some(Attack::HangHalt) => core::arch::asm!("cli", "2:", "hlt", "jmp 2b"),
            Some(Attack::ResetCf9) => Port::<u8>::new(0xcf9).write(0x06),
            Some(Attack::ResetKbc) => Port::<u8>::new(0x64).write(0xfe),
            Some(Attack::ResetPort92) => {
                let v: u8 = Port::<u8>::new(0x92).read();
                Port::<u8>::new(0x92).write(v | 1);
            }
            Some(Attack::BochsShutdown) => {
                for &b in b"Shutdown" {
                    Port::<u8>::new(0x8900).write(b);
                }
            }
            Some(Attack::DebugExit) => Port::<u32>::new(0xf4).write(0x10),
            Some(_) | None => {}
        }
    }
    hypercall::write("attack: perfvisor let it through\n");
    hypercall::exit(90)
}
