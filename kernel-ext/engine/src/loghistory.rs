//! The log history: the last `LINES` log lines the kernel wrote, kept for
//! remote readers (`LOGS`, the `log` channel), each with a sequence number
//! that counts every line since boot.
//!
//! The rules, checked by the tests below:
//! - the history never allocates: it is one fixed array, filled in place
//!   (a static in the kernel, in .bss), so storing a line costs one copy;
//! - a new line always goes in; when the history is full it takes the
//!   place of the oldest line, and that line is counted in
//!   [`LogHistory::dropped`] (never silently lost);
//! - sequence numbers start at 1 and grow by one per line, so a reader
//!   that remembers the last number it saw asks for the lines after it
//!   ([`LogHistory::next_after`]) and learns from the gap how many it
//!   missed.
//!
//! The history itself is not synchronised: the kernel keeps it behind a
//! lock and copies entries out in small batches.

/// The numeric log levels (as the `log` crate's and the log ring's):
/// 0 is a plain console line without a level.
pub const LEVEL_PLAIN: u8 = 0;
pub const LEVEL_ERROR: u8 = 1;
pub const LEVEL_WARN: u8 = 2;
pub const LEVEL_INFO: u8 = 3;
pub const LEVEL_DEBUG: u8 = 4;
pub const LEVEL_TRACE: u8 = 5;

/// Bytes of a thread name kept per line (longer names are cut).
pub const THREAD_NAME_CAPACITY: usize = 16;

/// The lower-case name of a level, as `LOGS` and the `log` channel show it
/// (`print` for a plain console line).
pub fn level_name(level: u8) -> &'static str {
    match level {
        LEVEL_ERROR => "error",
        LEVEL_WARN => "warn",
        LEVEL_INFO => "info",
        LEVEL_DEBUG => "debug",
        LEVEL_TRACE => "trace",
        _ => "print",
    }
}

/// Reads a level name (ASCII case ignored): `error`, `warn`, `info`,
/// `debug`, `trace`.
pub fn parse_level(name: &[u8]) -> Option<u8> {
    [LEVEL_ERROR, LEVEL_WARN, LEVEL_INFO, LEVEL_DEBUG, LEVEL_TRACE]
        .into_iter()
        .find(|&level| level_name(level).as_bytes().eq_ignore_ascii_case(name))
}

/// Whether a line of `level` passes a filter asking for `most_verbose` or
/// more severe: `warn` keeps errors and warnings. A plain console line
/// ranks as `info` (printk's default).
pub fn level_passes(level: u8, most_verbose: u8) -> bool {
    let rank = if level == LEVEL_PLAIN { LEVEL_INFO } else { level };
    rank <= most_verbose
}

/// What is known about a line besides its text, when it is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineFacts<'a> {
    /// Nanoseconds since boot when it was logged.
    pub monotonic_ns: u64,
    /// Wall-clock time when it was logged, ns since the Unix epoch, if the
    /// kernel knew it.
    pub unix_ns: Option<u64>,
    pub level: u8,
    pub cpu: u16,
    /// The logging thread's name (empty outside a thread).
    pub thread: &'a str,
    /// Whether the text was already cut before it got here.
    pub truncated: bool,
}

/// One stored line with room for `TEXT` bytes of text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryEntry<const TEXT: usize> {
    /// 1 for the first line since boot.
    pub sequence: u64,
    pub monotonic_ns: u64,
    /// 0: not known when stored.
    pub unix_ns: u64,
    pub level: u8,
    pub cpu: u16,
    pub truncated: bool,
    thread_len: u8,
    thread: [u8; THREAD_NAME_CAPACITY],
    text_len: u16,
    text: [u8; TEXT],
}

impl<const TEXT: usize> HistoryEntry<TEXT> {
    const EMPTY: Self = Self {
        sequence: 0,
        monotonic_ns: 0,
        unix_ns: 0,
        level: 0,
        cpu: 0,
        truncated: false,
        thread_len: 0,
        thread: [0; THREAD_NAME_CAPACITY],
        text_len: 0,
        text: [0; TEXT],
    };

    /// The text (a cut in the middle of a UTF-8 sequence drops that
    /// sequence's bytes).
    pub fn text(&self) -> &str {
        utf8_prefix(&self.text[..usize::from(self.text_len)])
    }

    /// The logging thread's name (empty outside a thread).
    pub fn thread(&self) -> &str {
        utf8_prefix(&self.thread[..usize::from(self.thread_len)])
    }

    /// Wall-clock time in ms since the Unix epoch, if known.
    pub fn unix_ms(&self) -> Option<u64> {
        (self.unix_ns != 0).then_some(self.unix_ns / 1_000_000)
    }
}

/// The longest valid UTF-8 prefix of `bytes`.
fn utf8_prefix(bytes: &[u8]) -> &str {
    match core::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => core::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or(""),
    }
}

/// A ring of the last `LINES` lines (`LINES` at least 1).
#[derive(Debug)]
pub struct LogHistory<const LINES: usize, const TEXT: usize> {
    entries: [HistoryEntry<TEXT>; LINES],
    /// Lines stored since boot (the next line's number is one more; kept
    /// so that a new history is all zero).
    pushed: u64,
    /// Lines pushed out by newer ones since boot.
    dropped: u64,
}

impl<const LINES: usize, const TEXT: usize> Default for LogHistory<LINES, TEXT> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const LINES: usize, const TEXT: usize> LogHistory<LINES, TEXT> {
    /// An empty history (all zero: a static one lives in .bss).
    pub const fn new() -> Self {
        Self { entries: [HistoryEntry::EMPTY; LINES], pushed: 0, dropped: 0 }
    }

    /// Lines the history holds at most.
    pub const CAPACITY: usize = LINES;

    /// Stores a line (text cut at `TEXT` bytes and marked truncated);
    /// returns its sequence number. Never fails: a full history forgets its
    /// oldest line and counts it.
    pub fn push(&mut self, facts: LineFacts<'_>, text: &[u8]) -> u64 {
        self.pushed += 1;
        let sequence = self.pushed;
        let slot = &mut self.entries[(sequence % LINES as u64) as usize];
        if slot.sequence != 0 {
            self.dropped += 1;
        }
        let text_len = text.len().min(TEXT).min(usize::from(u16::MAX));
        let thread = facts.thread.as_bytes();
        let thread_len = thread.len().min(THREAD_NAME_CAPACITY);
        slot.sequence = sequence;
        slot.monotonic_ns = facts.monotonic_ns;
        slot.unix_ns = facts.unix_ns.unwrap_or(0);
        slot.level = facts.level;
        slot.cpu = facts.cpu;
        slot.truncated = facts.truncated || text_len < text.len();
        slot.thread_len = thread_len as u8;
        slot.thread[..thread_len].copy_from_slice(&thread[..thread_len]);
        slot.text_len = text_len as u16;
        slot.text[..text_len].copy_from_slice(&text[..text_len]);
        sequence
    }

    /// The line numbered `sequence`, if the history still holds it.
    pub fn get(&self, sequence: u64) -> Option<&HistoryEntry<TEXT>> {
        let entry = &self.entries[(sequence % LINES as u64) as usize];
        (sequence != 0 && entry.sequence == sequence).then_some(entry)
    }

    /// The oldest line's number (`next_sequence()` when empty).
    pub fn first_sequence(&self) -> u64 {
        (self.pushed + 1).saturating_sub(LINES as u64).max(1)
    }

    /// The number the next line will get (1 + the lines since boot).
    pub fn next_sequence(&self) -> u64 {
        self.pushed + 1
    }

    /// Lines pushed out by newer ones since boot.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Lines held now.
    pub fn len(&self) -> usize {
        (self.next_sequence() - self.first_sequence()) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.pushed == 0
    }

    /// The first line numbered above `after` that passes `most_verbose`
    /// (see [`level_passes`]); lines no longer held are skipped (a reader
    /// sees the gap in the numbers).
    pub fn next_after(&self, after: u64, most_verbose: u8) -> Option<&HistoryEntry<TEXT>> {
        let start = after.saturating_add(1).max(self.first_sequence());
        (start..self.next_sequence()).filter_map(|sequence| self.get(sequence)).find(|entry| level_passes(entry.level, most_verbose))
    }

    /// The number after which the last `count` lines passing `most_verbose`
    /// and numbered above `after` begin: reading with
    /// [`next_after`](Self::next_after) from there yields exactly those
    /// lines (fewer if the history holds fewer).
    pub fn start_of_last(&self, count: usize, most_verbose: u8, after: u64) -> u64 {
        let lowest = after.saturating_add(1).max(self.first_sequence());
        let mut found = 0;
        let mut sequence = self.next_sequence();
        while sequence > lowest && found < count {
            sequence -= 1;
            if self.get(sequence).is_some_and(|entry| level_passes(entry.level, most_verbose)) {
                found += 1;
            }
        }
        if found < count { lowest - 1 } else { sequence - 1 }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn facts(level: u8) -> LineFacts<'static> {
        LineFacts { monotonic_ns: 5, unix_ns: Some(1_700_000_000_123_000_000), level, cpu: 1, thread: "klogd", truncated: false }
    }

    fn texts<const L: usize, const T: usize>(history: &LogHistory<L, T>, after: u64, most_verbose: u8) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut cursor = after;
        while let Some(entry) = history.next_after(cursor, most_verbose) {
            out.push((entry.sequence, entry.text().to_string()));
            cursor = entry.sequence;
        }
        out
    }

    #[test]
    fn lines_are_numbered_from_one_and_keep_their_facts() {
        let mut history = LogHistory::<4, 16>::new();
        assert!(history.is_empty());
        assert_eq!(history.push(facts(LEVEL_INFO), b"hello"), 1);
        assert_eq!(history.push(facts(LEVEL_WARN), b"careful"), 2);
        let entry = history.get(1).expect("line 1");
        assert_eq!((entry.text(), entry.thread(), entry.level, entry.cpu), ("hello", "klogd", LEVEL_INFO, 1));
        assert_eq!((entry.monotonic_ns, entry.unix_ms()), (5, Some(1_700_000_000_123)));
        assert_eq!(history.len(), 2);
        assert_eq!(history.get(0), None);
        assert_eq!(history.get(3), None);
    }

    #[test]
    fn a_full_history_forgets_the_oldest_and_counts_it() {
        let mut history = LogHistory::<3, 8>::new();
        for index in 0..10u8 {
            history.push(facts(LEVEL_INFO), &[b'a' + index]);
        }
        assert_eq!(history.len(), 3);
        assert_eq!(history.dropped(), 7);
        assert_eq!(history.first_sequence(), 8);
        assert_eq!(history.next_sequence(), 11);
        assert_eq!(history.get(7), None, "pushed out");
        assert_eq!(texts(&history, 0, LEVEL_TRACE), vec![(8, "h".into()), (9, "i".into()), (10, "j".into())]);
        // A reader that stopped at line 2 resumes at the oldest line held;
        // the gap (3..=7) is what it missed.
        assert_eq!(history.next_after(2, LEVEL_TRACE).map(|entry| entry.sequence), Some(8));
    }

    #[test]
    fn wraps_around_many_times_in_order() {
        let mut history = LogHistory::<5, 4>::new();
        for round in 0..1000u64 {
            let sequence = history.push(facts(LEVEL_DEBUG), format!("{}", round % 100).as_bytes());
            assert_eq!(sequence, round + 1);
            assert_eq!(history.get(sequence).map(HistoryEntry::text), Some(format!("{}", round % 100).as_str()));
        }
        let held: Vec<u64> = texts(&history, 0, LEVEL_TRACE).into_iter().map(|(sequence, _)| sequence).collect();
        assert_eq!(held, vec![996, 997, 998, 999, 1000]);
        assert_eq!(history.dropped(), 995);
    }

    #[test]
    fn level_filter_keeps_the_more_severe() {
        let mut history = LogHistory::<8, 8>::new();
        history.push(facts(LEVEL_ERROR), b"e");
        history.push(facts(LEVEL_WARN), b"w");
        history.push(facts(LEVEL_INFO), b"i");
        history.push(facts(LEVEL_PLAIN), b"p");
        history.push(facts(LEVEL_DEBUG), b"d");
        let only = |most_verbose| texts(&history, 0, most_verbose).into_iter().map(|(_, text)| text).collect::<Vec<_>>();
        assert_eq!(only(LEVEL_WARN), vec!["e", "w"]);
        assert_eq!(only(LEVEL_INFO), vec!["e", "w", "i", "p"], "a plain line ranks as info");
        assert_eq!(only(LEVEL_TRACE), vec!["e", "w", "i", "p", "d"]);
        assert_eq!(only(LEVEL_ERROR), vec!["e"]);
    }

    #[test]
    fn the_last_n_lines_after_a_number() {
        let mut history = LogHistory::<8, 8>::new();
        for level in [LEVEL_WARN, LEVEL_INFO, LEVEL_WARN, LEVEL_INFO, LEVEL_WARN] {
            history.push(facts(level), level_name(level).as_bytes());
        }
        // The last 2 warnings: lines 3 and 5, so reading starts after 2.
        assert_eq!(history.start_of_last(2, LEVEL_WARN, 0), 2);
        assert_eq!(history.start_of_last(2, LEVEL_TRACE, 0), 3);
        // More than there are: everything after `after`.
        assert_eq!(history.start_of_last(100, LEVEL_TRACE, 0), 0);
        assert_eq!(history.start_of_last(100, LEVEL_TRACE, 3), 3);
        assert_eq!(history.start_of_last(1, LEVEL_TRACE, 5), 5, "nothing after the last line");
        assert_eq!(history.start_of_last(0, LEVEL_TRACE, 0), 5);
    }

    #[test]
    fn long_text_and_names_are_cut_and_marked() {
        let mut history = LogHistory::<2, 4>::new();
        let sequence = history.push(LineFacts { thread: "a-very-long-thread-name", ..facts(LEVEL_INFO) }, b"abcdefgh");
        let entry = history.get(sequence).expect("held");
        assert_eq!((entry.text(), entry.truncated), ("abcd", true));
        assert_eq!(entry.thread(), "a-very-long-thre");
        // A cut inside a UTF-8 sequence drops the partial character.
        let sequence = history.push(facts(LEVEL_INFO), "abcé".as_bytes());
        assert_eq!(history.get(sequence).map(HistoryEntry::text), Some("abc"));
    }

    #[test]
    fn level_names_read_back() {
        for level in [LEVEL_ERROR, LEVEL_WARN, LEVEL_INFO, LEVEL_DEBUG, LEVEL_TRACE] {
            assert_eq!(parse_level(level_name(level).to_uppercase().as_bytes()), Some(level));
        }
        assert_eq!(parse_level(b"print"), None);
        assert_eq!(parse_level(b"warning"), None);
    }
}
