//! perfvisor's Linux test client: run as the test initramfs's last step
//! (xtask/src/linux.rs builds it static and puts it in `/bin`). It prints
//! the kernel's PMU lines, runs named checks of Linux's perf driver against
//! CPUID and against exact counts of known loops, prints
//! `LINUXTEST name ... ok|FAILED (why)|skipped (why)` and
//! `LINUXTESTS DONE N run, F failed`, and ends the run with perfvisor's
//! verdict protocol (REFERENCE.md §5): the verdict line, then `out 0xf4`
//! and `xchg bx, bx` (pass) or Bochs' shutdown port (fail).
//!
//! Exact counts: each loop is measured at two lengths and the difference
//! compared with the exact difference in instructions (or branches), so the
//! fixed cost of starting and stopping the counter cancels out.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod client {
    use std::fmt::Write as _;
    use std::io::Write as _;

    /// Prints a console line. As PID 1 of the test machine it goes through
    /// /dev/kmsg at KERN_CRIT, so the kernel's console driver writes it to
    /// the UART synchronously (the command line has `printk.time=0
    /// printk.devkmsg=on`, so the line appears as is): tty output to the
    /// 16550 waits for its transmit interrupt, and in Bochs that output was
    /// seen to stall for good once kernel messages interleaved with it.
    macro_rules! say {
        ($($arg:tt)*) => { crate::client::say_line(&format!($($arg)*)) };
    }

    pub fn say_line(line: &str) {
        static KMSG: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
        let kmsg = KMSG.get_or_init(|| {
            if std::process::id() == 1 {
                std::fs::OpenOptions::new().write(true).open("/dev/kmsg").ok()
            } else {
                None
            }
        });
        match kmsg {
            // One write per record; the kernel splits nothing.
            Some(f) => {
                let mut f: &std::fs::File = f;
                let _ = f.write_all(format!("<2>{line}\n").as_bytes());
            }
            None => println!("{line}"),
        }
    }

    pub enum Check {
        Ok,
        Failed(String),
        Skipped(String),
    }

    /// The kernel log (klogctl READ_ALL), one line per record.
    fn dmesg() -> String {
        let mut buf = vec![0u8; 1 << 20];
        // SAFETY: buf is valid for buf.len() bytes; 3 = SYSLOG_ACTION_READ_ALL.
        let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), buf.len() as libc::c_int) };
        buf.truncate(n.max(0) as usize);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A log line without its `<level>[ time]` prefix and with runs of
    /// spaces collapsed (`...     version:     5` -> `... version: 5`).
    fn tidy(line: &str) -> String {
        let line = line.trim_start_matches(|c: char| c == '<' || c.is_ascii_digit() || c == '>');
        let line = match line.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or(rest, |(_, l)| l),
            None => line,
        };
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    struct Cpuid0a {
        version: u32,
        gp: u32,
        width: u32,
        fixed: u32,
    }

    fn cpuid_0a() -> Cpuid0a {
        let r = core::arch::x86_64::__cpuid(0xa);
        let version = r.eax & 0xff;
        let edx_fixed = r.edx & 0x1f;
        // Linux 6.1 (intel_pmu_init): v5+ counts the fixed counters by the
        // highest bit of CPUID.0AH:ECX (the fixed-counter bitmap) or EDX.
        let fixed = if version >= 5 {
            let mask = r.ecx | ((1u32 << edx_fixed) - 1);
            32 - mask.leading_zeros()
        } else if version > 1 {
            edx_fixed.max(3)
        } else {
            0
        };
        Cpuid0a { version, gp: (r.eax >> 8) & 0xff, width: (r.eax >> 16) & 0xff, fixed }
    }

    /// The number after `key` in the tidy PMU lines.
    fn pmu_value(lines: &[String], key: &str) -> Option<u64> {
        let line = lines.iter().find(|l| l.starts_with(&format!("... {key}")))?;
        let value = line.rsplit(' ').next()?;
        match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => value.parse().ok(),
        }
    }

    // --- perf_event_open ---

    const PERF_TYPE_HARDWARE: u32 = 0;
    const PERF_TYPE_RAW: u32 = 4;
    const PERF_COUNT_HW_CPU_CYCLES: u64 = 0;
    const PERF_COUNT_HW_INSTRUCTIONS: u64 = 1;
    const PERF_COUNT_HW_BRANCH_INSTRUCTIONS: u64 = 4;
    const PERF_COUNT_HW_REF_CPU_CYCLES: u64 = 9;
    /// perf_event_attr flag bits.
    const DISABLED: u64 = 1 << 0;
    const EXCLUDE_KERNEL: u64 = 1 << 5;
    const EXCLUDE_HV: u64 = 1 << 6;
    /// `sample_period` is a frequency (`perf record`'s default, 4000 Hz).
    const FREQ: u64 = 1 << 10;
    /// `precise_ip` (bits 15-16): 0 is any skid; 1-3 ask for PEBS.
    const PRECISE_IP_SHIFT: u32 = 15;
    const PERF_SAMPLE_IP: u64 = 1 << 0;
    const PERF_FORMAT_TOTAL_TIME_ENABLED: u64 = 1 << 0;
    const PERF_FORMAT_TOTAL_TIME_RUNNING: u64 = 1 << 1;
    const PERF_FORMAT_GROUP: u64 = 1 << 3;
    const PERF_RECORD_LOST: u32 = 2;
    const PERF_RECORD_THROTTLE: u32 = 5;
    const PERF_RECORD_SAMPLE: u32 = 9;
    const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
    const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
    const PERF_EVENT_IOC_RESET: libc::c_ulong = 0x2403;

    /// struct perf_event_attr up to config1 (PERF_ATTR_SIZE_VER0, 64 bytes).
    #[repr(C)]
    #[derive(Default)]
    struct PerfEventAttr {
        kind: u32,
        size: u32,
        config: u64,
        sample_period: u64,
        sample_type: u64,
        read_format: u64,
        flags: u64,
        wakeup_events: u32,
        bp_type: u32,
        config1: u64,
    }

    struct Counter(libc::c_int);

    impl Counter {
        /// A user-only hardware counter of this process, disabled.
        fn open(config: u64) -> Result<Self, String> {
            Self::open_attr(
                PerfEventAttr { config, flags: DISABLED | EXCLUDE_KERNEL | EXCLUDE_HV, ..Default::default() },
                -1,
            )
        }

        /// `attr` (its size filled in) for this process on any CPU, in
        /// `group` (-1: a leader); the error is perf_event_open's errno.
        fn open_attr(mut attr: PerfEventAttr, group: libc::c_int) -> Result<Self, String> {
            attr.size = core::mem::size_of::<PerfEventAttr>() as u32;
            // SAFETY: attr is a valid perf_event_attr of the size it states; pid 0, cpu -1, no flags.
            let fd =
                unsafe { libc::syscall(libc::SYS_perf_event_open, &attr as *const PerfEventAttr, 0, -1, group, 0) };
            if fd < 0 {
                return Err(format!("perf_event_open: {}", std::io::Error::last_os_error()));
            }
            Ok(Self(fd as libc::c_int))
        }

        fn ioctl(&self, request: libc::c_ulong) {
            // SAFETY: a perf event fd and a request that takes no argument.
            unsafe { libc::ioctl(self.0, request, 0) };
        }

        fn read(&self) -> Result<u64, String> {
            let mut value = 0u64;
            // SAFETY: reads 8 bytes into value.
            let n = unsafe { libc::read(self.0, (&mut value as *mut u64).cast(), 8) };
            if n != 8 {
                return Err(format!("read of the counter: {}", std::io::Error::last_os_error()));
            }
            Ok(value)
        }

        /// Counts `body(n)` in user mode.
        fn measure(&self, body: fn(u64), n: u64) -> Result<u64, String> {
            self.ioctl(PERF_EVENT_IOC_RESET);
            self.ioctl(PERF_EVENT_IOC_ENABLE);
            body(n);
            self.ioctl(PERF_EVENT_IOC_DISABLE);
            self.read()
        }
    }

    impl Drop for Counter {
        fn drop(&mut self) {
            // SAFETY: closes the fd this Counter owns.
            unsafe { libc::close(self.0) };
        }
    }

    /// `n` iterations of `dec; jnz`: 1 + 2n instructions, n branches (plus
    /// the call and return, the same for every n).
    #[inline(never)]
    fn known_loop(n: u64) {
        // SAFETY: touches only rcx, which is declared clobbered.
        unsafe {
            core::arch::asm!(
                "mov rcx, {n}",
                "2:",
                "dec rcx",
                "jnz 2b",
                n = in(reg) n.max(1),
                out("rcx") _,
                options(nostack, nomem),
            )
        }
    }

    /// Loop lengths: 40,000 instructions apart, under 1 ms of emulated time
    /// in Bochs, so most runs see no interrupt.
    const SHORT: u64 = 1_000;
    const LONG: u64 = 21_000;
    /// Runs of each length; the smallest count of each is compared.
    const REPS: usize = 7;

    /// Measures both loop lengths REPS times (interleaved) and returns the
    /// smallest count of each, plus how many runs counted more than their
    /// length's smallest (an interrupt during a run may add counts: the
    /// timer tick's IRET back to user mode, as some CPUs count it, and
    /// Linux reprogramming the counter — so only an undisturbed run is
    /// held to the exact figure).
    fn smallest(mut measure: impl FnMut(u64) -> Result<u64, String>) -> Result<(u64, u64, usize), String> {
        let (mut short, mut long) = (Vec::new(), Vec::new());
        for _ in 0..REPS {
            short.push(measure(SHORT)?);
            long.push(measure(LONG)?);
        }
        let (s, l) = (*short.iter().min().expect("REPS > 0"), *long.iter().min().expect("REPS > 0"));
        let disturbed = short.iter().filter(|&&v| v != s).count() + long.iter().filter(|&&v| v != l).count();
        Ok((s, l, disturbed))
    }

    fn judge(what: &str, (short, long, disturbed): (u64, u64, usize), want: u64) -> Check {
        let got = long.wrapping_sub(short);
        if disturbed > 0 {
            say!("client: {what}: {disturbed} of {} runs counted more than their length's smallest", 2 * REPS);
        }
        if got == want {
            Check::Ok
        } else {
            Check::Failed(format!(
                "{what}: at least {short} for {SHORT} iterations and {long} for {LONG}: difference {got}, exactly {want} \
                 expected ({disturbed} of {} runs counted more than their length's smallest)",
                2 * REPS
            ))
        }
    }

    fn exact(name: &str, config: u64, per_iteration: u64) -> Check {
        let counter = match Counter::open(config) {
            Ok(c) => c,
            Err(e) => return Check::Failed(e),
        };
        match smallest(|n| counter.measure(known_loop, n)) {
            Ok(m) => judge(&format!("{name} read()"), m, (LONG - SHORT) * per_iteration),
            Err(e) => Check::Failed(e),
        }
    }

    /// The perf mmap page's fields used by user RDPMC (struct
    /// perf_event_mmap_page).
    #[repr(C)]
    struct MmapPage {
        version: u32,
        compat_version: u32,
        lock: u32,
        index: u32,
        offset: i64,
        time_enabled: u64,
        time_running: u64,
        capabilities: u64,
        pmc_width: u16,
    }

    const CAP_USER_RDPMC: u64 = 1 << 2;

    /// Reads the counter through RDPMC (the documented seqlock loop):
    /// value, RDPMC index + 1, and how often the loop retried (a retry runs
    /// more instructions); `None` when the page says RDPMC is not usable now.
    #[inline(never)]
    fn rdpmc_read(page: *const MmapPage) -> Option<(u64, u32, u32)> {
        let mut retries = 0;
        loop {
            // SAFETY: page is the mapped perf page; the kernel updates it
            // concurrently, hence volatile reads and the lock recheck.
            unsafe {
                let seq = core::ptr::read_volatile(&(*page).lock);
                core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
                let index = core::ptr::read_volatile(&(*page).index);
                let caps = core::ptr::read_volatile(&(*page).capabilities);
                if caps & CAP_USER_RDPMC == 0 || index == 0 {
                    return None;
                }
                let offset = core::ptr::read_volatile(&(*page).offset);
                let width = u32::from(core::ptr::read_volatile(&(*page).pmc_width));
                let (lo, hi): (u32, u32);
                core::arch::asm!("rdpmc", in("ecx") index - 1, out("eax") lo, out("edx") hi, options(nostack, nomem));
                let pmc = (u64::from(hi) << 32) | u64::from(lo);
                let shift = 64 - width;
                let value = (offset as u64).wrapping_add((((pmc << shift) as i64) >> shift) as u64);
                core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
                if core::ptr::read_volatile(&(*page).lock) == seq {
                    return Some((value, index, retries));
                }
            }
            retries += 1;
        }
    }

    fn rdpmc_fixed() -> Check {
        if cpuid_0a().fixed == 0 {
            return Check::Skipped("CPUID.0AH reports no fixed counters".into());
        }
        let counter = match Counter::open(PERF_COUNT_HW_INSTRUCTIONS) {
            Ok(c) => c,
            Err(e) => return Check::Failed(e),
        };
        // SAFETY: maps the event's one user page read-only; unmapped at the end.
        let page = unsafe { libc::mmap(core::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, counter.0, 0) };
        if page == libc::MAP_FAILED {
            return Check::Failed(format!("mmap of the perf page: {}", std::io::Error::last_os_error()));
        }
        let page = page as *const MmapPage;
        counter.ioctl(PERF_EVENT_IOC_ENABLE);
        let mut index = 0;
        let result = smallest(|n| {
            // A read whose seqlock loop retried ran extra instructions inside
            // the measured span: such a run is measured again.
            for _ in 0..5 {
                let (before, i, _) =
                    rdpmc_read(page).ok_or("the perf page does not offer RDPMC (cap_user_rdpmc clear or index 0)")?;
                known_loop(n);
                let (after, _, retries) = rdpmc_read(page).ok_or("RDPMC stopped being offered")?;
                index = i;
                if retries == 0 {
                    return Ok(after.wrapping_sub(before));
                }
            }
            Err("the perf page's seqlock kept changing".to_string())
        });
        counter.ioctl(PERF_EVENT_IOC_DISABLE);
        // SAFETY: unmaps the page mapped above.
        unsafe { libc::munmap(page as *mut _, 4096) };
        match result {
            Err(e) => Check::Failed(e),
            Ok(_) if (index.wrapping_sub(1)) & (1 << 30) == 0 => Check::Failed(format!(
                "instructions:u is on RDPMC index {:#x}, not a fixed counter",
                index.wrapping_sub(1)
            )),
            Ok(m) => judge(&format!("instructions:u RDPMC ECX {:#x}", index - 1), m, 2 * (LONG - SHORT)),
        }
    }

    // --- sampling (what `perf record` asks of the kernel) ---

    /// Pages of a sampling event's ring buffer (a power of two).
    const RING_PAGES: usize = 16;

    /// A sampling event's mmap: the control page, then the ring.
    struct Ring {
        base: *mut u8,
        len: usize,
    }

    /// What a ring held: samples with their IPs, lost and throttle records.
    #[derive(Default)]
    struct Samples {
        ips: Vec<u64>,
        lost: u64,
        throttled: u64,
    }

    impl Ring {
        fn map(counter: &Counter) -> Result<Self, String> {
            let len = (1 + RING_PAGES) * 4096;
            // SAFETY: maps the event's control page and ring (read-write,
            // so the kernel honours data_tail); unmapped in Drop.
            let base = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    counter.0,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(format!("mmap of the ring buffer: {}", std::io::Error::last_os_error()));
            }
            Ok(Self { base: base.cast(), len })
        }

        /// Walks the records the kernel wrote (samples of `PERF_SAMPLE_IP`).
        fn samples(&self) -> Samples {
            const DATA_HEAD: usize = 1024;
            let size = RING_PAGES * 4096;
            // SAFETY: data_head is an aligned u64 inside the control page;
            // the kernel writes it, hence volatile, then a fence before the data.
            let head = unsafe { core::ptr::read_volatile(self.base.add(DATA_HEAD).cast::<u64>()) } as usize;
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
            let data = self.base.wrapping_add(4096);
            let byte = |at: usize| -> u8 {
                // SAFETY: at % size is inside the ring.
                unsafe { *data.add(at % size) }
            };
            let word = |at: usize, n: usize| (0..n).fold(0u64, |v, i| v | (u64::from(byte(at + i)) << (8 * i)));
            let mut out = Samples::default();
            // data_tail stays 0, so the kernel never overwrites: once the
            // ring is full it drops samples and says so in a LOST record.
            let mut at = 0;
            while at + 8 <= head.min(size) {
                let kind = word(at, 4) as u32;
                let len = word(at + 6, 2) as usize;
                match kind {
                    PERF_RECORD_SAMPLE => out.ips.push(word(at + 8, 8)),
                    PERF_RECORD_LOST => out.lost += word(at + 16, 8),
                    PERF_RECORD_THROTTLE => out.throttled += 1,
                    _ => {}
                }
                if len < 8 {
                    break;
                }
                at += len;
            }
            out
        }
    }

    impl Drop for Ring {
        fn drop(&mut self) {
            // SAFETY: unmaps what `map` mapped.
            unsafe { libc::munmap(self.base.cast(), self.len) };
        }
    }

    /// PMIs so far: the `PMI:` row of /proc/interrupts (Linux counts each
    /// performance-monitoring interrupt there, NMI or not).
    fn pmis() -> u64 {
        interrupts_row("PMI:")
    }

    /// NMIs so far: the `NMI:` row of /proc/interrupts.
    fn nmis() -> u64 {
        interrupts_row("NMI:")
    }

    fn interrupts_row(row: &str) -> u64 {
        let text = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
        text.lines()
            .find(|l| l.trim_start().starts_with(row))
            .map(|l| l.split_whitespace().skip(1).map_while(|w| w.parse::<u64>().ok()).sum())
            .unwrap_or(0)
    }

    /// Iterations of the sampled loop: 2,000,000 instructions.
    const SAMPLED_ITERATIONS: u64 = 1_000_000;
    /// `perf record -e instructions:u -c 100000`'s period.
    const SAMPLE_PERIOD: u64 = 100_000;

    /// `perf record -e instructions:u -c 100000` of the known loop: one
    /// sample per 100,000 user instructions, so exactly 20 over its
    /// 2,000,000 (plus a few dozen of the ioctls' return paths and the
    /// call); every sample's IP in the loop's function (where the counter
    /// overflowed: with no skid in Bochs, right after the overflowing
    /// instruction).
    fn record_instructions() -> Check {
        let attr = PerfEventAttr {
            config: PERF_COUNT_HW_INSTRUCTIONS,
            sample_period: SAMPLE_PERIOD,
            sample_type: PERF_SAMPLE_IP,
            flags: DISABLED | EXCLUDE_KERNEL | EXCLUDE_HV,
            wakeup_events: 1 << 20,
            ..Default::default()
        };
        let counter = match Counter::open_attr(attr, -1) {
            Ok(c) => c,
            Err(e) => return Check::Failed(e),
        };
        let ring = match Ring::map(&counter) {
            Ok(r) => r,
            Err(e) => return Check::Failed(e),
        };
        let pmis_before = pmis();
        let counted = counter.measure(known_loop, SAMPLED_ITERATIONS);
        let pmis_taken = pmis() - pmis_before;
        let got = ring.samples();
        let want = (2 * SAMPLED_ITERATIONS) / SAMPLE_PERIOD;
        let start = known_loop as *const () as usize as u64;
        let outside: Vec<u64> = got.ips.iter().copied().filter(|ip| !(start..start + 64).contains(ip)).collect();
        say!(
            "client: record instructions:u -c {SAMPLE_PERIOD}: {} samples, {} lost, {} throttles, {pmis_taken} PMIs, \
             count {:?}",
            got.ips.len(),
            got.lost,
            got.throttled,
            counted
        );
        if got.ips.len() as u64 != want || got.lost != 0 {
            Check::Failed(format!(
                "{} samples ({} lost, {} throttles, {pmis_taken} PMIs) of {} user instructions, exactly {want} expected",
                got.ips.len(),
                got.lost,
                got.throttled,
                2 * SAMPLED_ITERATIONS
            ))
        } else if !outside.is_empty() {
            Check::Failed(format!(
                "{} of {want} samples outside the loop's function at {start:#x}: first at {:#x}",
                outside.len(),
                outside[0]
            ))
        } else {
            Check::Ok
        }
    }

    /// `perf record` with the default event, as the perf tool opens it:
    /// `cycles:P` (the most precise level the kernel accepts, tried from 3
    /// down: anything above 0 is PEBS), 4000 samples per second, user and
    /// kernel. With PEBS hidden the kernel must refuse every precise level
    /// (Linux would otherwise pick PEBS and record nothing), and the plain
    /// event must give samples.
    fn record_default() -> Check {
        let mut precise = 3;
        let counter = loop {
            let attr = PerfEventAttr {
                config: PERF_COUNT_HW_CPU_CYCLES,
                sample_period: 4000,
                sample_type: PERF_SAMPLE_IP,
                flags: DISABLED | FREQ | (precise << PRECISE_IP_SHIFT),
                wakeup_events: 1 << 20,
                ..Default::default()
            };
            match Counter::open_attr(attr, -1) {
                Ok(c) => break c,
                Err(_) if precise > 0 => precise -= 1,
                Err(e) => return Check::Failed(format!("cycles with precise_ip 0: {e}")),
            }
        };
        let ring = match Ring::map(&counter) {
            Ok(r) => r,
            Err(e) => return Check::Failed(e),
        };
        let pmis_before = pmis();
        // 20 M instructions: 0.4 s of emulated time at Bochs' 50 M IPS.
        let counted = counter.measure(known_loop, 10 * SAMPLED_ITERATIONS);
        let pmis_taken = pmis() - pmis_before;
        let got = ring.samples();
        say!(
            "client: record cycles (default event, precise_ip {precise}): {} samples, {} lost, {} throttles, \
             {pmis_taken} PMIs, count {:?}",
            got.ips.len(),
            got.lost,
            got.throttled,
            counted
        );
        let pebs_visible = cpu_has_ds();
        if precise > 0 && !pebs_visible {
            Check::Failed(format!("the kernel accepted cycles with precise_ip {precise} (PEBS) with no DS in CPUID"))
        } else if got.ips.len() < 10 {
            Check::Failed(format!(
                "{} samples in 20 M instructions at 4000 Hz ({} lost, {pmis_taken} PMIs), at least 10 expected",
                got.ips.len(),
                got.lost
            ))
        } else {
            Check::Ok
        }
    }

    /// CPUID.1:EDX.DS (bit 21): the debug store PEBS and BTS write through.
    fn cpu_has_ds() -> bool {
        core::arch::x86_64::__cpuid(1).edx & (1 << 21) != 0
    }

    /// `perf stat -e cycles,instructions,ref-cycles` (user and kernel, one
    /// group, so all three count the same span): each counts, none is
    /// multiplexed, and instructions cover at least the loop's.
    fn stat_cycles() -> Check {
        let events = [
            ("cycles", PERF_COUNT_HW_CPU_CYCLES),
            ("instructions", PERF_COUNT_HW_INSTRUCTIONS),
            ("ref-cycles", PERF_COUNT_HW_REF_CPU_CYCLES),
        ];
        group_counts(PERF_TYPE_HARDWARE, &events, |values| {
            let instructions = values[1];
            if values.contains(&0) {
                Err("an event counted 0".to_string())
            } else if instructions < 2 * SAMPLED_ITERATIONS {
                Err(format!("instructions {instructions} < the loop's {}", 2 * SAMPLED_ITERATIONS))
            } else {
                Ok(())
            }
        })
    }

    /// Opens `events` as one group of this process (user and kernel), runs
    /// the known loop, prints the counts and judges them with `judge`.
    fn group_counts(kind: u32, events: &[(&str, u64)], judge: impl Fn(&[u64]) -> Result<(), String>) -> Check {
        let mut counters: Vec<Counter> = Vec::new();
        for (i, &(name, config)) in events.iter().enumerate() {
            let attr = PerfEventAttr {
                kind,
                config,
                flags: if i == 0 { DISABLED } else { 0 },
                read_format: PERF_FORMAT_GROUP | PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING,
                ..Default::default()
            };
            let group = counters.first().map_or(-1, |c| c.0);
            match Counter::open_attr(attr, group) {
                Ok(c) => counters.push(c),
                Err(e) => return Check::Failed(format!("{name}: {e}")),
            }
        }
        let leader = &counters[0];
        leader.ioctl(PERF_EVENT_IOC_RESET);
        leader.ioctl(PERF_EVENT_IOC_ENABLE);
        known_loop(SAMPLED_ITERATIONS);
        leader.ioctl(PERF_EVENT_IOC_DISABLE);
        // nr, time_enabled, time_running, then one value per event.
        let mut buf = [0u64; 3 + 8];
        let want = 8 * (3 + events.len());
        // SAFETY: reads at most size_of_val(buf) bytes into buf.
        let n = unsafe { libc::read(leader.0, buf.as_mut_ptr().cast(), core::mem::size_of_val(&buf)) };
        if n != want as isize {
            return Check::Failed(format!(
                "group read gave {n} bytes, want {want}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let values = &buf[3..3 + events.len()];
        let mut line = String::from("client: stat");
        for ((name, _), v) in events.iter().zip(values) {
            let _ = write!(line, " {name} {v}");
        }
        say!("{line} (enabled {} ns, running {} ns)", buf[1], buf[2]);
        if buf[1] != buf[2] {
            return Check::Failed(format!("multiplexed: running {} ns of {} ns enabled", buf[2], buf[1]));
        }
        match judge(values) {
            Ok(()) => Check::Ok,
            Err(why) => Check::Failed(why),
        }
    }

    /// `perf stat --topdown`: where Linux offers the topdown-* events (the
    /// PMU has PERF_METRICS), slots and topdown-retiring count in one group.
    fn topdown() -> Check {
        let dir = "/sys/bus/event_source/devices/cpu/events";
        let config = |name: &str| -> Option<u64> {
            let text = std::fs::read_to_string(format!("{dir}/{name}")).ok()?;
            // "event=0x00,umask=0x4" -> the raw config (umask << 8 | event).
            let mut value = 0u64;
            for field in text.trim().split(',') {
                let (key, v) = field.split_once('=')?;
                let v = u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()?;
                match key {
                    "event" => value |= v,
                    "umask" => value |= v << 8,
                    _ => {}
                }
            }
            Some(value)
        };
        let (Some(slots), Some(retiring)) = (config("slots"), config("topdown-retiring")) else {
            return Check::Skipped(
                "Linux offers no topdown-* events: the PMU has no PERF_METRICS (IA32_PERF_CAPABILITIES bit 15)".into(),
            );
        };
        group_counts(PERF_TYPE_RAW, &[("slots", slots), ("topdown-retiring", retiring)], |values| {
            if values[0] == 0 {
                Err("slots counted 0".into())
            } else {
                Ok(())
            }
        })
    }

    /// The NMI watchdog (`nmi_watchdog=1`, threshold 1 s): Linux's
    /// hard-lockup detector takes a pinned cycles counter whose overflow
    /// is an NMI every `cpu_khz` × 1000 cycles. Enabled here at run time,
    /// busy in user mode until an NMI arrives (or 4 G instructions), then
    /// disabled again; the guest must keep running and Linux must not
    /// report a hard lockup.
    fn nmi_watchdog() -> Check {
        let write = |file: &str, value: &str| {
            std::fs::write(format!("/proc/sys/kernel/{file}"), value).map_err(|e| format!("writing {file}: {e}"))
        };
        let thresh = std::fs::read_to_string("/proc/sys/kernel/watchdog_thresh").unwrap_or_else(|_| "10".into());
        if let Err(e) = write("watchdog_thresh", "1").and_then(|()| write("nmi_watchdog", "1")) {
            return Check::Failed(e);
        }
        let on = std::fs::read_to_string("/proc/sys/kernel/nmi_watchdog").unwrap_or_default();
        let (nmis_before, pmis_before) = (nmis(), pmis());
        let mut rounds = 0;
        // 100 M instructions a round, until the first NMI: cpu_khz x 1000
        // cycles, which Bochs counts at one per instruction (2.4 G on
        // tigerlake, 3.5 G on skylake-x); the cap allows a 7.5 GHz model.
        while nmis() == nmis_before && rounds < 75 {
            known_loop(50_000_000);
            rounds += 1;
        }
        // The NMI must be the PMU's (a PMI), not another source's.
        let (fired, pmis_taken) = (nmis() - nmis_before, pmis() - pmis_before);
        let _ = write("nmi_watchdog", "0");
        let _ = write("watchdog_thresh", thresh.trim());
        let log = dmesg();
        let lockup = log.lines().find(|l| l.contains("hard LOCKUP")).map(tidy);
        let refused = log.lines().find(|l| l.contains("NMI watchdog") && l.contains("failed")).map(tidy);
        say!(
            "client: nmi watchdog: nmi_watchdog={} {fired} NMIs ({pmis_taken} PMIs) after {rounds} x 100 M instructions",
            on.trim()
        );
        if let Some(l) = refused.or(lockup) {
            Check::Failed(l)
        } else if on.trim() != "1" {
            Check::Failed(format!("/proc/sys/kernel/nmi_watchdog reads {:?} after writing 1", on.trim()))
        } else if fired == 0 || pmis_taken == 0 {
            Check::Failed(format!("{fired} NMIs, {pmis_taken} PMIs in {rounds} x 100 M instructions"))
        } else {
            Check::Ok
        }
    }

    // --- Debian's perf tool (the initramfs carries it and its libraries) ---

    const PERF: &str = "/usr/bin/perf";
    const SELF: &str = "/bin/perfvisor-linux-client";

    /// Runs perf with `args`; its stdout and stderr together, or why not.
    fn perf(args: &[&str]) -> Result<String, String> {
        perf_output(args).map(|(stdout, stderr)| stdout + &stderr)
    }

    /// Runs perf with `args`; its stdout and stderr apart, or why not.
    fn perf_output(args: &[&str]) -> Result<(String, String), String> {
        let out = std::process::Command::new(PERF)
            .args(args)
            .output()
            .map_err(|e| format!("running perf {}: {e}", args.join(" ")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok((stdout, stderr))
        } else {
            Err(format!("perf {} exited with {}: {}", args.join(" "), out.status, last_lines(&(stdout + &stderr))))
        }
    }

    /// The last two lines of `text`, on one line (for a FAILED reason).
    fn last_lines(text: &str) -> String {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(2)..].join(" | ")
    }

    /// `perf stat -x,` counts by event name (`<not counted>` etc. are errors).
    fn perf_stat(events: &str, iterations: &str) -> Result<Vec<(String, u64)>, String> {
        let text = perf(&["stat", "-x,", "-e", events, "--", SELF, "--loop", iterations])?;
        let mut counts = Vec::new();
        for line in text.lines().filter(|l| l.split(',').count() >= 3) {
            let fields: Vec<&str> = line.split(',').collect();
            let value = fields[0].trim();
            let name = fields[2].trim().to_string();
            match value.parse() {
                Ok(v) => counts.push((name, v)),
                Err(_) => return Err(format!("perf stat says {name}: {value}")),
            }
        }
        if counts.is_empty() {
            return Err(format!("no counts in perf stat's output: {}", last_lines(&text)));
        }
        Ok(counts)
    }

    /// `perf stat -e instructions:u,branches:u` of this program's loop at
    /// two lengths (fixed-width arguments, so the runs differ only in the
    /// loop): the differences are exactly the loop's 2 instructions and 1
    /// branch per iteration. The smallest of 3 runs per length, as above.
    fn perf_tool_stat_exact() -> Check {
        // Address-space randomisation changes how many instructions the
        // program's start-up runs (alignment prologues over a randomly
        // placed stack: ~10 between runs, seen here): off while measuring.
        const ASLR: &str = "/proc/sys/kernel/randomize_va_space";
        let aslr = std::fs::read_to_string(ASLR).unwrap_or_else(|_| "2".into());
        let _ = std::fs::write(ASLR, "0");
        let check = perf_tool_stat_differences();
        let _ = std::fs::write(ASLR, aslr.trim());
        check
    }

    /// Up to 7 rounds of both lengths, until the smallest counts so far
    /// differ exactly: a timer tick during a run adds one user-mode
    /// instruction and branch (the return to user mode counts at CPL 3)
    /// and here a tick comes every ~200,000 instructions, so a run of
    /// ~110,000 user instructions is often disturbed.
    fn perf_tool_stat_differences() -> Check {
        let want = [2 * (LONG - SHORT), LONG - SHORT];
        let mut smallest = [[u64::MAX; 2]; 2];
        let mut rounds = 0;
        let mut diff = [0, 0];
        while rounds < 7 && diff != want {
            rounds += 1;
            for (i, n) in ["0001000", "0021000"].iter().enumerate() {
                match perf_stat("instructions:u,branches:u", n) {
                    Ok(counts) => {
                        for (j, event) in ["instructions:u", "branches:u"].iter().enumerate() {
                            match counts.iter().find(|(name, _)| name == event) {
                                Some(&(_, v)) => smallest[i][j] = smallest[i][j].min(v),
                                None => return Check::Failed(format!("perf stat printed no {event}")),
                            }
                        }
                    }
                    Err(e) => return Check::Failed(e),
                }
            }
            diff = [smallest[1][0].wrapping_sub(smallest[0][0]), smallest[1][1].wrapping_sub(smallest[0][1])];
        }
        say!(
            "client: perf stat: instructions:u {} / {}, branches:u {} / {} (1,000 / 21,000 iterations, smallest of \
             {rounds})",
            smallest[0][0],
            smallest[1][0],
            smallest[0][1],
            smallest[1][1]
        );
        // A whole process also takes page faults and ticks whose return to
        // user mode may count as one user instruction that is a branch:
        // seen as a run's floor one above its twin's on skylake-x (74,203
        // natively, 74,202 as a guest) in every one of 7 runs. So after 7
        // rounds an offset of at most 2 that is the same in instructions and
        // branches is that, and is reported; any other is a failure.
        let off = [diff[0] as i64 - want[0] as i64, diff[1] as i64 - want[1] as i64];
        if diff == want {
            Check::Ok
        } else if off[0] == off[1] && off[0].abs() <= 2 {
            say!(
                "client: perf stat: off by {} instructions and as many branches after {rounds} rounds: returns to \
                 user mode in one length's every run",
                off[0]
            );
            Check::Ok
        } else {
            Check::Failed(format!(
                "differences instructions:u {} (want {}), branches:u {} (want {}) after {rounds} rounds",
                diff[0], want[0], diff[1], want[1]
            ))
        }
    }

    /// `perf stat -e cycles,instructions,ref-cycles` runs and counts all three.
    fn perf_tool_stat_cycles() -> Check {
        match perf_stat("cycles,instructions,ref-cycles", "1000000") {
            Ok(counts) if counts.len() == 3 && counts.iter().all(|(_, v)| *v > 0) => {
                say!("client: perf stat: {counts:?}");
                Check::Ok
            }
            Ok(counts) => Check::Failed(format!("counts {counts:?}")),
            Err(e) => Check::Failed(e),
        }
    }

    /// Samples in a perf.data file: the lines of `perf script -F ip` that
    /// are an IP (its warnings go to stderr, and are not counted).
    fn perf_samples(file: &str) -> Result<usize, String> {
        let (stdout, _) = perf_output(&["script", "-i", file, "-F", "ip"])?;
        Ok(stdout.lines().filter(|l| u64::from_str_radix(l.trim(), 16).is_ok()).count())
    }

    /// `perf record -e instructions:u -c 100000` of 2,000,000 loop
    /// instructions: 20 samples, plus at most two for the program's own
    /// start and exit (under 200,000 user instructions).
    fn perf_tool_record_instructions() -> Check {
        let file = "/tmp/instructions.data";
        let record = perf(&[
            "record",
            "-q",
            "-B",
            "-N",
            "-o",
            file,
            "-e",
            "instructions:u",
            "-c",
            "100000",
            "--",
            SELF,
            "--loop",
            "1000000",
        ]);
        if let Err(e) = record {
            return Check::Failed(e);
        }
        match perf_samples(file) {
            Ok(n) => {
                say!("client: perf record -e instructions:u -c 100000: {n} samples");
                if (20..=22).contains(&n) {
                    Check::Ok
                } else {
                    Check::Failed(format!("{n} samples, want 20-22"))
                }
            }
            Err(e) => Check::Failed(e),
        }
    }

    /// `perf record` with no event: the perf tool picks `cycles:P` and
    /// falls back to what the kernel accepts; samples must arrive (with
    /// PEBS visible and not working, none would).
    fn perf_tool_record_default() -> Check {
        let file = "/tmp/default.data";
        if let Err(e) = perf(&["record", "-q", "-B", "-N", "-o", file, "--", SELF, "--loop", "10000000"]) {
            return Check::Failed(e);
        }
        let event = perf(&["evlist", "-i", file]).unwrap_or_default();
        match perf_samples(file) {
            Ok(n) => {
                say!("client: perf record (default event {}): {n} samples", event.trim());
                if n >= 10 {
                    Check::Ok
                } else {
                    Check::Failed(format!("{n} samples of {}, want 10 or more", event.trim()))
                }
            }
            Err(e) => Check::Failed(e),
        }
    }

    /// `perf stat --topdown` (system-wide, as perf requires): where the PMU
    /// has PERF_METRICS it must run. Elsewhere it skips and says what perf
    /// did: on pre-Icelake models perf falls back to the older topdown-*
    /// events, which the emulated PMU counts as 0 (tests/bochs/PMU.md).
    fn perf_tool_topdown() -> Check {
        let metrics = std::path::Path::new("/sys/bus/event_source/devices/cpu/events/topdown-retiring").exists();
        let run = perf(&["stat", "--topdown", "-a", "--", SELF, "--loop", "100000"]);
        match run {
            Ok(_) if metrics => Check::Ok,
            Err(e) if metrics => Check::Failed(e),
            // The percentages, not the elapsed time (the same on both sides).
            Ok(text) => Check::Skipped(format!(
                "no PERF_METRICS; perf ran its older topdown events, which the emulated PMU counts as 0: {}",
                text.lines()
                    .find(|l| l.contains('%'))
                    .map_or(String::new(), |l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            )),
            Err(e) => Check::Skipped(format!("no PERF_METRICS, and perf says so: {e}")),
        }
    }

    // --- phases (perfvisor's exits per phase, `cargo xtask bench linux`) ---

    /// CPUID.1:ECX bit 31: a hypervisor is present (then it is perfvisor,
    /// whose port 0xf4 takes phase marks; natively nothing is marked).
    fn under_hypervisor() -> bool {
        if core::arch::x86_64::__cpuid(1).ecx & (1 << 31) == 0 {
            return false;
        }
        // Port 0xf4 is QEMU's isa-debug-exit under other hypervisors: only
        // perfvisor's signature "perfvisor\0\0\0" (EBX, ECX, EDX) counts.
        let leaf = core::arch::x86_64::__cpuid(0x4000_0000);
        let mut signature = [0u8; 12];
        for (chunk, reg) in signature.chunks_mut(4).zip([leaf.ebx, leaf.ecx, leaf.edx]) {
            chunk.copy_from_slice(&reg.to_le_bytes());
        }
        &signature == b"perfvisor\0\0\0"
    }

    fn tsc() -> u64 {
        // SAFETY: RDTSC only reads the time-stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// Ends phase `index` of hypervisor/src/linux.rs `PHASES` (`name`):
    /// its length in TSC ticks, and under perfvisor a mark on port 0xf4
    /// (perfvisor prints the exits since the previous mark).
    fn end_phase(index: u8, name: &str, started: u64) -> u64 {
        let now = tsc();
        // The mark first: the phase's exits do not include its own line.
        mark(index);
        say!("client: phase {name}: TSC {} ticks", now - started);
        tsc()
    }

    /// Under perfvisor, marks the end of phase `index` on port 0xf4.
    fn mark(index: u8) {
        if under_hypervisor() && io_allowed() {
            // SAFETY: port 0xf4 is perfvisor's; a phase mark only makes it print.
            unsafe { core::arch::asm!("out dx, al", in("dx") 0xf4u16, in("al") 0x20u8 | index) };
        }
    }

    /// iopl(3) once (PID 1 only: the test machine's own client).
    fn io_allowed() -> bool {
        static IOPL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // SAFETY: iopl(3) lets this process use I/O ports; it is PID 1 of a
        // throwaway test machine.
        *IOPL.get_or_init(|| std::process::id() == 1 && unsafe { libc::iopl(3) } == 0)
    }

    /// PMU MSRs whose unchecked access is the PMU's fault.
    fn is_pmu_msr(msr: u32) -> bool {
        matches!(msr, 0xc1..=0xc8 | 0x186..=0x18d | 0x309..=0x30c | 0x329 | 0x345 | 0x38d..=0x392 | 0x4c1..=0x4c8 | 0x1d9)
    }

    /// The checks in order; `phase_start`: the TSC when the perf-stat
    /// phase began.
    fn checks(log: &str, pmu_lines: &[String], phase_start: u64) -> Vec<(&'static str, Check)> {
        let cpuid = cpuid_0a();
        let mut out = Vec::new();
        let lines: Vec<String> = log.lines().map(tidy).collect();
        let has = |s: &str| lines.iter().any(|l| l.contains(s));

        out.push((
            "linux_pmu_driver",
            if has("Broken PMU hardware") {
                Check::Failed("Linux says: Broken PMU hardware detected".into())
            } else if has("PMU not available due to virtualization") {
                Check::Failed("Linux says: PMU not available due to virtualization".into())
            } else if lines.iter().any(|l| l.contains("Performance Events:") && l.contains("Intel PMU driver.")) {
                Check::Ok
            } else {
                Check::Failed("no `Performance Events: ... Intel PMU driver.` line".into())
            },
        ));

        out.push((
            "linux_pmu_version",
            match pmu_value(pmu_lines, "version:") {
                Some(v) if v == u64::from(cpuid.version) => Check::Ok,
                Some(v) => Check::Failed(format!("Linux says version {v}, CPUID.0AH says {}", cpuid.version)),
                None => Check::Failed("no `... version:` line".into()),
            },
        ));

        let want = [
            ("generic registers:", u64::from(cpuid.gp)),
            ("bit width:", u64::from(cpuid.width)),
            ("fixed-purpose events:", u64::from(cpuid.fixed)),
        ];
        let mut wrong = String::new();
        for (key, expected) in want {
            match pmu_value(pmu_lines, key) {
                Some(v) if v == expected => {}
                Some(v) => {
                    let _ = write!(wrong, "{key} {v} (CPUID: {expected}); ");
                }
                None => {
                    let _ = write!(wrong, "no `... {key}` line; ");
                }
            }
        }
        out.push((
            "linux_pmu_counters",
            if wrong.is_empty() { Check::Ok } else { Check::Failed(wrong.trim_end_matches("; ").to_string()) },
        ));

        // Oopses and BUGs always count. A warning counts when it is the
        // PMU's: an unchecked access to a PMU MSR, or a WARNING in perf's
        // code (arch/x86/events, kernel/events); its call trace belongs to
        // it. Other warnings (e.g. an emulator's odd XSAVE layout, an MSR
        // it lacks) are the CPU model's, not the PMU's: shown as `dmesg:`
        // lines, not counted. A call trace with no header counts.
        let mut bad: Vec<String> = Vec::new();
        let mut header_seen = false;
        for l in &lines {
            let pmu_fault = if l.contains("unchecked MSR access") {
                let msr = l
                    .split(" from 0x")
                    .nth(1)
                    .or_else(|| l.split(" to 0x").nth(1))
                    .and_then(|r| u32::from_str_radix(r.split(|c: char| !c.is_ascii_hexdigit()).next()?, 16).ok());
                Some(msr.is_none_or(is_pmu_msr))
            } else if l.starts_with("WARNING:") {
                Some(l.contains("/events/"))
            } else if l.contains("Oops") || l.contains("BUG:") {
                Some(true)
            } else {
                None
            };
            match pmu_fault {
                Some(fault) => {
                    header_seen = true;
                    if fault {
                        bad.push(l.clone());
                    }
                }
                None if l.contains("Call Trace") => {
                    if !header_seen {
                        bad.push(l.clone());
                    }
                    header_seen = false;
                }
                None => {}
            }
        }
        bad.truncate(4);
        out.push(("linux_no_oops", if bad.is_empty() { Check::Ok } else { Check::Failed(bad.join(" | ")) }));

        out.push(("linux_instructions_exact", exact("instructions:u", PERF_COUNT_HW_INSTRUCTIONS, 2)));
        out.push(("linux_branches_exact", exact("branches:u", PERF_COUNT_HW_BRANCH_INSTRUCTIONS, 1)));
        out.push(("linux_rdpmc_fixed", rdpmc_fixed()));
        out.push(("linux_stat_cycles_ref_cycles", stat_cycles()));
        let started = end_phase(2, "perf-stat", phase_start);
        let pmis_before = pmis();
        out.push(("linux_record_instructions", record_instructions()));
        out.push(("linux_record_default_event", record_default()));
        let pmis_taken = pmis() - pmis_before;
        end_phase(3, "perf-record", started);
        say!("client: phase perf-record: {pmis_taken} PMIs");
        out.push(("linux_perf_tool_stat_exact", perf_tool_stat_exact()));
        out.push(("linux_perf_tool_stat_cycles", perf_tool_stat_cycles()));
        out.push(("linux_perf_tool_record_instructions", perf_tool_record_instructions()));
        out.push(("linux_perf_tool_record_default", perf_tool_record_default()));
        out.push(("linux_perf_tool_topdown", perf_tool_topdown()));
        out.push(("linux_topdown", topdown()));
        out.push(("linux_nmi_watchdog", nmi_watchdog()));
        out
    }

    /// The verdict line, then the ports (REFERENCE.md §5).
    fn verdict(pass: bool) -> ! {
        say!("perfvisor: verdict {}", if pass { "PASS" } else { "FAIL (linux checks failed)" });
        let _ = std::io::stdout().flush();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // SAFETY: iopl(3) lets this process use I/O ports; it is PID 1 of a
        // throwaway test machine and ends it next.
        if unsafe { libc::iopl(3) } != 0 {
            say!("client: iopl(3) failed: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        // SAFETY: 0xf4 is QEMU's isa-debug-exit or unused, 0x8900 Bochs' shutdown port;
        // `xchg bx, bx` is Bochs' magic breakpoint and otherwise changes nothing.
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") 0xf4u16, in("eax") if pass { 0x10u32 } else { 0x11 });
            if pass {
                core::arch::asm!("xchg bx, bx");
            } else {
                for b in b"Shutdown" {
                    core::arch::asm!("out dx, al", in("dx") 0x8900u16, in("al") *b);
                }
            }
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }

    pub fn main() {
        // `--loop N`: the known loop, N iterations, and nothing else (what
        // the perf tool checks measure as a child of perf).
        let args: Vec<String> = std::env::args().collect();
        if args.len() == 3 && args[1] == "--loop" {
            match args[2].parse() {
                Ok(n) => {
                    known_loop(n);
                    std::process::exit(0);
                }
                Err(_) => std::process::exit(2),
            }
        }
        let reached = tsc();
        say!("client: /init reached at TSC {reached}");
        // Boot's lines before its mark: the idle phase is only idle.
        say!("client: phase boot: TSC {reached} ticks");
        mark(0);
        let started = tsc();
        // An idle second: perfvisor's exits per idle second.
        std::thread::sleep(std::time::Duration::from_secs(1));
        let phase_start = end_phase(1, "idle", started);
        let log = dmesg();
        let pmu_lines: Vec<String> = log
            .lines()
            .map(tidy)
            .filter(|l| {
                l.starts_with("Performance Events:")
                    || l.starts_with("... ")
                    || l.contains("PMU hardware")
                    || l.contains("PMU not available")
                    || l.contains("perfctr")
                    || l.contains("unchecked MSR access")
                    || l.starts_with("WARNING:")
            })
            .collect();
        for l in &pmu_lines {
            say!("dmesg: {l}");
        }
        let results = checks(&log, &pmu_lines, phase_start);
        let mut failed = 0;
        for (name, check) in &results {
            match check {
                Check::Ok => say!("LINUXTEST {name} ... ok"),
                Check::Skipped(why) => say!("LINUXTEST {name} ... skipped ({why})"),
                Check::Failed(why) => {
                    failed += 1;
                    say!("LINUXTEST {name} ... FAILED ({why})");
                }
            }
        }
        say!("LINUXTESTS DONE {} run, {failed} failed", results.len());
        if std::process::id() == 1 {
            verdict(failed == 0);
        }
        std::process::exit(i32::from(failed != 0));
    }
}

fn main() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    client::main();
}
