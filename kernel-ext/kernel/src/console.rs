//! The console and the kernel log: every line carries the time since boot
//! in microseconds; `log` crate records get a level; lines are assembled in
//! a fixed buffer and written whole under the console lock, so lines from
//! different CPUs never interleave and logging never allocates.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};
use rtedge_arch::console;

use crate::sync::IrqSpinLock;
use crate::time;

static CONSOLE_LOCK: IrqSpinLock<()> = IrqSpinLock::new(());
/// Lines cut because they did not fit the line buffer.
static TRUNCATED_LINES: AtomicUsize = AtomicUsize::new(0);
static PANICKING: AtomicBool = AtomicBool::new(false);

const LINE_CAPACITY: usize = 512;

/// A line being assembled; keeps the first `LINE_CAPACITY` bytes.
struct Line {
    bytes: [u8; LINE_CAPACITY],
    len: usize,
    truncated: bool,
}

impl Line {
    fn new() -> Self {
        Self { bytes: [0; LINE_CAPACITY], len: 0, truncated: false }
    }

    fn finish(&mut self) -> &[u8] {
        if self.truncated {
            TRUNCATED_LINES.fetch_add(1, Ordering::Relaxed);
            let marker = b"...";
            let start = LINE_CAPACITY - 1 - marker.len();
            self.bytes[start..start + marker.len()].copy_from_slice(marker);
            self.len = start + marker.len();
        }
        if self.len >= LINE_CAPACITY {
            self.len = LINE_CAPACITY - 1;
        }
        self.bytes[self.len] = b'\n';
        &self.bytes[..=self.len]
    }
}

impl Write for Line {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = (LINE_CAPACITY - 1).saturating_sub(self.len);
        let take = text.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        if take < text.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

fn write_timestamp(line: &mut Line) {
    let _ = match time::now_us() {
        Some(us) => write!(line, "[{us:>12}us] "),
        None => write!(line, "[       early  ] "),
    };
}

fn emit(line: &mut Line) {
    let bytes = line.finish();
    if PANICKING.load(Ordering::Relaxed) {
        // The panicking CPU may have died holding the lock; write regardless.
        console::write(bytes);
        return;
    }
    let _guard = CONSOLE_LOCK.lock();
    console::write(bytes);
}

/// Writes one timestamped line to the console.
pub fn line(arguments: fmt::Arguments<'_>) {
    let mut line = Line::new();
    write_timestamp(&mut line);
    let _ = line.write_fmt(arguments);
    emit(&mut line);
}

/// Writes one timestamped line to the console (the kernel's `println`).
#[macro_export]
macro_rules! console_line {
    ($($argument:tt)*) => {
        $crate::console::line(format_args!($($argument)*))
    };
}

/// Writes raw bytes (no timestamp, no newline) under the console lock.
pub fn write_raw(bytes: &[u8]) {
    let _guard = CONSOLE_LOCK.lock();
    console::write(bytes);
}

/// Marks the system as panicking: console output stops taking the lock.
pub fn enter_panic() -> bool {
    PANICKING.swap(true, Ordering::SeqCst)
}

/// Number of lines cut short so far.
pub fn truncated_lines() -> usize {
    TRUNCATED_LINES.load(Ordering::Relaxed)
}

struct KernelLogger;

static LOGGER: KernelLogger = KernelLogger;

impl Log for KernelLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = Line::new();
        write_timestamp(&mut line);
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let _ = write!(line, "{level} ");
        if record.level() >= Level::Debug {
            let _ = write!(line, "{}: ", record.target());
        }
        let _ = line.write_fmt(*record.args());
        emit(&mut line);
    }

    fn flush(&self) {}
}

/// Installs the kernel logger at `level`.
pub fn init_logger(level: LevelFilter) {
    // A second call (there is none) would just keep the first logger.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Parses a `log=` value.
pub fn parse_level(value: &str) -> Option<LevelFilter> {
    Some(match value {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

/// Bytes received on the serial console and not yet read.
static INPUT: IrqSpinLock<InputRing> = IrqSpinLock::new(InputRing { bytes: [0; 256], head: 0, len: 0 });
static INPUT_TOTAL: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

struct InputRing {
    bytes: [u8; 256],
    head: usize,
    len: usize,
}

/// Reads every byte waiting in the UART into the input ring (oldest bytes
/// dropped when full). Returns how many arrived. Safe in a hard-IRQ handler.
pub fn drain_serial_input() -> usize {
    let mut count = 0;
    while let Some(byte) = console::serial_read_byte() {
        count += 1;
        let mut ring = INPUT.lock();
        if ring.len == ring.bytes.len() {
            ring.head = (ring.head + 1) % ring.bytes.len();
            ring.len -= 1;
        }
        let tail = (ring.head + ring.len) % ring.bytes.len();
        ring.bytes[tail] = byte;
        ring.len += 1;
        if count > 64 {
            break;
        }
    }
    INPUT_TOTAL.fetch_add(count as u64, Ordering::Relaxed);
    count
}

/// Takes the oldest received console byte.
pub fn read_input() -> Option<u8> {
    let mut ring = INPUT.lock();
    if ring.len == 0 {
        return None;
    }
    let byte = ring.bytes[ring.head];
    ring.head = (ring.head + 1) % ring.bytes.len();
    ring.len -= 1;
    Some(byte)
}

/// Console bytes received since boot.
pub fn input_total() -> u64 {
    INPUT_TOTAL.load(Ordering::Relaxed)
}

/// The kernel's own serial receive handler (ISA IRQ 4).
fn serial_interrupt(_: u8) {
    drain_serial_input();
}

/// The GSI of the serial console's receive interrupt, if the console is a UART.
pub fn serial_gsi() -> Option<u32> {
    (console::kind() == console::Console::Serial).then(|| crate::irq::isa_line(4).0)
}

/// Routes the UART's receive interrupt to the kernel's handler (QEMU only).
pub fn enable_input() {
    if console::kind() != console::Console::Serial || crate::irq::controllers() == 0 {
        return;
    }
    let (gsi, trigger, polarity) = crate::irq::isa_line(4);
    match crate::irq::attach(gsi, "serial-console", serial_interrupt, trigger, polarity) {
        Ok(_) => console::serial_receive_interrupt(true),
        Err(error) => log::warn!("console: no receive interrupt: {error}"),
    }
}
