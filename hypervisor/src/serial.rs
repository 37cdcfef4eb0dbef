//! The serial console: COM1 at 115200 baud 8-N-1, and the `log` backend.
//!
//! Everything perfvisor says goes here; the test runner reads it. Bochs
//! emulates UART timing, so the line speed is set explicitly rather than
//! left to firmware.

use core::fmt::{self, Write};
use log::{LevelFilter, Log, Metadata, Record};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550Tty};

/// The legacy COM1 I/O port base.
const COM1: u16 = 0x3f8;

/// `None` until [`init`], and forever if no UART answered (a machine
/// without COM1 still boots, silently).
static CONSOLE: Mutex<Option<Uart16550Tty<PioBackend>>> = Mutex::new(None);

/// Programs COM1. Returns false when no 16550 answered at 0x3f8.
pub fn init() -> bool {
    let config = Config { baud_rate: BaudRate::Baud115200, ..Config::DEFAULT };
    // SAFETY: 0x3f8..0x400 is the COM1 register block on PC-compatible
    // machines; perfvisor is the only code touching it from here on.
    let tty = unsafe { Uart16550Tty::new_port(COM1, config) };
    let ok = tty.is_ok();
    *CONSOLE.lock() = tty.ok();
    ok
}

/// Writes formatted text to the console (no-op without a UART).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    if let Some(tty) = CONSOLE.lock().as_mut() {
        let _ = tty.write_fmt(args);
    }
}

/// Writes to the console even if the lock is held: for the exception and
/// panic paths, which may interrupt a half-printed line. The cost is
/// possibly interleaved output, never a deadlock.
pub fn write_fmt_forced(args: fmt::Arguments<'_>) {
    // SAFETY: single CPU; the interrupted writer (if any) does not run again
    // before this path ends the machine, so nothing uses the UART concurrently.
    unsafe { CONSOLE.force_unlock() };
    write_fmt(args);
}

#[macro_export]
macro_rules! println {
    () => { $crate::serial::write_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::serial::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

struct SerialLogger;

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            write_fmt(format_args!("{:<5} {}\n", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}

static LOGGER: SerialLogger = SerialLogger;

/// The level compiled in with `PERFVISOR_LOG=error|warn|info|debug|trace`
/// (default `info`); a boot config's `log=` overrides it at run time.
pub fn build_time_level() -> LevelFilter {
    option_env!("PERFVISOR_LOG").and_then(|s| s.parse().ok()).unwrap_or(LevelFilter::Info)
}

pub fn init_logger(level: LevelFilter) {
    // A second call only fails with "already set", which is harmless.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
