//! Remote logs: the history of the last [`HISTORY_LINES`] log lines
//! (`rtedge_engine::loghistory`), the parsing of the `LOGS` command that
//! reads it (its reply is the plane's), and the publisher of the `log`
//! pub/sub channel.
//!
//! **Invariant: keeping a line never allocates and never waits for
//! anything but the history's own short lock.** Every line that reaches
//! the console is stored once, at the one place where it is written (the
//! console's synchronous path, or `klogd` for lines that RT threads,
//! softirqs and hard IRQs left in the log rings), by a copy into a fixed
//! static array (.bss) under an [`IrqSpinLock`] held for that copy only.
//! RT threads never come here once `klogd` runs (their lines go through
//! the lock-free rings). A full history forgets its oldest line and
//! counts it ([`LogStats::dropped`]).
//!
//! **Publishing never holds up a logger.** The `log` channel is fed by
//! the control-plane thread, which reads the history by sequence number
//! after the lines were kept ([`publish_pending`]): a line waits in the
//! history until the channel's bounded queue has room. Lines the history
//! forgot before they could be published are counted
//! ([`LogStats::channel_lost`]); nothing grows without bound.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use rtedge_engine::loghistory::{self, HistoryEntry, LineFacts, LogHistory};
use rtedge_engine::value::{parse_i64, push_json_string};

use crate::sync::IrqSpinLock;
use crate::time;

/// Lines the history keeps (about 120 KiB of .bss).
pub const HISTORY_LINES: usize = 512;
/// Bytes of text kept per line (the log ring's record holds 192).
pub const HISTORY_TEXT: usize = 200;
/// Lines `LOGS` returns when no count is given.
pub const DEFAULT_COUNT: usize = 100;
/// The pub/sub channel of log lines.
pub const CHANNEL: &str = "log";

type History = LogHistory<HISTORY_LINES, HISTORY_TEXT>;
/// A line copied out of the history.
pub type Entry = HistoryEntry<HISTORY_TEXT>;

static HISTORY: IrqSpinLock<History> = IrqSpinLock::new(History::new());
/// The last line handed to the `log` channel (or skipped: nobody listened).
static PUBLISHED_UP_TO: AtomicU64 = AtomicU64::new(0);
/// Lines published on `log` since boot.
static CHANNEL_PUBLISHED: AtomicU64 = AtomicU64::new(0);
/// Lines the history forgot before they could be published on `log`.
static CHANNEL_LOST: AtomicU64 = AtomicU64::new(0);
/// Entries copied out per lock hold (keeps interrupts-off time short).
const COPY_BATCH: usize = 16;

/// Keeps one line (any context but a panic; never allocates). `text` is
/// the line without its time stamp and level.
pub(crate) fn keep(facts: LineFacts<'_>, text: &[u8]) {
    HISTORY.lock().push(facts, text);
}

/// History figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Lines kept since boot.
    pub kept: u64,
    /// Lines held now.
    pub held: usize,
    /// The oldest line held.
    pub first_sequence: u64,
    /// Lines pushed out of the full history by newer ones.
    pub dropped: u64,
    /// Lines published on the `log` channel.
    pub channel_published: u64,
    /// Lines the history forgot before the channel's publisher got to them
    /// (subscribers were listening, the channel's queue stayed full).
    pub channel_lost: u64,
}

pub fn stats() -> LogStats {
    let history = HISTORY.lock();
    LogStats {
        kept: history.next_sequence() - 1,
        held: history.len(),
        first_sequence: history.first_sequence(),
        dropped: history.dropped(),
        channel_published: CHANNEL_PUBLISHED.load(Ordering::Relaxed),
        channel_lost: CHANNEL_LOST.load(Ordering::Relaxed),
    }
}

/// Copies out up to `count` lines numbered above `after` that pass
/// `most_verbose`, oldest first, a few per lock hold.
pub fn read_after(after: u64, most_verbose: u8, count: usize) -> Vec<Entry> {
    let mut out = Vec::with_capacity(count.min(HISTORY_LINES));
    let mut cursor = after;
    while out.len() < count {
        let history = HISTORY.lock();
        let before = out.len();
        while out.len() < count && out.len() - before < COPY_BATCH {
            match history.next_after(cursor, most_verbose) {
                Some(entry) => {
                    cursor = entry.sequence;
                    out.push(*entry);
                }
                None => return out,
            }
        }
    }
    out
}

/// The last `count` lines numbered above `after` that pass `most_verbose`.
pub fn read_last(count: usize, most_verbose: u8, after: u64) -> Vec<Entry> {
    let start = HISTORY.lock().start_of_last(count, most_verbose, after);
    read_after(start, most_verbose, count)
}

/// Wall-clock ms of a line: as stored, or (a line kept before the wall
/// clock was read at boot) from the boot's wall-clock base.
pub fn unix_ms(entry: &Entry) -> Option<u64> {
    entry.unix_ms().or_else(|| time::realtime_at(entry.monotonic_ns).map(|ns| ns / 1_000_000))
}

/// What `LOGS` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    pub count: usize,
    pub most_verbose: u8,
    pub after: u64,
}

/// Reads `LOGS [n] [LEVEL level] [SINCE seq]` (the arguments after the
/// name): `n` 1..=[`HISTORY_LINES`], `level` error|warn|info|debug|trace,
/// `seq` a sequence number (lines numbered above it). Anything else is an
/// error message.
pub fn parse_query(args: &[Vec<u8>]) -> Result<Query, String> {
    const SYNTAX: &str = "syntax: LOGS [n] [LEVEL level] [SINCE seq]";
    let mut query = Query { count: DEFAULT_COUNT, most_verbose: loghistory::LEVEL_TRACE, after: 0 };
    let mut rest = args;
    if let Some((first, tail)) = rest.split_first()
        && !first.eq_ignore_ascii_case(b"LEVEL")
        && !first.eq_ignore_ascii_case(b"SINCE")
    {
        match parse_i64(first) {
            Some(count) if (1..=HISTORY_LINES as i64).contains(&count) => query.count = count as usize,
            _ => return Err(alloc::format!("n must be an integer 1..{HISTORY_LINES} ({SYNTAX})")),
        }
        rest = tail;
    }
    if let Some((keyword, tail)) = rest.split_first()
        && keyword.eq_ignore_ascii_case(b"LEVEL")
    {
        let Some((value, tail)) = tail.split_first() else { return Err(String::from(SYNTAX)) };
        match loghistory::parse_level(value) {
            Some(level) => query.most_verbose = level,
            None => return Err(alloc::format!("level must be error, warn, info, debug or trace ({SYNTAX})")),
        }
        rest = tail;
    }
    if let Some((keyword, tail)) = rest.split_first()
        && keyword.eq_ignore_ascii_case(b"SINCE")
    {
        let Some((value, tail)) = tail.split_first() else { return Err(String::from(SYNTAX)) };
        match parse_i64(value) {
            Some(sequence) if sequence >= 0 => query.after = sequence as u64,
            _ => return Err(alloc::format!("seq must be an integer >= 0 ({SYNTAX})")),
        }
        rest = tail;
    }
    if rest.is_empty() { Ok(query) } else { Err(String::from(SYNTAX)) }
}

/// One line as the `log` channel's JSON message.
pub fn json(entry: &Entry, out: &mut String) {
    let _ = write!(out, "{{\"seq\":{},\"mono_ns\":{},\"unix_ms\":", entry.sequence, entry.monotonic_ns);
    match unix_ms(entry) {
        Some(ms) => {
            let _ = write!(out, "{ms}");
        }
        None => out.push_str("null"),
    }
    let _ = write!(out, ",\"level\":\"{}\",\"cpu\":{},\"thread\":", loghistory::level_name(entry.level), entry.cpu);
    push_json_string(out, entry.thread());
    out.push_str(",\"text\":");
    push_json_string(out, entry.text());
    out.push('}');
}

/// Most lines published per call (the control thread comes back within
/// its publish interval).
const PUBLISH_BATCH: usize = 64;

/// The control-plane thread's turn: hands the lines kept since the last
/// call to `publish` (which queues one message on the `log` channel and
/// says whether it was taken), oldest first. While nobody is `listening`
/// the lines are passed over: only those kept before the check, so that a
/// line kept after a subscription is always published. A refused message
/// stays for the next call; lines the history forgot meanwhile are counted
/// as lost for the channel.
pub fn publish_pending(listening: impl FnOnce() -> bool, mut publish: impl FnMut(&str) -> bool) {
    let done = PUBLISHED_UP_TO.load(Ordering::Relaxed);
    let last = HISTORY.lock().next_sequence() - 1;
    if !listening() {
        PUBLISHED_UP_TO.store(last, Ordering::Relaxed);
        return;
    }
    let entries = read_after(done, loghistory::LEVEL_TRACE, PUBLISH_BATCH);
    let mut cursor = done;
    let mut payload = String::new();
    for entry in &entries {
        payload.clear();
        json(entry, &mut payload);
        if !publish(&payload) {
            break;
        }
        // Lines between the cursor and this one were forgotten unpublished.
        CHANNEL_LOST.fetch_add(entry.sequence - cursor - 1, Ordering::Relaxed);
        CHANNEL_PUBLISHED.fetch_add(1, Ordering::Relaxed);
        cursor = entry.sequence;
    }
    PUBLISHED_UP_TO.store(cursor, Ordering::Relaxed);
}
