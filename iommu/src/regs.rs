//! A remapping unit's registers (Intel VT-d spec §10.4) and the sequence
//! that turns DMA translation on (§10.4.4-10.4.8, register-based
//! invalidation, §6.5.1):
//!
//! 1. Refuse if queued invalidation is on (GSTS.QIES): register-based
//!    invalidation must not be used then.
//! 2. Where page walks do not snoop the CPU caches (ECAP.C = 0), write the
//!    tables back from the caches.
//! 3. RTADDR_REG ← the root table (TTM = 00, legacy mode).
//! 4. GCMD.SRTP; wait for GSTS.RTPS.
//! 5. Where CAP.RWBF: GCMD.WBF; wait for GSTS.WBFS to clear.
//! 6. CCMD_REG ← ICC | global invalidation; wait for ICC to clear; the
//!    actual granularity (CAIG) must not be 0.
//! 7. IOTLB_REG (at ECAP.IRO × 16 + 8) ← IVT | global invalidation (with
//!    drain reads/writes where CAP.DRD/DWD); wait for IVT to clear; IAIG
//!    must not be 0.
//! 8. GCMD.TE; wait for GSTS.TES.
//!
//! Every GCMD write is the current GSTS with the one-shot status bits
//! (RTPS, FLS, WBFS, IRTPS) cleared, plus the one command bit, so the
//! unit's other enables stay as they are. Each wait is bounded; a unit
//! that never answers is an error with the step named.
//!
//! The registers are behind [`Registers`], so the sequence is tested
//! against a fake unit on the host. [`Mmio`] is the real implementation;
//! perfvisor does not call it yet (no hardware with VT-d has run it).

use core::fmt;

/// Register offsets (§10.4).
pub mod offset {
    pub const VER: usize = 0x00;
    pub const CAP: usize = 0x08;
    pub const ECAP: usize = 0x10;
    pub const GCMD: usize = 0x18;
    pub const GSTS: usize = 0x1c;
    pub const RTADDR: usize = 0x20;
    pub const CCMD: usize = 0x28;
    /// IOTLB_REG is at ECAP.IRO × 16 + this (IVA_REG at + 0).
    pub const IOTLB_FROM_IRO: usize = 0x08;
}

/// GCMD_REG command bits and the matching GSTS_REG status bits (§10.4.4-5).
pub mod global {
    pub const TE: u32 = 1 << 31;
    pub const SRTP: u32 = 1 << 30;
    pub const SFL: u32 = 1 << 29;
    pub const EAFL: u32 = 1 << 28;
    pub const WBF: u32 = 1 << 27;
    pub const QIE: u32 = 1 << 26;
    pub const IRE: u32 = 1 << 25;
    pub const SIRTP: u32 = 1 << 24;
    pub const CFI: u32 = 1 << 23;
    /// GSTS bits that report a one-shot command (RTPS, FLS, WBFS, IRTPS):
    /// cleared when GSTS is turned into a GCMD value.
    pub const ONE_SHOT: u32 = SRTP | SFL | WBF | SIRTP;
}

/// CCMD_REG (§10.4.7).
pub mod ccmd {
    pub const ICC: u64 = 1 << 63;
    pub const CIRG_GLOBAL: u64 = 0b01 << 61;
    pub const CAIG_SHIFT: u32 = 59;
}

/// IOTLB_REG (§10.4.8.1).
pub mod iotlb {
    pub const IVT: u64 = 1 << 63;
    pub const IIRG_GLOBAL: u64 = 0b01 << 60;
    pub const IAIG_SHIFT: u32 = 57;
    pub const DR: u64 = 1 << 49;
    pub const DW: u64 = 1 << 48;
}

/// CAP_REG (§10.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability(pub u64);

impl Capability {
    /// Supported adjusted guest address widths (bit 1: 39-bit 3-level,
    /// bit 2: 48-bit 4-level, bit 3: 57-bit 5-level).
    pub fn sagaw(self) -> u8 {
        ((self.0 >> 8) & 0x1f) as u8
    }
    pub fn supports_3_level(self) -> bool {
        self.sagaw() & 0b010 != 0
    }
    pub fn supports_4_level(self) -> bool {
        self.sagaw() & 0b100 != 0
    }
    /// Second-level 2-MiB pages (SLLPS bit 0).
    pub fn pages_2m(self) -> bool {
        self.0 & (1 << 34) != 0
    }
    /// Second-level 1-GiB pages (SLLPS bit 1).
    pub fn pages_1g(self) -> bool {
        self.0 & (1 << 35) != 0
    }
    /// Required write-buffer flushing.
    pub fn rwbf(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Caching mode (an emulated unit: not-present entries may be cached).
    pub fn caching_mode(self) -> bool {
        self.0 & (1 << 7) != 0
    }
    /// Domains supported: 2^(4 + 2·ND).
    pub fn domains(self) -> u32 {
        1 << (4 + 2 * (self.0 & 7) as u32)
    }
    /// Maximum guest address width in bits.
    pub fn mgaw(self) -> u32 {
        ((self.0 >> 16) & 0x3f) as u32 + 1
    }
    pub fn drain_writes(self) -> bool {
        self.0 & (1 << 54) != 0
    }
    pub fn drain_reads(self) -> bool {
        self.0 & (1 << 55) != 0
    }
}

/// ECAP_REG (§10.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtCapability(pub u64);

impl ExtCapability {
    /// Page walks snoop the CPU caches (C).
    pub fn coherent(self) -> bool {
        self.0 & 1 != 0
    }
    /// Queued invalidation supported (QI).
    pub fn queued_invalidation(self) -> bool {
        self.0 & 2 != 0
    }
    /// The IOTLB registers' offset (IRO × 16).
    pub fn iotlb_registers(self) -> usize {
        (((self.0 >> 8) & 0x3ff) as usize) * 16
    }
}

/// A remapping unit's register file.
pub trait Registers {
    fn read32(&mut self, offset: usize) -> u32;
    fn write32(&mut self, offset: usize, value: u32);
    fn read64(&mut self, offset: usize) -> u64;
    fn write64(&mut self, offset: usize, value: u64);
    /// Writes the translation tables back from the CPU caches (for units
    /// whose page walks do not snoop: ECAP.C = 0), e.g. with WBINVD.
    fn flush_cpu_caches(&mut self);
}

/// A step of the enable sequence, for errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    RootTablePointer,
    WriteBufferFlush,
    ContextCacheInvalidation,
    IotlbInvalidation,
    TranslationEnable,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RootTablePointer => "setting the root table pointer (GCMD.SRTP, GSTS.RTPS)",
            Self::WriteBufferFlush => "the write-buffer flush (GCMD.WBF, GSTS.WBFS)",
            Self::ContextCacheInvalidation => "the global context-cache invalidation (CCMD.ICC)",
            Self::IotlbInvalidation => "the global IOTLB invalidation (IOTLB_REG.IVT)",
            Self::TranslationEnable => "enabling translation (GCMD.TE, GSTS.TES)",
        })
    }
}

/// Why translation could not be enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableError {
    /// The root table's address is not 4-KiB aligned.
    RootTableMisaligned(u64),
    /// Queued invalidation is on: register-based invalidation is not allowed.
    QueuedInvalidationOn,
    /// The unit did not complete a step within the polls allowed.
    Timeout(Step),
    /// The unit reports an invalidation as not performed (granularity 0).
    NotPerformed(Step),
}

impl fmt::Display for EnableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RootTableMisaligned(a) => write!(f, "root table address {a:#x} is not 4-KiB aligned"),
            Self::QueuedInvalidationOn => {
                f.write_str("queued invalidation is enabled (GSTS.QIES): register-based invalidation cannot be used")
            }
            Self::Timeout(s) => write!(f, "the unit did not complete {s}"),
            Self::NotPerformed(s) => write!(f, "the unit reports {s} as not performed (actual granularity 0)"),
        }
    }
}

/// What the sequence found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enabled {
    /// Translation was already on (firmware's pre-boot DMA protection):
    /// the root table was switched under it, then everything invalidated.
    pub was_enabled: bool,
}

/// Issues one GCMD command: GSTS without its one-shot bits, plus `command`.
fn command(regs: &mut impl Registers, command: u32) {
    let status = regs.read32(offset::GSTS) & !global::ONE_SHOT;
    regs.write32(offset::GCMD, status | command);
}

/// Polls until `done` holds, at most `max_polls` times.
fn wait(max_polls: u32, step: Step, mut done: impl FnMut() -> bool) -> Result<(), EnableError> {
    for _ in 0..max_polls {
        if done() {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(EnableError::Timeout(step))
}

/// Points the unit at `root_table`, invalidates its caches and enables
/// DMA translation (the sequence in the module's documentation).
pub fn enable_translation(regs: &mut impl Registers, root_table: u64, max_polls: u32) -> Result<Enabled, EnableError> {
    if root_table & 0xfff != 0 {
        return Err(EnableError::RootTableMisaligned(root_table));
    }
    let cap = Capability(regs.read64(offset::CAP));
    let ecap = ExtCapability(regs.read64(offset::ECAP));
    let status = regs.read32(offset::GSTS);
    if status & global::QIE != 0 {
        return Err(EnableError::QueuedInvalidationOn);
    }
    let was_enabled = status & global::TE != 0;
    if !ecap.coherent() {
        regs.flush_cpu_caches();
    }

    regs.write64(offset::RTADDR, root_table);
    command(regs, global::SRTP);
    wait(max_polls, Step::RootTablePointer, || regs.read32(offset::GSTS) & global::SRTP != 0)?;

    if cap.rwbf() {
        command(regs, global::WBF);
        wait(max_polls, Step::WriteBufferFlush, || regs.read32(offset::GSTS) & global::WBF == 0)?;
    }

    regs.write64(offset::CCMD, ccmd::ICC | ccmd::CIRG_GLOBAL);
    let mut done = 0;
    wait(max_polls, Step::ContextCacheInvalidation, || {
        done = regs.read64(offset::CCMD);
        done & ccmd::ICC == 0
    })?;
    if (done >> ccmd::CAIG_SHIFT) & 3 == 0 {
        return Err(EnableError::NotPerformed(Step::ContextCacheInvalidation));
    }

    let at = ecap.iotlb_registers() + offset::IOTLB_FROM_IRO;
    let drain = if cap.drain_reads() { iotlb::DR } else { 0 } | if cap.drain_writes() { iotlb::DW } else { 0 };
    regs.write64(at, iotlb::IVT | iotlb::IIRG_GLOBAL | drain);
    wait(max_polls, Step::IotlbInvalidation, || {
        done = regs.read64(at);
        done & iotlb::IVT == 0
    })?;
    if (done >> iotlb::IAIG_SHIFT) & 3 == 0 {
        return Err(EnableError::NotPerformed(Step::IotlbInvalidation));
    }

    command(regs, global::TE);
    wait(max_polls, Step::TranslationEnable, || regs.read32(offset::GSTS) & global::TE != 0)?;
    Ok(Enabled { was_enabled })
}

/// The registers through their MMIO mapping. Not used by perfvisor yet:
/// unverified on hardware.
pub struct Mmio {
    base: *mut u8,
}

impl Mmio {
    /// # Safety
    ///
    /// `base` must map a remapping unit's register set (DRHD register base,
    /// [`crate::dmar::Drhd::register_len`] bytes) uncached, for as long as
    /// the `Mmio` is used, and nothing else may drive the unit meanwhile.
    pub unsafe fn new(base: *mut u8) -> Self {
        Self { base }
    }
}

impl Registers for Mmio {
    fn read32(&mut self, offset: usize) -> u32 {
        // SAFETY: `new`'s contract: the register set is mapped; offsets
        // are the spec's, 4-byte aligned, inside it.
        unsafe { self.base.add(offset).cast::<u32>().read_volatile() }
    }
    fn write32(&mut self, offset: usize, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { self.base.add(offset).cast::<u32>().write_volatile(value) }
    }
    fn read64(&mut self, offset: usize) -> u64 {
        // SAFETY: as in `read32`; the 64-bit registers are 8-byte aligned.
        unsafe { self.base.add(offset).cast::<u64>().read_volatile() }
    }
    fn write64(&mut self, offset: usize, value: u64) {
        // SAFETY: as in `read64`.
        unsafe { self.base.add(offset).cast::<u64>().write_volatile(value) }
    }
    fn flush_cpu_caches(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: WBINVD writes back and invalidates the caches; it needs
        // CPL 0 (where `Mmio` is used: the kernel) and has no other effect.
        unsafe {
            core::arch::asm!("wbinvd", options(nostack, preserves_flags))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Access {
        Read(usize),
        Write(usize, u64),
        FlushCaches,
    }

    /// A command the fake unit is working on.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Work {
        Gcmd(u32),
        Ccmd,
        Iotlb,
    }

    /// A unit that completes each command after `delay` register reads.
    struct FakeUnit {
        cap: u64,
        ecap: u64,
        gsts: u32,
        ccmd: u64,
        iotlb: u64,
        rtaddr: u64,
        delay: u32,
        /// The command in progress and the reads left until it completes.
        pending: Option<(Work, u32)>,
        /// A command the unit never completes.
        stuck: Option<Work>,
        /// Actual granularities reported.
        caig: u64,
        iaig: u64,
        log: Vec<Access>,
        /// GSTS when each register was written.
        state_at_write: HashMap<usize, u32>,
    }

    const IRO: u64 = 0x50; // IOTLB registers at 0x500

    impl FakeUnit {
        fn new() -> Self {
            Self {
                cap: 0b0110 << 8 | 0b11 << 34 | 0b11 << 54,
                ecap: 1 | IRO << 8,
                gsts: 0,
                ccmd: 0,
                iotlb: 0,
                rtaddr: 0,
                delay: 3,
                pending: None,
                stuck: None,
                caig: 1,
                iaig: 1,
                log: Vec::new(),
                state_at_write: HashMap::new(),
            }
        }

        fn tick(&mut self) {
            let Some((work, left)) = self.pending else { return };
            if left > 0 {
                self.pending = Some((work, left - 1));
                return;
            }
            if self.stuck == Some(work) {
                return;
            }
            self.pending = None;
            match work {
                Work::Gcmd(global::WBF) => self.gsts &= !global::WBF,
                Work::Gcmd(bit) => self.gsts |= bit,
                Work::Ccmd => self.ccmd = self.ccmd & !ccmd::ICC | self.caig << 59,
                Work::Iotlb => self.iotlb = self.iotlb & !iotlb::IVT | self.iaig << 57,
            }
        }

        fn writes(&self) -> Vec<(usize, u64)> {
            self.log
                .iter()
                .filter_map(|a| match a {
                    Access::Write(o, v) => Some((*o, *v)),
                    _ => None,
                })
                .collect()
        }
    }

    impl Registers for FakeUnit {
        fn read32(&mut self, offset: usize) -> u32 {
            self.log.push(Access::Read(offset));
            assert_eq!(offset, offset::GSTS, "only GSTS is read as 32 bits");
            self.tick();
            self.gsts
        }
        fn write32(&mut self, offset: usize, value: u32) {
            self.log.push(Access::Write(offset, u64::from(value)));
            self.state_at_write.insert(offset, self.gsts);
            assert_eq!(offset, offset::GCMD);
            assert!(self.pending.is_none(), "a command issued while another is pending");
            let cmd = if value & global::SRTP != 0 {
                global::SRTP
            } else if value & global::WBF != 0 {
                global::WBF
            } else {
                value & global::TE & !self.gsts
            };
            assert_eq!(value & global::ONE_SHOT & !cmd, 0, "one-shot bits carried over: {value:#x}");
            assert_eq!(value & !cmd & !self.gsts, 0, "a GCMD write changing more than its command: {value:#x}");
            match cmd {
                // RTPS clears when SRTP is written; WBFS is set until the flush is done.
                global::SRTP => self.gsts &= !global::SRTP,
                global::WBF => self.gsts |= global::WBF,
                _ => {}
            }
            if cmd != 0 {
                self.pending = Some((Work::Gcmd(cmd), self.delay));
            }
        }
        fn read64(&mut self, offset: usize) -> u64 {
            self.log.push(Access::Read(offset));
            self.tick();
            match offset {
                offset::CAP => self.cap,
                offset::ECAP => self.ecap,
                offset::CCMD => self.ccmd,
                IOTLB_REG => self.iotlb,
                o => panic!("read of {o:#x}"),
            }
        }
        fn write64(&mut self, offset: usize, value: u64) {
            self.log.push(Access::Write(offset, value));
            self.state_at_write.insert(offset, self.gsts);
            assert!(self.pending.is_none(), "a register written while a command is pending");
            match offset {
                offset::RTADDR => self.rtaddr = value,
                offset::CCMD => {
                    self.ccmd = value;
                    self.pending = Some((Work::Ccmd, self.delay));
                }
                IOTLB_REG => {
                    self.iotlb = value;
                    self.pending = Some((Work::Iotlb, self.delay));
                }
                o => panic!("write of {o:#x}"),
            }
        }
        fn flush_cpu_caches(&mut self) {
            self.log.push(Access::FlushCaches);
        }
    }

    const ROOT: u64 = 0x7f_3000;
    const IOTLB_REG: usize = (IRO as usize) * 16 + 8;

    #[test]
    fn enable_writes_in_the_spec_order_and_waits_for_each_status() {
        let mut u = FakeUnit::new();
        assert_eq!(enable_translation(&mut u, ROOT, 100), Ok(Enabled { was_enabled: false }));
        assert_eq!(
            u.writes(),
            [
                (offset::RTADDR, ROOT),
                (offset::GCMD, u64::from(global::SRTP)),
                (offset::CCMD, ccmd::ICC | ccmd::CIRG_GLOBAL),
                (IOTLB_REG, iotlb::IVT | iotlb::IIRG_GLOBAL | iotlb::DR | iotlb::DW),
                (offset::GCMD, u64::from(global::TE)),
            ]
        );
        // Wait, then issue: RTPS was set before the context-cache
        // invalidation, and before TE.
        assert_eq!(u.state_at_write[&offset::CCMD] & global::SRTP, global::SRTP);
        assert_eq!(u.gsts, global::TE | global::SRTP);
        assert_eq!(u.rtaddr, ROOT);
        // Each wait polled its register until done (the unit takes 3 polls + 1).
        let polls_between =
            |from: usize, to: usize, reg: usize| u.log[from..to].iter().filter(|a| **a == Access::Read(reg)).count();
        let index = |w: Access| u.log.iter().position(|a| *a == w).unwrap();
        let srtp = index(Access::Write(offset::GCMD, u64::from(global::SRTP)));
        let cc = index(Access::Write(offset::CCMD, ccmd::ICC | ccmd::CIRG_GLOBAL));
        assert!(polls_between(srtp, cc, offset::GSTS) >= 4);
        let io = u.log.iter().position(|a| matches!(a, Access::Write(IOTLB_REG, _))).unwrap();
        assert!(polls_between(cc, io, offset::CCMD) >= 4);
        assert!(!u.log.contains(&Access::FlushCaches), "a coherent unit needs no cache flush");
    }

    #[test]
    fn gcmd_keeps_the_units_enables_and_drops_one_shot_bits() {
        let mut u = FakeUnit::new();
        // Firmware left translation and interrupt remapping on, RTPS set.
        u.gsts = global::TE | global::IRE | global::SRTP | global::CFI;
        assert_eq!(enable_translation(&mut u, ROOT, 100), Ok(Enabled { was_enabled: true }));
        let gcmd: Vec<u64> = u.writes().into_iter().filter(|w| w.0 == offset::GCMD).map(|w| w.1).collect();
        let kept = u64::from(global::TE | global::IRE | global::CFI);
        // SRTP is issued with TE, IRE and CFI kept; then TE (already on) is re-issued.
        assert_eq!(gcmd, [kept | u64::from(global::SRTP), kept]);
    }

    #[test]
    fn flushes_caches_and_write_buffers_where_the_unit_requires() {
        let mut u = FakeUnit::new();
        u.cap |= 1 << 4; // RWBF
        u.cap &= !(0b11 << 54); // no drain
        u.ecap &= !1; // not coherent
        enable_translation(&mut u, ROOT, 100).unwrap();
        let flush = u.log.iter().position(|a| *a == Access::FlushCaches).expect("caches flushed");
        let rtaddr = u.log.iter().position(|a| matches!(a, Access::Write(offset::RTADDR, _))).unwrap();
        assert!(flush < rtaddr, "tables written back before the unit is pointed at them");
        let w = u.writes();
        assert_eq!(w[2], (offset::GCMD, u64::from(global::WBF)), "WBF after SRTP");
        assert_eq!(w[3].0, offset::CCMD);
        assert_eq!(w[4], (IOTLB_REG, iotlb::IVT | iotlb::IIRG_GLOBAL), "no drain bits without CAP.DRD/DWD");
    }

    #[test]
    fn a_unit_that_does_not_answer_is_an_error_naming_the_step() {
        for (stuck, step) in [
            (Work::Gcmd(global::SRTP), Step::RootTablePointer),
            (Work::Ccmd, Step::ContextCacheInvalidation),
            (Work::Iotlb, Step::IotlbInvalidation),
            (Work::Gcmd(global::TE), Step::TranslationEnable),
        ] {
            let mut u = FakeUnit::new();
            u.stuck = Some(stuck);
            let e = enable_translation(&mut u, ROOT, 50).unwrap_err();
            assert_eq!(e, EnableError::Timeout(step));
            assert!(e.to_string().starts_with("the unit did not complete"), "{e}");
            assert_eq!(u.gsts & global::TE, 0, "translation never enabled after a failed step");
        }
    }

    #[test]
    fn invalidations_not_performed_and_bad_inputs_are_refused() {
        let mut u = FakeUnit::new();
        u.caig = 0;
        assert_eq!(
            enable_translation(&mut u, ROOT, 50),
            Err(EnableError::NotPerformed(Step::ContextCacheInvalidation))
        );
        let mut u = FakeUnit::new();
        u.iaig = 0;
        assert_eq!(enable_translation(&mut u, ROOT, 50), Err(EnableError::NotPerformed(Step::IotlbInvalidation)));
        assert_eq!(u.gsts & global::TE, 0);

        let mut u = FakeUnit::new();
        u.gsts = global::QIE;
        assert_eq!(enable_translation(&mut u, ROOT, 50), Err(EnableError::QueuedInvalidationOn));
        assert!(u.writes().is_empty(), "nothing written");
        assert_eq!(
            enable_translation(&mut FakeUnit::new(), ROOT + 8, 50),
            Err(EnableError::RootTableMisaligned(ROOT + 8))
        );
    }

    #[test]
    fn capability_fields() {
        // MGAW 48, SAGAW 3- and 4-level, CM, ND 6, SLLPS 2 MiB.
        let cap = Capability(0x2f << 16 | 0b0110 << 8 | 1 << 7 | 6 | 1 << 34);
        assert!(cap.supports_4_level() && cap.supports_3_level() && cap.pages_2m() && !cap.pages_1g());
        assert_eq!(cap.mgaw(), 48);
        assert!(cap.caching_mode() && !cap.rwbf());
        assert_eq!(cap.domains(), 1 << 16);
        let ecap = ExtCapability(0x50 << 8 | 1);
        assert_eq!(ecap.iotlb_registers(), 0x500);
        assert!(ecap.coherent() && !ecap.queued_invalidation());
    }

    #[test]
    fn mmio_accesses_land_at_the_register_offsets() {
        let mut page = vec![0u64; 512];
        // SAFETY: a 4-KiB buffer stands in for the register set; it outlives `m`.
        let mut m = unsafe { Mmio::new(page.as_mut_ptr().cast::<u8>()) };
        m.write64(offset::RTADDR, ROOT);
        m.write32(offset::GCMD, global::SRTP);
        assert_eq!(m.read64(offset::RTADDR), ROOT);
        assert_eq!(m.read32(offset::GCMD), global::SRTP);
        assert_eq!(page[offset::RTADDR / 8], ROOT);
        assert_eq!(page[offset::GCMD / 8] as u32, global::SRTP);
    }
}
