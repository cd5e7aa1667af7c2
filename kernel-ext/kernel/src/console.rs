//! The console and the kernel log: every line carries the time since boot
//! in microseconds; `log` crate records get a level; lines are assembled in
//! a fixed buffer and written whole under the console lock, so lines from
//! different CPUs never interleave and logging never allocates.
//!
//! RT-safe logging (as `rtl_printf` buffered in RTLinux): a line logged from
//! an RT thread, a softirq or a hard IRQ is never written to the console by
//! that context. It goes into this CPU's lock-free log ring
//! (`rtedge_engine::logring`, model-checked: bounded, no allocation, a full
//! ring refuses the line and counts it), and the `klogd` kernel thread
//! drains the rings to the console on a CPU that is not isolated, reporting
//! lost lines. A panic drains every ring synchronously before its own
//! report; so does a shutdown. Before `klogd` runs (early boot), and while
//! [`set_synchronous`] forces it (the benchmark's "before" figure), every
//! line is written at once, as before.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};
use rtedge_arch::console;
use rtedge_engine::loghistory::LineFacts;
use rtedge_engine::logring::{LogRecord, LogRing, RecordHeader};

use crate::cpu_local::MAX_CPUS;
use crate::sync::IrqSpinLock;
use crate::thread::WaitQueue;
use crate::{context, time};

static CONSOLE_LOCK: IrqSpinLock<()> = IrqSpinLock::new(());
/// Lines cut because they did not fit the line buffer.
static TRUNCATED_LINES: AtomicUsize = AtomicUsize::new(0);
static PANICKING: AtomicBool = AtomicBool::new(false);

const LINE_CAPACITY: usize = 512;

/// Records per CPU ring.
pub const RING_RECORDS: usize = 64;
/// Text words per record: 192 bytes of text (longer lines are cut, marked).
const RING_WORDS: usize = 24;
type Ring = LogRing<RING_RECORDS, RING_WORDS>;
type RingRecord = LogRecord<RING_WORDS>;

/// One log ring per CPU (index = CPU index).
static RINGS: [Ring; MAX_CPUS] = [const { Ring::new() }; MAX_CPUS];
/// Lost lines already reported, per CPU (written by the consumer only).
static REPORTED_DROPS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Lines that went through a ring.
static DEFERRED_LINES: AtomicU64 = AtomicU64::new(0);
/// Whether `klogd` drains the rings (until then every line is synchronous).
static DRAIN_RUNNING: AtomicBool = AtomicBool::new(false);
/// Forces synchronous console output from every context (benchmark switch).
static FORCE_SYNCHRONOUS: AtomicBool = AtomicBool::new(false);
/// Set when a producer asked `klogd` to run early (a ring half full).
static DRAIN_KICKED: AtomicBool = AtomicBool::new(false);
/// Set while klogd sleeps without a deadline (the rings were empty).
static DRAIN_IDLE: AtomicBool = AtomicBool::new(false);
static DRAIN_WAIT: WaitQueue = WaitQueue::new();
/// Serialises consumers (klogd, a shutdown flush) per record taken.
static CONSUMER_LOCK: IrqSpinLock<()> = IrqSpinLock::new(());
/// Lines written to the console from the rings.
static DRAINED_LINES: AtomicU64 = AtomicU64::new(0);
/// Lines an RT thread, softirq or hard IRQ wrote to the console itself
/// (before klogd, when forced synchronous, or panicking).
static SYNCHRONOUS_ATOMIC_LINES: AtomicU64 = AtomicU64::new(0);
/// Test hook: klogd leaves the rings alone while set.
static DRAIN_PAUSED: AtomicBool = AtomicBool::new(false);
/// How long `klogd` sleeps when no producer kicks it.
const DRAIN_PERIOD_NS: u64 = 50_000_000;

/// A line being assembled; keeps the first `LINE_CAPACITY` bytes.
struct Line {
    bytes: [u8; LINE_CAPACITY],
    len: usize,
    truncated: bool,
    /// The log level (0: a plain console line), for the history.
    level: u8,
    /// Where the text begins (after the time stamp and level).
    text_start: usize,
    /// A ring record's own facts (time, CPU, thread) and its thread's
    /// name, looked up by klogd; `None`: the line is logged here and now.
    deferred: Option<(RecordHeader, Option<crate::thread::ThreadName>)>,
}

impl Line {
    fn new() -> Self {
        Self { bytes: [0; LINE_CAPACITY], len: 0, truncated: false, level: 0, text_start: 0, deferred: None }
    }

    /// Marks the end of the prefix (time stamp, level): the history keeps
    /// what follows.
    fn start_text(&mut self, level: u8) {
        self.level = level;
        self.text_start = self.len;
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

fn level_name(level: u8) -> Option<&'static str> {
    Some(match level {
        1 => "ERROR",
        2 => "WARN ",
        3 => "INFO ",
        4 => "DEBUG",
        5 => "TRACE",
        _ => return None,
    })
}

fn level_number(level: Level) -> u8 {
    level as usize as u8
}

fn emit(line: &mut Line) {
    if context::in_realtime_thread() || context::in_interrupt() || crate::softirq::in_softirq() {
        SYNCHRONOUS_ATOMIC_LINES.fetch_add(1, Ordering::Relaxed);
    }
    let bytes = line.finish();
    if PANICKING.load(Ordering::Relaxed) {
        // The panicking CPU may have died holding the lock; write regardless.
        console::write_unlocked(bytes);
        return;
    }
    let _guard = CONSOLE_LOCK.lock();
    console::write(bytes);
    // Under the console lock, so the history's order is the console's.
    keep(line);
}

/// Copies a written line into the remote-log history (`crate::logs`):
/// with the ring record's facts for a line klogd writes, with this
/// moment's otherwise.
fn keep(line: &Line) {
    let text = line.bytes.get(line.text_start..line.len).unwrap_or_default();
    let (facts, name) = match line.deferred {
        Some((header, name)) => {
            let facts = LineFacts {
                monotonic_ns: header.timestamp_ns,
                unix_ns: time::realtime_at(header.timestamp_ns),
                level: line.level,
                cpu: header.cpu,
                thread: "",
                truncated: header.truncated,
            };
            let name = name.or_else(|| (header.thread != 0).then(|| serial_name(header.thread)));
            (facts, name)
        }
        None => {
            let monotonic_ns = if time::now_us().is_some() { time::now_ns() } else { 0 };
            let facts = LineFacts {
                monotonic_ns,
                unix_ns: time::realtime_at(monotonic_ns).filter(|_| monotonic_ns != 0),
                level: line.level,
                cpu: context::cpu_index() as u16,
                thread: "",
                truncated: line.truncated,
            };
            (facts, crate::thread::try_current().map(|thread| thread.name()))
        }
    };
    crate::logs::keep(LineFacts { thread: name.as_ref().map_or("", |name| name.as_str()), ..facts }, text);
}

/// `#serial`: how the history names a thread it could not look up.
fn serial_name(serial: u32) -> crate::thread::ThreadName {
    let mut digits = [0u8; 11];
    let mut start = digits.len();
    let mut rest = serial;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    start -= 1;
    digits[start] = b'#';
    crate::thread::ThreadName::new(core::str::from_utf8(&digits[start..]).unwrap_or("?"))
}

/// Whether a line from this context goes to the ring instead of the UART:
/// RT threads, softirqs and hard IRQs, once `klogd` runs, unless forced
/// synchronous or panicking.
fn deferred_here() -> bool {
    DRAIN_RUNNING.load(Ordering::Acquire)
        && !FORCE_SYNCHRONOUS.load(Ordering::Relaxed)
        && !PANICKING.load(Ordering::Relaxed)
        && (context::in_realtime_thread() || context::in_interrupt() || crate::softirq::in_softirq())
}

/// Formats `arguments` (prefixed by `prefix`) into this CPU's ring.
/// Never blocks, never allocates; a full ring counts the line as lost.
fn defer(level: u8, prefix: fmt::Arguments<'_>, arguments: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = line.write_fmt(prefix);
    let _ = line.write_fmt(arguments);
    let cpu = context::cpu_index();
    let header = RecordHeader {
        level,
        cpu: cpu as u16,
        thread: crate::thread::try_current().map_or(0, |thread| thread.id().serial()),
        timestamp_ns: time::now_ns(),
        truncated: line.truncated,
    };
    let Some(ring) = RINGS.get(cpu as usize) else { return };
    DEFERRED_LINES.fetch_add(1, Ordering::Relaxed);
    let _ = ring.push(header, &line.bytes[..line.len]);
    // Wake klogd when it sleeps without a deadline, or early when the ring
    // fills up; otherwise it comes by itself within DRAIN_PERIOD_NS. The
    // KICKED flag makes it one wake-up per drain round, and bounds any
    // recursion through a line logged by the wake-up path itself. (The
    // wake takes the wait queue's and a run queue's locks: code holding
    // those never logs.)
    core::sync::atomic::fence(Ordering::SeqCst);
    let idle = DRAIN_IDLE.load(Ordering::SeqCst);
    if (idle || ring.len() >= RING_RECORDS / 2) && !DRAIN_KICKED.swap(true, Ordering::AcqRel) {
        DRAIN_WAIT.wake_one();
    }
}

/// Writes one timestamped line to the console (through the log ring in
/// RT, softirq and hard-IRQ context).
pub fn line(arguments: fmt::Arguments<'_>) {
    if deferred_here() {
        defer(0, format_args!(""), arguments);
        return;
    }
    let mut line = Line::new();
    write_timestamp(&mut line);
    line.start_text(0);
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

/// Marks the system as panicking: console output stops taking the lock,
/// and every log ring is written out at once (oldest first per CPU), so
/// the lines before the panic are not lost. Returns whether a panic was
/// already under way.
pub fn enter_panic() -> bool {
    let again = PANICKING.swap(true, Ordering::SeqCst);
    if !again {
        // Taking over from klogd without its lock: at worst one line is
        // printed twice or skipped if klogd was mid-record on another CPU.
        for cpu in 0..MAX_CPUS {
            drain_ring(cpu, usize::MAX, true);
        }
    }
    again
}

/// Writes one ring record as a console line, in the synchronous format.
/// `named` (klogd only: it holds no lock) looks up the logging thread's
/// name for the history; elsewhere the history shows `#serial`.
fn write_record(record: &RingRecord, named: bool) {
    let mut line = Line::new();
    let us = record.header.timestamp_ns / 1000;
    let _ = write!(line, "[{us:>12}us] ");
    if let Some(name) = level_name(record.header.level) {
        let _ = write!(line, "{name} ");
    }
    line.start_text(record.header.level);
    let name = (named && record.header.thread != 0 && !PANICKING.load(Ordering::Relaxed))
        .then(|| crate::thread::find(serial_name(record.header.thread).trim_start_matches('#')).map(|thread| thread.name()))
        .flatten();
    line.deferred = Some((record.header, name));
    let mut text = [0u8; RING_WORDS * 8];
    let count = record.copy_text(&mut text);
    let room = (LINE_CAPACITY - 1).saturating_sub(line.len);
    let take = count.min(room);
    line.bytes[line.len..line.len + take].copy_from_slice(&text[..take]);
    line.len += take;
    if record.header.truncated {
        line.truncated = true;
        let marker = b"...";
        let room = (LINE_CAPACITY - 1).saturating_sub(line.len);
        let take = marker.len().min(room);
        line.bytes[line.len..line.len + take].copy_from_slice(&marker[..take]);
        line.len += take;
        TRUNCATED_LINES.fetch_add(1, Ordering::Relaxed);
        line.truncated = false;
    }
    emit(&mut line);
}

/// Takes up to `limit` records from CPU `cpu`'s ring and writes them, then
/// reports lines the ring lost since the last report. `unlocked` (panic)
/// skips the consumer lock. Returns how many records were written.
fn drain_ring(cpu: usize, limit: usize, unlocked: bool) -> usize {
    let Some(ring) = RINGS.get(cpu) else { return 0 };
    let mut written = 0;
    while written < limit {
        let record = if unlocked {
            ring.pop()
        } else {
            let _consumer = CONSUMER_LOCK.lock();
            ring.pop()
        };
        let Some(record) = record else { break };
        write_record(&record, false);
        DRAINED_LINES.fetch_add(1, Ordering::Relaxed);
        written += 1;
    }
    let dropped = ring.dropped();
    let reported = REPORTED_DROPS[cpu].swap(dropped, Ordering::AcqRel);
    if dropped > reported {
        let lost = dropped - reported;
        let mut line = Line::new();
        write_timestamp(&mut line);
        let _ = write!(line, "WARN  ");
        line.start_text(2);
        let _ = write!(line, "log: {lost} lines lost on cpu {cpu} (log ring full; {RING_RECORDS} records)");
        emit(&mut line);
    }
    written
}

/// klogd's round: takes at most `limit` records from all the rings and
/// writes them in timestamp order, so lines logged on different CPUs reach
/// the console in the order they were logged (draining one CPU's ring after
/// the other printed a later line of CPU 0 before an earlier one of CPU 1).
/// Each ring is already in order; the head of every ring is held here and
/// the oldest is written next.
fn drain_merged(limit: usize) -> usize {
    let mut heads: [Option<RingRecord>; MAX_CPUS] = [None; MAX_CPUS];
    let take = |cpu: usize| -> Option<RingRecord> {
        let _consumer = CONSUMER_LOCK.lock();
        RINGS.get(cpu).and_then(Ring::pop)
    };
    for (cpu, head) in heads.iter_mut().enumerate() {
        *head = take(cpu);
    }
    let mut written = 0;
    while written < limit {
        let oldest = heads
            .iter()
            .enumerate()
            .filter_map(|(cpu, head)| head.as_ref().map(|record| (cpu, record.header.timestamp_ns)))
            .min_by_key(|&(_, timestamp)| timestamp);
        let Some((cpu, _)) = oldest else { break };
        if let Some(record) = heads[cpu].take() {
            write_record(&record, true);
            DRAINED_LINES.fetch_add(1, Ordering::Relaxed);
            written += 1;
        }
        heads[cpu] = take(cpu);
    }
    // Over the limit: what is held goes out now (still in order) rather
    // than back into a ring.
    while let Some((cpu, _)) = heads
        .iter()
        .enumerate()
        .filter_map(|(cpu, head)| head.as_ref().map(|record| (cpu, record.header.timestamp_ns)))
        .min_by_key(|&(_, timestamp)| timestamp)
    {
        if let Some(record) = heads[cpu].take() {
            write_record(&record, true);
            DRAINED_LINES.fetch_add(1, Ordering::Relaxed);
            written += 1;
        }
    }
    for cpu in 0..MAX_CPUS {
        written += drain_ring(cpu, 0, false);
    }
    written
}

/// Writes out every log ring now, from the calling context (shutdown,
/// tests). Returns how many lines were written.
pub fn flush_deferred() -> usize {
    (0..MAX_CPUS).map(|cpu| drain_ring(cpu, usize::MAX, PANICKING.load(Ordering::Relaxed))).sum()
}

/// `klogd`: drains the rings. While lines keep coming it polls every
/// [`DRAIN_PERIOD_NS`] (producers then never wake it, unless a ring is half
/// full); when a round finds nothing it sleeps without a deadline (the
/// kernel stays tickless) and the next line pushed wakes it.
fn drain_main() -> i32 {
    // If klogd is ever cancelled (KILL), lines go back to the synchronous
    // path instead of filling the rings for nobody.
    let _ = crate::thread::cleanup_push(drain_ended, 0);
    loop {
        DRAIN_KICKED.store(false, Ordering::Release);
        let mut written = 0;
        if !DRAIN_PAUSED.load(Ordering::Acquire) {
            written += drain_merged(RING_RECORDS);
        }
        if crate::thread::should_stop() {
            crate::thread::cleanup_pop(true);
            return 0;
        }
        if written > 0 {
            let deadline = time::now_ns().saturating_add(DRAIN_PERIOD_NS);
            let _ = DRAIN_WAIT.wait_until(Some(deadline), || DRAIN_KICKED.load(Ordering::Acquire));
            continue;
        }
        // Going idle: announce it, then look once more (a producer either
        // sees IDLE and kicks, or pushed before and is seen here; the
        // SeqCst pair is the Dekker handshake).
        DRAIN_IDLE.store(true, Ordering::SeqCst);
        if RINGS.iter().any(|ring| !ring.is_empty()) {
            DRAIN_IDLE.store(false, Ordering::SeqCst);
            continue;
        }
        let _ = DRAIN_WAIT.wait_until(None, || DRAIN_KICKED.load(Ordering::Acquire));
        DRAIN_IDLE.store(false, Ordering::SeqCst);
    }
}

/// klogd's cleanup handler: stop deferring, write out what is left.
fn drain_ended(_: usize) {
    DRAIN_RUNNING.store(false, Ordering::Release);
    flush_deferred();
}

/// Starts `klogd` (thread context, at boot, once the scheduler runs) on
/// the CPUs that are not isolated; from then on RT, softirq and hard-IRQ
/// lines go through the rings.
pub fn start_drain() -> Result<(), crate::thread::ThreadError> {
    if DRAIN_RUNNING.load(Ordering::Acquire) {
        return Ok(());
    }
    let online = crate::thread::online_mask();
    let housekeeping = online & !crate::thread::isolated_mask();
    let mask = if housekeeping != 0 { housekeeping } else { online };
    crate::thread::Builder::new("klogd").affinity(mask).spawn(drain_main)?;
    DRAIN_RUNNING.store(true, Ordering::Release);
    Ok(())
}

/// Forces every line to be written synchronously (`true`), as before the
/// log rings existed, or restores RT-safe logging (`false`). For the
/// benchmark's before/after figures; pending ring lines are flushed first.
pub fn set_synchronous(synchronous: bool) {
    if synchronous {
        flush_deferred();
    }
    FORCE_SYNCHRONOUS.store(synchronous, Ordering::Release);
}

/// Log-ring figures: lines deferred since boot, lines lost (all CPUs),
/// lines waiting now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRingStats {
    pub deferred: u64,
    pub lost: u64,
    pub waiting: usize,
    pub draining: bool,
}

pub fn ring_stats() -> LogRingStats {
    LogRingStats {
        deferred: DEFERRED_LINES.load(Ordering::Relaxed),
        lost: RINGS.iter().map(Ring::dropped).sum(),
        waiting: RINGS.iter().map(Ring::len).sum(),
        draining: DRAIN_RUNNING.load(Ordering::Acquire),
    }
}

/// Lines refused by CPU `cpu`'s full ring since boot.
pub fn ring_lost(cpu: usize) -> u64 {
    RINGS.get(cpu).map_or(0, Ring::dropped)
}

/// Lost lines of CPU `cpu` already reported on the console.
pub fn ring_lost_reported(cpu: usize) -> u64 {
    REPORTED_DROPS.get(cpu).map_or(0, |reported| reported.load(Ordering::Acquire))
}

/// Lines written from the rings since boot.
pub fn drained_lines() -> u64 {
    DRAINED_LINES.load(Ordering::Relaxed)
}

/// Lines RT threads, softirqs and hard IRQs wrote to the console
/// themselves since boot.
pub fn synchronous_atomic_lines() -> u64 {
    SYNCHRONOUS_ATOMIC_LINES.load(Ordering::Relaxed)
}

/// Test hook: stops (`true`) or resumes klogd's draining; lines keep
/// going into the rings meanwhile.
#[cfg_attr(not(feature = "ktest"), allow(dead_code, reason = "a test hook, used by the ktest build only"))]
pub(crate) fn pause_drain(paused: bool) {
    DRAIN_PAUSED.store(paused, Ordering::Release);
    if !paused {
        DRAIN_KICKED.store(true, Ordering::Release);
        DRAIN_WAIT.wake_one();
    }
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
        let with_target = record.level() >= Level::Debug;
        if deferred_here() {
            if with_target {
                defer(level_number(record.level()), format_args!("{}: ", record.target()), *record.args());
            } else {
                defer(level_number(record.level()), format_args!(""), *record.args());
            }
            return;
        }
        let mut line = Line::new();
        write_timestamp(&mut line);
        let level = level_name(level_number(record.level())).unwrap_or("?    ");
        let _ = write!(line, "{level} ");
        line.start_text(level_number(record.level()));
        if with_target {
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
